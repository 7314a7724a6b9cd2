// Small value types and vector helpers shared by every kernel family (the role
// of Warp's vec.h and nvdiffrast's common.h): a Vec3 value type with its
// arithmetic, the same dot/cross on plain T[3] arrays (the layout the tensors
// have), and min2/max2. Templated on the scalar; FG_HD, so host and device code
// use the same definitions. Family headers (closest_point.h, bvh.h, rasterize.h,
// shading.h, antialias.h, ...) include this one and keep their own namespace.
#pragma once

#include "facegeom/common.h"

namespace facegeom {

// ---------------------------------------------------------------------------
// Vec3 value type.

template <typename T>
struct Vec3 {
  T x, y, z;
};

template <typename T>
FG_HD Vec3<T> load3(const T* p) {
  return {p[0], p[1], p[2]};
}
template <typename T>
FG_HD Vec3<T> operator-(Vec3<T> a, Vec3<T> b) {
  return {a.x - b.x, a.y - b.y, a.z - b.z};
}
template <typename T>
FG_HD Vec3<T> operator+(Vec3<T> a, Vec3<T> b) {
  return {a.x + b.x, a.y + b.y, a.z + b.z};
}
template <typename T>
FG_HD Vec3<T> operator*(T s, Vec3<T> a) {
  return {s * a.x, s * a.y, s * a.z};
}
template <typename T>
FG_HD T dot(Vec3<T> a, Vec3<T> b) {
  return a.x * b.x + a.y * b.y + a.z * b.z;
}
template <typename T>
FG_HD Vec3<T> cross(Vec3<T> a, Vec3<T> b) {
  return {a.y * b.z - a.z * b.y, a.z * b.x - a.x * b.z, a.x * b.y - a.y * b.x};
}
template <typename T>
FG_HD T squared_norm(Vec3<T> a) {
  return dot(a, a);
}

// ---------------------------------------------------------------------------
// The same on T[3] arrays.

template <typename T>
FG_HD T dot3(const T* a, const T* b) {
  return a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
}

template <typename T>
FG_HD void cross3(const T* a, const T* b, T* out) {
  out[0] = a[1] * b[2] - a[2] * b[1];
  out[1] = a[2] * b[0] - a[0] * b[2];
  out[2] = a[0] * b[1] - a[1] * b[0];
}

// ---------------------------------------------------------------------------
// Scalars. min2/max2 return the first argument on ties and when b is NaN, and
// b when a is NaN (the comparison is false), as std::min/max do.

template <typename T>
FG_HD T min2(T a, T b) {
  return b < a ? b : a;
}
template <typename T>
FG_HD T max2(T a, T b) {
  return a < b ? b : a;
}

}  // namespace facegeom
