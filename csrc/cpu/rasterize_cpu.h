// CPU launchers of the rasterizer family: plain pointers, contiguous row-major
// buffers; the bindings allocate and check. T is float or double.
#pragma once

#include <cstdint>

namespace facegeom {
namespace cpu {

// Images are cut into square tiles; triangles are binned to the tiles their
// bounding box touches and the tiles are rasterized in parallel.
constexpr int64_t kRasterTile = 16;

// Image b draws triangles [first, first + count) of tri with the vertices at
// pos + b * pos_batch_stride, where (first, count) = ranges[b] in range mode
// (ranges non-null, pos_batch_stride 0) and (0, num_triangles) otherwise.
// rast [B, H, W, 4]; rast_db [B, H, W, 4] or null.
template <typename T>
void rasterize_forward(int64_t batch, int64_t num_vertices, const T* pos, int64_t pos_batch_stride,
                       const int32_t* tri, int64_t num_triangles, const int32_t* ranges,
                       int64_t height, int64_t width, T* rast, T* rast_db);

// grad_pos has pos's layout ([B, V, 4], or [V, 4] summed over images in range
// mode: pos_batch_stride 0). grad_db may be null. Results are independent of
// the thread count (per-pixel terms are summed in pixel order).
template <typename T>
void rasterize_backward(int64_t batch, int64_t num_vertices, const T* pos,
                        int64_t pos_batch_stride, const int32_t* tri, int64_t num_triangles,
                        int64_t height, int64_t width, const T* rast, const T* grad_rast,
                        const T* grad_db, T* grad_pos);

// attr [B, V, C] (attr_batch_stride V * C) or [V, C] (stride 0). diff_channels
// lists num_diff attribute channels whose (d/dX, d/dY) go to out_da
// [B, H, W, 2 * num_diff]; rast_db and out_da are null when num_diff == 0.
// Pixels naming a triangle id outside [0, F) get NaN.
template <typename T>
void interpolate_forward(int64_t batch, int64_t height, int64_t width, int64_t num_vertices,
                         int64_t channels, const T* attr, int64_t attr_batch_stride, const T* rast,
                         const int32_t* tri, int64_t num_triangles, const T* rast_db,
                         const int64_t* diff_channels, int64_t num_diff, T* out, T* out_da);

// grad_attr has attr's layout (summed over images when shared); grad_rast
// [B, H, W, 4]; grad_rast_db [B, H, W, 4] (null when num_diff == 0); grad_da
// may be null.
template <typename T>
void interpolate_backward(int64_t batch, int64_t height, int64_t width, int64_t num_vertices,
                          int64_t channels, const T* attr, int64_t attr_batch_stride,
                          const T* rast, const int32_t* tri, int64_t num_triangles,
                          const T* rast_db, const int64_t* diff_channels, int64_t num_diff,
                          const T* grad_out, const T* grad_da, T* grad_attr, T* grad_rast,
                          T* grad_rast_db);

}  // namespace cpu
}  // namespace facegeom
