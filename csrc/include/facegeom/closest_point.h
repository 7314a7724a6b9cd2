// Closest point on a triangle (and on a segment), shared by the CPU and CUDA back ends.
//
// Ericson's region classification (Real-Time Collision Detection, 5.1.5), made
// robust for the triangles real meshes contain:
//  - the three region areas va, vb, vc are triple products n . (x_p x y_p) rather
//    than Ericson's differences of dot-product products (the same quantities by
//    Lagrange's identity), which keeps them accurate for thin triangles;
//  - every division is guarded by the sign of its denominator, never by an
//    absolute epsilon, so the answer scales exactly with the mesh;
//  - zero-area and near-collinear triangles, whose regions collapse and can no
//    longer be trusted, are measured as the union of their three edges (a
//    zero-length edge being a point), and the better of that and the region
//    answer is kept. "Near" is relative (the sine of the angle at a), so it does
//    not depend on the scale either.
#pragma once

#include "facegeom/vec.h"

namespace facegeom {
namespace geometry {

// t = num / den clamped to [0, 1]; 0 when den is not positive (a zero-length edge).
template <typename T>
FG_HD T safe_fraction(T num, T den) {
  if (!(den > T(0))) return T(0);
  const T t = num / den;
  return t < T(0) ? T(0) : (t > T(1) ? T(1) : t);
}

// Squared distance from p to the segment [x, y]; t is the parameter of the
// closest point x + t (y - x).
template <typename T>
FG_HD T closest_point_on_segment(Vec3<T> p, Vec3<T> x, Vec3<T> y, T& t) {
  const Vec3<T> edge = y - x;
  t = safe_fraction(dot(p - x, edge), squared_norm(edge));
  return squared_norm(p - (x + t * edge));
}

// Closest point of the triangle's boundary (three segments): bary gets the
// weights of a, b, c.
template <typename T>
FG_HD T closest_point_on_triangle_edges(Vec3<T> p, Vec3<T> a, Vec3<T> b, Vec3<T> c, T* bary) {
  T t_ab, t_bc, t_ca;
  const T d_ab = closest_point_on_segment(p, a, b, t_ab);
  const T d_bc = closest_point_on_segment(p, b, c, t_bc);
  const T d_ca = closest_point_on_segment(p, c, a, t_ca);
  if (d_ab <= d_bc && d_ab <= d_ca) {
    bary[0] = T(1) - t_ab, bary[1] = t_ab, bary[2] = T(0);
    return d_ab;
  }
  if (d_bc <= d_ca) {
    bary[0] = T(0), bary[1] = T(1) - t_bc, bary[2] = t_bc;
    return d_bc;
  }
  bary[0] = t_ca, bary[1] = T(0), bary[2] = T(1) - t_ca;
  return d_ca;
}

// Below this sine of the angle at a (squared, relative to machine precision)
// the normal n = ab x ac carries too few correct bits to classify regions.
template <typename T>
FG_HD T sliver_sine2_threshold() {
  return T(1024) * (sizeof(T) == 4 ? T(1.1920929e-7) : T(2.220446049250313e-16));
}

// Ericson's regions with triple-product areas. Returns the squared distance and
// writes bary; returns a negative value when the triangle is degenerate and the
// regions did not give an answer (the caller then uses the edges).
// ab = b - a, ac = c - a, n = ab x ac.
template <typename T>
FG_HD T closest_point_on_triangle_regions(Vec3<T> p, Vec3<T> a, Vec3<T> b, Vec3<T> c, Vec3<T> ab,
                                          Vec3<T> ac, Vec3<T> n, T* bary) {
  const Vec3<T> ap = p - a;
  const T d1 = dot(ab, ap), d2 = dot(ac, ap);
  if (d1 <= T(0) && d2 <= T(0)) {  // vertex a
    bary[0] = T(1), bary[1] = T(0), bary[2] = T(0);
    return squared_norm(ap);
  }
  const Vec3<T> bp = p - b;
  const T d3 = dot(ab, bp), d4 = dot(ac, bp);
  if (d3 >= T(0) && d4 <= d3) {  // vertex b
    bary[0] = T(0), bary[1] = T(1), bary[2] = T(0);
    return squared_norm(bp);
  }
  const Vec3<T> cp = p - c;
  const T vc = dot(n, cross(ap, bp));
  if (vc <= T(0) && d1 >= T(0) && d3 <= T(0)) {  // edge ab
    const T t = safe_fraction(d1, d1 - d3);
    bary[0] = T(1) - t, bary[1] = t, bary[2] = T(0);
    return squared_norm(p - (a + t * ab));
  }
  const T d5 = dot(ab, cp), d6 = dot(ac, cp);
  if (d6 >= T(0) && d5 <= d6) {  // vertex c
    bary[0] = T(0), bary[1] = T(0), bary[2] = T(1);
    return squared_norm(cp);
  }
  const T vb = dot(n, cross(cp, ap));
  if (vb <= T(0) && d2 >= T(0) && d6 <= T(0)) {  // edge ac
    const T t = safe_fraction(d2, d2 - d6);
    bary[0] = T(1) - t, bary[1] = T(0), bary[2] = t;
    return squared_norm(p - (a + t * ac));
  }
  const T va = dot(n, cross(bp, cp));
  if (va <= T(0) && d4 - d3 >= T(0) && d5 - d6 >= T(0)) {  // edge bc
    const T t = safe_fraction(d4 - d3, (d4 - d3) + (d5 - d6));
    bary[0] = T(0), bary[1] = T(1) - t, bary[2] = t;
    return squared_norm(p - (b + t * (c - b)));
  }
  // Interior: all three areas positive in exact arithmetic; anything else means
  // the triangle is too degenerate for the regions (rounding made them disagree).
  const T denom = va + vb + vc;
  if (!(va >= T(0) && vb >= T(0) && vc >= T(0) && denom > T(0))) return T(-1);
  const T v = vb / denom, w = vc / denom;
  bary[0] = T(1) - v - w, bary[1] = v, bary[2] = w;
  return squared_norm(p - (a + v * ab + w * ac));
}

// The terms of closest_point_on_triangle that depend on the triangle only, so
// that a caller measuring many points against the same triangles can keep them
// (same operations, so the same values).
template <typename T>
struct TriangleTerms {
  Vec3<T> ab, ac, n;  // b - a, c - a, ab x ac
  bool sliver;        // regions not trusted: the edges are measured too
};

template <typename T>
FG_HD TriangleTerms<T> triangle_terms(Vec3<T> a, Vec3<T> b, Vec3<T> c) {
  TriangleTerms<T> terms;
  terms.ab = b - a, terms.ac = c - a;
  terms.n = cross(terms.ab, terms.ac);
  const T scale2 = squared_norm(terms.ab) * squared_norm(terms.ac);
  terms.sliver = !(squared_norm(terms.n) > sliver_sine2_threshold<T>() * scale2);
  return terms;
}

// closest_point_on_triangle with the triangle's terms already computed.
template <typename T>
FG_HD T closest_point_on_triangle(Vec3<T> p, Vec3<T> a, Vec3<T> b, Vec3<T> c,
                                  const TriangleTerms<T>& terms, T* bary) {
  const T region_dist2 =
      closest_point_on_triangle_regions(p, a, b, c, terms.ab, terms.ac, terms.n, bary);
  if (!terms.sliver && region_dist2 >= T(0)) return region_dist2;
  // The boundary holds the closest point of every zero-area triangle; for a thin
  // but genuine triangle the region answer (when valid) may still be better.
  T edge_bary[3];
  const T edge_dist2 = closest_point_on_triangle_edges(p, a, b, c, edge_bary);
  if (region_dist2 >= T(0) && region_dist2 <= edge_dist2) return region_dist2;
  bary[0] = edge_bary[0], bary[1] = edge_bary[1], bary[2] = edge_bary[2];
  return edge_dist2;
}

// Squared distance from p to the triangle (a, b, c) and the barycentric weights
// (of a, b, c) of the closest point. Exact up to rounding for any triangle,
// including slivers, collinear and coincident corners.
template <typename T>
FG_HD T closest_point_on_triangle(Vec3<T> p, Vec3<T> a, Vec3<T> b, Vec3<T> c, T* bary) {
  return closest_point_on_triangle(p, a, b, c, triangle_terms(a, b, c), bary);
}

}  // namespace geometry
}  // namespace facegeom
