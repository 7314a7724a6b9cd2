// CUDA texture sampling (see texture_cuda.h): one thread per pixel or texel over the
// shared per-pixel math of facegeom/texture.h, as on the CPU; texture gradients by
// atomicAdd. No torch headers: the bindings own allocation, checks and streams.
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/launch.cuh"
#include "cuda/texture_cuda.h"
#include "facegeom/texture.h"

namespace facegeom {
namespace cuda {
namespace {

template <typename T>
struct AtomicAdd {
  T* const* grad_tex;
  __device__ void operator()(int level, int64_t element, T value) const {
    atomic_add(grad_tex[level] + element, value);
  }
};

template <typename T>
__global__ void texture_forward_kernel(const texture::TextureParams<T> p) {
  for (int64_t pixel = first_index(); pixel < p.batch * p.height * p.width; pixel += grid_stride())
    texture::texture_pixel_forward(p, pixel);
}

template <typename T>
__global__ void texture_backward_kernel(const texture::TextureParams<T> p) {
  AtomicAdd<T> add{p.grad_tex};
  for (int64_t pixel = first_index(); pixel < p.batch * p.height * p.width; pixel += grid_stride())
    texture::texture_pixel_backward(p, pixel, true, true, add);
}

template <typename T>
__global__ void texture_mip_build_kernel(const T* in, int64_t planes, int64_t in_h, int64_t in_w, T* out,
                                         int64_t out_h, int64_t out_w, int64_t channels) {
  for (int64_t i = first_index(); i < planes * out_h * out_w; i += grid_stride()) {
    const int64_t x = i % out_w, y = (i / out_w) % out_h, plane = i / (out_w * out_h);
    texture::mip_build_texel(in, in_h, in_w, out, out_h, out_w, plane, y, x, channels);
  }
}

template <typename T>
__global__ void texture_mip_pull_kernel(const texture::LevelPointers<T> grad_levels, int max_level, int64_t planes, int64_t base_h,
                                        int64_t base_w, int64_t channels, T* grad_base) {
  for (int64_t i = first_index(); i < planes * base_h * base_w; i += grid_stride()) {
    const int64_t x = i % base_w, y = (i / base_w) % base_h, plane = i / (base_w * base_h);
    texture::mip_pull_texel(grad_levels.level, max_level, base_h, base_w, plane, y, x, channels,
                            grad_base + i * channels);
  }
}

}  // namespace

template <typename T>
void texture_forward(const texture::TextureParams<T>& p, void* stream) {
  texture_forward_kernel<T><<<blocks_for(p.batch * p.height * p.width), kThreadsPerBlock, 0,
                              static_cast<cudaStream_t>(stream)>>>(p);
  check_launch("texture_forward");
}

template <typename T>
void texture_backward(const texture::TextureParams<T>& p, void* stream) {
  // The level pointers travel by value inside p; the functor reads them from there.
  texture_backward_kernel<T><<<blocks_for(p.batch * p.height * p.width), kThreadsPerBlock, 0,
                               static_cast<cudaStream_t>(stream)>>>(p);
  check_launch("texture_backward");
}

template <typename T>
void texture_mip_build(const T* in, int64_t planes, int64_t in_h, int64_t in_w, T* out, int64_t out_h,
                       int64_t out_w, int64_t channels, void* stream) {
  texture_mip_build_kernel<T><<<blocks_for(planes * out_h * out_w), kThreadsPerBlock, 0,
                                static_cast<cudaStream_t>(stream)>>>(in, planes, in_h, in_w, out, out_h,
                                                                     out_w, channels);
  check_launch("texture_mip_build");
}

template <typename T>
void texture_mip_pull(const texture::LevelPointers<T>& grad_levels, int max_level, int64_t planes, int64_t base_h, int64_t base_w,
                      int64_t channels, T* grad_base, void* stream) {
  texture_mip_pull_kernel<T><<<blocks_for(planes * base_h * base_w), kThreadsPerBlock, 0,
                               static_cast<cudaStream_t>(stream)>>>(grad_levels, max_level, planes, base_h,
                                                                    base_w, channels, grad_base);
  check_launch("texture_mip_pull");
}

#define FACEGEOM_TEXTURE_CUDA(T)                                                                   \
  template void texture_forward<T>(const texture::TextureParams<T>&, void*);                       \
  template void texture_backward<T>(const texture::TextureParams<T>&, void*);                      \
  template void texture_mip_build<T>(const T*, int64_t, int64_t, int64_t, T*, int64_t, int64_t,    \
                                     int64_t, void*);                                              \
  template void texture_mip_pull<T>(const texture::LevelPointers<T>&, int, int64_t, int64_t, int64_t, int64_t, T*, void*);
FACEGEOM_TEXTURE_CUDA(float)
FACEGEOM_TEXTURE_CUDA(double)
#undef FACEGEOM_TEXTURE_CUDA

}  // namespace cuda
}  // namespace facegeom
