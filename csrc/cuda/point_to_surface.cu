// CUDA kernels of point-to-surface (see point_to_surface_cuda.h).
//
// The BVH topology comes from the host build (cpu::build_bvh); here the refit
// runs level by level (one launch per breadth-first level, deepest first, one
// thread per (mesh, node)), and the queries run one thread per point, each a
// stack traversal (facegeom/bvh.h) with the stack in local memory. Queries are
// not reordered: neighbouring threads take neighbouring input points, so
// spatially sorted inputs make warps more coherent. The backward scatters into
// the vertices with atomicAdd. No torch headers, so `nvcc -c` compiles this file
// without a GPU.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "cuda/point_to_surface_cuda.h"
#include "cuda/launch.cuh"
#include "facegeom/bvh.h"

namespace facegeom {
namespace cuda {
namespace {

// Traversal keeps a 64-entry stack per thread: smaller blocks keep occupancy up.
constexpr int kQueryThreadsPerBlock = 128;

template <typename T>
__global__ void gather_triangles_kernel(int64_t count, int64_t num_vertices, int64_t num_faces,
                                        const T* vertices, const int64_t* faces,
                                        const int32_t* order, T* triangles) {
  for (int64_t i = first_index(); i < count; i += grid_stride()) {
    const int64_t b = i / num_faces, slot = i % num_faces;
    const int64_t* face = faces + 3 * static_cast<int64_t>(order[slot]);
    const T* mesh = vertices + 3 * num_vertices * b;
    T* tri = triangles + 9 * i;
    for (int corner = 0; corner < 3; ++corner)
      for (int k = 0; k < 3; ++k) tri[3 * corner + k] = mesh[3 * face[corner] + k];
  }
}

template <typename T>
__global__ void refit_level_kernel(int64_t count, int64_t level_first, int64_t level_width,
                                   int64_t num_nodes, int64_t num_faces, const int32_t* nodes,
                                   const T* triangles, T* bounds) {
  for (int64_t i = first_index(); i < count; i += grid_stride()) {
    const int64_t b = i / level_width, node = level_first + i % level_width;
    bvh::refit_node(nodes, node, triangles + 9 * num_faces * b, bounds + 6 * num_nodes * b);
  }
}

template <typename T>
__global__ void point_to_surface_kernel(int64_t count, int64_t num_points, int64_t num_faces,
                                        int64_t num_nodes, int64_t mesh_batch_stride,
                                        const T* points, const int32_t* nodes,
                                        const int32_t* order, const T* bounds, const T* triangles,
                                        T* dist2, int64_t* face_index, T* bary) {
  for (int64_t i = first_index(); i < count; i += grid_stride()) {
    const int64_t mesh = (i / num_points) * mesh_batch_stride;
    const bvh::NearestHit<T> hit =
        bvh::bvh_nearest(load3(points + 3 * i), nodes, bounds + 6 * num_nodes * mesh,
                    triangles + 9 * num_faces * mesh, bvh::empty_hit<T>());
    if (hit.slot < 0) {  // NaN query or mesh
      dist2[i] = quiet_nan<T>();
      face_index[i] = -1;
      for (int k = 0; k < 3; ++k) bary[3 * i + k] = quiet_nan<T>();
      continue;
    }
    dist2[i] = hit.dist2;
    face_index[i] = order[hit.slot];
    for (int k = 0; k < 3; ++k) bary[3 * i + k] = hit.bary[k];
  }
}

template <typename T>
__global__ void point_to_surface_backward_kernel(int64_t count, int64_t num_points,
                                                 int64_t num_vertices, int64_t num_faces,
                                                 int64_t vertex_batch, const T* grad_dist2,
                                                 const T* points, const T* vertices,
                                                 const int64_t* faces, const int64_t* face_index,
                                                 const T* bary, T* grad_points, T* grad_vertices) {
  const int64_t vertex_stride = vertex_batch == 1 ? 0 : 3 * num_vertices;
  for (int64_t i = first_index(); i < count; i += grid_stride()) {
    const int64_t f = face_index[i];
    T* out = grad_points + 3 * i;
    if (f < 0 || f >= num_faces) {  // NaN query (or a bad direct call): no gradient path
      for (int k = 0; k < 3; ++k) out[k] = quiet_nan<T>();
      continue;
    }
    const int64_t offset = vertex_stride * (i / num_points);
    const T* mesh = vertices + offset;
    const int64_t corners[3] = {faces[3 * f], faces[3 * f + 1], faces[3 * f + 2]};
    const T* w = bary + 3 * i;
    const T scale = T(2) * grad_dist2[i];
    T g[3];
    for (int k = 0; k < 3; ++k) {
      const T closest = w[0] * mesh[3 * corners[0] + k] + w[1] * mesh[3 * corners[1] + k] +
                        w[2] * mesh[3 * corners[2] + k];
      g[k] = scale * (points[3 * i + k] - closest);
      out[k] = g[k];
    }
    for (int c = 0; c < 3; ++c) {
      T* dst = grad_vertices + offset + 3 * corners[c];
      for (int k = 0; k < 3; ++k) atomicAdd(dst + k, -w[c] * g[k]);
    }
  }
}

}  // namespace

template <typename T>
void refit_bvh(int64_t batch, int64_t num_vertices, int64_t num_faces, const T* vertices,
               const int64_t* faces, const int32_t* order, const int32_t* nodes, int64_t num_nodes,
               const int64_t* levels, int64_t num_levels, T* triangles, T* bounds, void* stream) {
  const auto s = static_cast<cudaStream_t>(stream);
  const int64_t gather_count = batch * num_faces;
  if (gather_count <= 0) return;
  gather_triangles_kernel<T><<<blocks_for(gather_count, kThreadsPerBlock), kThreadsPerBlock, 0, s>>>(
      gather_count, num_vertices, num_faces, vertices, faces, order, triangles);
  check_launch("gather_triangles_kernel");
  // Deepest level first: a node's children are always one level further down.
  for (int64_t level = num_levels - 1; level >= 0; --level) {
    const int64_t width = levels[level + 1] - levels[level];
    const int64_t count = batch * width;
    refit_level_kernel<T><<<blocks_for(count, kThreadsPerBlock), kThreadsPerBlock, 0, s>>>(
        count, levels[level], width, num_nodes, num_faces, nodes, triangles, bounds);
    check_launch("refit_level_kernel");
  }
}

template <typename T>
void point_to_surface_forward(int64_t batch, int64_t num_points, int64_t num_faces,
                              int64_t num_nodes, int64_t mesh_batch_stride, const T* points,
                              const int32_t* nodes, const int32_t* order, const T* bounds,
                              const T* triangles, T* dist2, int64_t* face_index, T* bary,
                              void* stream) {
  const int64_t count = batch * num_points;
  if (count <= 0) return;
  point_to_surface_kernel<T><<<blocks_for(count, kQueryThreadsPerBlock), kQueryThreadsPerBlock, 0,
                               static_cast<cudaStream_t>(stream)>>>(
      count, num_points, num_faces, num_nodes, mesh_batch_stride, points, nodes, order, bounds,
      triangles, dist2, face_index, bary);
  check_launch("point_to_surface_kernel");
}

template <typename T>
void point_to_surface_backward(int64_t batch, int64_t num_points, int64_t num_vertices,
                               int64_t num_faces, int64_t vertex_batch, const T* grad_dist2,
                               const T* points, const T* vertices, const int64_t* faces,
                               const int64_t* face_index, const T* bary, T* grad_points,
                               T* grad_vertices, void* stream) {
  const int64_t count = batch * num_points;
  if (count <= 0) return;
  point_to_surface_backward_kernel<T><<<blocks_for(count, kThreadsPerBlock), kThreadsPerBlock, 0,
                                        static_cast<cudaStream_t>(stream)>>>(
      count, num_points, num_vertices, num_faces, vertex_batch, grad_dist2, points, vertices,
      faces, face_index, bary, grad_points, grad_vertices);
  check_launch("point_to_surface_backward_kernel");
}

#define FACEGEOM_INSTANTIATE(T)                                                                   \
  template void refit_bvh<T>(int64_t, int64_t, int64_t, const T*, const int64_t*, const int32_t*, \
                             const int32_t*, int64_t, const int64_t*, int64_t, T*, T*, void*);    \
  template void point_to_surface_forward<T>(int64_t, int64_t, int64_t, int64_t, int64_t,          \
                                            const T*, const int32_t*, const int32_t*, const T*,   \
                                            const T*, T*, int64_t*, T*, void*);                   \
  template void point_to_surface_backward<T>(int64_t, int64_t, int64_t, int64_t, int64_t,         \
                                             const T*, const T*, const T*, const int64_t*,        \
                                             const int64_t*, const T*, T*, T*, void*);
FACEGEOM_INSTANTIATE(float)
FACEGEOM_INSTANTIATE(double)
#undef FACEGEOM_INSTANTIATE

}  // namespace cuda
}  // namespace facegeom
