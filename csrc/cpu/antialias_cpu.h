// CPU launchers of antialias: plain pointers to contiguous row-major buffers in
// aa::AntialiasProblem; the bindings allocate, check and fill it. T is float or double.
#pragma once

#include <cstdint>

#include "facegeom/antialias.h"

namespace facegeom {
namespace cpu {

// out [B, H, W, C] from the batch of B images described by problem (color,
// rast, pos, tri, topology: see aa::AntialiasProblem).
template <typename T>
void antialias_forward(int64_t batch, const aa::AntialiasProblem<T>& problem, T* out);

// grad_color (like color) and grad_pos (like pos, zero-initialised by the
// caller) may be null when not wanted. Deterministic: grad_color is gathered
// per pixel; pos contributions are collected per fixed block of rows and
// added in block order, whatever the number of threads.
template <typename T>
void antialias_backward(int64_t batch, const aa::AntialiasProblem<T>& problem, const T* grad_out,
                        T* grad_color, T* grad_pos);

// topology [F, 3]: the other triangle sharing edge k of triangle f, or -1 (a
// boundary or non-manifold edge, or a degenerate triangle), as
// facegeom.ops.reference.antialias_topology. One sort of the 3F edges.
void antialias_topology(int64_t num_triangles, const int32_t* tri, int32_t* topology);

}  // namespace cpu
}  // namespace facegeom
