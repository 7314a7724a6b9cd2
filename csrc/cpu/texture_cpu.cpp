// Texture sampling on the CPU: parallel loops over pixels (forward, coordinate
// gradients) and texels (mip levels); the texture gradient is scattered serially in
// pixel order into float64 sums (deterministic). The per-pixel math is the shared
// facegeom/texture.h, as on CUDA.
#include "cpu/texture_cpu.h"

#include <ATen/Parallel.h>

#include <vector>

namespace facegeom {
namespace cpu {

template <typename T>
void texture_forward(const texture::TextureParams<T>& p) {
  at::parallel_for(0, p.batch * p.height * p.width, 256, [&](int64_t begin, int64_t end) {
    for (int64_t pixel = begin; pixel < end; ++pixel) texture::texture_pixel_forward(p, pixel);
  });
}

template <typename T>
void texture_backward(const texture::TextureParams<T>& p) {
  const int64_t pixels = p.batch * p.height * p.width;
  auto no_texels = [](int, int64_t, T) {};
  at::parallel_for(0, pixels, 256, [&](int64_t begin, int64_t end) {
    for (int64_t pixel = begin; pixel < end; ++pixel)
      texture::texture_pixel_backward(p, pixel, false, true, no_texels);
  });
  const int64_t planes = p.tex_batch * (texture::is_cube(p.boundary) ? 6 : 1);
  std::vector<std::vector<double>> sums(p.max_level + 1);
  for (int level = 0; level <= p.max_level; ++level)
    sums[level].assign(planes * texture::level_extent(p.tex_height, level) *
                           texture::level_extent(p.tex_width, level) * p.channels,
                       0.0);
  auto add = [&](int level, int64_t element, T value) { sums[level][element] += value; };
  for (int64_t pixel = 0; pixel < pixels; ++pixel) texture::texture_pixel_backward(p, pixel, true, false, add);
  for (int level = 0; level <= p.max_level; ++level) {
    T* g = p.grad_tex[level];
    const std::vector<double>& s = sums[level];
    at::parallel_for(0, static_cast<int64_t>(s.size()), 4096, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) g[i] += static_cast<T>(s[i]);
    });
  }
}

template <typename T>
void texture_mip_build(const T* in, int64_t planes, int64_t in_h, int64_t in_w, T* out, int64_t out_h,
                       int64_t out_w, int64_t channels) {
  at::parallel_for(0, planes * out_h * out_w, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t x = i % out_w, y = (i / out_w) % out_h, plane = i / (out_w * out_h);
      texture::mip_build_texel(in, in_h, in_w, out, out_h, out_w, plane, y, x, channels);
    }
  });
}

template <typename T>
void texture_mip_pull(const texture::LevelPointers<T>& grad_levels, int max_level, int64_t planes, int64_t base_h, int64_t base_w,
                      int64_t channels, T* grad_base) {
  at::parallel_for(0, planes * base_h * base_w, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t x = i % base_w, y = (i / base_w) % base_h, plane = i / (base_w * base_h);
      texture::mip_pull_texel(grad_levels.level, max_level, base_h, base_w, plane, y, x, channels,
                              grad_base + i * channels);
    }
  });
}

#define FACEGEOM_TEXTURE_CPU(T)                                                                          \
  template void texture_forward<T>(const texture::TextureParams<T>&);                                    \
  template void texture_backward<T>(const texture::TextureParams<T>&);                                   \
  template void texture_mip_build<T>(const T*, int64_t, int64_t, int64_t, T*, int64_t, int64_t, int64_t); \
  template void texture_mip_pull<T>(const texture::LevelPointers<T>&, int, int64_t, int64_t, int64_t, int64_t, T*);
FACEGEOM_TEXTURE_CPU(float)
FACEGEOM_TEXTURE_CPU(double)
#undef FACEGEOM_TEXTURE_CPU

}  // namespace cpu
}  // namespace facegeom
