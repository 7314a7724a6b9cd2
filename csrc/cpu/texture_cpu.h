// CPU launchers of texture (see facegeom/texture.h for the parameters); the
// bindings allocate, check and fill the struct. T is float or double.
#pragma once

#include <cstdint>

#include "facegeom/texture.h"

namespace facegeom {
namespace cpu {

// out from tex (and its mip levels), uv (, uv_da, bias): one parallel loop over pixels.
template <typename T>
void texture_forward(const texture::TextureParams<T>& p);

// grad_uv, grad_uv_da, grad_bias (those not null) and each pixel's texture terms in a
// parallel loop over pixels; grad_tex[0..max_level] (zeroed by the caller) gets the
// terms summed in float64 in pixel order: independent of the thread count.
template <typename T>
void texture_backward(const texture::TextureParams<T>& p);

// One mip level: out [planes, out_h, out_w, C] from in [planes, in_h, in_w, C].
template <typename T>
void texture_mip_build(const T* in, int64_t planes, int64_t in_h, int64_t in_w, T* out, int64_t out_h,
                       int64_t out_w, int64_t channels);

// Adds the gradients of mip levels 1..max_level (grad_levels.level[l]) into grad_base
// [planes, base_h, base_w, C]: the adjoint of the builds.
template <typename T>
void texture_mip_pull(const texture::LevelPointers<T>& grad_levels, int max_level, int64_t planes, int64_t base_h, int64_t base_w,
                      int64_t channels, T* grad_base);

}  // namespace cpu
}  // namespace facegeom
