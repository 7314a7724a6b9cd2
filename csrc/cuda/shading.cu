// CUDA launchers of the shading family (see shading_cuda.h).
//
// The math is the shared FG_HD code of facegeom/shading.h; kernels only map
// threads onto faces, vertices or points, grid-stride with int64_t indices.
// Vertex normals scatter face contributions with atomics (the CPU back end
// gathers instead and is bit-reproducible; here the summation order, and so
// the last bits, may vary between runs). Sums over points (SH coefficient,
// light, camera and shininess gradients) are reduced per warp with shuffles
// into partial buffers that the bindings sum: deterministic.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "cuda/shading_cuda.h"
#include "cuda/launch.cuh"
#include "facegeom/common.h"
#include "facegeom/shading.h"

namespace facegeom {
namespace cuda {
namespace {

constexpr int kWarp = 32;

// Sum over the 32 lanes of a warp; the result is valid in lane 0.
template <typename T>
__device__ T warp_sum(T value) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    value += __shfl_down_sync(0xffffffffu, value, offset);
  }
  return value;
}

template <typename T, typename I>
__global__ void scatter_face_normals_kernel(int64_t count, int64_t num_vertices,
                                            int64_t num_faces, const T* vertices, const I* faces,
                                            T* sums) {
  for (int64_t i = first_index(); i < count; i += grid_stride()) {
    const int64_t b = i / num_faces;
    const I* f = faces + 3 * (i - b * num_faces);
    const T* v = vertices + 3 * num_vertices * b;
    T n[3];
    shading::face_normal(v + 3 * int64_t(f[0]), v + 3 * int64_t(f[1]), v + 3 * int64_t(f[2]), n);
    for (int k = 0; k < 3; ++k) {
      T* target = sums + 3 * (num_vertices * b + int64_t(f[k]));
      for (int c = 0; c < 3; ++c) atomic_add(target + c, n[c]);
    }
  }
}

template <typename T>
__global__ void normalize_in_place_kernel(int64_t count, T* vectors, T* inv_len) {
  for (int64_t i = first_index(); i < count; i += grid_stride()) {
    const T x[3] = {vectors[3 * i], vectors[3 * i + 1], vectors[3 * i + 2]};
    inv_len[i] = shading::normalize3_scaled(x, vectors + 3 * i);
  }
}

template <typename T>
__global__ void normalize_backward_kernel(int64_t count, const T* normals, const T* inv_len,
                                          const T* grad_out, T* grad_sums) {
  for (int64_t i = first_index(); i < count; i += grid_stride()) {
    shading::normalize3_backward(normals + 3 * i, inv_len[i], grad_out + 3 * i, grad_sums + 3 * i);
  }
}

template <typename T, typename I>
__global__ void scatter_face_normal_grads_kernel(int64_t count, int64_t num_vertices,
                                                 int64_t num_faces, const T* vertices,
                                                 const I* faces, const T* grad_sums,
                                                 T* grad_vertices) {
  for (int64_t i = first_index(); i < count; i += grid_stride()) {
    const int64_t b = i / num_faces;
    const I* f = faces + 3 * (i - b * num_faces);
    const int64_t corner[3] = {int64_t(f[0]), int64_t(f[1]), int64_t(f[2])};
    const T* v = vertices + 3 * num_vertices * b;
    const T* g = grad_sums + 3 * num_vertices * b;
    T grad_n[3];
    for (int c = 0; c < 3; ++c) {
      grad_n[c] = g[3 * corner[0] + c] + g[3 * corner[1] + c] + g[3 * corner[2] + c];
    }
    T grad_p[3][3];
    shading::face_normal_backward(v + 3 * corner[0], v + 3 * corner[1], v + 3 * corner[2],
                                   grad_n, grad_p[0], grad_p[1], grad_p[2]);
    for (int k = 0; k < 3; ++k) {
      T* target = grad_vertices + 3 * (num_vertices * b + corner[k]);
      for (int c = 0; c < 3; ++c) atomic_add(target + c, grad_p[k][c]);
    }
  }
}

template <typename T>
__global__ void sh_basis_forward_kernel(int64_t count, shading::ShTable<T> table, const T* normals,
                                        T* basis) {
  for (int64_t i = first_index(); i < count; i += grid_stride()) {
    shading::sh_basis_forward(table, normals + 3 * i, basis + 9 * i);
  }
}

template <typename T>
__global__ void sh_basis_backward_kernel(int64_t count, shading::ShTable<T> table, const T* normals,
                                         const T* grad_basis, T* grad_normals) {
  for (int64_t i = first_index(); i < count; i += grid_stride()) {
    shading::sh_basis_backward(table, normals + 3 * i, grad_basis + 9 * i, grad_normals + 3 * i);
  }
}

template <typename T>
__global__ void sh_shading_forward_kernel(int64_t count, int64_t num_points, shading::ShTable<T> table,
                                          const T* normals, const T* albedo, const T* coeffs,
                                          T* out) {
  for (int64_t i = first_index(); i < count; i += grid_stride()) {
    shading::sh_shade_forward(table, normals + 3 * i, albedo + 3 * i,
                               coeffs + 27 * (i / num_points), out + 3 * i);
  }
}

// count = B * padded with padded = 32 * num_warps(N): whole warps per batch
// element, so every lane of a warp takes part in the shuffles.
template <typename T>
__global__ void sh_shading_backward_kernel(int64_t count, int64_t num_points, int64_t padded,
                                           shading::ShTable<T> table, const T* normals, const T* albedo,
                                           const T* coeffs, const T* grad_out, T* grad_normals,
                                           T* grad_albedo, T* coeff_partials) {
  for (int64_t i = first_index(); i < count; i += grid_stride()) {
    const int64_t b = i / padded, p = i - b * padded;
    const int64_t point = b * num_points + p;
    T grad_coeffs[27];
    for (int k = 0; k < 27; ++k) grad_coeffs[k] = T(0);
    if (p < num_points) {
      shading::sh_shade_backward(table, normals + 3 * point, albedo + 3 * point,
                                  coeffs + 27 * b, grad_out + 3 * point,
                                  grad_normals != nullptr ? grad_normals + 3 * point : nullptr,
                                  grad_albedo != nullptr ? grad_albedo + 3 * point : nullptr,
                                  coeff_partials != nullptr ? grad_coeffs : nullptr);
    }
    if (coeff_partials != nullptr) {
      T* out = coeff_partials + 27 * (b * (padded / kWarp) + p / kWarp);
      for (int k = 0; k < 27; ++k) {
        const T sum = warp_sum(grad_coeffs[k]);
        if (threadIdx.x % kWarp == 0) out[k] = sum;
      }
    }
  }
}

template <typename T>
__global__ void blinn_phong_forward_kernel(int64_t count, int64_t num_points, const T* normals,
                                           const T* points, const T* light, const T* camera,
                                           const T* albedo, int64_t albedo_channels,
                                           const T* shininess, T* out) {
  for (int64_t i = first_index(); i < count; i += grid_stride()) {
    const int64_t b = i / num_points;
    shading::blinn_phong_point(normals + 3 * i, points + 3 * i, light + 3 * b, camera + 3 * b,
                                albedo + albedo_channels * i, albedo_channels, shininess[b],
                                out + 3 * i);
  }
}

template <typename T>
__global__ void blinn_phong_backward_kernel(int64_t count, int64_t num_points, int64_t padded,
                                            const T* normals, const T* points, const T* light,
                                            const T* camera, const T* albedo,
                                            int64_t albedo_channels, const T* shininess,
                                            const T* grad_out, T* grad_normals, T* grad_points,
                                            T* grad_albedo, T* partials) {
  for (int64_t i = first_index(); i < count; i += grid_stride()) {
    const int64_t b = i / padded, p = i - b * padded;
    const int64_t point = b * num_points + p;
    T sums[7] = {T(0), T(0), T(0), T(0), T(0), T(0), T(0)};
    if (p < num_points) {
      const T* g = grad_out + 3 * point;
      const T* a = albedo + albedo_channels * point;
      const T grad_lobe = albedo_channels == 3 ? g[0] * a[0] + g[1] * a[1] + g[2] * a[2]
                                               : (g[0] + g[1] + g[2]) * a[0];
      T gn[3], gp[3];
      const T lobe = shading::blinn_phong_lobe_backward(
          normals + 3 * point, points + 3 * point, light + 3 * b, camera + 3 * b, shininess[b],
          grad_lobe, gn, gp, sums, sums + 3, sums + 6);
      if (grad_albedo != nullptr) {
        if (albedo_channels == 3) {
          for (int c = 0; c < 3; ++c) grad_albedo[3 * point + c] = g[c] * lobe;
        } else {
          grad_albedo[point] = (g[0] + g[1] + g[2]) * lobe;
        }
      }
      for (int c = 0; c < 3; ++c) {
        if (grad_normals != nullptr) grad_normals[3 * point + c] = gn[c];
        if (grad_points != nullptr) grad_points[3 * point + c] = gp[c];
      }
    }
    if (partials != nullptr) {
      T* out = partials + 7 * (b * (padded / kWarp) + p / kWarp);
      for (int k = 0; k < 7; ++k) {
        const T sum = warp_sum(sums[k]);
        if (threadIdx.x % kWarp == 0) out[k] = sum;
      }
    }
  }
}

}  // namespace

