// CPU side of point-to-surface: the BVH build (also used by the CUDA path, which
// builds the topology on the host), refit, queries and the gradient scatter.
// Plain pointers into contiguous row-major buffers; the bindings allocate and check.
#pragma once

#include <cstdint>
#include <vector>

namespace facegeom {
namespace cpu {

// Topology of a BVH (layout in facegeom/bvh.h) and its breadth-first levels:
// nodes of depth d are [levels[d], levels[d + 1]).
struct BvhTopology {
  std::vector<int32_t> nodes;   // [N, 2]
  std::vector<int32_t> order;   // [F]
  std::vector<int64_t> levels;  // [depth + 1]
  int64_t num_nodes() const { return static_cast<int64_t>(nodes.size() / 2); }
};

// Binned-SAH build over the faces of one mesh (vertices [V, 3], faces [F, 3]
// int64, already range-checked). F must be in [1, 2^30].
template <typename T>
BvhTopology build_bvh(int64_t num_faces, const T* vertices, const int64_t* faces);

// For each of `batch` meshes (vertices [batch, V, 3]): gathers the triangles in
// BVH order (triangles [batch, F, 9]) and fits the boxes (bounds [batch, N, 6]).
template <typename T>
void refit_bvh(int64_t batch, int64_t num_vertices, int64_t num_faces, const T* vertices,
               const int64_t* faces, const BvhTopology& topology, T* triangles, T* bounds);

// Closest points of points [batch, P, 3]. Mesh b is triangles/bounds at
// b * mesh_batch_stride (0 when one mesh serves the batch).
template <typename T>
void point_to_surface_forward(int64_t batch, int64_t num_points, int64_t num_faces,
                              int64_t num_nodes, int64_t mesh_batch_stride, const T* points,
                              const int32_t* nodes, const int32_t* order, const T* bounds,
                              const T* triangles, T* dist2, int64_t* face_index, T* bary);

// grad_points = 2 (p - c) g; grad_vertices[faces[f, i]] -= 2 (p - c) bary_i g,
// summed in a fixed order (deterministic). grad_vertices ([vertex_batch, V, 3],
// vertex_batch 1 when shared) must be zeroed. Points with face_index < 0 (NaN
// input) contribute nothing to the vertices.
template <typename T>
void point_to_surface_backward(int64_t batch, int64_t num_points, int64_t num_vertices,
                               int64_t vertex_batch, const T* grad_dist2, const T* points,
                               const T* vertices, const int64_t* faces, const int64_t* face_index,
                               const T* bary, T* grad_points, T* grad_vertices);

}  // namespace cpu
}  // namespace facegeom
