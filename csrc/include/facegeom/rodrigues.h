// Axis-angle -> rotation matrix with smplx's batch_rodrigues semantics, and its
// exact derivative.
#pragma once

#include "facegeom/common.h"

namespace facegeom {
namespace lbs {

// smplx adds 1e-8 to every component before taking the norm (not to the norm),
// so the zero vector maps to the identity with a finite gradient. We keep that
// exactly, except for two finite inputs smplx turns into NaN (the spec is
// facegeom.ops.reference.rodrigues_angle): r = -1e-8 per component (the shifted
// norm is 0) rotates by the true angle |r| with u = r, and a sum of squares that
// overflows is computed scaled by the largest component. u receives the vector
// whose norm is the angle (d angle / d r = u / angle).
template <typename T>
FG_HD T abs_value(T x) {
  return x < T(0) ? -x : x;
}

template <typename T>
FG_HD T rodrigues_angle(const T* r, T* u) {
  const T eps = T(1e-8);
  u[0] = r[0] + eps;
  u[1] = r[1] + eps;
  u[2] = r[2] + eps;
  const T angle = sqrt(u[0] * u[0] + u[1] * u[1] + u[2] * u[2]);
  const bool zero = angle == T(0);
  // inf * 0 is NaN: the norm overflowed although every component is finite.
  const bool overflow = angle > T(0) && angle * T(0) != T(0) &&
                        r[0] * T(0) == T(0) && r[1] * T(0) == T(0) && r[2] * T(0) == T(0);
  if (!zero && !overflow) return angle;
  if (zero) {
    u[0] = r[0];
    u[1] = r[1];
    u[2] = r[2];
  }
  T largest = abs_value(u[0]);
  if (abs_value(u[1]) > largest) largest = abs_value(u[1]);
  if (abs_value(u[2]) > largest) largest = abs_value(u[2]);
  const T x = u[0] / largest, y = u[1] / largest, z = u[2] / largest;
  return largest * sqrt(x * x + y * y + z * z);
}

// R (row-major 3x3) = I + sin(a) K + (1 - cos(a)) K^2, K = [r / a]_x, a = |r + eps|.
template <typename T>
FG_HD void rodrigues_forward(const T* r, T* R) {
  T u[3];
  const T angle = rodrigues_angle(r, u);
  const T kx = r[0] / angle, ky = r[1] / angle, kz = r[2] / angle;
  const T s = sin(angle), c1 = T(1) - cos(angle);
  const T K[9] = {T(0), -kz, ky, kz, T(0), -kx, -ky, kx, T(0)};
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 3; ++j) {
      T kk = K[3 * i] * K[j] + K[3 * i + 1] * K[3 + j] + K[3 * i + 2] * K[6 + j];
      R[3 * i + j] = (i == j ? T(1) : T(0)) + s * K[3 * i + j] + c1 * kk;
    }
  }
}

// Given dL/dR (row-major 3x3), return dL/dr.
template <typename T>
FG_HD void rodrigues_backward(const T* r, const T* gR, T* gr) {
  T u[3];
  const T angle = rodrigues_angle(r, u);
  const T kx = r[0] / angle, ky = r[1] / angle, kz = r[2] / angle;
  const T s = sin(angle), c = cos(angle), c1 = T(1) - c;
  const T K[9] = {T(0), -kz, ky, kz, T(0), -kx, -ky, kx, T(0)};
  // dL/dK from R = I + s K + c1 K K:  s G + c1 (G K^T + K^T G)
  T gK[9];
  T dot_gK = T(0), dot_gKK = T(0);
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 3; ++j) {
      T gkt = T(0), ktg = T(0), kk = T(0);
      for (int m = 0; m < 3; ++m) {
        gkt += gR[3 * i + m] * K[3 * j + m];
        ktg += K[3 * m + i] * gR[3 * m + j];
        kk += K[3 * i + m] * K[3 * m + j];
      }
      gK[3 * i + j] = s * gR[3 * i + j] + c1 * (gkt + ktg);
      dot_gK += gR[3 * i + j] * K[3 * i + j];
      dot_gKK += gR[3 * i + j] * kk;
    }
  }
  // K depends on k = r / angle through the skew-symmetric pattern.
  const T gk[3] = {gK[7] - gK[5], gK[2] - gK[6], gK[3] - gK[1]};
  // angle enters directly (sin, cos) and through k = r / angle.
  T g_angle = c * dot_gK + s * dot_gKK;
  g_angle -= (gk[0] * r[0] + gk[1] * r[1] + gk[2] * r[2]) / angle / angle;  // no angle^2 overflow
  for (int i = 0; i < 3; ++i) gr[i] = gk[i] / angle + g_angle * u[i] / angle;
}

}  // namespace lbs
}  // namespace facegeom
