// CUDA rasterizer (see rasterize_cuda.h): bin, then one thread per triangle-tile
// pair with a 64-bit atomicMin depth test, then one thread per pixel to write
// rast. The coverage and depth math is the shared rasterize.h, evaluated with
// exactly rounded float64 operations, so the winning triangle at every pixel is
// the CPU's. No torch headers: the bindings own allocation, checks and streams.
// Indices are int64 and loops grid-stride, so large images and meshes are safe;
// vertex indices are re-checked on the device (a bad one draws nothing).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "cuda/rasterize_cuda.h"
#include "cuda/launch.cuh"
#include "facegeom/rasterize.h"

namespace facegeom {
namespace cuda {
namespace {

// Clip coordinates of triangle t; false when an index is out of range.
template <typename T>
__device__ bool load_triangle(const T* pos, const int32_t* tri, int64_t num_vertices, int64_t t,
                              double clip[3][4]) {
  for (int v = 0; v < 3; ++v) {
    const int64_t index = tri[3 * t + v];
    if (index < 0 || index >= num_vertices) return false;
    for (int c = 0; c < 4; ++c) clip[v][c] = static_cast<double>(pos[4 * index + c]);
  }
  return true;
}

// Triangle of slot i of image b, or -1 past the image's range.
__device__ int64_t slot_triangle(int64_t b, int64_t i, int64_t num_triangles,
                                 const int32_t* ranges) {
  if (ranges == nullptr) return i < num_triangles ? i : -1;
  return i < ranges[2 * b + 1] ? ranges[2 * b] + i : -1;
}

template <typename T>
__global__ void bin_kernel(int64_t batch, int64_t max_count, int64_t num_vertices, const T* pos,
                           int64_t pos_batch_stride, const int32_t* tri, int64_t num_triangles,
                           const int32_t* ranges, int64_t height, int64_t width, int32_t* boxes,
                           int64_t* tile_counts) {
  for (int64_t slot = first_index(); slot < batch * max_count; slot += grid_stride()) {
    const int64_t b = slot / max_count;
    const int64_t t = slot_triangle(b, slot % max_count, num_triangles, ranges);
    tile_counts[slot] = 0;
    double clip[3][4];
    int64_t box[4];
    raster::TriangleSetup setup;
    if (t < 0 || !load_triangle(pos + b * pos_batch_stride, tri, num_vertices, t, clip)) continue;
    if (!raster::pixel_bounds(clip, width, height, box) || !raster::setup_triangle(clip, setup)) {
      continue;
    }
    for (int c = 0; c < 4; ++c) boxes[4 * slot + c] = static_cast<int32_t>(box[c]);
    tile_counts[slot] = (box[1] / kRasterTile - box[0] / kRasterTile + 1) *
                        (box[3] / kRasterTile - box[2] / kRasterTile + 1);
  }
}

template <typename T>
__global__ void pairs_kernel(int64_t batch, int64_t max_count, int64_t num_vertices, const T* pos,
                             int64_t pos_batch_stride, const int32_t* tri, int64_t num_triangles,
                             const int32_t* ranges, int64_t height, int64_t width,
                             const int32_t* boxes, const int64_t* pair_end, int64_t num_pairs,
                             unsigned long long* keys) {
  const int64_t num_slots = batch * max_count;
  for (int64_t pair = first_index(); pair < num_pairs; pair += grid_stride()) {
    // The slot owning this pair: the first whose inclusive prefix exceeds it.
    int64_t lo = 0, hi = num_slots - 1;
    while (lo < hi) {
      const int64_t mid = (lo + hi) / 2;
      if (pair_end[mid] > pair) hi = mid; else lo = mid + 1;
    }
    const int64_t slot = lo;
    const int64_t local = pair - (slot > 0 ? pair_end[slot - 1] : 0);
    const int64_t b = slot / max_count;
    const int64_t t = slot_triangle(b, slot % max_count, num_triangles, ranges);
    const int32_t* box = boxes + 4 * slot;
    const int64_t tiles_x = box[1] / kRasterTile - box[0] / kRasterTile + 1;
    const int64_t tx = box[0] / kRasterTile + local % tiles_x;
    const int64_t ty = box[2] / kRasterTile + local / tiles_x;
    double clip[3][4];
    raster::TriangleSetup setup;
    if (!load_triangle(pos + b * pos_batch_stride, tri, num_vertices, t, clip) ||
        !raster::setup_triangle(clip, setup)) {
      continue;
    }
    const int64_t x0 = max(static_cast<int64_t>(box[0]), tx * kRasterTile);
    const int64_t x1 = min(static_cast<int64_t>(box[1]), tx * kRasterTile + kRasterTile - 1);
    const int64_t y0 = max(static_cast<int64_t>(box[2]), ty * kRasterTile);
    const int64_t y1 = min(static_cast<int64_t>(box[3]), ty * kRasterTile + kRasterTile - 1);
    unsigned long long* image_keys = keys + b * height * width;
    for (int64_t y = y0; y <= y1; ++y) {
      const double qy = raster::pixel_centre(y, height);
      for (int64_t x = x0; x <= x1; ++x) {
        double e[3], depth;
        if (!raster::covers(setup, raster::pixel_centre(x, width), qy, e, depth)) continue;
        atomicMin(image_keys + y * width + x,
                  static_cast<unsigned long long>(raster::depth_key(depth, t)));
      }
    }
  }
}

template <typename T>
__global__ void resolve_kernel(int64_t batch, int64_t num_vertices, const T* pos,
                               int64_t pos_batch_stride, const int32_t* tri, int64_t height,
                               int64_t width, const unsigned long long* keys, T* rast, T* rast_db) {
  const int64_t pixels = height * width;
  for (int64_t pixel = first_index(); pixel < batch * pixels; pixel += grid_stride()) {
    const unsigned long long key = keys[pixel];
    T* out = rast + 4 * pixel;
    T* out_db = rast_db == nullptr ? nullptr : rast_db + 4 * pixel;
    double clip[3][4];
    raster::TriangleSetup setup;
    const int64_t id = static_cast<int64_t>(key & 0xffffffffull);
    const int64_t b = pixel / pixels, y = (pixel % pixels) / width, x = pixel % width;
    if (key == raster::kEmptyKey ||
        !load_triangle(pos + b * pos_batch_stride, tri, num_vertices, id, clip) ||
        !raster::setup_triangle(clip, setup)) {
      for (int c = 0; c < 4; ++c) out[c] = T(0);
      if (out_db != nullptr)
        for (int c = 0; c < 4; ++c) out_db[c] = T(0);
      continue;
    }
    double e[3], depth, uv[2], db[4];
    raster::covers(setup, raster::pixel_centre(x, width), raster::pixel_centre(y, height), e, depth);
    raster::barycentrics(setup, e, uv, out_db == nullptr ? nullptr : db, 2.0 / width,
                         2.0 / height);
    out[0] = static_cast<T>(uv[0]);
    out[1] = static_cast<T>(uv[1]);
    out[2] = static_cast<T>(depth);
    out[3] = static_cast<T>(id + 1);
    if (out_db != nullptr)
      for (int c = 0; c < 4; ++c) out_db[c] = static_cast<T>(db[c]);
  }
}

template <typename T>
__global__ void rasterize_backward_kernel(int64_t batch, int64_t num_vertices, const T* pos,
                                          int64_t pos_batch_stride, const int32_t* tri,
                                          int64_t num_triangles, int64_t height, int64_t width,
                                          const T* rast, const T* grad_rast, const T* grad_db,
                                          T* grad_pos) {
  const int64_t pixels = height * width;
  for (int64_t pixel = first_index(); pixel < batch * pixels; pixel += grid_stride()) {
    const int64_t id = raster::stored_triangle(static_cast<double>(rast[4 * pixel + 3]), num_triangles);
    if (id < 0) continue;
    const int64_t b = pixel / pixels, y = (pixel % pixels) / width, x = pixel % width;
    const T* g = grad_rast + 4 * pixel;
    double g_db[4] = {0, 0, 0, 0};
    if (grad_db != nullptr) {
      // rast_db is per pixel; the math works per NDC unit (2 / W per pixel).
      g_db[0] = grad_db[4 * pixel] * (2.0 / width);
      g_db[1] = grad_db[4 * pixel + 1] * (2.0 / height);
      g_db[2] = grad_db[4 * pixel + 2] * (2.0 / width);
      g_db[3] = grad_db[4 * pixel + 3] * (2.0 / height);
    }
    double clip[3][4], grad[3][4];
    const T* pos_b = pos + b * pos_batch_stride;
    if (!load_triangle(pos_b, tri, num_vertices, id, clip)) continue;
    raster::pixel_gradient(clip, raster::pixel_centre(x, width), raster::pixel_centre(y, height),
                           g[0], g[1], g[2], grad_db == nullptr ? nullptr : g_db, grad);
    T* grad_b = grad_pos + b * pos_batch_stride;
    for (int v = 0; v < 3; ++v) {
      T* dst = grad_b + 4 * static_cast<int64_t>(tri[3 * id + v]);
      for (int c = 0; c < 4; ++c) atomicAdd(dst + c, static_cast<T>(grad[v][c]));
    }
  }
}

template <typename T>
__global__ void interpolate_forward_kernel(int64_t batch, int64_t pixels, int64_t channels,
                                           const T* attr, int64_t attr_batch_stride,
                                           const T* rast, const int32_t* tri,
                                           int64_t num_triangles, const T* rast_db,
                                           const int64_t* diff_channels, int64_t num_diff, T* out,
                                           T* out_da) {
  for (int64_t pixel = first_index(); pixel < batch * pixels; pixel += grid_stride()) {
    const T* r = rast + 4 * pixel;
    raster::interpolate_pixel(r, raster::stored_triangle(static_cast<double>(r[3]), num_triangles),
                              attr + (pixel / pixels) * attr_batch_stride, tri, channels,
                              out_da == nullptr ? nullptr : rast_db + 4 * pixel, diff_channels,
                              num_diff, quiet_nan<T>(), out + channels * pixel,
                              out_da == nullptr ? nullptr : out_da + 2 * num_diff * pixel);
  }
}

template <typename T>
__global__ void interpolate_backward_kernel(int64_t batch, int64_t pixels, int64_t channels,
                                            const T* attr, int64_t attr_batch_stride,
                                            const T* rast, const int32_t* tri,
                                            int64_t num_triangles, const T* rast_db,
                                            const int64_t* diff_channels, int64_t num_diff,
                                            const T* grad_out, const T* grad_da, T* grad_attr,
                                            T* grad_rast, T* grad_rast_db) {
  for (int64_t pixel = first_index(); pixel < batch * pixels; pixel += grid_stride()) {
    T* gr = grad_rast + 4 * pixel;
    T* gdb = grad_rast_db == nullptr ? nullptr : grad_rast_db + 4 * pixel;
    for (int c = 0; c < 4; ++c) gr[c] = T(0);
    if (gdb != nullptr)
      for (int c = 0; c < 4; ++c) gdb[c] = T(0);
    const T* r = rast + 4 * pixel;
    const int64_t id = raster::stored_triangle(static_cast<double>(r[3]), num_triangles);
    if (id < 0) continue;
    const int64_t image_offset = (pixel / pixels) * attr_batch_stride;
    const T* a = attr + image_offset;
    T* ga = grad_attr + image_offset;
    const int64_t i0 = channels * tri[3 * id], i1 = channels * tri[3 * id + 1],
                  i2 = channels * tri[3 * id + 2];
    const T* g = grad_out + channels * pixel;
    const T u = r[0], v = r[1], w = T(1) - u - v;
    for (int64_t c = 0; c < channels; ++c) {
      gr[0] += g[c] * (a[i0 + c] - a[i2 + c]);
      gr[1] += g[c] * (a[i1 + c] - a[i2 + c]);
      atomicAdd(ga + i0 + c, u * g[c]);
      atomicAdd(ga + i1 + c, v * g[c]);
      atomicAdd(ga + i2 + c, w * g[c]);
    }
    if (gdb == nullptr || grad_da == nullptr) continue;
    const T* db = rast_db + 4 * pixel;
    const T* gda = grad_da + 2 * num_diff * pixel;
    for (int64_t j = 0; j < num_diff; ++j) {
      const int64_t c = diff_channels[j];
      const T d0 = a[i0 + c] - a[i2 + c], d1 = a[i1 + c] - a[i2 + c];
      gdb[0] += gda[2 * j] * d0;
      gdb[1] += gda[2 * j + 1] * d0;
      gdb[2] += gda[2 * j] * d1;
      gdb[3] += gda[2 * j + 1] * d1;
      const T along_u = gda[2 * j] * db[0] + gda[2 * j + 1] * db[1];
      const T along_v = gda[2 * j] * db[2] + gda[2 * j + 1] * db[3];
      atomicAdd(ga + i0 + c, along_u);
      atomicAdd(ga + i1 + c, along_v);
      atomicAdd(ga + i2 + c, -(along_u + along_v));
    }
  }
}

}  // namespace

template <typename T>
void rasterize_bin(int64_t batch, int64_t max_count, int64_t num_vertices, const T* pos,
                   int64_t pos_batch_stride, const int32_t* tri, int64_t num_triangles,
                   const int32_t* ranges, int64_t height, int64_t width, int32_t* boxes,
                   int64_t* tile_counts, void* stream) {
  const int64_t n = batch * max_count;
  bin_kernel<T><<<blocks_for(n), kThreadsPerBlock, 0, static_cast<cudaStream_t>(stream)>>>(
      batch, max_count, num_vertices, pos, pos_batch_stride, tri, num_triangles, ranges, height,
      width, boxes, tile_counts);
  check_launch("rasterize_bin");
}

template <typename T>
void rasterize_pairs(int64_t batch, int64_t max_count, int64_t num_vertices, const T* pos,
                     int64_t pos_batch_stride, const int32_t* tri, int64_t num_triangles,
                     const int32_t* ranges, int64_t height, int64_t width, const int32_t* boxes,
                     const int64_t* pair_end, int64_t num_pairs, unsigned long long* keys,
                     void* stream) {
  pairs_kernel<T><<<blocks_for(num_pairs), kThreadsPerBlock, 0, static_cast<cudaStream_t>(stream)>>>(
      batch, max_count, num_vertices, pos, pos_batch_stride, tri, num_triangles, ranges, height,
      width, boxes, pair_end, num_pairs, keys);
  check_launch("rasterize_pairs");
}

template <typename T>
void rasterize_resolve(int64_t batch, int64_t num_vertices, const T* pos, int64_t pos_batch_stride,
                       const int32_t* tri, int64_t height, int64_t width,
                       const unsigned long long* keys, T* rast, T* rast_db, void* stream) {
  resolve_kernel<T><<<blocks_for(batch * height * width), kThreadsPerBlock, 0,
                      static_cast<cudaStream_t>(stream)>>>(batch, num_vertices, pos,
                                                           pos_batch_stride, tri, height, width,
                                                           keys, rast, rast_db);
  check_launch("rasterize_resolve");
}

template <typename T>
void rasterize_backward(int64_t batch, int64_t num_vertices, const T* pos,
                        int64_t pos_batch_stride, const int32_t* tri, int64_t num_triangles,
                        int64_t height, int64_t width, const T* rast, const T* grad_rast,
                        const T* grad_db, T* grad_pos, void* stream) {
  rasterize_backward_kernel<T><<<blocks_for(batch * height * width), kThreadsPerBlock, 0,
                                 static_cast<cudaStream_t>(stream)>>>(
      batch, num_vertices, pos, pos_batch_stride, tri, num_triangles, height, width, rast,
      grad_rast, grad_db, grad_pos);
  check_launch("rasterize_backward");
}

template <typename T>
void interpolate_forward(int64_t batch, int64_t height, int64_t width, int64_t channels,
                         const T* attr, int64_t attr_batch_stride, const T* rast,
                         const int32_t* tri, int64_t num_triangles, const T* rast_db,
                         const int64_t* diff_channels, int64_t num_diff, T* out, T* out_da,
                         void* stream) {
  interpolate_forward_kernel<T><<<blocks_for(batch * height * width), kThreadsPerBlock, 0,
                                  static_cast<cudaStream_t>(stream)>>>(
      batch, height * width, channels, attr, attr_batch_stride, rast, tri, num_triangles, rast_db,
      diff_channels, num_diff, out, out_da);
  check_launch("interpolate_forward");
}

template <typename T>
void interpolate_backward(int64_t batch, int64_t height, int64_t width, int64_t channels,
                          const T* attr, int64_t attr_batch_stride, const T* rast,
                          const int32_t* tri, int64_t num_triangles, const T* rast_db,
                          const int64_t* diff_channels, int64_t num_diff, const T* grad_out,
                          const T* grad_da, T* grad_attr, T* grad_rast, T* grad_rast_db,
                          void* stream) {
  interpolate_backward_kernel<T><<<blocks_for(batch * height * width), kThreadsPerBlock, 0,
                                   static_cast<cudaStream_t>(stream)>>>(
      batch, height * width, channels, attr, attr_batch_stride, rast, tri, num_triangles, rast_db,
      diff_channels, num_diff, grad_out, grad_da, grad_attr, grad_rast, grad_rast_db);
  check_launch("interpolate_backward");
}

#define FACEGEOM_INSTANTIATE(T)                                                                   \
  template void rasterize_bin<T>(int64_t, int64_t, int64_t, const T*, int64_t, const int32_t*,  \
                                 int64_t, const int32_t*, int64_t, int64_t, int32_t*, int64_t*, \
                                 void*);                                                          \
  template void rasterize_pairs<T>(int64_t, int64_t, int64_t, const T*, int64_t, const int32_t*, \
                                   int64_t, const int32_t*, int64_t, int64_t, const int32_t*,    \
                                   const int64_t*, int64_t, unsigned long long*, void*);          \
  template void rasterize_resolve<T>(int64_t, int64_t, const T*, int64_t, const int32_t*,       \
                                     int64_t, int64_t, const unsigned long long*, T*, T*, void*); \
  template void rasterize_backward<T>(int64_t, int64_t, const T*, int64_t, const int32_t*,      \
                                      int64_t, int64_t, int64_t, const T*, const T*, const T*,  \
                                      T*, void*);                                                 \
  template void interpolate_forward<T>(int64_t, int64_t, int64_t, int64_t, const T*, int64_t,   \
                                       const T*, const int32_t*, int64_t, const T*,             \
                                       const int64_t*, int64_t, T*, T*, void*);                  \
  template void interpolate_backward<T>(int64_t, int64_t, int64_t, int64_t, const T*, int64_t,  \
                                        const T*, const int32_t*, int64_t, const T*,            \
                                        const int64_t*, int64_t, const T*, const T*, T*, T*, T*, \
                                        void*);
FACEGEOM_INSTANTIATE(float)
FACEGEOM_INSTANTIATE(double)
#undef FACEGEOM_INSTANTIATE

}  // namespace cuda
}  // namespace facegeom