template <typename T, typename I>
void vertex_normals_forward(int64_t batch, int64_t num_vertices, int64_t num_faces,
                            const T* vertices, const I* faces, T* out, T* inv_len, void* stream) {
  launch("scatter_face_normals", scatter_face_normals_kernel<T, I>, batch * num_faces, stream,
         num_vertices, num_faces, vertices, faces, out);
  launch("normalize_in_place", normalize_in_place_kernel<T>, batch * num_vertices, stream, out,
         inv_len);
}

template <typename T, typename I>
void vertex_normals_backward(int64_t batch, int64_t num_vertices, int64_t num_faces,
                             const T* vertices, const I* faces, const T* normals,
                             const T* inv_len, const T* grad_out, T* grad_sums,
                             T* grad_vertices, void* stream) {
  launch("normalize_backward", normalize_backward_kernel<T>, batch * num_vertices, stream,
         normals, inv_len, grad_out, grad_sums);
  launch("scatter_face_normal_grads", scatter_face_normal_grads_kernel<T, I>, batch * num_faces,
         stream, num_vertices, num_faces, vertices, faces, static_cast<const T*>(grad_sums),
         grad_vertices);
}

template <typename T>
void sh_basis_forward(int64_t n, const shading::ShTable<T>& table, const T* normals, T* basis,
                      void* stream) {
  launch("sh_basis_forward", sh_basis_forward_kernel<T>, n, stream, table, normals, basis);
}

