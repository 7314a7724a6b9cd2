// Texture sampling with mipmaps (nvdiffrast's texture / texture_construct_mip),
// shared by the CPU and CUDA back ends: the launchers' parameter struct, the mip
// builder, and the per-pixel forward and backward. The pure-PyTorch specification
// is facegeom/ops/reference/texture.py; this file does the same arithmetic in the
// same order. Semantics from NVlabs/nvdiffrast csrc/common/texture_kernel.cu
// (indexCubeMap :99, indexTextureNearest :323, indexTextureLinear :369,
// calculateMipLevel :478, fetchQuad / accumQuad :591, MipBuildKernel :645, forward
// :710, MipGradKernel :844, gradients :906), written anew: cube-map seams are found
// geometrically (cube_wrap_texel) instead of through nvdiffrast's lookup tables.
#pragma once

#include <cstdint>

#include "facegeom/common.h"

namespace facegeom {
namespace texture {

#if !defined(__CUDACC__)
using std::fabs;
using std::floor;
using std::isfinite;
using std::log2;
#endif

// The per-pixel helpers below are forced inline on the host: the compiler then drops
// the zero-initialised structs (MipChoice, Quad) of the paths a mode does not take.
#if defined(__CUDACC__)
#define FG_TEX_HD FG_HD
#else
#define FG_TEX_HD inline __attribute__((always_inline))
#endif

// Filter and boundary modes: nvdiffrast's TEX_MODE_* / TEX_BOUNDARY_MODE_* values.
constexpr int kNearest = 0;
constexpr int kLinear = 1;
constexpr int kLinearMipmapNearest = 2;
constexpr int kLinearMipmapLinear = 3;
constexpr int kCube = 0;
constexpr int kWrap = 1;
constexpr int kClamp = 2;
constexpr int kZero = 3;
// Levels above the base (textures are at most 2**16 texels per side).
constexpr int kMaxMipLevel = 16;
// Texel indices of wild coordinates are clamped here first (they read as outside).
constexpr double kIndexLimit = 1099511627776.0;  // 2**40

// Everything a texture launcher needs (nvdiffrast's TextureKernelParams): filled by
// the bindings; contiguous row-major buffers; null where a pointer does not apply.
template <typename T>
struct TextureParams {
  int64_t batch = 0, height = 0, width = 0;  // uv [B, h, w, 2] (3 for cube maps)
  int64_t channels = 0;                      // C of tex
  int64_t tex_batch = 1;                     // N of tex: 1 (shared by the images) or B
  int64_t tex_height = 0, tex_width = 0;     // base level
  int filter = kLinear, boundary = kWrap;
  int max_level = 0;  // levels above the base in tex[] (0: no mipmaps)
  // Level l: [N, H_l, W_l, C] or [N, 6, H_l, W_l, C], H_l = max(H >> l, 1).
  const T* tex[kMaxMipLevel + 1] = {};
  const T* uv = nullptr;     // [B, h, w, 2 | 3]
  const T* uv_da = nullptr;  // [B, h, w, 4 | 6] or null
  const T* bias = nullptr;   // [B, h, w] or null
  T* out = nullptr;          // [B, h, w, C]
  // Backward: grad_out [B, h, w, C]; grad_tex[l] like tex[l] (accumulated into, zeroed
  // by the caller); grad_uv like uv; grad_uv_da like uv_da; grad_bias like bias (each
  // null when not asked for).
  const T* grad_out = nullptr;
  T* grad_tex[kMaxMipLevel + 1] = {};
  T* grad_uv = nullptr;
  T* grad_uv_da = nullptr;
  T* grad_bias = nullptr;
};

// The gradient buffers of mip levels 1..max_level, passed by value to kernels.
template <typename T>
struct LevelPointers {
  T* level[kMaxMipLevel + 1] = {};
};

FG_HD int64_t level_extent(int64_t base, int level) {
  const int64_t e = base >> level;
  return e > 1 ? e : 1;
}

FG_HD bool is_cube(int boundary) { return boundary == kCube; }

// --------------------------------------------------------------------------
// Mip stack: level l from level l - 1 (2x2 box, or 1x2 where a side is 1).

// One output texel (x, y) of plane `plane` of a level of size out_h x out_w from
// `in` (in_h x in_w per plane); C channels.
template <typename T>
FG_HD void mip_build_texel(const T* in, int64_t in_h, int64_t in_w, T* out, int64_t out_h,
                           int64_t out_w, int64_t plane, int64_t y, int64_t x, int64_t channels) {
  const T* plane_in = in + plane * in_h * in_w * channels;
  T* o = out + ((plane * out_h + y) * out_w + x) * channels;
  if (in_h > 1 && in_w > 1) {
    const T* v0 = plane_in + ((2 * y) * in_w + 2 * x) * channels;
    const T* v1 = v0 + channels;
    const T* v2 = v0 + in_w * channels;
    const T* v3 = v2 + channels;
    for (int64_t c = 0; c < channels; ++c) o[c] = T(0.25) * (v0[c] + v1[c] + v2[c] + v3[c]);
  } else {
    const T* v0 = plane_in + (in_h == 1 ? 2 * x : 2 * y) * channels;
    const T* v1 = v0 + channels;  // the next texel along the side that is not 1
    for (int64_t c = 0; c < channels; ++c) o[c] = T(0.5) * (v0[c] + v1[c]);
  }
}

// The gradient of the mip stack pulled into one base texel (x, y) of `plane`: the
// adjoint of the box filters (nvdiffrast's MipGradKernel). grad_levels[l] for l in
// 1..max_level; adds into grad_base (C channels).
template <typename T>
FG_HD void mip_pull_texel(T* const* grad_levels, int max_level, int64_t base_h, int64_t base_w,
                          int64_t plane, int64_t y, int64_t x, int64_t channels, T* grad_base) {
  T weight = T(1);
  for (int level = 1; level <= max_level; ++level) {
    if (level_extent(base_w, level - 1) > 1) weight *= T(0.5);
    if (level_extent(base_h, level - 1) > 1) weight *= T(0.5);
    const int64_t h = level_extent(base_h, level), w = level_extent(base_w, level);
    x >>= 1;
    y >>= 1;
    const T* g = grad_levels[level] + ((plane * h + y) * w + x) * channels;
    for (int64_t c = 0; c < channels; ++c) grad_base[c] += weight * g[c];
  }
}

// --------------------------------------------------------------------------
// Cube maps.

// The face (+x, -x, +y, -y, +z, -z = 0..5) of direction (x, y, z) and its face
// coordinates (s, t) in [0, 1]; -1 for a direction with no face (zero, NaN).
template <typename T>
FG_HD int cube_face(T x, T y, T z, T& s, T& t) {
  const T ax = fabs(x), ay = fabs(y), az = fabs(z);
  int face;
  T major, along_s, along_t;
  if (az > (ax > ay ? ax : ay)) {
    face = 4, major = z, along_s = x, along_t = y;
  } else if (ay > ax) {
    face = 2, major = y, along_s = x, along_t = z;
  } else {
    face = 0, major = x, along_s = z, along_t = y;
  }
  if (major < T(0)) face += 1;
  const T half = T(0.5) / fabs(major);
  s = along_s * ((face == 0 || face == 5) ? -half : half) + T(0.5);
  t = along_t * (face == 2 ? half : -half) + T(0.5);
  if (!isfinite(s) || !isfinite(t)) return -1;
  s = s < T(0) ? T(0) : (s > T(1) ? T(1) : s);
  t = t < T(0) ? T(0) : (t > T(1) ? T(1) : t);
  return face;
}

// The point of face `face`'s plane (|major component| = 1) with face coordinates
// s = (a + 1) / 2, t = (b + 1) / 2: the inverse of cube_face.
FG_HD void cube_direction(int face, double a, double b, double* d) {
  switch (face) {
    case 0: d[0] = 1, d[1] = -b, d[2] = -a; break;
    case 1: d[0] = -1, d[1] = -b, d[2] = a; break;
    case 2: d[0] = a, d[1] = 1, d[2] = b; break;
    case 3: d[0] = a, d[1] = -1, d[2] = -b; break;
    case 4: d[0] = a, d[1] = -b, d[2] = 1; break;
    default: d[0] = -a, d[1] = -b, d[2] = -1; break;
  }
}

// Texel (ix, iy) of a size x size face with one index outside [0, size): the texel
// of the neighbouring face under the extended texel centre. Returns false at a
// corner (both outside: no texel). In-range texels pass unchanged.
FG_HD bool cube_wrap_texel(int& face, int64_t& ix, int64_t& iy, int64_t size) {
  const bool out_x = ix < 0 || ix >= size, out_y = iy < 0 || iy >= size;
  if (out_x && out_y) return false;
  if (!out_x && !out_y) return true;
  double d[3];
  cube_direction(face, 2.0 * ((ix + 0.5) / size) - 1.0, 2.0 * ((iy + 0.5) / size) - 1.0, d);
  double s, t;
  face = cube_face<double>(d[0], d[1], d[2], s, t);
  const double fx = floor(s * size), fy = floor(t * size);
  ix = static_cast<int64_t>(fx < 0 ? 0 : (fx > size - 1 ? size - 1 : fx));
  iy = static_cast<int64_t>(fy < 0 ? 0 : (fy > size - 1 ? size - 1 : fy));
  return true;
}

// How a direction's face coordinates change on screen: (ds/dX, ds/dY, dt/dX, dt/dY)
// from da = (dx/dX, dx/dY, dy/dX, dy/dY, dz/dX, dz/dY) (nvdiffrast's
// indexCubeMapGradST), written as res = (gu dc_X + ks dp_X, gu dc_Y + ks dp_Y,
// gv dc_X + kt dq_X, gv dc_Y + kt dq_Y) with c the major axis, p and q the axes along
// s and t. CubeDa holds that decomposition for the backward.
// (No default initialisers: cube_da_setup sets every field, and this sits in the
// per-pixel state of every mode.)
template <typename T>
struct CubeDa {
  int major, axis_s, axis_t;  // component indices
  int along_u, along_v;       // components multiplying gu, gv
  T c, gu, gv, ks, kt, sign_u, sign_v, mm;
  bool mirror_z;
};

template <typename T>
FG_HD CubeDa<T> cube_da_setup(const T* dir) {
  CubeDa<T> k;
  const T ax = fabs(dir[0]), ay = fabs(dir[1]), az = fabs(dir[2]);
  int face;
  if (az > (ax > ay ? ax : ay)) {
    face = 4, k.major = 2, k.axis_s = 0, k.axis_t = 1, k.along_u = 0, k.along_v = 1;
  } else if (ay > ax) {
    face = 2, k.major = 1, k.axis_s = 0, k.axis_t = 2, k.along_u = 0, k.along_v = 2;
  } else {
    face = 0, k.major = 0, k.axis_s = 2, k.axis_t = 1, k.along_u = 2, k.along_v = 1;
  }
  k.c = dir[k.major];
  if (k.c < T(0)) face += 1;
  k.mirror_z = face == 1 || face == 4;
  const T m = T(1) / fabs(k.c);
  const T dm = m * T(0.5);
  k.mm = m * dm;
  k.sign_u = (face == 3 || face == 4 || face == 5) ? T(-1) : T(1);
  k.sign_v = (face == 1 || face == 2 || face == 3 || face == 5) ? T(-1) : T(1);
  k.gu = dir[k.along_u] * (k.sign_u * k.mm);
  k.gv = dir[k.along_v] * (k.sign_v * k.mm);
  if (k.major == 0) {
    k.ks = dm, k.kt = -dm;
  } else if (k.major == 1) {
    k.ks = dm, k.kt = dm;
  } else {
    k.ks = k.c < T(0) ? -dm : dm, k.kt = -dm;
  }
  return k;
}

// res (4) from da (6); false (res zeroed) where not finite.
template <typename T>
FG_HD bool cube_face_da(const CubeDa<T>& k, const T* da, T* res) {
  T d[6];
  for (int i = 0; i < 6; ++i) d[i] = da[i];
  if (k.mirror_z) d[4] = -d[4], d[5] = -d[5];
  const T* dc = d + 2 * k.major;
  const T* dp = d + 2 * k.axis_s;
  const T* dq = d + 2 * k.axis_t;
  res[0] = k.gu * dc[0] + k.ks * dp[0];
  res[1] = k.gu * dc[1] + k.ks * dp[1];
  res[2] = k.gv * dc[0] + k.kt * dq[0];
  res[3] = k.gv * dc[1] + k.kt * dq[1];
  const bool finite = isfinite(res[0]) && isfinite(res[1]) && isfinite(res[2]) && isfinite(res[3]);
  if (!finite) res[0] = res[1] = res[2] = res[3] = T(0);
  return finite;
}

// Given g = dL/dres (4): adds dL/dda (6) and dL/ddir (3).
template <typename T>
FG_HD void cube_face_da_backward(const CubeDa<T>& k, const T* da, const T* g, T* grad_da, T* grad_dir) {
  T d[6];
  for (int i = 0; i < 6; ++i) d[i] = da[i];
  if (k.mirror_z) d[4] = -d[4], d[5] = -d[5];
  T gd[6] = {T(0), T(0), T(0), T(0), T(0), T(0)};
  gd[2 * k.major] += g[0] * k.gu + g[2] * k.gv;
  gd[2 * k.major + 1] += g[1] * k.gu + g[3] * k.gv;
  gd[2 * k.axis_s] += g[0] * k.ks;
  gd[2 * k.axis_s + 1] += g[1] * k.ks;
  gd[2 * k.axis_t] += g[2] * k.kt;
  gd[2 * k.axis_t + 1] += g[3] * k.kt;
  if (k.mirror_z) gd[4] = -gd[4], gd[5] = -gd[5];
  for (int i = 0; i < 6; ++i) grad_da[i] += gd[i];
  const T* dc = d + 2 * k.major;
  const T* dp = d + 2 * k.axis_s;
  const T* dq = d + 2 * k.axis_t;
  const T g_gu = g[0] * dc[0] + g[1] * dc[1], g_gv = g[2] * dc[0] + g[3] * dc[1];
  const T g_ks = g[0] * dp[0] + g[1] * dp[1], g_kt = g[2] * dq[0] + g[3] * dq[1];
  // gu = along_u sign_u / (2 c^2), ks and kt ~ 1 / (2 |c|): d/dc = -2 gu / c, -k / c.
  grad_dir[k.along_u] += g_gu * k.sign_u * k.mm;
  grad_dir[k.along_v] += g_gv * k.sign_v * k.mm;
  grad_dir[k.major] -= (T(2) * (g_gu * k.gu + g_gv * k.gv) + g_ks * k.ks + g_kt * k.kt) / k.c;
}

// dL/d(direction) from dL/ds, dL/dt through cube_face (its clamp is ignored: the
// face coordinates of a direction lie in [0, 1]).
template <typename T>
FG_HD void cube_face_backward(const T* dir, T grad_s, T grad_t, T* grad_dir) {
  const T ax = fabs(dir[0]), ay = fabs(dir[1]), az = fabs(dir[2]);
  int face, major, along_s, along_t;
  if (az > (ax > ay ? ax : ay)) {
    face = 4, major = 2, along_s = 0, along_t = 1;
  } else if (ay > ax) {
    face = 2, major = 1, along_s = 0, along_t = 2;
  } else {
    face = 0, major = 0, along_s = 2, along_t = 1;
  }
  const T c = dir[major];
  if (c < T(0)) face += 1;
  const T half = T(0.5) / fabs(c);
  const T ks = (face == 0 || face == 5) ? -half : half;
  const T kt = face == 2 ? half : -half;
  T g[3] = {T(0), T(0), T(0)};
  g[along_s] += grad_s * ks;
  g[along_t] += grad_t * kt;
  // s - 1/2 = along_s ks with ks ~ 1 / |c|: d/dc = -(s - 1/2) / c.
  g[major] -= (grad_s * ks * dir[along_s] + grad_t * kt * dir[along_t]) / c;
  const bool finite = isfinite(g[0]) && isfinite(g[1]) && isfinite(g[2]);
  if (finite)
    for (int i = 0; i < 3; ++i) grad_dir[i] += g[i];
}

// --------------------------------------------------------------------------
// Texel addressing.

// floor without a library call (the host build has no SSE4.1 rounding instruction);
// exact for every value: large, infinite and NaN inputs take std::floor.
template <typename T>
FG_TEX_HD T floor_fast(T x) {
  if (!(x > T(-kIndexLimit) && x < T(kIndexLimit))) return floor(x);
  const T truncated = static_cast<T>(static_cast<int64_t>(x));
  return truncated > x ? truncated - T(1) : truncated;
}

template <typename T>
FG_TEX_HD T clamp_index(T value, T low, T high) {
  if (!(value == value)) return low;  // NaN
  return value < low ? low : (value > high ? high : value);
}

// The base-level texel (index in texels, channels not counted) of nearest filtering, or
// -1 (zero mode outside, or a cube direction with no face).
template <typename T>
FG_TEX_HD int64_t nearest_texel(const TextureParams<T>& p, const T* uv, int64_t image) {
  const int64_t w = p.tex_width, h = p.tex_height;
  T u = uv[0], v = uv[1];
  int64_t plane = image;
  if (is_cube(p.boundary)) {
    const int face = cube_face(uv[0], uv[1], uv[2], u, v);
    if (face < 0) return -1;
    plane = 6 * image + face;
  } else if (p.boundary == kWrap) {
    u = u - floor_fast(u);
    v = v - floor_fast(v);
  }
  const T fu = floor_fast(u * T(w)), fv = floor_fast(v * T(h));
  if (p.boundary == kZero && !(fu >= T(0) && fu < T(w) && fv >= T(0) && fv < T(h))) return -1;
  const int64_t iu = static_cast<int64_t>(clamp_index(fu, T(0), T(w - 1)));
  const int64_t iv = static_cast<int64_t>(clamp_index(fv, T(0), T(h - 1)));
  return (plane * h + iv) * w + iu;
}

// The four texels a00, a10, a01, a11 of a bilinear lookup at one level (texel
// indices, -1 = absent), the fractions, and whether a cube corner (or an invalid
// direction) makes a missing texel the mean of the others.
template <typename T>
struct Quad {
  int64_t texel[4] = {-1, -1, -1, -1};
  T fu = T(0), fv = T(0);
  bool corner = false;
};

template <typename T>
FG_TEX_HD Quad<T> linear_quad(const TextureParams<T>& p, const T* uv, int64_t image, int level) {
  Quad<T> q;
  const int64_t w = level_extent(p.tex_width, level), h = level_extent(p.tex_height, level);
  T u = uv[0], v = uv[1];
  int face = 0;
  if (is_cube(p.boundary)) {
    face = cube_face(uv[0], uv[1], uv[2], u, v);
    if (face < 0) {
      q.corner = true;  // every texel absent: reads zeros
      return q;
    }
  } else if (p.boundary == kWrap) {
    u = u - floor_fast(u);
    v = v - floor_fast(v);
  }
  u = u * T(w) - T(0.5);
  v = v * T(h) - T(0.5);
  bool clamp_u = false, clamp_v = false;
  if (p.boundary == kClamp) {
    u = u < T(0) ? T(0) : (u > T(w - 1) ? T(w - 1) : u);
    v = v < T(0) ? T(0) : (v > T(h - 1) ? T(h - 1) : v);
    clamp_u = u == T(0) || u == T(w - 1);
    clamp_v = v == T(0) || v == T(h - 1);
  }
  const T u0 = floor_fast(u), v0 = floor_fast(v);
  q.fu = u - u0;
  q.fv = v - v0;
  const T limit = T(kIndexLimit);
  const int64_t iu0 = static_cast<int64_t>(u0 == u0 ? clamp_index(u0, -limit, limit) : T(-1));
  const int64_t iv0 = static_cast<int64_t>(v0 == v0 ? clamp_index(v0, -limit, limit) : T(-1));
  const int64_t iu[4] = {iu0, iu0 + (clamp_u ? 0 : 1), iu0, iu0 + (clamp_u ? 0 : 1)};
  const int64_t iv[4] = {iv0, iv0, iv0 + (clamp_v ? 0 : 1), iv0 + (clamp_v ? 0 : 1)};
  for (int i = 0; i < 4; ++i) {
    int64_t x = iu[i], y = iv[i];
    int64_t plane = image;
    if (is_cube(p.boundary)) {
      int f = face;
      if (!cube_wrap_texel(f, x, y, w)) {
        q.corner = true;
        continue;
      }
      plane = 6 * image + f;
    } else if (p.boundary == kWrap) {
      x = x < 0 ? x + w : (x >= w ? x - w : x);
      y = y < 0 ? y + h : (y >= h ? y - h : y);
    }
    if (x < 0 || x >= w || y < 0 || y >= h) continue;
    q.texel[i] = (plane * h + y) * w + x;
  }
  return q;
}

// The first channel of each quad texel in `level` (null where absent).
template <typename T>
FG_TEX_HD void quad_pointers(const Quad<T>& q, const T* level, int64_t channels, const T** ptr) {
  for (int i = 0; i < 4; ++i) ptr[i] = q.texel[i] >= 0 ? level + q.texel[i] * channels : nullptr;
}

// The four texel values of channel c (fetchQuad): absent texels read 0, except at a
// cube corner where the one missing texel is the mean of the other three.
template <typename T>
FG_TEX_HD void fetch_quad(const Quad<T>& q, const T* const* ptr, int64_t c, T* a) {
  for (int i = 0; i < 4; ++i) a[i] = ptr[i] != nullptr ? ptr[i][c] : T(0);
  if (!q.corner) return;
  const bool valid = ptr[0] != nullptr || ptr[1] != nullptr || ptr[2] != nullptr || ptr[3] != nullptr;
  if (!valid) return;
  const T total = a[0] + a[1] + a[2] + a[3];
  for (int i = 0; i < 4; ++i)
    if (ptr[i] == nullptr) a[i] = total * T(0.33333333);
}

template <typename T>
FG_TEX_HD T bilerp(const T* a, T fu, T fv) {
  const T top = a[0] + fu * (a[1] - a[0]);
  const T bottom = a[2] + fu * (a[3] - a[2]);
  return top + fv * (bottom - top);
}

// Scatters the gradient g = dL/da[i] of the four quad values (accumQuad): a missing
// corner texel's share goes to the other three.
template <typename T, typename Add>
FG_TEX_HD void scatter_quad(const Quad<T>& q, int level, int64_t channels, int64_t c, const T* g, Add& add) {
  T corner_share = T(0);
  if (q.corner)
    for (int i = 0; i < 4; ++i)
      if (q.texel[i] < 0) corner_share = g[i] * T(0.33333333);
  for (int i = 0; i < 4; ++i)
    if (q.texel[i] >= 0) add(level, q.texel[i] * channels + c, g[i] + corner_share);
}

// --------------------------------------------------------------------------
// Mip level selection.

// d_level, face_da and cube are set (and read) only where with_da is true.
template <typename T>
struct MipChoice {
  int level0 = 0, level1 = 0;
  T fraction = T(0);     // weight of level1 (linear-mipmap-linear, 0 when magnified)
  bool with_da = false;  // uv_da was given: the fields below apply
  T d_level[4];          // d(level)/d(face-space uv_da); zero where not finite or not trilinear
  T face_da[4];          // the face-space uv_da (cube maps: from the direction's)
  CubeDa<T> cube;
};

template <typename T>
FG_TEX_HD MipChoice<T> mip_level(const TextureParams<T>& p, int64_t pixel, const T* uv) {
  MipChoice<T> m;
  T flevel = T(0);
  if (p.uv_da != nullptr) {
    m.with_da = true;
    for (int i = 0; i < 4; ++i) m.d_level[i] = T(0);
    if (is_cube(p.boundary)) {
      m.cube = cube_da_setup(uv);
      cube_face_da(m.cube, p.uv_da + 6 * pixel, m.face_da);
    } else {
      for (int i = 0; i < 4; ++i) m.face_da[i] = p.uv_da[4 * pixel + i];
    }
    const T sw = T(p.tex_width), sh = T(p.tex_height);
    const T dsdx = m.face_da[0] * sw, dsdy = m.face_da[1] * sw;
    const T dtdx = m.face_da[2] * sh, dtdy = m.face_da[3] * sh;
    const T a = dsdx * dsdx + dtdx * dtdx;
    const T b = dsdy * dsdy + dtdy * dtdy;
    const T c = dsdx * dsdy + dtdx * dtdy;
    const T l2b = T(0.5) * (a + b);
    const T l2n = T(0.25) * (a - b) * (a - b) + c * c;
    const T l2a = sqrt(l2n);
    flevel = T(0.5) * log2(l2b + l2a);
    if (p.filter == kLinearMipmapLinear) {
      // The footprint's closed-form level gradient (finite where the footprint is isotropic).
      const T dw = T(0.72134752) / (l2n + l2a * l2b);
      const T ab = dw * T(0.5) * (a - b), cw = dw * c, l2aw = dw * l2a;
      m.d_level[0] = sw * (dsdx * (l2aw + ab) + dsdy * cw);
      m.d_level[1] = sw * (dsdy * (l2aw - ab) + dsdx * cw);
      m.d_level[2] = sh * (dtdx * (l2aw + ab) + dtdy * cw);
      m.d_level[3] = sh * (dtdy * (l2aw - ab) + dtdx * cw);
      bool finite = true;
      for (int i = 0; i < 4; ++i) finite = finite && isfinite(m.d_level[i]);
      if (!finite)
        for (int i = 0; i < 4; ++i) m.d_level[i] = T(0);
    }
  }
  if (p.bias != nullptr) flevel += p.bias[pixel];
  if (!(flevel == flevel)) flevel = T(0);
  flevel = flevel < T(0) ? T(0) : (flevel > T(p.max_level) ? T(p.max_level) : flevel);
  m.level0 = static_cast<int>(floor(flevel));
  m.level1 = m.level0;
  if (p.filter == kLinearMipmapLinear && flevel > T(0)) {
    m.level1 = m.level0 + 1 < p.max_level ? m.level0 + 1 : p.max_level;
    m.fraction = flevel - T(m.level0);
  }
  return m;
}

// --------------------------------------------------------------------------
// Per-pixel forward and backward.

FG_HD int64_t pixel_image(int64_t pixel, int64_t pixels_per_image, int64_t tex_batch) {
  return tex_batch == 1 ? 0 : pixel / pixels_per_image;
}

template <typename T>
FG_HD int uv_channels(const TextureParams<T>& p) {
  return is_cube(p.boundary) ? 3 : 2;
}

// What the forward and backward of a bilinear / mipmapped pixel share: the level
// choice and the quads (q1 only when the second level counts, second).
template <typename T>
struct PixelQuads {
  MipChoice<T> m;
  Quad<T> q0, q1;
  bool second = false;
  const T* ptr0[4] = {nullptr, nullptr, nullptr, nullptr};
  const T* ptr1[4] = {nullptr, nullptr, nullptr, nullptr};
};

template <typename T>
FG_TEX_HD PixelQuads<T> pixel_quads(const TextureParams<T>& p, int64_t pixel, const T* uv, int64_t image) {
  PixelQuads<T> s;
  if (p.max_level > 0) s.m = mip_level(p, pixel, uv);
  s.q0 = linear_quad(p, uv, image, s.m.level0);
  quad_pointers(s.q0, p.tex[s.m.level0], p.channels, s.ptr0);
  s.second = s.m.fraction > T(0);
  if (s.second) {
    s.q1 = linear_quad(p, uv, image, s.m.level1);
    quad_pointers(s.q1, p.tex[s.m.level1], p.channels, s.ptr1);
  }
  return s;
}

// One level's share of a pixel's backward for channel c, with g = dL/d(this level's
// sample): scatters g times the bilinear weights into the level (when texels) and
// adds g d(sample)/d(s, t) to gs, gt (w, h: the level's size); a gets the texel values.
template <typename T, typename Add>
FG_TEX_HD void quad_backward(const Quad<T>& q, const T* const* ptr, int level, int64_t channels, int64_t c, T g,
                         T w, T h, bool texels, Add& add, T* a, T& gs, T& gt) {
  fetch_quad(q, ptr, c, a);
  if (texels) {
    const T gq[4] = {g * (T(1) - q.fu) * (T(1) - q.fv), g * q.fu * (T(1) - q.fv), g * (T(1) - q.fu) * q.fv,
                     g * q.fu * q.fv};
    scatter_quad(q, level, channels, c, gq, add);
  }
  const T d = a[3] + a[0] - a[1] - a[2];
  gs += g * ((a[1] - a[0]) + q.fv * d) * w;
  gt += g * ((a[2] - a[0]) + q.fu * d) * h;
}

template <typename T>
FG_HD void texture_pixel_forward(const TextureParams<T>& p, int64_t pixel) {
  const int64_t image = pixel_image(pixel, p.height * p.width, p.tex_batch);
  const T* uv = p.uv + uv_channels(p) * pixel;
  T* out = p.out + p.channels * pixel;
  if (p.filter == kNearest) {
    const int64_t texel = nearest_texel(p, uv, image);
    for (int64_t c = 0; c < p.channels; ++c) out[c] = texel >= 0 ? p.tex[0][texel * p.channels + c] : T(0);
    return;
  }
  const PixelQuads<T> s = pixel_quads(p, pixel, uv, image);
  for (int64_t c = 0; c < p.channels; ++c) {
    T a[4];
    fetch_quad(s.q0, s.ptr0, c, a);
    T value = bilerp(a, s.q0.fu, s.q0.fv);
    if (s.second) {
      T b[4];
      fetch_quad(s.q1, s.ptr1, c, b);
      value = value + s.m.fraction * (bilerp(b, s.q1.fu, s.q1.fv) - value);
    }
    out[c] = value;
  }
}

// The gradients of one pixel: texture gradients through add(level, element, value)
// when `texels`, and grad_uv / grad_uv_da / grad_bias (written, not accumulated) when
// `coordinates`.
template <typename T, typename Add>
FG_HD void texture_pixel_backward(const TextureParams<T>& p, int64_t pixel, bool texels, bool coordinates,
                                  Add& add) {
  const int nuv = uv_channels(p);
  const int nda = is_cube(p.boundary) ? 6 : 4;
  if (coordinates) {
    if (p.grad_uv != nullptr)
      for (int i = 0; i < nuv; ++i) p.grad_uv[nuv * pixel + i] = T(0);
    if (p.grad_uv_da != nullptr)
      for (int i = 0; i < nda; ++i) p.grad_uv_da[nda * pixel + i] = T(0);
    if (p.grad_bias != nullptr) p.grad_bias[pixel] = T(0);
  }
  const int64_t image = pixel_image(pixel, p.height * p.width, p.tex_batch);
  const T* uv = p.uv + nuv * pixel;
  const T* dy = p.grad_out + p.channels * pixel;
  if (p.filter == kNearest) {
    if (!texels) return;
    const int64_t texel = nearest_texel(p, uv, image);
    if (texel < 0) return;
    for (int64_t c = 0; c < p.channels; ++c) add(0, texel * p.channels + c, dy[c]);
    return;
  }
  const PixelQuads<T> s = pixel_quads(p, pixel, uv, image);
  const MipChoice<T>& m = s.m;
  const bool second = s.second;
  const T w0 = T(level_extent(p.tex_width, m.level0)), h0 = T(level_extent(p.tex_height, m.level0));
  const T w1 = T(level_extent(p.tex_width, m.level1)), h1 = T(level_extent(p.tex_height, m.level1));
  T gs = T(0), gt = T(0), d_fraction = T(0);
  for (int64_t c = 0; c < p.channels; ++c) {
    const T weight1 = second ? m.fraction : T(0);
    T a[4];
    quad_backward(s.q0, s.ptr0, m.level0, p.channels, c, (T(1) - weight1) * dy[c], w0, h0, texels, add, a, gs, gt);
    if (!second) continue;
    T b[4];
    quad_backward(s.q1, s.ptr1, m.level1, p.channels, c, weight1 * dy[c], w1, h1, texels, add, b, gs, gt);
    d_fraction += (bilerp(b, s.q1.fu, s.q1.fv) - bilerp(a, s.q0.fu, s.q0.fv)) * dy[c];
  }
  if (!coordinates) return;
  // The level's gradient w.r.t. the face-space footprint.
  T g_face_da[4] = {T(0), T(0), T(0), T(0)};
  if (m.with_da)
    for (int i = 0; i < 4; ++i) g_face_da[i] = m.d_level[i] * d_fraction;
  if (is_cube(p.boundary)) {
    if (p.grad_uv != nullptr) {
      T* g = p.grad_uv + 3 * pixel;
      if (s.ptr0[0] != nullptr || s.ptr0[1] != nullptr || s.ptr0[2] != nullptr || s.ptr0[3] != nullptr)
        cube_face_backward(uv, gs, gt, g);
      if (m.with_da && second) {
        T unused[6] = {};
        cube_face_da_backward(m.cube, p.uv_da + 6 * pixel, g_face_da, unused, g);
      }
    }
    if (p.grad_uv_da != nullptr && m.with_da && second) {
      T g3[3] = {};
      cube_face_da_backward(m.cube, p.uv_da + 6 * pixel, g_face_da, p.grad_uv_da + 6 * pixel, g3);
    }
  } else {
    if (p.grad_uv != nullptr) p.grad_uv[2 * pixel] = gs, p.grad_uv[2 * pixel + 1] = gt;
    if (p.grad_uv_da != nullptr && m.with_da)
      for (int i = 0; i < 4; ++i) p.grad_uv_da[4 * pixel + i] = g_face_da[i];
  }
  if (p.grad_bias != nullptr && second) p.grad_bias[pixel] = d_fraction;
}

}  // namespace texture
}  // namespace facegeom
