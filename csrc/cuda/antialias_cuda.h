// CUDA launchers of antialias. Plain pointers and a cudaStream_t passed as
// void*, so this header needs neither torch nor CUDA. Layouts as in
// cpu/antialias_cpu.h.
#pragma once

#include <cstdint>

namespace facegeom {
namespace cuda {

template <typename T>
void antialias_forward(int64_t batch, int64_t height, int64_t width, int64_t channels,
                       const T* color, const T* rast, const T* pos, int64_t pos_batch_stride,
                       int64_t num_vertices, const int32_t* tri, const int32_t* topology,
                       int64_t num_triangles, T* out, void* stream);

// grad_color is gathered (deterministic); grad_pos (zero-initialised by the
// caller) is accumulated with atomics. Null outputs are skipped.
template <typename T>
void antialias_backward(int64_t batch, int64_t height, int64_t width, int64_t channels,
                        const T* grad_out, const T* color, const T* rast, const T* pos,
                        int64_t pos_batch_stride, int64_t num_vertices, const int32_t* tri,
                        const int32_t* topology, int64_t num_triangles, T* grad_color,
                        T* grad_pos, void* stream);

}  // namespace cuda
}  // namespace facegeom