template <typename T>
void sh_basis_backward(int64_t n, const shading::ShTable<T>& table, const T* normals, const T* grad_basis,
                       T* grad_normals, void* stream) {
  launch("sh_basis_backward", sh_basis_backward_kernel<T>, n, stream, table, normals, grad_basis,
         grad_normals);
}

template <typename T>
void sh_shading_forward(int64_t batch, int64_t num_points, const shading::ShTable<T>& table,
                        const T* normals, const T* albedo, const T* coeffs, T* out, void* stream) {
  launch("sh_shading_forward", sh_shading_forward_kernel<T>, batch * num_points, stream,
         num_points, table, normals, albedo, coeffs, out);
}

template <typename T>
void sh_shading_backward(int64_t batch, int64_t num_points, const shading::ShTable<T>& table,
                         const T* normals, const T* albedo, const T* coeffs, const T* grad_out,
                         T* grad_normals, T* grad_albedo, T* coeff_partials, void* stream) {
  const int64_t padded = kWarp * num_warps(num_points);
  launch("sh_shading_backward", sh_shading_backward_kernel<T>, batch * padded, stream, num_points,
         padded, table, normals, albedo, coeffs, grad_out, grad_normals, grad_albedo,
         coeff_partials);
}

template <typename T>
void blinn_phong_forward(int64_t batch, int64_t num_points, const T* normals, const T* points,
                         const T* light, const T* camera, const T* albedo,
                         int64_t albedo_channels, const T* shininess, T* out, void* stream) {
  launch("blinn_phong_forward", blinn_phong_forward_kernel<T>, batch * num_points, stream,
         num_points, normals, points, light, camera, albedo, albedo_channels, shininess, out);
}

