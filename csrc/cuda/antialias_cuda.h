// CUDA launchers of antialias. Plain pointers and a cudaStream_t passed as
// void*, so this header needs neither torch nor CUDA. Layouts as in
// cpu/antialias_cpu.h.
#pragma once

#include <cstdint>

#include "facegeom/antialias.h"

namespace facegeom {
namespace cuda {

template <typename T>
void antialias_forward(int64_t batch, const aa::AntialiasProblem<T>& problem, T* out,
                       void* stream);

// grad_color is gathered (deterministic); grad_pos (zero-initialised by the
// caller) is accumulated with atomics. Null outputs are skipped.
template <typename T>
void antialias_backward(int64_t batch, const aa::AntialiasProblem<T>& problem, const T* grad_out,
                        T* grad_color, T* grad_pos, void* stream);

}  // namespace cuda
}  // namespace facegeom
