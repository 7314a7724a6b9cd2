// CUDA launchers of texture (see facegeom/texture.h for the parameters and
// cpu/texture_cpu.h for the contract). Plain pointers and a cudaStream_t passed as
// void*, so this header needs neither torch nor CUDA.
#pragma once

#include <cstdint>

#include "facegeom/texture.h"

namespace facegeom {
namespace cuda {

// One thread per pixel.
template <typename T>
void texture_forward(const texture::TextureParams<T>& p, void* stream);

// One thread per pixel; texture gradients (zeroed by the caller) by atomicAdd.
template <typename T>
void texture_backward(const texture::TextureParams<T>& p, void* stream);

// One thread per output texel.
template <typename T>
void texture_mip_build(const T* in, int64_t planes, int64_t in_h, int64_t in_w, T* out, int64_t out_h,
                       int64_t out_w, int64_t channels, void* stream);

// One thread per base texel.
template <typename T>
void texture_mip_pull(const texture::LevelPointers<T>& grad_levels, int max_level, int64_t planes, int64_t base_h, int64_t base_w,
                      int64_t channels, T* grad_base, void* stream);

}  // namespace cuda
}  // namespace facegeom
