// Texture sampling on the CPU: parallel loops over pixels (forward, gradients) and
// texels (mip levels); each pixel's texture-gradient terms are recorded in parallel
// and summed serially in pixel order into float64 (deterministic). The per-pixel math
// is the shared facegeom/texture.h, as on CUDA.
#include "cpu/texture_cpu.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace facegeom {
namespace cpu {

template <typename T>
void texture_forward(const texture::TextureParams<T>& p) {
  at::parallel_for(0, p.batch * p.height * p.width, 256, [&](int64_t begin, int64_t end) {
    for (int64_t pixel = begin; pixel < end; ++pixel) texture::texture_pixel_forward(p, pixel);
  });
}

// Records a pixel's texture-gradient terms (level, element, value) into its slot, for
// the in-order sum that follows.
template <typename T>
struct TermRecorder {
  int8_t* level;
  int64_t* element;
  double* value;
  int64_t count = 0;
  void operator()(int l, int64_t e, T v) {
    level[count] = static_cast<int8_t>(l);
    element[count] = e;
    value[count] = static_cast<double>(v);
    ++count;
  }
};

template <typename T>
void texture_backward(const texture::TextureParams<T>& p) {
  const int64_t pixels = p.batch * p.height * p.width;
  const int64_t planes = p.tex_batch * (texture::is_cube(p.boundary) ? 6 : 1);
  std::vector<std::vector<double>> sums(p.max_level + 1);
  for (int level = 0; level <= p.max_level; ++level)
    sums[level].assign(planes * texture::level_extent(p.tex_height, level) *
                           texture::level_extent(p.tex_width, level) * p.channels,
                       0.0);
  // Each pixel touches at most 4 texels on each of 2 levels, C channels each. Bands of
  // pixels: their terms are computed in parallel, then summed in pixel order (the
  // result does not depend on the thread count).
  const int64_t slot = 8 * p.channels;
  // (No larger than the pixel count: the buffers are value-initialised on every call.)
  const int64_t band = std::max<int64_t>(1, std::min(pixels, (int64_t{1} << 20) / slot));
  std::vector<int8_t> levels(band * slot);
  std::vector<int64_t> elements(band * slot), counts(band);
  std::vector<double> values(band * slot);
  for (int64_t first = 0; first < pixels; first += band) {
    const int64_t n = std::min(band, pixels - first);
    at::parallel_for(0, n, 256, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        TermRecorder<T> record{levels.data() + i * slot, elements.data() + i * slot, values.data() + i * slot};
        texture::texture_pixel_backward(p, first + i, true, true, record);
        counts[i] = record.count;
      }
    });
    for (int64_t i = 0; i < n; ++i)
      for (int64_t k = i * slot; k < i * slot + counts[i]; ++k) sums[levels[k]][elements[k]] += values[k];
  }
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
