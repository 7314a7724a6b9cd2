// Device dispatch shared by the bindings: one wrapper per op allocates and
// checks, then calls the CPU or CUDA launcher for the tensor's device.
#pragma once

#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#ifdef FACEGEOM_WITH_CUDA
#include <c10/cuda/CUDAStream.h>
// Variadic, so a call with template arguments such as f<T, I>(...) passes through whole.
#define FACEGEOM_CUDA_LAUNCH(...) __VA_ARGS__
#else
#define FACEGEOM_CUDA_LAUNCH(...) \
  TORCH_CHECK(false, "facegeom was built without CUDA support; rebuild with FACEGEOM_CUDA=1")
#endif

namespace facegeom {

#ifdef FACEGEOM_WITH_CUDA
inline void* current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }
#endif

template <typename T>
T* ptr_or_null(const at::Tensor& t) {
  return t.defined() && t.numel() > 0 ? t.data_ptr<T>() : nullptr;
}

// Gradients that the caller did not ask for come back as empty tensors
// (custom-op schemas cannot return None).
inline at::Tensor empty_grad(const at::Tensor& like) { return at::empty({0}, like.options()); }

}  // namespace facegeom
