// CUDA launchers of interpolate (see facegeom/interpolate.h for the
// parameters and cpu/interpolate_cpu.h for the contract). Plain pointers and a
// cudaStream_t passed as void*, so this header needs neither torch nor CUDA.
#pragma once

#include "facegeom/interpolate.h"

namespace facegeom {
namespace cuda {

// One thread per pixel. Pixels naming a triangle id outside [0, F) get NaN.
template <typename T>
void interpolate_forward(const raster::InterpolateParams<T>& p, void* stream);

// One thread per pixel, atomically adding into grad_attr (zeroed by the caller).
template <typename T>
void interpolate_backward(const raster::InterpolateParams<T>& p, void* stream);

}  // namespace cuda
}  // namespace facegeom
