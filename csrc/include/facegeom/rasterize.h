// Rasterization math shared by the CPU and CUDA back ends (and mirrored
// operation for operation by facegeom/ops/reference.py).
//
// A pixel centre q = (qx, qy, 1) in NDC is inside triangle (p0, p1, p2), with
// p = (x, y, w) the clip coordinates, when the homogeneous edge functions
// e_i(q) = det(p_j, p_k, q) ((i, j, k) cyclic) all have the sign of
// det(p0, p1, p2). Then e_i / sum(e) are the perspective-correct barycentrics
// and the surface point seen through q has w > 0, so triangles crossing w = 0
// are handled without clipping. Triangles entirely in front of the camera (the
// usual case) run the same test on their projected vertices instead, whose 2D
// edge functions are exactly zero at a vertex (see TriangleSetup). Coverage and
// depth are computed in float64 with exactly rounded operations (no FMA
// contraction), so the CPU, the GPU and the float64 reference pick the same
// triangle at every pixel.
#pragma once

#include <cmath>
#include <cstdint>

#include "facegeom/vec.h"

namespace facegeom {
namespace raster {

// Everything a rasterize launcher needs (as nvdiffrast's RasterizeKernelParams):
// filled field by field by the bindings. Image b draws triangles
// [first, first + count) of tri with the vertices at pos + b * pos_batch_stride,
// where (first, count) = ranges[b] in range mode (ranges non-null,
// pos_batch_stride 0) and (0, num_triangles) otherwise.
template <typename T>
struct RasterizeParams {
  int64_t batch = 0, height = 0, width = 0;  // rast is [B, H, W, 4]
  int64_t num_vertices = 0;                  // V
  int64_t num_triangles = 0;                 // F
  const T* pos = nullptr;                    // [B, V, 4], or [V, 4] in range mode
  int64_t pos_batch_stride = 0;              // 4 V, or 0 in range mode
  const int32_t* tri = nullptr;              // [F, 3]
  const int32_t* ranges = nullptr;           // [B, 2] (first, count), or null
  // Forward outputs, backward inputs: rast [B, H, W, 4] = (u, v, z/w, id + 1);
  // rast_db [B, H, W, 4] = (du/dX, du/dY, dv/dX, dv/dY) per pixel, or null.
  T* rast = nullptr;
  T* rast_db = nullptr;
  // Depth peeling (rasterize_next_layer): the previous layer's rast [B, H, W, 4], or
  // null. Only fragments behind_previous its pixel are drawn.
  const T* peel = nullptr;
  // Backward: grad_rast [B, H, W, 4]; grad_db [B, H, W, 4] or null; grad_pos
  // has pos's layout (summed over images in range mode), zeroed by the caller.
  const T* grad_rast = nullptr;
  const T* grad_db = nullptr;
  T* grad_pos = nullptr;
};

// Exactly rounded double arithmetic: nvcc would otherwise fuse a * b + c into an
// FMA on the device (and a host compiler targeting FMA hardware may do the
// same), and a pixel centre on a shared edge must give bit-identical edge
// values on every back end and in the reference.
#if defined(__CUDA_ARCH__)
FG_HD double mul(double a, double b) { return __dmul_rn(a, b); }
FG_HD double add(double a, double b) { return __dadd_rn(a, b); }
FG_HD double sub(double a, double b) { return __dsub_rn(a, b); }
FG_HD double div(double a, double b) { return __ddiv_rn(a, b); }
FG_HD float to_float(double a) { return __double2float_rn(a); }
#else
using std::ceil;
using std::floor;
#if defined(__x86_64__) && defined(__FMA__) && defined(__GNUC__)
// An empty asm makes the product a value the compiler cannot fuse into an add.
FG_HD double mul(double a, double b) {
  double product = a * b;
  __asm__("" : "+x"(product));
  return product;
}
#elif defined(__aarch64__) && defined(__GNUC__)
FG_HD double mul(double a, double b) {
  double product = a * b;
  __asm__("" : "+w"(product));
  return product;
}
#else
FG_HD double mul(double a, double b) { return a * b; }
#endif
FG_HD double add(double a, double b) { return a + b; }
FG_HD double sub(double a, double b) { return a - b; }
FG_HD double div(double a, double b) { return a / b; }
FG_HD float to_float(double a) { return static_cast<float>(a); }
#endif

// NDC coordinate of pixel index i's centre on an axis of n pixels.
FG_HD double pixel_centre(int64_t i, int64_t n) {
  return sub(mul(div(add(static_cast<double>(i), 0.5), static_cast<double>(n)), 2.0), 1.0);
}

// (x, y, w) of a vertex compared lexicographically.
FG_HD bool lexicographic_less(const double* a, const double* b) {
  if (a[0] != b[0]) return a[0] < b[0];
  if (a[1] != b[1]) return a[1] < b[1];
  return a[2] < b[2];
}

// Per-triangle constants of the coverage test and of the barycentrics.
//
// Two forms of the edge functions, both evaluated from the edge's
// lexicographically smaller end point and negated if needed, so that the two
// triangles sharing an edge get exactly opposite values (no pixel centre on a
// shared edge is drawn twice or missed):
// * screen form (all w > 0, the usual case): E(q) = dx (qy - fy) - dy (qx - fx)
//   on the projected vertices. It is exactly zero at a vertex, so the tie rule
//   also resolves pixel centres on shared vertices exactly once;
// * homogeneous form (a vertex at or behind w = 0): e(q) = (a qx + b qy) + c with
//   (a, b, c) = pj x pk in (x, y, w), positive only where the surface is in
//   front of the camera, so no clipping is needed.
// Both are oriented (times the sign of the area) to be positive inside.
struct ScreenForm {
  double fx[3], fy[3];  // first end point of each edge (projected)
  double dx[3], dy[3];  // oriented edge direction
  double zn[3];         // z / w per vertex
  double inv_w[3];      // 1 / w per vertex: the perspective weights
};
struct HomogeneousForm {
  double a[3], b[3], c[3];  // oriented edge function coefficients
  double z[3], w[3];        // clip z and w per vertex
};
struct TriangleSetup {
  union {
    ScreenForm s;
    HomogeneousForm h;
  };
  bool screen;
  int owns_ties;  // bit i: pixel centres exactly on edge i belong to this triangle
};

// clip[v] = (x, y, z, w) of vertex v. Returns false for triangles that are never
// drawn: zero projected area (degenerate or exactly edge-on) or non-finite input.
FG_HD bool setup_triangle(const double clip[3][4], TriangleSetup& t) {
  // Any NaN/Inf clip coordinate (even one that projects to a finite point, such as
  // w = inf): not drawn (x - x is 0 only for finite x).
  for (int v = 0; v < 3; ++v) {
    for (int c = 0; c < 4; ++c) {
      if (!(clip[v][c] - clip[v][c] == 0.0)) return false;
    }
  }
  t.screen = clip[0][3] > 0 && clip[1][3] > 0 && clip[2][3] > 0;
  double p[3][3];  // (x, y, w), with (x, y) projected in screen form
  for (int v = 0; v < 3; ++v) {
    p[v][0] = t.screen ? div(clip[v][0], clip[v][3]) : clip[v][0];
    p[v][1] = t.screen ? div(clip[v][1], clip[v][3]) : clip[v][1];
    p[v][2] = clip[v][3];
  }
  double det, coef[3][3];  // per edge: coefficients of qx and qy (and c), not yet oriented
  for (int i = 0; i < 3; ++i) {
    const double* pj = p[(i + 1) % 3];
    const double* pk = p[(i + 2) % 3];
    const bool swap = lexicographic_less(pk, pj);
    const double* f = swap ? pk : pj;
    const double* s = swap ? pj : pk;
    const double flip = swap ? -1.0 : 1.0;
    if (t.screen) {
      t.s.fx[i] = f[0];
      t.s.fy[i] = f[1];
      t.s.dx[i] = flip * sub(s[0], f[0]);
      t.s.dy[i] = flip * sub(s[1], f[1]);
      coef[i][0] = -t.s.dy[i];
      coef[i][1] = t.s.dx[i];
      coef[i][2] = 0.0;  // unused: the screen form is not a plane through the origin
    } else {
      coef[i][0] = flip * sub(mul(f[1], s[2]), mul(f[2], s[1]));
      coef[i][1] = flip * sub(mul(f[2], s[0]), mul(f[0], s[2]));
      coef[i][2] = flip * sub(mul(f[0], s[1]), mul(f[1], s[0]));
    }
  }
  if (t.screen) {
    // Twice the signed area: vertex 0 against edge (1, 2).
    det = sub(mul(sub(p[2][0], p[1][0]), sub(p[0][1], p[1][1])),
              mul(sub(p[2][1], p[1][1]), sub(p[0][0], p[1][0])));
  } else {
    det = add(add(mul(p[0][0], coef[0][0]), mul(p[0][1], coef[0][1])), mul(p[0][2], coef[0][2]));
  }
  if (!(det > 0 || det < 0)) return false;  // zero area, or NaN
  const double orientation = det > 0 ? 1.0 : -1.0;
  t.owns_ties = 0;
  for (int i = 0; i < 3; ++i) {
    const double a = orientation * coef[i][0], b = orientation * coef[i][1];
    // Tie rule: a centre on the edge goes to the side that q + (eps, eps^2) lies on.
    if (a > 0 || (a == 0 && b > 0)) t.owns_ties |= 1 << i;
    if (t.screen) {
      t.s.dx[i] = orientation * t.s.dx[i];
      t.s.dy[i] = orientation * t.s.dy[i];
      t.s.zn[i] = div(clip[i][2], clip[i][3]);
      t.s.inv_w[i] = 1.0 / clip[i][3];
    } else {
      t.h.a[i] = a;
      t.h.b[i] = b;
      t.h.c[i] = orientation * coef[i][2];
      t.h.z[i] = clip[i][2];
      t.h.w[i] = clip[i][3];
    }
  }
  return true;
}

// Coverage and depth test of pixel centre (qx, qy): true when the triangle is
// drawn there; e receives the oriented edge values, depth z/w.
FG_HD bool covers(const TriangleSetup& t, double qx, double qy, double* e, double& depth) {
  for (int i = 0; i < 3; ++i) {
    if (t.screen) {
      e[i] = sub(mul(t.s.dx[i], sub(qy, t.s.fy[i])), mul(t.s.dy[i], sub(qx, t.s.fx[i])));
    } else {
      e[i] = add(add(mul(t.h.a[i], qx), mul(t.h.b[i], qy)), t.h.c[i]);
    }
    if (!(e[i] > 0 || (e[i] == 0 && ((t.owns_ties >> i) & 1)))) return false;
  }
  const double total = add(add(e[0], e[1]), e[2]);
  if (!(total > 0)) return false;  // homogeneous form: behind the camera
  if (t.screen) {
    depth = div(add(add(mul(e[0], t.s.zn[0]), mul(e[1], t.s.zn[1])), mul(e[2], t.s.zn[2])), total);
  } else {
    const double z = add(add(mul(e[0], t.h.z[0]), mul(e[1], t.h.z[1])), mul(e[2], t.h.z[2]));
    const double w = add(add(mul(e[0], t.h.w[0]), mul(e[1], t.h.w[1])), mul(e[2], t.h.w[2]));
    depth = div(z, w);
  }
  return depth >= -1.0 && depth <= 1.0;  // OpenGL near and far planes
}

// Inclusive pixel bounds [x0, x1] x [y0, y1] of the part of the triangle that
// can be drawn (-w <= z <= w, which implies w >= 0). A triangle reaching outside
// that slab is clipped against both planes first, so vertices behind the camera
// do not blow the box up. Returns false when no pixel centre can be drawn.
FG_HD bool pixel_bounds(const double clip[3][4], int64_t width, int64_t height, int64_t* box) {
  double poly[2][5][4];
  int count = 3, cur = 0;
  bool clipped = false;
  for (int v = 0; v < 3; ++v) {
    for (int c = 0; c < 4; ++c) poly[0][v][c] = clip[v][c];
    clipped = clipped || !(clip[v][3] + clip[v][2] >= 0 && clip[v][3] - clip[v][2] >= 0 &&
                           clip[v][3] > 0);
  }
  if (clipped) {
    for (int plane = 0; plane < 2; ++plane) {  // w + z >= 0, then w - z >= 0
      const double sz = plane == 0 ? 1.0 : -1.0;
      int out = 0;
      for (int v = 0; v < count; ++v) {
        const double* a = poly[cur][v];
        const double* b = poly[cur][(v + 1) % count];
        const double da = a[3] + sz * a[2], db = b[3] + sz * b[2];
        if (da >= 0) {
          for (int c = 0; c < 4; ++c) poly[1 - cur][out][c] = a[c];
          ++out;
        }
        if ((da >= 0) != (db >= 0)) {
          const double t = da / (da - db);
          for (int c = 0; c < 4; ++c) poly[1 - cur][out][c] = a[c] + t * (b[c] - a[c]);
          ++out;
        }
      }
      count = out;
      cur = 1 - cur;
      if (count == 0) return false;
    }
  }
  double lo[2] = {1e300, 1e300}, hi[2] = {-1e300, -1e300};
  bool at_infinity = false;
  for (int v = 0; v < count; ++v) {
    const double* a = poly[cur][v];
    if (!(a[3] > 0)) {
      at_infinity = true;  // a direction (w = z = 0), not a point: no finite box
      break;
    }
    const double inv_w = 1.0 / a[3];
    for (int c = 0; c < 2; ++c) {
      const double ndc = a[c] * inv_w;
      lo[c] = ndc < lo[c] ? ndc : lo[c];
      hi[c] = ndc > hi[c] ? ndc : hi[c];
    }
  }
  // The coverage test is exact, the box only needs to be conservative: a margin
  // of 1e-3 pixel absorbs the rounding of the projection, a whole pixel that of
  // the clipping.
  const double margin = clipped ? 1.0 : 1e-3;
  const int64_t size[2] = {width, height};
  for (int c = 0; c < 2; ++c) {
    double first = 0, last = static_cast<double>(size[c] - 1);
    if (!at_infinity) {
      // Pixel i's centre is at (i + 0.5) * 2 / n - 1 in NDC.
      const double f = ceil((lo[c] + 1) * 0.5 * size[c] - 0.5 - margin);
      const double l = floor((hi[c] + 1) * 0.5 * size[c] - 0.5 + margin);
      if (!(f <= l) || !(f <= last) || !(l >= 0)) return false;  // no centre (or NaN)
      first = f > 0 ? f : 0;
      last = l < last ? l : last;
    }
    box[2 * c] = static_cast<int64_t>(first);
    box[2 * c + 1] = static_cast<int64_t>(last);
  }
  return true;
}

// Depth-test key: z/w rounded to float32 (order-preserving bits) in the high
// word, the triangle id in the low word, so min(key) keeps the nearest surface
// and the lower id on equal depth, independent of processing order.
FG_HD uint64_t depth_key(double depth, int64_t id) {
  float d = to_float(depth);
  if (d == 0.0f) d = 0.0f;  // -0 and +0 compare equal
  union {
    float f;
    uint32_t u;
  } bits;
  bits.f = d;
  const uint32_t ordered = (bits.u & 0x80000000u) ? ~bits.u : (bits.u | 0x80000000u);
  return (static_cast<uint64_t>(ordered) << 32) | static_cast<uint32_t>(id);
}

constexpr uint64_t kEmptyKey = ~static_cast<uint64_t>(0);

// Depth peeling: whether a fragment at `depth` survives behind the previous layer's
// pixel `previous` = (u, v, z/w, id + 1): it must be strictly farther than the surface
// drawn there (nvdiffrast discards depth <= peel depth, NVlabs/nvdiffrast
// csrc/common/cudaraster/impl/FineRaster.inl:349), and a pixel the previous layer left
// empty stays empty. The stored z/w is the double the depth test rounded, so its float
// rounding is the previous fragment's depth key.
template <typename T>
FG_HD bool behind_previous(const T* previous, double depth) {
  if (previous[3] == T(0)) return false;
  return to_float(depth) > to_float(static_cast<double>(previous[2]));
}

// rast (u, v) and rast_db (du/dX, du/dY, dv/dX, dv/dY) of a drawn pixel from
// its oriented edge values: the perspective weights g_i = e_i / w_i (screen
// form) or e_i (homogeneous form) normalised; dX = 2 / W in NDC, dY = 2 / H.
FG_HD void barycentrics(const TriangleSetup& t, const double* e, double* uv, double* db,
                        double ndc_per_pixel_x, double ndc_per_pixel_y) {
  double g[3], ga[3], gb[3];  // weights and their derivatives along qx, qy
  for (int i = 0; i < 3; ++i) {
    if (t.screen) {
      g[i] = e[i] * t.s.inv_w[i];
      ga[i] = -t.s.dy[i] * t.s.inv_w[i];
      gb[i] = t.s.dx[i] * t.s.inv_w[i];
    } else {
      g[i] = e[i];
      ga[i] = t.h.a[i];
      gb[i] = t.h.b[i];
    }
  }
  const double s = g[0] + g[1] + g[2];
  uv[0] = g[0] / s;
  uv[1] = g[1] / s;
  if (db != nullptr) {
    const double sa = ga[0] + ga[1] + ga[2], sb = gb[0] + gb[1] + gb[2];
    db[0] = (ga[0] - uv[0] * sa) / s * ndc_per_pixel_x;
    db[1] = (gb[0] - uv[0] * sb) / s * ndc_per_pixel_y;
    db[2] = (ga[1] - uv[1] * sa) / s * ndc_per_pixel_x;
    db[3] = (gb[1] - uv[1] * sb) / s * ndc_per_pixel_y;
  }
}

// Triangle id named by rast's last channel (which stores id + 1; 0 is the
// background), or -1 for background and for values that name no triangle of
// a mesh with num_triangles triangles.
FG_HD int64_t stored_triangle(double stored, int64_t num_triangles) {
  if (!(stored >= 1 && stored <= static_cast<double>(num_triangles))) return -1;
  const int64_t id = static_cast<int64_t>(stored);
  return static_cast<double>(id) == stored ? id - 1 : -1;
}

// Gradient of one pixel's (u, v, z/w) and, when grad_db is given, of its
// (du/dqx, du/dqy, dv/dqx, dv/dqy) (in NDC units) w.r.t. the triangle's clip
// coordinates: grad[v] = dL/d(x, y, z, w) of vertex v.
//
// With n_i = p_j x p_k, e_i = n_i . q, S = sum e, b_i = e_i / S,
// z/w = sum(e z) / sum(e w) and db_i/dqx = (n_i.x - b_i sum n.x) / S, the chain
// runs backwards through b, S, the explicit z and w, then n, then p.
FG_HD void pixel_gradient(const double clip[3][4], double qx, double qy, double grad_u,
                          double grad_v, double grad_depth, const double* grad_db,
                          double grad[3][4]) {
  double p[3][3], n[3][3], e[3];
  for (int v = 0; v < 3; ++v) {
    p[v][0] = clip[v][0];
    p[v][1] = clip[v][1];
    p[v][2] = clip[v][3];
  }
  const double q[3] = {qx, qy, 1.0};
  for (int i = 0; i < 3; ++i) {
    cross3(p[(i + 1) % 3], p[(i + 2) % 3], n[i]);
    e[i] = n[i][0] * q[0] + n[i][1] * q[1] + n[i][2];
  }
  const double s = e[0] + e[1] + e[2];
  const double den = e[0] * clip[0][3] + e[1] * clip[1][3] + e[2] * clip[2][3];
  const double depth = (e[0] * clip[0][2] + e[1] * clip[1][2] + e[2] * clip[2][2]) / den;
  const double b[3] = {e[0] / s, e[1] / s, e[2] / s};
  double grad_b[3] = {grad_u, grad_v, 0.0};
  double grad_n[3][3] = {{0, 0, 0}, {0, 0, 0}, {0, 0, 0}};
  double grad_s = 0.0;
  if (grad_db != nullptr) {
    const double sa = n[0][0] + n[1][0] + n[2][0], sb = n[0][1] + n[1][1] + n[2][1];
    const double gx[3] = {grad_db[0], grad_db[2], 0.0}, gy[3] = {grad_db[1], grad_db[3], 0.0};
    double h = 0.0, gxb = 0.0, gyb = 0.0;
    for (int i = 0; i < 3; ++i) {
      h += gx[i] * (n[i][0] - b[i] * sa) + gy[i] * (n[i][1] - b[i] * sb);
      gxb += gx[i] * b[i];
      gyb += gy[i] * b[i];
    }
    h /= s;
    for (int i = 0; i < 3; ++i) {
      grad_n[i][0] += (gx[i] - gxb) / s;
      grad_n[i][1] += (gy[i] - gyb) / s;
      grad_b[i] -= (gx[i] * sa + gy[i] * sb) / s;
    }
    grad_s = -h / s;
  }
  const double gbb = grad_b[0] * b[0] + grad_b[1] * b[1] + grad_b[2] * b[2];
  for (int m = 0; m < 3; ++m) {
    const double grad_e = (grad_b[m] - gbb) / s + grad_s +
                          grad_depth * (clip[m][2] - depth * clip[m][3]) / den;
    for (int c = 0; c < 3; ++c) grad_n[m][c] += grad_e * q[c];
    grad[m][0] = 0.0;
    grad[m][1] = 0.0;
    grad[m][2] = grad_depth * e[m] / den;          // explicit z
    grad[m][3] = -grad_depth * depth * e[m] / den;  // explicit w
  }
  for (int i = 0; i < 3; ++i) {
    const int j = (i + 1) % 3, k = (i + 2) % 3;
    double gj[3], gk[3];
    cross3(p[k], grad_n[i], gj);  // d(pj x pk) . g = dpj . (pk x g)
    cross3(grad_n[i], p[j], gk);  // d(pj x pk) . g = dpk . (g x pj)
    grad[j][0] += gj[0];
    grad[j][1] += gj[1];
    grad[j][3] += gj[2];
    grad[k][0] += gk[0];
    grad[k][1] += gk[1];
    grad[k][3] += gk[2];
  }
}

}  // namespace raster
}  // namespace facegeom
