// Shading math shared by the CPU and CUDA back ends: area-weighted vertex
// normals, the three order-2 spherical-harmonic conventions and the
// Blinn-Phong specular lobe, each with its reverse mode.
#pragma once

#include "facegeom/vec.h"

namespace facegeom {
namespace shading {

#if !defined(__CUDACC__)
using std::exp;
using std::log;
#endif

// out = x / |x| and returns 1 / |x|; a vector whose squared length is zero
// (or underflows to zero) has no direction: out = 0 and 0 is returned, which
// normalize3_backward turns into a zero gradient instead of NaN.
template <typename T>
FG_HD T normalize3(const T* x, T* out) {
  const T len2 = dot3(x, x);
  const T inv_len = len2 > T(0) ? T(1) / sqrt(len2) : T(0);
  out[0] = x[0] * inv_len;
  out[1] = x[1] * inv_len;
  out[2] = x[2] * inv_len;
  return inv_len;
}

// normalize3 for sums whose squared length could under- or overflow (vertex
// normals of meshes in tiny or huge units): the largest component is divided
// out first. Vectors below the smallest normal number are treated as zero;
// a vector with a NaN or Inf component gives NaN.
template <typename T>
FG_HD T normalize3_scaled(const T* x, T* out) {
  const T smallest_normal = sizeof(T) == 4 ? T(1.17549435e-38f) : T(2.2250738585072014e-308);
  const T ax = x[0] < T(0) ? -x[0] : x[0];
  const T ay = x[1] < T(0) ? -x[1] : x[1];
  const T az = x[2] < T(0) ? -x[2] : x[2];
  const T largest = ax > ay ? (ax > az ? ax : az) : (ay > az ? ay : az);
  if (!(ax - ax == T(0) && ay - ay == T(0) && az - az == T(0))) {
    // A NaN/Inf sum (a non-finite corner, or an overflow) has no direction: NaN
    // (docs/ops.md; the comparisons above would drop a NaN component).
    out[0] = out[1] = out[2] = (ax - ax) + (ay - ay) + (az - az);
    return out[0];
  }
  if (largest < smallest_normal) {
    out[0] = out[1] = out[2] = T(0);
    return T(0);
  }
  const T y[3] = {x[0] / largest, x[1] / largest, x[2] / largest};  // |y| in [1, sqrt(3)]
  const T inv_len_y = T(1) / sqrt(dot3(y, y));
  for (int c = 0; c < 3; ++c) out[c] = y[c] * inv_len_y;
  return inv_len_y / largest;
}

// Reverse of normalize3: grad_x = (g - u (u . g)) / |x| with u the unit vector.
template <typename T>
FG_HD void normalize3_backward(const T* unit, T inv_len, const T* grad_unit, T* grad_x) {
  const T along = dot3(unit, grad_unit);
  for (int c = 0; c < 3; ++c) grad_x[c] = (grad_unit[c] - unit[c] * along) * inv_len;
}

// ---------------------------------------------------------------------------
// Vertex normals: the normal of face (p0, p1, p2) is (p1 - p0) x (p2 - p0),
// twice its area times its unit normal, so summing these around a vertex is
// the area-weighted average direction. Zero-area faces add exactly zero.

template <typename T>
FG_HD void face_normal(const T* p0, const T* p1, const T* p2, T* n) {
  const T e1[3] = {p1[0] - p0[0], p1[1] - p0[1], p1[2] - p0[2]};
  const T e2[3] = {p2[0] - p0[0], p2[1] - p0[1], p2[2] - p0[2]};
  cross3(e1, e2, n);
}

// Reverse of face_normal: d(e1 x e2) . g = de1 . (e2 x g) + de2 . (g x e1).
template <typename T>
FG_HD void face_normal_backward(const T* p0, const T* p1, const T* p2, const T* grad_n,
                                T* grad_p0, T* grad_p1, T* grad_p2) {
  const T e1[3] = {p1[0] - p0[0], p1[1] - p0[1], p1[2] - p0[2]};
  const T e2[3] = {p2[0] - p0[0], p2[1] - p0[1], p2[2] - p0[2]};
  cross3(e2, grad_n, grad_p1);
  cross3(grad_n, e1, grad_p2);
  for (int c = 0; c < 3; ++c) grad_p0[c] = -(grad_p1[c] + grad_p2[c]);
}

// ---------------------------------------------------------------------------
// Order-2 spherical harmonics. Every supported convention is a signed, scaled
// permutation of the nine monomials
//   M = [1, x, y, z, xy, xz, yz, x^2 - y^2, 3z^2 - 1],
// so one table per convention (basis k = scale[k] * M[monomial[k]]) serves the
// forward and reverse modes of all of them.

enum ShConvention : int { kShDeep3d = 0, kShDeca = 1, kShIrradiance = 2 };

template <typename T>
struct ShTable {
  int monomial[9];
  T scale[9];
};

// Built on the host (in double, then rounded once to T) and passed to the
// kernels by value.
template <typename T>
inline ShTable<T> sh_table(int convention) {
  const double pi = 3.14159265358979323846;
  int monomial[9];
  double scale[9];
  if (convention == kShDeca) {
    // DECA / metrical-tracker add_SHlight: monomials in order, constant_factor.
    const double c1 = (2.0 * pi / 3.0) * std::sqrt(3.0 / (4.0 * pi));
    const double c2 = (pi / 4.0) * 3.0 * std::sqrt(5.0 / (12.0 * pi));
    const double values[9] = {1.0 / std::sqrt(4.0 * pi), c1, c1, c1, c2, c2, c2,
                              (pi / 4.0) * 1.5 * std::sqrt(5.0 / (12.0 * pi)),
                              (pi / 4.0) * 0.5 * std::sqrt(5.0 / (4.0 * pi))};
    for (int k = 0; k < 9; ++k) {
      monomial[k] = k;
      scale[k] = values[k];
    }
  } else {
    // Deep3DFaceRecon's order and signs: [1, -y, z, -x, xy, -yz, 3z^2-1, -xz, x^2-y^2].
    const int order[9] = {0, 2, 3, 1, 4, 6, 8, 5, 7};
    double values[9];
    if (convention == kShDeep3d) {
      const double a0 = pi, a1 = 2.0 * pi / std::sqrt(3.0), a2 = 2.0 * pi / std::sqrt(8.0);
      const double c0 = 1.0 / std::sqrt(4.0 * pi), c1 = std::sqrt(3.0) / std::sqrt(4.0 * pi);
      const double c2 = 3.0 * std::sqrt(5.0) / std::sqrt(12.0 * pi);
      const double b1 = a1 * c1, b2 = a2 * c2;
      const double deep3d[9] = {a0 * c0, -b1, b1, -b1, b2, -b2, 0.5 * b2 / std::sqrt(3.0), -b2,
                                0.5 * b2};
      for (int k = 0; k < 9; ++k) values[k] = deep3d[k];
    } else {
      // Ramamoorthi-Hanrahan irradiance with Kaolin's rounded SH constants.
      const double band0 = pi, band1 = 2.0 * pi / 3.0, band2 = pi / 4.0;
      const double irradiance[9] = {0.282095 * band0,  -0.488603 * band1, 0.488603 * band1,
                                    -0.488603 * band1, 1.092548 * band2,  -1.092548 * band2,
                                    0.315392 * band2,  -1.092548 * band2, 0.546274 * band2};
      for (int k = 0; k < 9; ++k) values[k] = irradiance[k];
    }
    for (int k = 0; k < 9; ++k) {
      monomial[k] = order[k];
      scale[k] = values[k];
    }
  }
  ShTable<T> table;
  for (int k = 0; k < 9; ++k) {
    table.monomial[k] = monomial[k];
    table.scale[k] = static_cast<T>(scale[k]);
  }
  return table;
}

template <typename T>
FG_HD void sh_basis_forward(const ShTable<T>& table, const T* n, T* basis) {
  const T x = n[0], y = n[1], z = n[2];
  const T m[9] = {T(1), x, y, z, x * y, x * z, y * z, x * x - y * y, T(3) * z * z - T(1)};
  for (int k = 0; k < 9; ++k) basis[k] = table.scale[k] * m[table.monomial[k]];
}

// grad_n = sum_k grad_basis[k] d basis[k] / d n.
template <typename T>
FG_HD void sh_basis_backward(const ShTable<T>& table, const T* n, const T* grad_basis, T* grad_n) {
  T gm[9] = {T(0), T(0), T(0), T(0), T(0), T(0), T(0), T(0), T(0)};
  for (int k = 0; k < 9; ++k) gm[table.monomial[k]] += table.scale[k] * grad_basis[k];
  const T x = n[0], y = n[1], z = n[2];
  grad_n[0] = gm[1] + gm[4] * y + gm[5] * z + T(2) * gm[7] * x;
  grad_n[1] = gm[2] + gm[4] * x + gm[6] * z - T(2) * gm[7] * y;
  grad_n[2] = gm[3] + gm[5] * x + gm[6] * y + T(6) * gm[8] * z;
}

// out[c] = albedo[c] * sum_k basis[k] * coeffs[k][c] (coeffs [9][3]).
template <typename T>
FG_HD void sh_shade_forward(const ShTable<T>& table, const T* n, const T* albedo, const T* coeffs,
                            T* out) {
  T basis[9];
  sh_basis_forward(table, n, basis);
  for (int c = 0; c < 3; ++c) {
    T radiance = T(0);
    for (int k = 0; k < 9; ++k) radiance += basis[k] * coeffs[3 * k + c];
    out[c] = albedo[c] * radiance;
  }
}

// Reverse of sh_shade_forward for one point. grad_n and grad_albedo are written
// (skipped when null); grad_coeffs [9][3] is accumulated into (skipped when null).
template <typename T>
FG_HD void sh_shade_backward(const ShTable<T>& table, const T* n, const T* albedo, const T* coeffs,
                             const T* grad_out, T* grad_n, T* grad_albedo, T* grad_coeffs) {
  T basis[9];
  sh_basis_forward(table, n, basis);
  const T grad_radiance[3] = {grad_out[0] * albedo[0], grad_out[1] * albedo[1],
                              grad_out[2] * albedo[2]};
  if (grad_albedo != nullptr) {
    for (int c = 0; c < 3; ++c) {
      T radiance = T(0);
      for (int k = 0; k < 9; ++k) radiance += basis[k] * coeffs[3 * k + c];
      grad_albedo[c] = grad_out[c] * radiance;
    }
  }
  if (grad_n != nullptr) {
    T grad_basis[9];
    for (int k = 0; k < 9; ++k) grad_basis[k] = dot3(coeffs + 3 * k, grad_radiance);
    sh_basis_backward(table, n, grad_basis, grad_n);
  }
  if (grad_coeffs != nullptr) {
    for (int k = 0; k < 9; ++k)
      for (int c = 0; c < 3; ++c) grad_coeffs[3 * k + c] += basis[k] * grad_radiance[c];
  }
}

// ---------------------------------------------------------------------------
// Blinn-Phong lobe of one point:
//   h = normalize(normalize(camera - p) + normalize(light - p)),
//   lobe = max(n . h, 0) ^ shininess, defined as 0 where n . h <= 0
// (also for shininess 0), with zero gradient there; NaN where n . h is NaN. A point on the light or
// the camera has no direction to it (normalize3 gives zero), as has a point
// whose light and view directions cancel.

template <typename T>
FG_HD T blinn_phong_lobe(const T* n, const T* p, const T* light, const T* camera, T shininess) {
  const T to_light[3] = {light[0] - p[0], light[1] - p[1], light[2] - p[2]};
  const T to_camera[3] = {camera[0] - p[0], camera[1] - p[1], camera[2] - p[2]};
  T l[3], v[3], half[3], h[3];
  normalize3(to_light, l);
  normalize3(to_camera, v);
  for (int c = 0; c < 3; ++c) half[c] = l[c] + v[c];
  normalize3(half, h);
  const T d = dot3(n, h);
  if (d > T(0)) return exp(shininess * log(d));
  return d <= T(0) ? T(0) : d;  // NaN (from a NaN/Inf input) stays NaN: docs/ops.md
}

// One point's specular colour: out[c] = albedo[c] * lobe, where a one-channel
// specular albedo (albedo_channels == 1) serves all three colours.
template <typename T>
FG_HD void blinn_phong_point(const T* n, const T* p, const T* light, const T* camera,
                             const T* albedo, int64_t albedo_channels, T shininess, T* out) {
  const T lobe = blinn_phong_lobe(n, p, light, camera, shininess);
  for (int c = 0; c < 3; ++c) out[c] = albedo[albedo_channels == 3 ? c : 0] * lobe;
}

// Reverse of blinn_phong_lobe given grad_lobe. Writes grad_n, grad_p,
// grad_light and grad_camera (all [3]) and *grad_shininess; returns the lobe.
template <typename T>
FG_HD T blinn_phong_lobe_backward(const T* n, const T* p, const T* light, const T* camera,
                                     T shininess, T grad_lobe, T* grad_n, T* grad_p, T* grad_light,
                                     T* grad_camera, T* grad_shininess) {
  const T to_light[3] = {light[0] - p[0], light[1] - p[1], light[2] - p[2]};
  const T to_camera[3] = {camera[0] - p[0], camera[1] - p[1], camera[2] - p[2]};
  T l[3], v[3], half[3], h[3];
  const T inv_l = normalize3(to_light, l);
  const T inv_v = normalize3(to_camera, v);
  for (int c = 0; c < 3; ++c) half[c] = l[c] + v[c];
  const T inv_h = normalize3(half, h);
  const T d = dot3(n, h);
  if (!(d > T(0))) {
    const T g = d <= T(0) ? T(0) : d;  // NaN d: NaN gradients, as the lobe
    for (int c = 0; c < 3; ++c) grad_n[c] = grad_p[c] = grad_light[c] = grad_camera[c] = g;
    *grad_shininess = g;
    return g;
  }
  const T log_d = log(d);
  const T lobe = exp(shininess * log_d);
  *grad_shininess = grad_lobe * lobe * log_d;
  // d lobe / d d = shininess d^(shininess - 1) = shininess lobe / d (d > 0 here).
  const T grad_d = grad_lobe * shininess * lobe / d;
  T grad_h[3], grad_half[3];
  for (int c = 0; c < 3; ++c) {
    grad_n[c] = grad_d * h[c];
    grad_h[c] = grad_d * n[c];
  }
  normalize3_backward(h, inv_h, grad_h, grad_half);
  normalize3_backward(l, inv_l, grad_half, grad_light);
  normalize3_backward(v, inv_v, grad_half, grad_camera);
  for (int c = 0; c < 3; ++c) grad_p[c] = -(grad_light[c] + grad_camera[c]);
  return lobe;
}

}  // namespace shading
}  // namespace facegeom
