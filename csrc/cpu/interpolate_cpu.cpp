// Interpolate on the CPU: one parallel loop over pixels for the forward and
// for the per-pixel gradients; the gradient w.r.t. attr is scattered in pixel
// order (deterministic). The per-pixel forward is the shared
// raster::interpolate_pixel (facegeom/interpolate.h), as on CUDA.
#include "cpu/interpolate_cpu.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "facegeom/interpolate.h"
#include "facegeom/rasterize.h"

namespace facegeom {
namespace cpu {
namespace {

template <typename T>
int64_t pixel_triangle(const T* rast_pixel, int64_t num_triangles) {
  return raster::stored_triangle(static_cast<double>(rast_pixel[3]), num_triangles);
}

}  // namespace

template <typename T>
void interpolate_forward(const raster::InterpolateParams<T>& p) {
  const int64_t pixels = p.height * p.width;
  at::parallel_for(0, p.batch * pixels, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t pixel = begin; pixel < end; ++pixel) {
      const T* r = p.rast + 4 * pixel;
      const bool with_da = p.out_da != nullptr;
      raster::interpolate_pixel(r, pixel_triangle(r, p.num_triangles),
                                p.attr + (pixel / pixels) * p.attr_batch_stride, p.tri, p.channels,
                                with_da ? p.rast_db + 4 * pixel : nullptr, p.diff_channels,
                                p.num_diff, std::numeric_limits<T>::quiet_NaN(),
                                p.out + p.channels * pixel,
                                with_da ? p.out_da + 2 * p.num_diff * pixel : nullptr);
    }
  });
}

template <typename T>
void interpolate_backward(const raster::InterpolateParams<T>& p) {
  const int64_t pixels = p.height * p.width;
  // Gradients w.r.t. rast and rast_db: independent per pixel.
  at::parallel_for(0, p.batch * pixels, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t pixel = begin; pixel < end; ++pixel) {
      T* gr = p.grad_rast + 4 * pixel;
      T* gdb = p.grad_rast_db == nullptr ? nullptr : p.grad_rast_db + 4 * pixel;
      std::fill(gr, gr + 4, T(0));
      if (gdb != nullptr) std::fill(gdb, gdb + 4, T(0));
      const int64_t id = pixel_triangle(p.rast + 4 * pixel, p.num_triangles);
      if (id < 0) continue;
      const T* a = p.attr + (pixel / pixels) * p.attr_batch_stride;
      const T* a0 = a + p.channels * p.tri[3 * id];
      const T* a1 = a + p.channels * p.tri[3 * id + 1];
      const T* a2 = a + p.channels * p.tri[3 * id + 2];
      const T* g = p.grad_out + p.channels * pixel;
      for (int64_t c = 0; c < p.channels; ++c) {
        gr[0] += g[c] * (a0[c] - a2[c]);
        gr[1] += g[c] * (a1[c] - a2[c]);
      }
      if (gdb == nullptr || p.grad_da == nullptr) continue;
      const T* gda = p.grad_da + 2 * p.num_diff * pixel;
      for (int64_t j = 0; j < p.num_diff; ++j) {
        const int64_t c = p.diff_channels[j];
        const T d0 = a0[c] - a2[c], d1 = a1[c] - a2[c];
        gdb[0] += gda[2 * j] * d0;
        gdb[1] += gda[2 * j + 1] * d0;
        gdb[2] += gda[2 * j] * d1;
        gdb[3] += gda[2 * j + 1] * d1;
      }
    }
  });
  // Gradient w.r.t. attr: scattered in pixel order (deterministic), summed in
  // float64 over every pixel that reads a vertex.
  const bool shared = p.attr_batch_stride == 0;
  std::vector<double> total((shared ? 1 : p.batch) * p.num_vertices * p.channels, 0.0);
  for (int64_t pixel = 0; pixel < p.batch * pixels; ++pixel) {
    const T* r = p.rast + 4 * pixel;
    const int64_t id = pixel_triangle(r, p.num_triangles);
    if (id < 0) continue;
    double* acc = total.data() + (shared ? 0 : (pixel / pixels) * p.num_vertices * p.channels);
    double* g0 = acc + p.channels * p.tri[3 * id];
    double* g1 = acc + p.channels * p.tri[3 * id + 1];
    double* g2 = acc + p.channels * p.tri[3 * id + 2];
    const T* g = p.grad_out + p.channels * pixel;
    const double u = r[0], v = r[1], w = 1.0 - u - v;
    for (int64_t c = 0; c < p.channels; ++c) {
      g0[c] += u * g[c];
      g1[c] += v * g[c];
      g2[c] += w * g[c];
    }
    if (p.grad_da == nullptr || p.num_diff == 0) continue;
    const T* db = p.rast_db + 4 * pixel;
    const T* gda = p.grad_da + 2 * p.num_diff * pixel;
    for (int64_t j = 0; j < p.num_diff; ++j) {
      const int64_t c = p.diff_channels[j];
      const double along_u = gda[2 * j] * db[0] + gda[2 * j + 1] * db[1];
      const double along_v = gda[2 * j] * db[2] + gda[2 * j + 1] * db[3];
      g0[c] += along_u;
      g1[c] += along_v;
      g2[c] -= along_u + along_v;
    }
  }
  for (size_t i = 0; i < total.size(); ++i) p.grad_attr[i] = static_cast<T>(total[i]);
}

template void interpolate_forward<float>(const raster::InterpolateParams<float>&);
template void interpolate_forward<double>(const raster::InterpolateParams<double>&);
template void interpolate_backward<float>(const raster::InterpolateParams<float>&);
template void interpolate_backward<double>(const raster::InterpolateParams<double>&);

}  // namespace cpu
}  // namespace facegeom
