// CUDA launchers of the blendshape / skinning family. Plain pointers and a
// cudaStream_t passed as void*, so this header needs neither torch nor CUDA.
#pragma once

#include <cstdint>

namespace facegeom {
namespace cuda {

template <typename T>
void rodrigues_forward(int64_t n, const T* axis_angle, T* rot, void* stream);
template <typename T>
void rodrigues_backward(int64_t n, const T* axis_angle, const T* grad_rot, T* grad_axis_angle,
                        void* stream);

// world (and grad_world) are [B, J, 3, 4] scratch buffers.
template <typename T>
void rigid_transform_forward(int64_t batch, int64_t num_joints, const T* rot, const T* joints,
                             const int64_t* parents, T* world, T* posed, T* rel, void* stream);
template <typename T>
void rigid_transform_backward(int64_t batch, int64_t num_joints, const T* rot, const T* joints,
                              const int64_t* parents, const T* grad_posed, const T* grad_rel,
                              T* world, T* grad_world, T* grad_rot, T* grad_joints, void* stream);

template <typename T>
void skin_forward(int64_t batch, int64_t num_vertices, int64_t num_joints, const T* vertices,
                  const T* weights, int64_t weights_batch_stride, const T* transforms, T* out,
                  void* stream);
// One thread per (b, v): grad_vertices, per-batch grad_weights (only when
// weights are batched) and outer = grad_out (x) [x; 1] ([B,V,3,4]), from which the
// bindings form grad_transforms with one batched matmul. Null outputs are skipped.
template <typename T>
void skin_backward_pointwise(int64_t batch, int64_t num_vertices, int64_t num_joints,
                             const T* vertices, const T* weights, int64_t weights_batch_stride,
                             const T* transforms, const T* grad_out, T* grad_vertices,
                             T* grad_weights, T* outer, void* stream);
// One thread per vertex, summing over the batch (weights shared by the batch).
template <typename T>
void skin_backward_shared_weights(int64_t batch, int64_t num_vertices, int64_t num_joints,
                                  const T* vertices, const T* transforms, const T* grad_out,
                                  T* grad_weights, void* stream);

}  // namespace cuda
}  // namespace facegeom
