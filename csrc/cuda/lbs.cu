// CUDA launchers of the blendshape / skinning family (see lbs_cuda.h).
//
// The math lives in the shared FG_HD headers so that the CPU and CUDA back ends
// run the same code; every kernel here only maps threads onto elements and
// calls it. No torch headers: the bindings own allocation, checks and streams.
// Each kernel gives one thread one independent element (a vector, a batch
// element of the skeleton, a vertex) and walks the range grid-stride with
// int64_t indices, so meshes of any size and grids of any shape are safe.
// Parents are validated on the host only for CPU tensors, so the chain kernels
// re-check them on the device and answer NaN rather than read out of bounds.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "cuda/lbs_cuda.h"
#include "cuda/launch.cuh"
#include "facegeom/common.h"
#include "facegeom/rigid_transform.h"
#include "facegeom/rodrigues.h"
#include "facegeom/skinning.h"

namespace facegeom {
namespace cuda {
namespace {

template <typename T>
__device__ void fill_nan(T* data, int64_t n) {
  for (int64_t i = 0; i < n; ++i) data[i] = quiet_nan<T>();
}

// parents[0] == -1 and 0 <= parents[j] < j: what the chain sweeps rely on.
__device__ bool parents_are_topological(int64_t num_joints, const int64_t* parents) {
  for (int64_t j = 0; j < num_joints; ++j) {
    const int64_t p = parents[j];
    if (j == 0 ? p != -1 : (p < 0 || p >= j)) return false;
  }
  return true;
}

template <typename T>
__global__ void rodrigues_forward_kernel(int64_t n, const T* axis_angle, T* rot) {
  for (int64_t i = first_index(); i < n; i += grid_stride()) {
    lbs::rodrigues_forward(axis_angle + 3 * i, rot + 9 * i);
  }
}

template <typename T>
__global__ void rodrigues_backward_kernel(int64_t n, const T* axis_angle, const T* grad_rot,
                                          T* grad_axis_angle) {
  for (int64_t i = first_index(); i < n; i += grid_stride()) {
    lbs::rodrigues_backward(axis_angle + 3 * i, grad_rot + 9 * i, grad_axis_angle + 3 * i);
  }
}

template <typename T>
__global__ void rigid_transform_forward_kernel(int64_t batch, int64_t num_joints, const T* rot,
                                               const T* joints, const int64_t* parents, T* world,
                                               T* posed, T* rel) {
  for (int64_t b = first_index(); b < batch; b += grid_stride()) {
    T* posed_b = posed + 3 * num_joints * b;
    T* rel_b = rel + 16 * num_joints * b;
    if (!parents_are_topological(num_joints, parents)) {
      fill_nan(posed_b, 3 * num_joints);
      fill_nan(rel_b, 16 * num_joints);
      continue;
    }
    lbs::rigid_transform_forward(num_joints, rot + 9 * num_joints * b,
                                      joints + 3 * num_joints * b, parents,
                                      world + 12 * num_joints * b, posed_b, rel_b);
  }
}

template <typename T>
__global__ void rigid_transform_backward_kernel(int64_t batch, int64_t num_joints, const T* rot,
                                                const T* joints, const int64_t* parents,
                                                const T* grad_posed, const T* grad_rel, T* world,
                                                T* grad_world, T* grad_rot, T* grad_joints) {
  for (int64_t b = first_index(); b < batch; b += grid_stride()) {
    T* grad_rot_b = grad_rot + 9 * num_joints * b;
    T* grad_joints_b = grad_joints + 3 * num_joints * b;
    if (!parents_are_topological(num_joints, parents)) {
      fill_nan(grad_rot_b, 9 * num_joints);
      fill_nan(grad_joints_b, 3 * num_joints);
      continue;
    }
    const T* rot_b = rot + 9 * num_joints * b;
    const T* joints_b = joints + 3 * num_joints * b;
    T* world_b = world + 12 * num_joints * b;
    // Recomputing the chain is cheaper than saving [B,J,3,4] for backward.
    lbs::rigid_transform_world(num_joints, rot_b, joints_b, parents, world_b);
    lbs::rigid_transform_backward(num_joints, rot_b, joints_b, parents, world_b,
                                       grad_posed + 3 * num_joints * b,
                                       grad_rel + 16 * num_joints * b,
                                       grad_world + 12 * num_joints * b, grad_rot_b,
                                       grad_joints_b);
  }
}

// Threads run over the flattened (b, v) range: index i is vertex i % V of batch i / V.
template <typename T>
__global__ void skin_forward_kernel(int64_t num_points, int64_t num_vertices, int64_t num_joints,
                                    const T* vertices, const T* weights,
                                    int64_t weights_batch_stride, const T* transforms, T* out) {
  for (int64_t i = first_index(); i < num_points; i += grid_stride()) {
    const int64_t b = i / num_vertices, v = i % num_vertices;
    lbs::skin_vertex_forward(num_joints, vertices + 3 * i,
                                  weights + weights_batch_stride * b + num_joints * v,
                                  transforms + 16 * num_joints * b, out + 3 * i);
  }
}

template <typename T>
__global__ void skin_backward_pointwise_kernel(int64_t num_points, int64_t num_vertices,
                                               int64_t num_joints, const T* vertices,
                                               const T* weights, int64_t weights_batch_stride,
                                               const T* transforms, const T* grad_out,
                                               T* grad_vertices, T* grad_weights, T* outer) {
  for (int64_t i = first_index(); i < num_points; i += grid_stride()) {
    const int64_t b = i / num_vertices, v = i % num_vertices;
    const T* x = vertices + 3 * i;
    const T* w = weights + weights_batch_stride * b + num_joints * v;
    const T* g = grad_out + 3 * i;
    T* grad_x = grad_vertices != nullptr ? grad_vertices + 3 * i : nullptr;
    T* grad_w = grad_weights != nullptr ? grad_weights + num_joints * i : nullptr;
    lbs::skin_vertex_backward(num_joints, x, w, transforms + 16 * num_joints * b, g, grad_x,
                                   grad_w, /*grad_transforms=*/static_cast<T*>(nullptr));
    // grad_transforms is formed by the bindings from outer = grad_out (x) [x; 1] ([3, 4]).
    if (outer != nullptr) {
      const T homogeneous_x[4] = {x[0], x[1], x[2], T(1)};
      T* outer_i = outer + 12 * i;
      for (int r = 0; r < 3; ++r) {
        for (int c = 0; c < 4; ++c) outer_i[4 * r + c] = g[r] * homogeneous_x[c];
      }
    }
  }
}

// One thread owns grad_weights[v, :] and sums over the batch in order: no atomics,
// so the result is deterministic.
template <typename T>
__global__ void skin_backward_shared_weights_kernel(int64_t num_vertices, int64_t batch,
                                                    int64_t num_joints, const T* vertices,
                                                    const T* transforms, const T* grad_out,
                                                    T* grad_weights) {
  for (int64_t v = first_index(); v < num_vertices; v += grid_stride()) {
    for (int64_t j = 0; j < num_joints; ++j) {
      T sum = T(0);
      for (int64_t b = 0; b < batch; ++b) {
        const int64_t point = b * num_vertices + v;
        const T* g = grad_out + 3 * point;
        T moved[3];
        facegeom::affine_apply(transforms + 16 * (num_joints * b + j), vertices + 3 * point, moved);
        sum += moved[0] * g[0] + moved[1] * g[1] + moved[2] * g[2];
      }
      grad_weights[num_joints * v + j] = sum;
    }
  }
}

}  // namespace

template <typename T>
void rodrigues_forward(int64_t n, const T* axis_angle, T* rot, void* stream) {
  launch("rodrigues_forward_kernel", rodrigues_forward_kernel<T>, n, stream, axis_angle, rot);
}

template <typename T>
void rodrigues_backward(int64_t n, const T* axis_angle, const T* grad_rot, T* grad_axis_angle,
                        void* stream) {
  launch("rodrigues_backward_kernel", rodrigues_backward_kernel<T>, n, stream, axis_angle,
         grad_rot, grad_axis_angle);
}

template <typename T>
void rigid_transform_forward(int64_t batch, int64_t num_joints, const T* rot, const T* joints,
                             const int64_t* parents, T* world, T* posed, T* rel, void* stream) {
  launch("rigid_transform_forward_kernel", rigid_transform_forward_kernel<T>, batch, stream,
         num_joints, rot, joints, parents, world, posed, rel);
}

template <typename T>
void rigid_transform_backward(int64_t batch, int64_t num_joints, const T* rot, const T* joints,
                              const int64_t* parents, const T* grad_posed, const T* grad_rel,
                              T* world, T* grad_world, T* grad_rot, T* grad_joints, void* stream) {
  launch("rigid_transform_backward_kernel", rigid_transform_backward_kernel<T>, batch, stream,
         num_joints, rot, joints, parents, grad_posed, grad_rel, world, grad_world, grad_rot,
         grad_joints);
}

template <typename T>
void skin_forward(int64_t batch, int64_t num_vertices, int64_t num_joints, const T* vertices,
                  const T* weights, int64_t weights_batch_stride, const T* transforms, T* out,
                  void* stream) {
  launch("skin_forward_kernel", skin_forward_kernel<T>, batch * num_vertices, stream,
         num_vertices, num_joints, vertices, weights, weights_batch_stride, transforms, out);
}

template <typename T>
void skin_backward_pointwise(int64_t batch, int64_t num_vertices, int64_t num_joints,
                             const T* vertices, const T* weights, int64_t weights_batch_stride,
                             const T* transforms, const T* grad_out, T* grad_vertices,
                             T* grad_weights, T* outer, void* stream) {
  launch("skin_backward_pointwise_kernel", skin_backward_pointwise_kernel<T>,
         batch * num_vertices, stream, num_vertices, num_joints, vertices, weights,
         weights_batch_stride, transforms, grad_out, grad_vertices, grad_weights, outer);
}

template <typename T>
void skin_backward_shared_weights(int64_t batch, int64_t num_vertices, int64_t num_joints,
                                  const T* vertices, const T* transforms, const T* grad_out,
                                  T* grad_weights, void* stream) {
  launch("skin_backward_shared_weights_kernel", skin_backward_shared_weights_kernel<T>,
         num_vertices, stream, batch, num_joints, vertices, transforms, grad_out, grad_weights);
}

#define FACEGEOM_INSTANTIATE_LBS_CUDA(T)                                                          \
  template void rodrigues_forward<T>(int64_t, const T*, T*, void*);                               \
  template void rodrigues_backward<T>(int64_t, const T*, const T*, T*, void*);                    \
  template void rigid_transform_forward<T>(int64_t, int64_t, const T*, const T*, const int64_t*, \
                                           T*, T*, T*, void*);                                    \
  template void rigid_transform_backward<T>(int64_t, int64_t, const T*, const T*,                \
                                            const int64_t*, const T*, const T*, T*, T*, T*, T*,  \
                                            void*);                                               \
  template void skin_forward<T>(int64_t, int64_t, int64_t, const T*, const T*, int64_t,          \
                                const T*, T*, void*);                                             \
  template void skin_backward_pointwise<T>(int64_t, int64_t, int64_t, const T*, const T*,        \
                                           int64_t, const T*, const T*, T*, T*, T*, void*);       \
  template void skin_backward_shared_weights<T>(int64_t, int64_t, int64_t, const T*, const T*,   \
                                                const T*, T*, void*);

FACEGEOM_INSTANTIATE_LBS_CUDA(float)
FACEGEOM_INSTANTIATE_LBS_CUDA(double)

#undef FACEGEOM_INSTANTIATE_LBS_CUDA

}  // namespace cuda
}  // namespace facegeom
