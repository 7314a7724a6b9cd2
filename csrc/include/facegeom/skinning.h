// Linear blend skinning of one vertex without materialising its 4x4 matrix.
#pragma once

#include "facegeom/common.h"

namespace facegeom {
namespace lbs {

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

// out = sum_j w_j (A_j [x; 1]). Summing moved points rather than blending the
// matrices first is the same cost per vertex and vectorises across vertices
// (skin_block_forward); both forms share this order so back ends agree.
template <typename T>
FG_HD void skin_vertex_forward(int64_t num_joints, const T* x, const T* weights,
                               const T* transforms, T* out) {
  out[0] = out[1] = out[2] = T(0);
  for (int64_t j = 0; j < num_joints; ++j) {
    T moved[3];
    affine_apply(transforms + 16 * j, x, moved);
    out[0] += weights[j] * moved[0];
    out[1] += weights[j] * moved[1];
    out[2] += weights[j] * moved[2];
  }
}

// skin_vertex_forward for n vertices of one batch element in
// structure-of-arrays layout (xyz [3][n], weights [J][n], out [3][n]), so the
// vertex loop maps onto SIMD lanes.
template <typename T>
inline void skin_block_forward(int64_t n, int64_t num_joints, const T* __restrict__ xyz,
                               const T* __restrict__ weights, const T* __restrict__ transforms,
                               T* __restrict__ out) {
  for (int64_t i = 0; i < 3 * n; ++i) out[i] = T(0);
  for (int64_t j = 0; j < num_joints; ++j) {
    const T* a = transforms + 16 * j;
    const T* w = weights + j * n;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      const T x = xyz[i], y = xyz[n + i], z = xyz[2 * n + i];
      out[i] += w[i] * (a[0] * x + a[1] * y + a[2] * z + a[3]);
      out[n + i] += w[i] * (a[4] * x + a[5] * y + a[6] * z + a[7]);
      out[2 * n + i] += w[i] * (a[8] * x + a[9] * y + a[10] * z + a[11]);
    }
  }
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

// skin_vertex_backward for n vertices of one batch element in
// structure-of-arrays layout (xyz, grad_out, grad_xyz [3][n]; weights,
// grad_weights [J][n]). grad_xyz and grad_weights are written, grad_transforms
// [J,4,4] accumulated into; null outputs are skipped.
template <typename T>
inline void skin_block_backward(int64_t n, int64_t num_joints, const T* __restrict__ xyz,
                                const T* __restrict__ weights, const T* __restrict__ transforms,
                                const T* __restrict__ grad_out, T* __restrict__ grad_xyz,
                                T* __restrict__ grad_weights, T* __restrict__ grad_transforms) {
  const T* x = xyz;
  const T* y = xyz + n;
  const T* z = xyz + 2 * n;
  const T* g0 = grad_out;
  const T* g1 = grad_out + n;
  const T* g2 = grad_out + 2 * n;
  if (grad_xyz != nullptr) {
    for (int64_t i = 0; i < 3 * n; ++i) grad_xyz[i] = T(0);
  }
  for (int64_t j = 0; j < num_joints; ++j) {
    const T* a = transforms + 16 * j;
    const T* w = weights + j * n;
    if (grad_xyz != nullptr) {
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) {
        grad_xyz[i] += w[i] * (a[0] * g0[i] + a[4] * g1[i] + a[8] * g2[i]);
        grad_xyz[n + i] += w[i] * (a[1] * g0[i] + a[5] * g1[i] + a[9] * g2[i]);
        grad_xyz[2 * n + i] += w[i] * (a[2] * g0[i] + a[6] * g1[i] + a[10] * g2[i]);
      }
    }
    if (grad_weights != nullptr) {
      T* gw = grad_weights + j * n;
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) {
        gw[i] = g0[i] * (a[0] * x[i] + a[1] * y[i] + a[2] * z[i] + a[3]) +
                g1[i] * (a[4] * x[i] + a[5] * y[i] + a[6] * z[i] + a[7]) +
                g2[i] * (a[8] * x[i] + a[9] * y[i] + a[10] * z[i] + a[11]);
      }
    }
    if (grad_transforms != nullptr) {
      T s0x = 0, s0y = 0, s0z = 0, s0 = 0, s1x = 0, s1y = 0, s1z = 0, s1 = 0;
      T s2x = 0, s2y = 0, s2z = 0, s2 = 0;
#pragma omp simd reduction(+ : s0x, s0y, s0z, s0, s1x, s1y, s1z, s1, s2x, s2y, s2z, s2)
      for (int64_t i = 0; i < n; ++i) {
        const T wg0 = w[i] * g0[i], wg1 = w[i] * g1[i], wg2 = w[i] * g2[i];
        s0x += wg0 * x[i]; s0y += wg0 * y[i]; s0z += wg0 * z[i]; s0 += wg0;
        s1x += wg1 * x[i]; s1y += wg1 * y[i]; s1z += wg1 * z[i]; s1 += wg1;
        s2x += wg2 * x[i]; s2y += wg2 * y[i]; s2z += wg2 * z[i]; s2 += wg2;
      }
      T* ga = grad_transforms + 16 * j;
      ga[0] += s0x; ga[1] += s0y; ga[2] += s0z; ga[3] += s0;
      ga[4] += s1x; ga[5] += s1y; ga[6] += s1z; ga[7] += s1;
      ga[8] += s2x; ga[9] += s2y; ga[10] += s2z; ga[11] += s2;
    }
  }
}

}  // namespace lbs
}  // namespace facegeom
