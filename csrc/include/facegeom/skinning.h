// Linear blend skinning of one vertex without materialising its 4x4 matrix.
#pragma once

#include "facegeom/common.h"

namespace facegeom {

// blended = sum_j w_j A_j (top 3x4 of each 4x4), the per-vertex transform.
template <typename T>
FG_HD void blend_transforms(int64_t num_joints, const T* weights, const T* transforms,
                            T* blended) {
  for (int i = 0; i < 12; ++i) blended[i] = T(0);
  for (int64_t j = 0; j < num_joints; ++j) {
    const T w = weights[j];
    const T* a = transforms + 16 * j;
    for (int i = 0; i < 12; ++i) blended[i] += w * a[i];
  }
}

template <typename T>
FG_HD void skin_vertex_forward(int64_t num_joints, const T* x, const T* weights,
                               const T* transforms, T* out) {
  T blended[12];
  blend_transforms(num_joints, weights, transforms, blended);
  affine_apply(blended, x, out);
}

// Reverse mode for one vertex. grad_x and grad_weights are written (may be
// null when not needed); grad_transforms [J,4,4] is accumulated into (may be
// null). Rows 3 of grad_transforms are never touched: that row is constant.
template <typename T>
FG_HD void skin_vertex_backward(int64_t num_joints, const T* x, const T* weights,
                                const T* transforms, const T* grad_out, T* grad_x,
                                T* grad_weights, T* grad_transforms) {
  if (grad_x != nullptr) {
    T blended[12];
    blend_transforms(num_joints, weights, transforms, blended);
    for (int c = 0; c < 3; ++c) {
      grad_x[c] = blended[c] * grad_out[0] + blended[4 + c] * grad_out[1] +
                  blended[8 + c] * grad_out[2];
    }
  }
  for (int64_t j = 0; j < num_joints; ++j) {
    const T* a = transforms + 16 * j;
    if (grad_weights != nullptr) {
      T moved[3];
      affine_apply(a, x, moved);
      grad_weights[j] = moved[0] * grad_out[0] + moved[1] * grad_out[1] + moved[2] * grad_out[2];
    }
    if (grad_transforms != nullptr) {
      const T w = weights[j];
      T* ga = grad_transforms + 16 * j;
      for (int r = 0; r < 3; ++r) {
        const T wg = w * grad_out[r];
        ga[4 * r + 0] += wg * x[0];
        ga[4 * r + 1] += wg * x[1];
        ga[4 * r + 2] += wg * x[2];
        ga[4 * r + 3] += wg;
      }
    }
  }
}

}  // namespace facegeom
