// CPU launchers of antialias: plain pointers to contiguous row-major buffers;
// the bindings allocate and check. T is float or double.
#pragma once

#include <cstdint>

namespace facegeom {
namespace cpu {

// color, out [B, H, W, C]; rast [B, H, W, 4]; pos [B, V, 4] (pos_batch_stride
// = V * 4) or [V, 4] shared by the batch (stride 0); tri, topology [F, 3].
template <typename T>
void antialias_forward(int64_t batch, int64_t height, int64_t width, int64_t channels,
                       const T* color, const T* rast, const T* pos, int64_t pos_batch_stride,
                       int64_t num_vertices, const int32_t* tri, const int32_t* topology,
                       int64_t num_triangles, T* out);

// grad_color (like color) and grad_pos (like pos, zero-initialised by the
// caller) may be null when not wanted. Deterministic: grad_color is gathered
// per pixel; pos contributions are collected per fixed block of rows and
// added in block order, whatever the number of threads.
template <typename T>
void antialias_backward(int64_t batch, int64_t height, int64_t width, int64_t channels,
                        const T* grad_out, const T* color, const T* rast, const T* pos,
                        int64_t pos_batch_stride, int64_t num_vertices, const int32_t* tri,
                        const int32_t* topology, int64_t num_triangles, T* grad_color,
                        T* grad_pos);

// topology [F, 3]: the other triangle sharing edge k of triangle f, or -1 (a
// boundary or non-manifold edge, or a degenerate triangle), as
// facegeom.ops.reference.antialias_topology. One sort of the 3F edges.
void antialias_topology(int64_t num_triangles, const int32_t* tri, int32_t* topology);

}  // namespace cpu
}  // namespace facegeom
