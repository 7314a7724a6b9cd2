// Analytic silhouette anti-aliasing (the nvdiffrast antialias idea), shared by
// the CPU and CUDA back ends.
//
// The unit of work is a pair of neighbouring pixels (p0, p1), p1 one pixel to
// the right of p0 (horizontal pair) or one row up (vertical pair). When their
// triangle ids differ, aa_analyze_pair follows the segment between the two
// pixel centres from the front triangle through its surface to the first
// silhouette edge, and finds where that edge crosses the segment (t in [0, 1],
// measured from the front triangle's pixel). The two colours are
// then blended by the 1D box-filter coverage of that crossing: the triangle
// covers [-0.5, t] of its own pixel and [0.5, t] of the neighbour's.
//
// Geometry is done in homogeneous clip space (x, y, w): an edge's image is the
// line L = A_i x A_j, and L . (X, Y, 1) is its edge function at NDC point
// (X, Y). This needs no division by w, so it stays exact for vertices near or
// behind the camera plane, and the crossing t = E(c_f) / (E(c_f) - E(c_s)) is
// a ratio of two edge-function values (any scale of L cancels).
#pragma once

#include "facegeom/vec.h"

namespace facegeom {
namespace aa {

// Crossings this far outside the segment (in pixels) are still taken (and
// clamped): the rasterizer's coverage and these edge functions may disagree
// by rounding. The same tolerance as nvdiffrast.
constexpr double kAntialiasCrossingSlack = 1.0 / 16.0;

// NDC coordinate of the centre of pixel `index` along an axis of `size` pixels.
template <typename T>
FG_HD T pixel_centre_ndc(int64_t index, int64_t size) {
  return T(2 * index + 1) / T(size) - T(1);
}

// det[a; b; c] of homogeneous (x, y, w) rows: the signed orientation of the
// projected triangle (a, b, c), i.e. which way it faces the camera.
template <typename T>
FG_HD T det3(const T* a, const T* b, const T* c) {
  T bc[3];
  cross3(b, c, bc);
  return dot3(a, bc);
}

// Clip-space (x, y, w) of vertex v of one image's pos [V, 4].
template <typename T>
FG_HD void load_xyw(const T* pos, int64_t v, T* out) {
  out[0] = pos[4 * v];
  out[1] = pos[4 * v + 1];
  out[2] = pos[4 * v + 3];
}

// Triangle id (0-based) stored in a rast texel, or -1 for background and for
// values that are not a valid id (so corrupt input is skipped, never read past).
template <typename T>
FG_HD int64_t rast_triangle(const T* texel, int64_t num_triangles) {
  const T id = texel[3];
  if (!(id >= T(1) && id <= T(num_triangles))) return -1;
  return static_cast<int64_t>(id) - 1;
}

// What aa_analyze_pair found for one pair; meaningful only when it returns true.
template <typename T>
struct AntialiasCrossing {
  bool front_is_first;  // the front triangle covers p0 (else p1)
  bool clamped;         // t was outside [0, 1] and clamped: no gradient to pos
  int64_t vi, vj;       // the crossed edge's vertex indices into this image's pos
  T ai[3], aj[3];       // their clip-space (x, y, w)
  T e_front, e_other;   // L . (centre, 1) at the front and at the other pixel
  T t;                  // crossing along the segment, 0 at the front pixel centre
};

// Most triangles a walk from one pixel centre to the next may cross before a
// silhouette edge is found (dense meshes seen at a grazing angle have many
// sub-pixel triangles there); a pair needing more is left unblended.
constexpr int kAntialiasMaxWalk = 16;

// Exit of the segment hf -> hs (homogeneous NDC points) from triangle a[3]:
// among edges whose inside-positive edge function decreases along the
// segment, the first one reached. Returns the edge index or -1.
template <typename T>
FG_HD int aa_exit_edge(T (*a)[3], T sign, const T* hf, const T* hs, T* t_out, T* ef_out,
                       T* es_out, T* line_out) {
  int exit_edge = -1;
  for (int k = 0; k < 3; ++k) {
    T line[3];
    cross3(a[(k + 1) % 3], a[(k + 2) % 3], line);
    const T ef = dot3(line, hf), es = dot3(line, hs);
    if (!(sign * es < sign * ef)) continue;
    const T t = ef / (ef - es);
    if (exit_edge < 0 || t < *t_out) {
      exit_edge = k;
      *t_out = t;
      *ef_out = ef;
      *es_out = es;
      line_out[0] = line[0];
      line_out[1] = line[1];
      line_out[2] = line[2];
    }
  }
  return exit_edge;
}

// Analyses the pair (p0, p1): texels r0, r1 of rast, NDC centres c0, c1.
// `horizontal` says p1 is to the right of p0 (else above it). pos is this
// image's [V, 4]; tri and topology are [F, 3] (topology[f][k]: the other
// triangle sharing edge k of f, -1 if none).
//
// Starting in the front triangle, the segment from its pixel centre towards
// the other centre is followed across edges to neighbouring triangles of the
// same surface (non-silhouette edges) until it leaves through a silhouette
// edge. Returns true when that happens between the two centres; the caller
// then blends (aa_blend) and differentiates (aa_crossing_backward).
template <typename T>
FG_HD bool aa_analyze_pair(const T* r0, const T* r1, const T* c0, const T* c1, bool horizontal,
                           int64_t height, int64_t width, const T* pos, int64_t num_vertices,
                           const int32_t* tri, const int32_t* topology, int64_t num_triangles,
                           AntialiasCrossing<T>* out) {
  if (r0[3] == r1[3]) return false;  // the same triangle (or both background)
  const int64_t t0 = rast_triangle(r0, num_triangles);
  const int64_t t1 = rast_triangle(r1, num_triangles);
  if (t0 < 0 && t1 < 0) return false;
  // The front triangle: the only one, or the nearer by z/w (a tie picks p1's,
  // as nvdiffrast does).
  const bool front_first = t1 < 0 || (t0 >= 0 && r0[2] < r1[2]);
  const T* cf = front_first ? c0 : c1;
  const T* cs = front_first ? c1 : c0;
  const T hf[3] = {cf[0], cf[1], T(1)};
  const T hs[3] = {cs[0], cs[1], T(1)};
  const T slack = T(kAntialiasCrossingSlack);

  int64_t f = front_first ? t0 : t1;
  for (int step = 0; step < kAntialiasMaxWalk; ++step) {
    int64_t v[3];
    T a[3][3];
    for (int k = 0; k < 3; ++k) {
      v[k] = tri[3 * f + k];
      if (v[k] < 0 || v[k] >= num_vertices) return false;
      load_xyw(pos, v[k], a[k]);
    }
    const T orientation = det3(a[0], a[1], a[2]);
    if (!(orientation != T(0))) return false;  // edge-on (or NaN): covers no pixel
    const T sign = orientation > T(0) ? T(1) : T(-1);
    T t = T(0), ef = T(0), es = T(0), line[3];
    const int k = aa_exit_edge(a, sign, hf, hs, &t, &ef, &es, line);
    if (k < 0 || !(t <= T(1) + slack)) return false;  // the other centre is inside
    const int i = (k + 1) % 3, j = (k + 2) % 3;

    // A silhouette: no neighbour across the edge, or the neighbour's far
    // vertex lies on the same side of the edge as this triangle's, so the
    // neighbour faces the other way (folds behind). det(A_i, A_j, A_k) is
    // `orientation`.
    const int64_t neighbour = topology[3 * f + k];
    int64_t opposite = -1;
    if (neighbour >= 0 && neighbour < num_triangles) {
      for (int m = 0; m < 3; ++m) {
        const int64_t w = tri[3 * neighbour + m];
        if (w != v[i] && w != v[j] && w >= 0 && w < num_vertices) opposite = w;
      }
    }
    bool silhouette = opposite < 0;
    if (!silhouette) {
      T ao[3];
      load_xyw(pos, opposite, ao);
      silhouette = orientation * det3(a[i], a[j], ao) >= T(0);
    }
    if (!silhouette) {  // the surface goes on: follow the segment into the neighbour
      f = neighbour;
      continue;
    }
    if (!(t >= -slack)) return false;

    // Each edge is handled by one pair direction only, the one most across
    // it: horizontal pairs take edges at least as steep as 45 degrees (in
    // pixels), vertical pairs the flatter ones. (The line's pixel-space
    // normal is (L.x / W, L.y / H) up to a factor 2.)
    const T across_x = (line[0] < T(0) ? -line[0] : line[0]) * T(height);
    const T across_y = (line[1] < T(0) ? -line[1] : line[1]) * T(width);
    if (horizontal ? !(across_x >= across_y) : !(across_y > across_x)) return false;

    out->front_is_first = front_first;
    out->clamped = t < T(0) || t > T(1);
    out->vi = v[i];
    out->vj = v[j];
    for (int c = 0; c < 3; ++c) {
      out->ai[c] = a[i][c];
      out->aj[c] = a[j][c];
    }
    out->e_front = ef;
    out->e_other = es;
    out->t = t < T(0) ? T(0) : (t > T(1) ? T(1) : t);
    return true;
  }
  return false;
}

// The blend of a crossing: pixel `modified` receives
// weight * (colour[source] - colour[modified]). t < 1/2 leaves part of the
// front pixel to the other surface; t >= 1/2 spills the front triangle into
// the other pixel.
template <typename T>
FG_HD void aa_blend(const AntialiasCrossing<T>& x, bool* modified_is_first, T* weight) {
  const bool front_modified = x.t < T(0.5);
  *modified_is_first = front_modified == x.front_is_first;
  *weight = front_modified ? T(0.5) - x.t : x.t - T(0.5);
}

// d weight / d t for aa_blend.
template <typename T>
FG_HD T aa_blend_slope(const AntialiasCrossing<T>& x) {
  return x.t < T(0.5) ? T(-1) : T(1);
}

// Reverse mode of t = e_f / (e_f - e_s), e = (A_i x A_j) . (centre, 1), given
// dL/dt: the gradients of the edge's endpoints' (x, y, w). Zero when t was
// clamped.
template <typename T>
FG_HD void aa_crossing_backward(const AntialiasCrossing<T>& x, const T* cf, const T* cs, T grad_t,
                                T* grad_ai, T* grad_aj) {
  if (x.clamped) grad_t = T(0);
  const T denom = x.e_front - x.e_other;
  const T inv2 = T(1) / (denom * denom);
  const T g_ef = -grad_t * x.e_other * inv2;  // dt/de_f = -e_s / (e_f - e_s)^2
  const T g_es = grad_t * x.e_front * inv2;   // dt/de_s =  e_f / (e_f - e_s)^2
  const T g_line[3] = {g_ef * cf[0] + g_es * cs[0], g_ef * cf[1] + g_es * cs[1], g_ef + g_es};
  // d(G . (a x b)) / da = b x G, / db = G x a.
  cross3(x.aj, g_line, grad_ai);
  cross3(g_line, x.ai, grad_aj);
}

// One batch of images with their mesh: what every pixel-level routine reads.
// Also the launchers' parameter struct (as nvdiffrast's AntialiasKernelParams),
// filled field by field by the bindings.
template <typename T>
struct AntialiasProblem {
  int64_t height = 0, width = 0, channels = 0;
  const T* color = nullptr;      // [B, H, W, C]
  const T* rast = nullptr;       // [B, H, W, 4]
  const T* pos = nullptr;        // [B, V, 4], or [V, 4] with pos_batch_stride 0
  int64_t pos_batch_stride = 0;  // V * 4 or 0
  int64_t num_vertices = 0;
  const int32_t* tri = nullptr;       // [F, 3]
  const int32_t* topology = nullptr;  // [F, 3] neighbouring triangle across each edge, or -1
  int64_t num_triangles = 0;
};

// The pair whose first pixel is (b, y, x); its second pixel, one to the right
// (horizontal) or one row up, must lie in the image. c0, c1 receive the NDC
// centres, second_pixel the linear index of the second pixel.
template <typename T>
FG_HD bool aa_pair_at(const AntialiasProblem<T>& p, int64_t b, int64_t y, int64_t x,
                      bool horizontal, AntialiasCrossing<T>* crossing, T* c0, T* c1) {
  const int64_t first = (b * p.height + y) * p.width + x;
  const int64_t second = horizontal ? first + 1 : first + p.width;
  const int64_t x1 = horizontal ? x + 1 : x, y1 = horizontal ? y : y + 1;
  c0[0] = pixel_centre_ndc<T>(x, p.width);
  c0[1] = pixel_centre_ndc<T>(y, p.height);
  c1[0] = pixel_centre_ndc<T>(x1, p.width);
  c1[1] = pixel_centre_ndc<T>(y1, p.height);
  return aa_analyze_pair(p.rast + 4 * first, p.rast + 4 * second, c0, c1, horizontal, p.height,
                         p.width, p.pos + p.pos_batch_stride * b, p.num_vertices, p.tri,
                         p.topology, p.num_triangles, crossing);
}

// The (up to) four pairs that contain pixel (y, x): as first pixel of its right
// and upper pair, as second pixel of its left and lower pair. Calls
// visit(first_y, first_x, horizontal, pixel_is_first) for those inside the
// image, in a fixed order (left, right, below, above).
template <typename Visit>
FG_HD void aa_for_pairs_of_pixel(int64_t height, int64_t width, int64_t y, int64_t x,
                                 Visit&& visit) {
  if (x > 0) visit(y, x - 1, true, false);
  if (x + 1 < width) visit(y, x, true, true);
  if (y > 0) visit(y - 1, x, false, false);
  if (y + 1 < height) visit(y, x, false, true);
}

// The blends of the (up to) four pairs containing pixel (b, y, x), in
// aa_for_pairs_of_pixel's order: calls visit(pixel_is_modified, weight, other)
// for each pair that blends, where `other` is the pair's other pixel (flat
// index) and the modified pixel becomes itself + weight * (source - itself).
template <typename T, typename Visit>
FG_HD void aa_for_blends_of_pixel(const AntialiasProblem<T>& p, int64_t b, int64_t y, int64_t x,
                                  Visit&& visit) {
  const int64_t pixel = (b * p.height + y) * p.width + x;
  aa_for_pairs_of_pixel(p.height, p.width, y, x, [&](int64_t fy, int64_t fx, bool horizontal,
                                                     bool pixel_is_first) {
    AntialiasCrossing<T> crossing;
    T c0[2], c1[2];
    if (!aa_pair_at(p, b, fy, fx, horizontal, &crossing, c0, c1)) return;
    bool modified_is_first;
    T weight;
    aa_blend(crossing, &modified_is_first, &weight);
    const int64_t other = pixel_is_first ? (horizontal ? pixel + 1 : pixel + p.width)
                                         : (horizontal ? pixel - 1 : pixel - p.width);
    visit(modified_is_first == pixel_is_first, weight, other);
  });
}

// out[pixel] = color[pixel] + the blends of every pair in which this pixel is
// the one modified. A gather: each output pixel is written by one thread, so
// no atomics and a fixed summation order on every back end.
template <typename T>
FG_HD void aa_pixel_forward(const AntialiasProblem<T>& p, int64_t b, int64_t y, int64_t x,
                            T* out) {
  const int64_t pixel = (b * p.height + y) * p.width + x;
  const int64_t C = p.channels;
  const T* own = p.color + C * pixel;
  for (int64_t c = 0; c < C; ++c) out[C * pixel + c] = own[c];
  aa_for_blends_of_pixel(p, b, y, x, [&](bool pixel_is_modified, T weight, int64_t other) {
    if (!pixel_is_modified) return;
    const T* source = p.color + C * other;
    for (int64_t c = 0; c < C; ++c) out[C * pixel + c] += weight * (source[c] - own[c]);
  });
}

// grad_color[pixel], gathered: grad_out[pixel] through the identity, minus
// weight * grad_out[pixel] where this pixel was modified, plus
// weight * grad_out[modified] where it was the source of a blend.
template <typename T>
FG_HD void aa_pixel_grad_color(const AntialiasProblem<T>& p, const T* grad_out, int64_t b,
                               int64_t y, int64_t x, T* grad_color) {
  const int64_t pixel = (b * p.height + y) * p.width + x;
  const int64_t C = p.channels;
  T* g = grad_color + C * pixel;
  for (int64_t c = 0; c < C; ++c) g[c] = grad_out[C * pixel + c];
  aa_for_blends_of_pixel(p, b, y, x, [&](bool pixel_is_modified, T weight, int64_t other) {
    if (pixel_is_modified) {
      for (int64_t c = 0; c < C; ++c) g[c] -= weight * grad_out[C * pixel + c];
    } else {
      for (int64_t c = 0; c < C; ++c) g[c] += weight * grad_out[C * other + c];
    }
  });
}

// The pos gradient of one pair (first pixel (b, y, x)): returns false when the
// pair has no crossing; else the crossed edge's vertices (indices into this
// image's pos) and the gradients of their clip-space (x, y, w).
template <typename T>
FG_HD bool aa_pair_grad_pos(const AntialiasProblem<T>& p, const T* grad_out, int64_t b,
                            int64_t y, int64_t x, bool horizontal, int64_t* vi, int64_t* vj,
                            T* grad_ai, T* grad_aj) {
  AntialiasCrossing<T> crossing;
  T c0[2], c1[2];
  if (!aa_pair_at(p, b, y, x, horizontal, &crossing, c0, c1)) return false;
  bool modified_is_first;
  T weight;
  aa_blend(crossing, &modified_is_first, &weight);
  const int64_t first = (b * p.height + y) * p.width + x;
  const int64_t second = horizontal ? first + 1 : first + p.width;
  const int64_t modified = modified_is_first ? first : second;
  const int64_t source = modified_is_first ? second : first;
  const int64_t C = p.channels;
  T grad_weight = T(0);
  for (int64_t c = 0; c < C; ++c) {
    grad_weight += grad_out[C * modified + c] * (p.color[C * source + c] - p.color[C * modified + c]);
  }
  const T* cf = crossing.front_is_first ? c0 : c1;
  const T* cs = crossing.front_is_first ? c1 : c0;
  aa_crossing_backward(crossing, cf, cs, grad_weight * aa_blend_slope(crossing), grad_ai, grad_aj);
  *vi = crossing.vi;
  *vj = crossing.vj;
  return true;
}

}  // namespace aa
}  // namespace facegeom
