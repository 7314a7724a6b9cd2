// CUDA rasterizer kernels (see rasterize_cuda.h): bin, then one thread per
// triangle-tile pair with a 64-bit atomicMin depth test, then one thread per
// pixel to write rast; rasterize_host.cpp allocates the scratch and runs the
// three passes. The coverage and depth math is the shared rasterize.h,
// evaluated with exactly rounded float64 operations, so the winning triangle at
// every pixel is the CPU's. No torch headers: the bindings own checks, the host
// file allocation and streams. Indices are int64 and loops grid-stride, so
// large images and meshes are safe; vertex indices are re-checked on the
// device (a bad one draws nothing).
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
__global__ void bin_kernel(const raster::RasterizeParams<T> p, const RasterizeBins bins) {
  for (int64_t slot = first_index(); slot < p.batch * bins.max_count; slot += grid_stride()) {
    const int64_t b = slot / bins.max_count;
    const int64_t t = slot_triangle(b, slot % bins.max_count, p.num_triangles, p.ranges);
    bins.tile_counts[slot] = 0;
    double clip[3][4];
    int64_t box[4];
    raster::TriangleSetup setup;
    if (t < 0 || !load_triangle(p.pos + b * p.pos_batch_stride, p.tri, p.num_vertices, t, clip)) {
      continue;
    }
    if (!raster::pixel_bounds(clip, p.width, p.height, box) ||
        !raster::setup_triangle(clip, setup)) {
      continue;
    }
    for (int c = 0; c < 4; ++c) bins.boxes[4 * slot + c] = static_cast<int32_t>(box[c]);
    bins.tile_counts[slot] = (box[1] / kRasterTile - box[0] / kRasterTile + 1) *
                             (box[3] / kRasterTile - box[2] / kRasterTile + 1);
  }
}

template <typename T>
__global__ void pairs_kernel(const raster::RasterizeParams<T> p, const RasterizeBins bins) {
  const int64_t num_slots = p.batch * bins.max_count;
  for (int64_t pair = first_index(); pair < bins.num_pairs; pair += grid_stride()) {
    // The slot owning this pair: the first whose inclusive prefix exceeds it.
    int64_t lo = 0, hi = num_slots - 1;
    while (lo < hi) {
      const int64_t mid = (lo + hi) / 2;
      if (bins.pair_end[mid] > pair) hi = mid; else lo = mid + 1;
    }
    const int64_t slot = lo;
    const int64_t local = pair - (slot > 0 ? bins.pair_end[slot - 1] : 0);
    const int64_t b = slot / bins.max_count;
    const int64_t t = slot_triangle(b, slot % bins.max_count, p.num_triangles, p.ranges);
    const int32_t* box = bins.boxes + 4 * slot;
    const int64_t tiles_x = box[1] / kRasterTile - box[0] / kRasterTile + 1;
    const int64_t tx = box[0] / kRasterTile + local % tiles_x;
    const int64_t ty = box[2] / kRasterTile + local / tiles_x;
    double clip[3][4];
    raster::TriangleSetup setup;
    if (!load_triangle(p.pos + b * p.pos_batch_stride, p.tri, p.num_vertices, t, clip) ||
        !raster::setup_triangle(clip, setup)) {
      continue;
    }
    const int64_t x0 = max(static_cast<int64_t>(box[0]), tx * kRasterTile);
    const int64_t x1 = min(static_cast<int64_t>(box[1]), tx * kRasterTile + kRasterTile - 1);
    const int64_t y0 = max(static_cast<int64_t>(box[2]), ty * kRasterTile);
    const int64_t y1 = min(static_cast<int64_t>(box[3]), ty * kRasterTile + kRasterTile - 1);
    unsigned long long* image_keys = bins.keys + b * p.height * p.width;
    for (int64_t y = y0; y <= y1; ++y) {
      const double qy = raster::pixel_centre(y, p.height);
      for (int64_t x = x0; x <= x1; ++x) {
        double e[3], depth;
        if (!raster::covers(setup, raster::pixel_centre(x, p.width), qy, e, depth)) continue;
        if (p.peel != nullptr &&
            !raster::behind_previous(p.peel + 4 * ((b * p.height + y) * p.width + x), depth))
          continue;
        atomicMin(image_keys + y * p.width + x,
                  static_cast<unsigned long long>(raster::depth_key(depth, t)));
      }
    }
  }
}

