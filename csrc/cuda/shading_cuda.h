// CUDA launchers of the shading family. Plain pointers and a cudaStream_t
// passed as void*, so this header needs neither torch nor the CUDA runtime.
#pragma once

#include <cstdint>

#include "facegeom/shading.h"

namespace facegeom {
namespace cuda {

// Reductions over points write one partial sum per warp of 32 points (warps
// never straddle batch elements); the bindings sum the partials, which keeps
// the result deterministic. Partial buffers are [B, num_warps(N), K].
inline int64_t num_warps(int64_t num_points) { return (num_points + 31) / 32; }

// out [B, V, 3] must be zero on entry. Face normals are added with atomics
// (order-dependent rounding), then normalised in place; inv_len [B, V]
// receives 1 / |sum| (0 where the sum is zero).
template <typename T, typename I>
void vertex_normals_forward(int64_t batch, int64_t num_vertices, int64_t num_faces,
                            const T* vertices, const I* faces, T* out, T* inv_len, void* stream);
// From the forward's normals and inv_len. grad_vertices [B, V, 3] must be
// zero on entry; grad_sums [B, V, 3] is scratch.
template <typename T, typename I>
void vertex_normals_backward(int64_t batch, int64_t num_vertices, int64_t num_faces,
                             const T* vertices, const I* faces, const T* normals,
                             const T* inv_len, const T* grad_out, T* grad_sums,
                             T* grad_vertices, void* stream);

template <typename T>
void sh_basis_forward(int64_t n, const shading::ShTable<T>& table, const T* normals, T* basis,
                      void* stream);
template <typename T>
void sh_basis_backward(int64_t n, const shading::ShTable<T>& table, const T* normals, const T* grad_basis,
                       T* grad_normals, void* stream);

template <typename T>
void sh_shading_forward(int64_t batch, int64_t num_points, const shading::ShTable<T>& table,
                        const T* normals, const T* albedo, const T* coeffs, T* out, void* stream);
// coeff_partials [B, num_warps(N), 27]; null outputs are skipped.
template <typename T>
void sh_shading_backward(int64_t batch, int64_t num_points, const shading::ShTable<T>& table,
                         const T* normals, const T* albedo, const T* coeffs, const T* grad_out,
                         T* grad_normals, T* grad_albedo, T* coeff_partials, void* stream);

template <typename T>
void blinn_phong_forward(int64_t batch, int64_t num_points, const T* normals, const T* points,
                         const T* light, const T* camera, const T* albedo,
                         int64_t albedo_channels, const T* shininess, T* out, void* stream);
// partials [B, num_warps(N), 7]: light (3), camera (3), shininess (1) gradient
// sums per warp. Null outputs are skipped.
template <typename T>
void blinn_phong_backward(int64_t batch, int64_t num_points, const T* normals, const T* points,
                          const T* light, const T* camera, const T* albedo,
                          int64_t albedo_channels, const T* shininess, const T* grad_out,
                          T* grad_normals, T* grad_points, T* grad_albedo, T* partials,
                          void* stream);

}  // namespace cuda
}  // namespace facegeom
