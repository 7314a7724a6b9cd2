// CUDA launchers of point-to-surface (see csrc/cuda/point_to_surface.cu). Plain pointers and
// a cudaStream_t passed as void*, so this header needs neither torch nor CUDA.
// The BVH topology (nodes, order, levels) is built on the host by
// cpu::build_bvh and copied to the device by the bindings.
#pragma once

#include <cstdint>

namespace facegeom {
namespace cuda {

// Gathers triangles [batch, F, 9] in BVH order and fits bounds [batch, N, 6],
// one launch per level, deepest first. levels is a host array of num_levels + 1
// offsets; every other pointer is device memory.
template <typename T>
void refit_bvh(int64_t batch, int64_t num_vertices, int64_t num_faces, const T* vertices,
               const int64_t* faces, const int32_t* order, const int32_t* nodes, int64_t num_nodes,
               const int64_t* levels, int64_t num_levels, T* triangles, T* bounds, void* stream);

// One thread per query point: bvh_nearest from facegeom/bvh.h.
template <typename T>
void point_to_surface_forward(int64_t batch, int64_t num_points, int64_t num_faces,
                              int64_t num_nodes, int64_t mesh_batch_stride, const T* points,
                              const int32_t* nodes, const int32_t* order, const T* bounds,
                              const T* triangles, T* dist2, int64_t* face_index, T* bary,
                              void* stream);

// grad_points = 2 (p - c) g; grad_vertices (zeroed, [vertex_batch, V, 3]) gets
// -2 (p - c) g bary_i by atomicAdd, so its float sums are not bitwise
// reproducible (unlike the CPU's). face_index outside [0, F) contributes nothing.
template <typename T>
void point_to_surface_backward(int64_t batch, int64_t num_points, int64_t num_vertices,
                               int64_t num_faces, int64_t vertex_batch, const T* grad_dist2,
                               const T* points, const T* vertices, const int64_t* faces,
                               const int64_t* face_index, const T* bary, T* grad_points,
                               T* grad_vertices, void* stream);

}  // namespace cuda
}  // namespace facegeom
