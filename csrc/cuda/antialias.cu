// CUDA launchers of antialias (see antialias_cuda.h). The math is the shared
// FG_HD code in facegeom/antialias.h, as on the CPU; these kernels only map one
// thread onto one pixel, walking the pixels grid-stride with int64_t indices.
// The forward pass and grad_color are gathers (each output written by one
// thread: deterministic); grad_pos is scattered with atomics.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "cuda/antialias_cuda.h"
#include "cuda/launch.cuh"
#include "facegeom/antialias.h"
#include "facegeom/common.h"

namespace facegeom {
namespace cuda {
namespace {

template <typename T>
__global__ void antialias_forward_kernel(int64_t count, aa::AntialiasProblem<T> problem, T* out) {
  const int64_t pixels_per_image = problem.height * problem.width;
  for (int64_t i = first_index(); i < count; i += grid_stride()) {
    const int64_t b = i / pixels_per_image, rest = i % pixels_per_image;
    aa::aa_pixel_forward(problem, b, rest / problem.width, rest % problem.width, out);
  }
}

template <typename T>
__global__ void antialias_grad_color_kernel(int64_t count, aa::AntialiasProblem<T> problem,
                                            const T* grad_out, T* grad_color) {
  const int64_t pixels_per_image = problem.height * problem.width;
  for (int64_t i = first_index(); i < count; i += grid_stride()) {
    const int64_t b = i / pixels_per_image, rest = i % pixels_per_image;
    aa::aa_pixel_grad_color(problem, grad_out, b, rest / problem.width, rest % problem.width,
                        grad_color);
  }
}

// One thread per pixel, for the pairs it is the first pixel of (right, up).
template <typename T>
__global__ void antialias_grad_pos_kernel(int64_t count, aa::AntialiasProblem<T> problem,
                                          const T* grad_out, T* grad_pos) {
  const int64_t pixels_per_image = problem.height * problem.width;
  for (int64_t i = first_index(); i < count; i += grid_stride()) {
    const int64_t b = i / pixels_per_image, rest = i % pixels_per_image;
    const int64_t y = rest / problem.width, x = rest % problem.width;
    T* grad_image = grad_pos + problem.pos_batch_stride * b;
    for (int direction = 0; direction < 2; ++direction) {
      const bool horizontal = direction == 0;
      if (horizontal ? x + 1 >= problem.width : y + 1 >= problem.height) continue;
      int64_t vi, vj;
      T gi[3], gj[3];
      if (!aa::aa_pair_grad_pos(problem, grad_out, b, y, x, horizontal, &vi, &vj, gi, gj)) continue;
      atomic_add(grad_image + 4 * vi, gi[0]);
      atomic_add(grad_image + 4 * vi + 1, gi[1]);
      atomic_add(grad_image + 4 * vi + 3, gi[2]);
      atomic_add(grad_image + 4 * vj, gj[0]);
      atomic_add(grad_image + 4 * vj + 1, gj[1]);
      atomic_add(grad_image + 4 * vj + 3, gj[2]);
    }
  }
}

}  // namespace

template <typename T>
void antialias_forward(int64_t batch, const aa::AntialiasProblem<T>& problem, T* out,
                       void* stream) {
  launch("antialias_forward_kernel", antialias_forward_kernel<T>,
         batch * problem.height * problem.width, stream, problem, out);
}

template <typename T>
void antialias_backward(int64_t batch, const aa::AntialiasProblem<T>& problem, const T* grad_out,
                        T* grad_color, T* grad_pos, void* stream) {
  const int64_t pixels = batch * problem.height * problem.width;
  if (grad_color != nullptr) {
    launch("antialias_grad_color_kernel", antialias_grad_color_kernel<T>, pixels, stream, problem,
           grad_out, grad_color);
  }
  if (grad_pos != nullptr) {
    launch("antialias_grad_pos_kernel", antialias_grad_pos_kernel<T>, pixels, stream, problem,
           grad_out, grad_pos);
  }
}

#define FACEGEOM_INSTANTIATE_AA_CUDA(T)                                                      \
  template void antialias_forward<T>(int64_t, const aa::AntialiasProblem<T>&, T*, void*); \
  template void antialias_backward<T>(int64_t, const aa::AntialiasProblem<T>&, const T*, T*, \
                                      T*, void*);
FACEGEOM_INSTANTIATE_AA_CUDA(float)
FACEGEOM_INSTANTIATE_AA_CUDA(double)
#undef FACEGEOM_INSTANTIATE_AA_CUDA

}  // namespace cuda
}  // namespace facegeom