template <typename T>
void blinn_phong_backward(int64_t batch, int64_t num_points, const T* normals, const T* points,
                          const T* light, const T* camera, const T* albedo,
                          int64_t albedo_channels, const T* shininess, const T* grad_out,
                          T* grad_normals, T* grad_points, T* grad_albedo, T* partials,
                          void* stream) {
  const int64_t padded = kWarp * num_warps(num_points);
  launch("blinn_phong_backward", blinn_phong_backward_kernel<T>, batch * padded, stream,
         num_points, padded, normals, points, light, camera, albedo, albedo_channels, shininess,
         grad_out, grad_normals, grad_points, grad_albedo, partials);
}

#define FACEGEOM_INSTANTIATE_SHADING_MESH_CUDA(T, I)                                             \
  template void vertex_normals_forward<T, I>(int64_t, int64_t, int64_t, const T*, const I*, T*,  \
                                             T*, void*);                                         \
  template void vertex_normals_backward<T, I>(int64_t, int64_t, int64_t, const T*, const I*,     \
                                              const T*, const T*, const T*, T*, T*, void*);
FACEGEOM_INSTANTIATE_SHADING_MESH_CUDA(float, int32_t)
FACEGEOM_INSTANTIATE_SHADING_MESH_CUDA(float, int64_t)
FACEGEOM_INSTANTIATE_SHADING_MESH_CUDA(double, int32_t)
FACEGEOM_INSTANTIATE_SHADING_MESH_CUDA(double, int64_t)
#undef FACEGEOM_INSTANTIATE_SHADING_MESH_CUDA

#define FACEGEOM_INSTANTIATE_SHADING_CUDA(T)                                                     \
  template void sh_basis_forward<T>(int64_t, const shading::ShTable<T>&, const T*, T*, void*);            \
  template void sh_basis_backward<T>(int64_t, const shading::ShTable<T>&, const T*, const T*, T*, void*); \
  template void sh_shading_forward<T>(int64_t, int64_t, const shading::ShTable<T>&, const T*, const T*,   \
                                      const T*, T*, void*);                                      \
  template void sh_shading_backward<T>(int64_t, int64_t, const shading::ShTable<T>&, const T*, const T*,  \
                                       const T*, const T*, T*, T*, T*, void*);                   \
  template void blinn_phong_forward<T>(int64_t, int64_t, const T*, const T*, const T*, const T*, \
                                       const T*, int64_t, const T*, T*, void*);                  \
  template void blinn_phong_backward<T>(int64_t, int64_t, const T*, const T*, const T*,          \
                                        const T*, const T*, int64_t, const T*, const T*, T*, T*, \
                                        T*, T*, void*);
FACEGEOM_INSTANTIATE_SHADING_CUDA(float)
FACEGEOM_INSTANTIATE_SHADING_CUDA(double)
#undef FACEGEOM_INSTANTIATE_SHADING_CUDA

}  // namespace cuda
}  // namespace facegeom