template <typename T>
__global__ void resolve_kernel(const raster::RasterizeParams<T> p, const RasterizeBins bins) {
  const int64_t pixels = p.height * p.width;
  for (int64_t pixel = first_index(); pixel < p.batch * pixels; pixel += grid_stride()) {
    const unsigned long long key = bins.keys[pixel];
    T* out = p.rast + 4 * pixel;
    T* out_db = p.rast_db == nullptr ? nullptr : p.rast_db + 4 * pixel;
    double clip[3][4];
    raster::TriangleSetup setup;
    const int64_t id = static_cast<int64_t>(key & 0xffffffffull);
    const int64_t b = pixel / pixels, y = (pixel % pixels) / p.width, x = pixel % p.width;
    if (key == raster::kEmptyKey ||
        !load_triangle(p.pos + b * p.pos_batch_stride, p.tri, p.num_vertices, id, clip) ||
        !raster::setup_triangle(clip, setup)) {
      for (int c = 0; c < 4; ++c) out[c] = T(0);
      if (out_db != nullptr)
        for (int c = 0; c < 4; ++c) out_db[c] = T(0);
      continue;
    }
    double e[3], depth, uv[2], db[4];
    raster::covers(setup, raster::pixel_centre(x, p.width), raster::pixel_centre(y, p.height), e,
                   depth);
    raster::barycentrics(setup, e, uv, out_db == nullptr ? nullptr : db, 2.0 / p.width,
                         2.0 / p.height);
    out[0] = static_cast<T>(uv[0]);
    out[1] = static_cast<T>(uv[1]);
    out[2] = static_cast<T>(depth);
    out[3] = static_cast<T>(id + 1);
    if (out_db != nullptr)
      for (int c = 0; c < 4; ++c) out_db[c] = static_cast<T>(db[c]);
  }
}

template <typename T>
__global__ void rasterize_backward_kernel(const raster::RasterizeParams<T> p) {
  const int64_t pixels = p.height * p.width;
  for (int64_t pixel = first_index(); pixel < p.batch * pixels; pixel += grid_stride()) {
    const int64_t id =
        raster::stored_triangle(static_cast<double>(p.rast[4 * pixel + 3]), p.num_triangles);
    if (id < 0) continue;
    const int64_t b = pixel / pixels, y = (pixel % pixels) / p.width, x = pixel % p.width;
    const T* g = p.grad_rast + 4 * pixel;
    double g_db[4] = {0, 0, 0, 0};
    if (p.grad_db != nullptr) {
      // rast_db is per pixel; the math works per NDC unit (2 / W per pixel).
      g_db[0] = p.grad_db[4 * pixel] * (2.0 / p.width);
      g_db[1] = p.grad_db[4 * pixel + 1] * (2.0 / p.height);
      g_db[2] = p.grad_db[4 * pixel + 2] * (2.0 / p.width);
      g_db[3] = p.grad_db[4 * pixel + 3] * (2.0 / p.height);
    }
    double clip[3][4], grad[3][4];
    const T* pos_b = p.pos + b * p.pos_batch_stride;
    if (!load_triangle(pos_b, p.tri, p.num_vertices, id, clip)) continue;
    raster::pixel_gradient(clip, raster::pixel_centre(x, p.width),
                           raster::pixel_centre(y, p.height),
                           g[0], g[1], g[2], p.grad_db == nullptr ? nullptr : g_db, grad);
    T* grad_b = p.grad_pos + b * p.pos_batch_stride;
    for (int v = 0; v < 3; ++v) {
      T* dst = grad_b + 4 * static_cast<int64_t>(p.tri[3 * id + v]);
      for (int c = 0; c < 4; ++c) atomicAdd(dst + c, static_cast<T>(grad[v][c]));
    }
  }
}

}  // namespace

template <typename T>
void rasterize_bin(const raster::RasterizeParams<T>& p, const RasterizeBins& bins, void* stream) {
  bin_kernel<T><<<blocks_for(p.batch * bins.max_count), kThreadsPerBlock, 0,
                  static_cast<cudaStream_t>(stream)>>>(p, bins);
  check_launch("rasterize_bin");
}

template <typename T>
void rasterize_pairs(const raster::RasterizeParams<T>& p, const RasterizeBins& bins, void* stream) {
  pairs_kernel<T><<<blocks_for(bins.num_pairs), kThreadsPerBlock, 0,
                    static_cast<cudaStream_t>(stream)>>>(p, bins);
  check_launch("rasterize_pairs");
}

template <typename T>
void rasterize_resolve(const raster::RasterizeParams<T>& p, const RasterizeBins& bins,
                       void* stream) {
  resolve_kernel<T><<<blocks_for(p.batch * p.height * p.width), kThreadsPerBlock, 0,
                      static_cast<cudaStream_t>(stream)>>>(p, bins);
  check_launch("rasterize_resolve");
}

template <typename T>
void rasterize_backward(const raster::RasterizeParams<T>& p, void* stream) {
  rasterize_backward_kernel<T><<<blocks_for(p.batch * p.height * p.width), kThreadsPerBlock, 0,
                                 static_cast<cudaStream_t>(stream)>>>(p);
  check_launch("rasterize_backward");
}

#define FACEGEOM_INSTANTIATE(T)                                                               \
  template void rasterize_bin<T>(const raster::RasterizeParams<T>&, const RasterizeBins&,     \
                                 void*);                                                      \
  template void rasterize_pairs<T>(const raster::RasterizeParams<T>&, const RasterizeBins&,   \
                                   void*);                                                    \
  template void rasterize_resolve<T>(const raster::RasterizeParams<T>&, const RasterizeBins&, \
                                     void*);                                                  \
  template void rasterize_backward<T>(const raster::RasterizeParams<T>&, void*);
FACEGEOM_INSTANTIATE(float)
FACEGEOM_INSTANTIATE(double)
#undef FACEGEOM_INSTANTIATE

}  // namespace cuda
}  // namespace facegeom
