// Attribute interpolation over a rasterized image (nvdiffrast's interpolate),
// shared by the CPU and CUDA back ends: the launchers' parameter struct and
// the per-pixel forward. Part of the rasterizer family (namespace raster): it
// reads the rast / rast_db layout that rasterize.h writes.
#pragma once

#include <cstdint>

#include "facegeom/common.h"

namespace facegeom {
namespace raster {

// Everything an interpolate launcher needs (nvdiffrast's
// InterpolateKernelParams): filled field by field by the bindings, passed by
// reference to the CPU launchers and by value to the CUDA kernels. Buffers are
// contiguous row-major; a pointer that does not apply is null.
template <typename T>
struct InterpolateParams {
  int64_t batch = 0, height = 0, width = 0;  // rast is [B, H, W, 4]
  int64_t num_vertices = 0;                  // V of attr
  int64_t channels = 0;                      // C of attr
  int64_t num_triangles = 0;                 // F: rast ids outside [0, F) read as corrupt
  const T* attr = nullptr;                   // [B, V, C] or [V, C] (shared by the images)
  int64_t attr_batch_stride = 0;             // V * C, or 0 when attr is shared
  const T* rast = nullptr;                   // [B, H, W, 4]
  const int32_t* tri = nullptr;              // [F, 3]
  // Screen-space derivatives: rast_db [B, H, W, 4] and the num_diff attribute
  // channels diff_channels whose (d/dX, d/dY) go to out_da [B, H, W, 2 * num_diff];
  // null (and num_diff 0) when none are asked for.
  const T* rast_db = nullptr;
  const int64_t* diff_channels = nullptr;
  int64_t num_diff = 0;
  // Forward outputs: out [B, H, W, C]; out_da (null without diff channels).
  T* out = nullptr;
  T* out_da = nullptr;
  // Backward: grad_out [B, H, W, C]; grad_da [B, H, W, 2 * num_diff] or null.
  // grad_attr has attr's layout (summed over images when shared) and is zeroed
  // by the caller; grad_rast [B, H, W, 4]; grad_rast_db [B, H, W, 4] (null
  // without diff channels).
  const T* grad_out = nullptr;
  const T* grad_da = nullptr;
  T* grad_attr = nullptr;
  T* grad_rast = nullptr;
  T* grad_rast_db = nullptr;
};

// One output pixel of interpolate. Without a triangle (id < 0) out and out_da
// are filled with 0 on background (id channel 0) or with `nan` where the id
// channel names no triangle (a corrupt rast is flagged, not read). Otherwise
// out = u a0 + v a1 + (1 - u - v) a2 for every channel of the triangle's
// vertex attributes in `attr` (this image's [V, channels]) and, when out_da is
// given, the screen-space derivatives of the channels named in diff_channels
// from the pixel's rast_db `db` (du/dX, du/dY, dv/dX, dv/dY):
// out_da[2j], out_da[2j + 1] = d/dX, d/dY of channel j.
template <typename T>
FG_HD void interpolate_pixel(const T* rast, int64_t id, const T* attr, const int32_t* tri,
                             int64_t channels, const T* db, const int64_t* diff_channels,
                             int64_t num_diff, T nan, T* out, T* out_da) {
  if (id < 0) {
    const T fill = rast[3] == T(0) ? T(0) : nan;
    for (int64_t c = 0; c < channels; ++c) out[c] = fill;
    if (out_da != nullptr)
      for (int64_t c = 0; c < 2 * num_diff; ++c) out_da[c] = fill;
    return;
  }
  const T* a0 = attr + channels * tri[3 * id];
  const T* a1 = attr + channels * tri[3 * id + 1];
  const T* a2 = attr + channels * tri[3 * id + 2];
  const T u = rast[0], v = rast[1], w = T(1) - u - v;
  for (int64_t c = 0; c < channels; ++c) out[c] = u * a0[c] + v * a1[c] + w * a2[c];
  if (out_da == nullptr) return;
  for (int64_t j = 0; j < num_diff; ++j) {
    const int64_t c = diff_channels[j];
    const T d0 = a0[c] - a2[c], d1 = a1[c] - a2[c];
    out_da[2 * j] = db[0] * d0 + db[2] * d1;
    out_da[2 * j + 1] = db[1] * d0 + db[3] * d1;
  }
}

}  // namespace raster
}  // namespace facegeom
