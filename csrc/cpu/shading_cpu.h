// CPU launchers of the shading family: plain pointers, contiguous row-major
// buffers; the bindings allocate and check. T is float or double, I (face
// indices) int32_t or int64_t.
#pragma once

#include <cstdint>

#include "facegeom/shading.h"

namespace facegeom {
namespace cpu {

// Fixed point-chunk size of the reductions over points (gradients of SH
// coefficients, light, camera and shininess): per-chunk partials are summed in
// chunk order, so results do not depend on the number of threads.
constexpr int64_t kShadingChunk = 1024;

// Vertex -> incident-corner lists in CSR form: the corners of vertex v are
// entries[offsets[v] .. offsets[v + 1]), each face * 3 + corner, in increasing
// order (a stable counting sort). offsets has V + 1 entries, entries 3 F.
// Returns -1, or the flat index into faces of the first index outside [0, V)
// (then offsets/entries are unspecified).
template <typename I>
int64_t build_vertex_corners(int64_t num_vertices, int64_t num_faces, const I* faces,
                             int64_t* offsets, int64_t* entries);

// out [B, V, 3]: unit area-weighted normals (zero where the sum is zero);
// inv_len [B, V]: 1 / |sum| (0 where the sum is zero), kept for the reverse
// pass. face_normals is an [F, 3] scratch buffer.
template <typename T, typename I>
void vertex_normals_forward(int64_t batch, int64_t num_vertices, int64_t num_faces,
                            const T* vertices, const I* faces, const int64_t* offsets,
                            const int64_t* entries, T* face_normals, T* out, T* inv_len);
// Scatter-free reverse from the forward's normals and inv_len: gathers per
// vertex through the CSR lists, so the result is deterministic. face_scratch
// is [F, 9], vertex_scratch [V, 3].
template <typename T, typename I>
void vertex_normals_backward(int64_t batch, int64_t num_vertices, int64_t num_faces,
                             const T* vertices, const I* faces, const int64_t* offsets,
                             const int64_t* entries, const T* normals, const T* inv_len,
                             const T* grad_out, T* face_scratch, T* vertex_scratch,
                             T* grad_vertices);

template <typename T>
void sh_basis_forward(int64_t n, const shading::ShTable<T>& table, const T* normals, T* basis);
template <typename T>
void sh_basis_backward(int64_t n, const shading::ShTable<T>& table, const T* normals, const T* grad_basis,
                       T* grad_normals);

// normals, albedo, out [B, N, 3]; coeffs [B, 9, 3].
template <typename T>
void sh_shading_forward(int64_t batch, int64_t num_points, const shading::ShTable<T>& table,
                        const T* normals, const T* albedo, const T* coeffs, T* out);
// Null outputs are skipped.
template <typename T>
void sh_shading_backward(int64_t batch, int64_t num_points, const shading::ShTable<T>& table,
                         const T* normals, const T* albedo, const T* coeffs, const T* grad_out,
                         T* grad_normals, T* grad_albedo, T* grad_coeffs);

// normals, points, out [B, N, 3]; light, camera [B, 3]; albedo [B, N, C]
// with C = albedo_channels (1 or 3); shininess [B].
template <typename T>
void blinn_phong_forward(int64_t batch, int64_t num_points, const T* normals, const T* points,
                         const T* light, const T* camera, const T* albedo,
                         int64_t albedo_channels, const T* shininess, T* out);
// Null outputs are skipped; grad_albedo has albedo's layout.
template <typename T>
void blinn_phong_backward(int64_t batch, int64_t num_points, const T* normals, const T* points,
                          const T* light, const T* camera, const T* albedo,
                          int64_t albedo_channels, const T* shininess, const T* grad_out,
                          T* grad_normals, T* grad_points, T* grad_light, T* grad_camera,
                          T* grad_albedo, T* grad_shininess);

}  // namespace cpu
}  // namespace facegeom
