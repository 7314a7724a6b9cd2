// CUDA interpolate (see interpolate_cuda.h): one thread per pixel, forward
// through the shared raster::interpolate_pixel (facegeom/interpolate.h), as on
// the CPU; the backward scatters into attr's gradient with atomicAdd. No torch
// headers: the bindings own allocation, checks and streams.
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/interpolate_cuda.h"
#include "cuda/launch.cuh"
#include "facegeom/interpolate.h"
#include "facegeom/rasterize.h"

namespace facegeom {
namespace cuda {
namespace {

template <typename T>
__global__ void interpolate_forward_kernel(const raster::InterpolateParams<T> p) {
  const int64_t pixels = p.height * p.width;
  for (int64_t pixel = first_index(); pixel < p.batch * pixels; pixel += grid_stride()) {
    const T* r = p.rast + 4 * pixel;
    const int64_t id = raster::stored_triangle(static_cast<double>(r[3]), p.num_triangles);
    const bool with_da = p.out_da != nullptr;
    raster::interpolate_pixel(r, id, p.attr + (pixel / pixels) * p.attr_batch_stride, p.tri,
                              p.channels, with_da ? p.rast_db + 4 * pixel : nullptr,
                              p.diff_channels, p.num_diff, quiet_nan<T>(),
                              p.out + p.channels * pixel,
                              with_da ? p.out_da + 2 * p.num_diff * pixel : nullptr);
  }
}

template <typename T>
__global__ void interpolate_backward_kernel(const raster::InterpolateParams<T> p) {
  const int64_t pixels = p.height * p.width;
  for (int64_t pixel = first_index(); pixel < p.batch * pixels; pixel += grid_stride()) {
    T* gr = p.grad_rast + 4 * pixel;
    T* gdb = p.grad_rast_db == nullptr ? nullptr : p.grad_rast_db + 4 * pixel;
    for (int c = 0; c < 4; ++c) gr[c] = T(0);
    if (gdb != nullptr)
      for (int c = 0; c < 4; ++c) gdb[c] = T(0);
    const T* r = p.rast + 4 * pixel;
    const int64_t id = raster::stored_triangle(static_cast<double>(r[3]), p.num_triangles);
    if (id < 0) continue;
    const int64_t image_offset = (pixel / pixels) * p.attr_batch_stride;
    const T* a = p.attr + image_offset;
    T* ga = p.grad_attr + image_offset;
    const int64_t i0 = p.channels * p.tri[3 * id], i1 = p.channels * p.tri[3 * id + 1],
                  i2 = p.channels * p.tri[3 * id + 2];
    const T* g = p.grad_out + p.channels * pixel;
    const T u = r[0], v = r[1], w = T(1) - u - v;
    for (int64_t c = 0; c < p.channels; ++c) {
      gr[0] += g[c] * (a[i0 + c] - a[i2 + c]);
      gr[1] += g[c] * (a[i1 + c] - a[i2 + c]);
      atomicAdd(ga + i0 + c, u * g[c]);
      atomicAdd(ga + i1 + c, v * g[c]);
      atomicAdd(ga + i2 + c, w * g[c]);
    }
    if (gdb == nullptr || p.grad_da == nullptr) continue;
    const T* db = p.rast_db + 4 * pixel;
    const T* gda = p.grad_da + 2 * p.num_diff * pixel;
    for (int64_t j = 0; j < p.num_diff; ++j) {
      const int64_t c = p.diff_channels[j];
      const T d0 = a[i0 + c] - a[i2 + c], d1 = a[i1 + c] - a[i2 + c];
      gdb[0] += gda[2 * j] * d0;
      gdb[1] += gda[2 * j + 1] * d0;
      gdb[2] += gda[2 * j] * d1;
      gdb[3] += gda[2 * j + 1] * d1;
      const T along_u = gda[2 * j] * db[0] + gda[2 * j + 1] * db[1];
      const T along_v = gda[2 * j] * db[2] + gda[2 * j + 1] * db[3];
      atomicAdd(ga + i0 + c, along_u);
      atomicAdd(ga + i1 + c, along_v);
      atomicAdd(ga + i2 + c, -(along_u + along_v));
    }
  }
}

}  // namespace

template <typename T>
void interpolate_forward(const raster::InterpolateParams<T>& p, void* stream) {
  interpolate_forward_kernel<T><<<blocks_for(p.batch * p.height * p.width), kThreadsPerBlock, 0,
                                  static_cast<cudaStream_t>(stream)>>>(p);
  check_launch("interpolate_forward");
}

template <typename T>
void interpolate_backward(const raster::InterpolateParams<T>& p, void* stream) {
  interpolate_backward_kernel<T><<<blocks_for(p.batch * p.height * p.width), kThreadsPerBlock, 0,
                                   static_cast<cudaStream_t>(stream)>>>(p);
  check_launch("interpolate_backward");
}

template void interpolate_forward<float>(const raster::InterpolateParams<float>&, void*);
template void interpolate_forward<double>(const raster::InterpolateParams<double>&, void*);
template void interpolate_backward<float>(const raster::InterpolateParams<float>&, void*);
template void interpolate_backward<double>(const raster::InterpolateParams<double>&, void*);

}  // namespace cuda
}  // namespace facegeom
