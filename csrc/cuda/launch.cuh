// Launch plumbing shared by the CUDA back ends. Included by .cu files only:
// CUDA runtime headers, no torch, so `nvcc -c` checks it without a GPU.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace facegeom {
namespace cuda {

constexpr int kThreadsPerBlock = 256;  // a multiple of the warp size: warps stay whole
// The largest grid.x a device accepts; bigger ranges are covered by grid-stride loops.
constexpr int64_t kMaxBlocks = 2147483647;

__device__ inline int64_t first_index() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}

__device__ inline int64_t grid_stride() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

template <typename T>
__device__ inline T quiet_nan();
template <>
__device__ inline float quiet_nan<float>() {
  return __int_as_float(0x7fffffff);
}
template <>
__device__ inline double quiet_nan<double>() {
  return __longlong_as_double(0x7fffffffffffffffLL);
}

__device__ inline void atomic_add(float* address, float value) { atomicAdd(address, value); }

__device__ inline void atomic_add(double* address, double value) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 600
  atomicAdd(address, value);
#else
  // Devices before sm_60 have no native double atomicAdd.
  auto* bits = reinterpret_cast<unsigned long long*>(address);
  unsigned long long old = *bits, assumed;
  do {
    assumed = old;
    old = atomicCAS(bits, assumed,
                    __double_as_longlong(value + __longlong_as_double(assumed)));
  } while (assumed != old);
#endif
}

// Blocks for `count` threads; at least one, because CUDA rejects an empty
// grid (the kernels' index checks or grid-stride loops then do nothing).
inline unsigned int blocks_for(int64_t count, int threads = kThreadsPerBlock) {
  return static_cast<unsigned int>(
      std::max<int64_t>(1, std::min((count + threads - 1) / threads, kMaxBlocks)));
}

// Turns a launch failure into an exception naming the kernel.
inline void check_launch(const char* kernel_name) {
  const cudaError_t error = cudaGetLastError();
  if (error != cudaSuccess) {
    throw std::runtime_error(std::string("facegeom: launching ") + kernel_name +
                             " failed: " + cudaGetErrorString(error));
  }
}

// Launches kernel(count, args...) with one thread per item (none when count is
// 0) and checks the launch.
template <typename... KernelArgs, typename... Args>
void launch(const char* kernel_name, void (*kernel)(int64_t, KernelArgs...), int64_t count,
            void* stream, Args... args) {
  if (count <= 0) return;
  kernel<<<blocks_for(count), kThreadsPerBlock, 0, static_cast<cudaStream_t>(stream)>>>(count,
                                                                                       args...);
  check_launch(kernel_name);
}

}  // namespace cuda
}  // namespace facegeom
