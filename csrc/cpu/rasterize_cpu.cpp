// CPU rasterizer: per image, set up every triangle (parallel), bin triangles to
// 16x16 tiles by their clipped bounding boxes, then rasterize the tiles in
// parallel with a tile-local depth buffer. The depth test is a min over
// (depth, id) keys, so the result does not depend on the order triangles are
// visited or on the thread count.
#include "cpu/rasterize_cpu.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <limits>
#include <memory>
#include <vector>

#include "facegeom/rasterize.h"

namespace facegeom {
namespace cpu {
namespace {

using raster::TriangleSetup;

// Pixels per band of the backward pass: bounds its scratch memory.
constexpr int64_t kBackwardBandPixels = 1 << 16;

template <typename T>
void load_triangle(const T* pos, const int32_t* tri, int64_t t, double clip[3][4]) {
  for (int v = 0; v < 3; ++v) {
    const T* p = pos + 4 * static_cast<int64_t>(tri[3 * t + v]);
    for (int c = 0; c < 4; ++c) clip[v][c] = static_cast<double>(p[c]);
  }
}

std::vector<double> pixel_centres(int64_t n) {
  std::vector<double> centres(n);
  for (int64_t i = 0; i < n; ++i) centres[i] = raster::pixel_centre(i, n);
  return centres;
}

template <typename T>
int64_t pixel_triangle(const T* rast_pixel, int64_t num_triangles) {
  return raster::stored_triangle(static_cast<double>(rast_pixel[3]), num_triangles);
}

template <typename T>
void rasterize_image(const T* pos, const int32_t* tri, int64_t first, int64_t count,
                     int64_t height, int64_t width, const std::vector<double>& qx,
                     const std::vector<double>& qy, T* rast, T* rast_db, const T* peel) {
  // Pass 1: pixel boxes (x0, x1, y0, y1; x0 > x1 = nothing to draw). Most
  // triangles of a dense mesh cover no pixel centre at all.
  std::unique_ptr<std::array<int32_t, 4>[]> boxes(new std::array<int32_t, 4>[count]);
  at::parallel_for(0, count, 2048, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      double clip[3][4];
      int64_t box[4];
      load_triangle(pos, tri, first + i, clip);
      if (raster::pixel_bounds(clip, width, height, box)) {
        for (int c = 0; c < 4; ++c) boxes[i][c] = static_cast<int32_t>(box[c]);
      } else {
        boxes[i] = {1, 0, 1, 0};
      }
    }
  });
  // Pass 2: edge functions only for triangles with a box, stored compactly
  // (fewer pages to touch and a smaller working set for the tile pass).
  std::unique_ptr<int32_t[]> slot(new int32_t[count]);
  int64_t num_drawn = 0;
  for (int64_t i = 0; i < count; ++i) slot[i] = boxes[i][0] <= boxes[i][1] ? num_drawn++ : -1;
  std::unique_ptr<TriangleSetup[]> setups(new TriangleSetup[num_drawn]);  // not zeroed
  at::parallel_for(0, count, 2048, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      if (slot[i] < 0) continue;
      double clip[3][4];
      load_triangle(pos, tri, first + i, clip);
      if (!raster::setup_triangle(clip, setups[slot[i]])) boxes[i] = {1, 0, 1, 0};
    }
  });

  // Counting sort of (tile, triangle) pairs.
  const int64_t tiles_x = (width + kRasterTile - 1) / kRasterTile;
  const int64_t tiles_y = (height + kRasterTile - 1) / kRasterTile;
  std::vector<int64_t> offsets(tiles_x * tiles_y + 1, 0);
  for (int64_t i = 0; i < count; ++i) {
    const auto& box = boxes[i];
    if (box[0] > box[1]) continue;
    for (int64_t ty = box[2] / kRasterTile; ty <= box[3] / kRasterTile; ++ty)
      for (int64_t tx = box[0] / kRasterTile; tx <= box[1] / kRasterTile; ++tx)
        ++offsets[ty * tiles_x + tx + 1];
  }
  for (size_t t = 1; t < offsets.size(); ++t) offsets[t] += offsets[t - 1];
  std::vector<int64_t> cursor(offsets.begin(), offsets.end() - 1);
  std::vector<int64_t> binned(offsets.back());
  for (int64_t i = 0; i < count; ++i) {
    const auto& box = boxes[i];
    if (box[0] > box[1]) continue;
    for (int64_t ty = box[2] / kRasterTile; ty <= box[3] / kRasterTile; ++ty)
      for (int64_t tx = box[0] / kRasterTile; tx <= box[1] / kRasterTile; ++tx)
        binned[cursor[ty * tiles_x + tx]++] = i;
  }

  const double ndc_per_pixel_x = 2.0 / static_cast<double>(width);
  const double ndc_per_pixel_y = 2.0 / static_cast<double>(height);
  at::parallel_for(0, tiles_x * tiles_y, 1, [&](int64_t begin, int64_t end) {
    std::vector<uint64_t> keys(kRasterTile * kRasterTile);
    for (int64_t tile = begin; tile < end; ++tile) {
      const int64_t x0 = (tile % tiles_x) * kRasterTile, y0 = (tile / tiles_x) * kRasterTile;
      const int64_t x1 = std::min(width, x0 + kRasterTile) - 1;
      const int64_t y1 = std::min(height, y0 + kRasterTile) - 1;
      std::fill(keys.begin(), keys.end(), raster::kEmptyKey);
      for (int64_t k = offsets[tile]; k < offsets[tile + 1]; ++k) {
        const int64_t i = binned[k];
        const auto& box = boxes[i];
        const TriangleSetup& setup = setups[slot[i]];
        for (int64_t y = std::max<int64_t>(y0, box[2]); y <= std::min<int64_t>(y1, box[3]); ++y) {
          uint64_t* row_keys = keys.data() + (y - y0) * kRasterTile;
          for (int64_t x = std::max<int64_t>(x0, box[0]); x <= std::min<int64_t>(x1, box[1]); ++x) {
            double e[3], depth = 0;
            if (!raster::covers(setup, qx[x], qy[y], e, depth)) continue;
            if (peel != nullptr && !raster::behind_previous(peel + 4 * (y * width + x), depth)) continue;
            uint64_t& key = row_keys[x - x0];
            key = std::min(key, raster::depth_key(depth, first + i));
          }
        }
      }
      for (int64_t y = y0; y <= y1; ++y) {
        for (int64_t x = x0; x <= x1; ++x) {
          const uint64_t key = keys[(y - y0) * kRasterTile + (x - x0)];
          T* out = rast + 4 * (y * width + x);
          T* out_db = rast_db == nullptr ? nullptr : rast_db + 4 * (y * width + x);
          if (key == raster::kEmptyKey) {
            for (int c = 0; c < 4; ++c) out[c] = T(0);
            if (out_db != nullptr)
              for (int c = 0; c < 4; ++c) out_db[c] = T(0);
            continue;
          }
          const int64_t id = static_cast<int64_t>(key & 0xffffffffu);
          const TriangleSetup& setup = setups[slot[id - first]];
          double e[3] = {0, 0, 0}, depth = 0, uv[2], db[4];
          raster::covers(setup, qx[x], qy[y], e, depth);
          raster::barycentrics(setup, e, uv, out_db == nullptr ? nullptr : db, ndc_per_pixel_x,
                               ndc_per_pixel_y);
          out[0] = static_cast<T>(uv[0]);
          out[1] = static_cast<T>(uv[1]);
          out[2] = static_cast<T>(depth);
          out[3] = static_cast<T>(id + 1);
          if (out_db != nullptr)
            for (int c = 0; c < 4; ++c) out_db[c] = static_cast<T>(db[c]);
        }
      }
    }
  });
}

}  // namespace

template <typename T>
void rasterize_forward(const raster::RasterizeParams<T>& p) {
  const auto qx = pixel_centres(p.width), qy = pixel_centres(p.height);
  const int64_t image = 4 * p.height * p.width;
  for (int64_t b = 0; b < p.batch; ++b) {
    const int64_t first = p.ranges == nullptr ? 0 : p.ranges[2 * b];
    const int64_t count = p.ranges == nullptr ? p.num_triangles : p.ranges[2 * b + 1];
    rasterize_image(p.pos + b * p.pos_batch_stride, p.tri, first, count, p.height, p.width, qx, qy,
                    p.rast + b * image, p.rast_db == nullptr ? nullptr : p.rast_db + b * image,
                    p.peel == nullptr ? nullptr : p.peel + b * image);
  }
}

template <typename T>
void rasterize_backward(const raster::RasterizeParams<T>& p) {
  const auto qx = pixel_centres(p.width), qy = pixel_centres(p.height);
  const bool shared_pos = p.pos_batch_stride == 0;
  std::vector<double> total(4 * p.num_vertices, 0.0);
  const int64_t band_rows = std::max<int64_t>(1, kBackwardBandPixels / p.width);
  std::vector<double> terms(12 * band_rows * p.width);
  std::vector<int64_t> ids(band_rows * p.width);
  for (int64_t b = 0; b < p.batch; ++b) {
    const T* pos_b = p.pos + b * p.pos_batch_stride;
    if (!shared_pos) std::fill(total.begin(), total.end(), 0.0);
    for (int64_t y_begin = 0; y_begin < p.height; y_begin += band_rows) {
      const int64_t rows = std::min(band_rows, p.height - y_begin);
      // Per-pixel terms in parallel, then summed in pixel order (deterministic).
      at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) {
          const int64_t y = y_begin + r;
          for (int64_t x = 0; x < p.width; ++x) {
            const int64_t pixel = (b * p.height + y) * p.width + x, slot = r * p.width + x;
            const int64_t id = pixel_triangle(p.rast + 4 * pixel, p.num_triangles);
            ids[slot] = -1;
            if (id < 0) continue;
            const T* g = p.grad_rast + 4 * pixel;
            double g_db[4] = {0, 0, 0, 0};
            bool any = g[0] != T(0) || g[1] != T(0) || g[2] != T(0);
            if (p.grad_db != nullptr) {
              const T* gd = p.grad_db + 4 * pixel;
              // rast_db is per pixel; the math works per NDC unit (2 / W per pixel).
              g_db[0] = gd[0] * (2.0 / p.width);
              g_db[1] = gd[1] * (2.0 / p.height);
              g_db[2] = gd[2] * (2.0 / p.width);
              g_db[3] = gd[3] * (2.0 / p.height);
              any = any || g_db[0] != 0 || g_db[1] != 0 || g_db[2] != 0 || g_db[3] != 0;
            }
            if (!any) continue;
            double clip[3][4];
            load_triangle(pos_b, p.tri, id, clip);
            raster::pixel_gradient(clip, qx[x], qy[y], g[0], g[1], g[2],
                                   p.grad_db == nullptr ? nullptr : g_db,
                                   reinterpret_cast<double(*)[4]>(terms.data() + 12 * slot));
            ids[slot] = id;
          }
        }
      });
      for (int64_t slot = 0; slot < rows * p.width; ++slot) {
        if (ids[slot] < 0) continue;
        for (int v = 0; v < 3; ++v) {
          double* dst = total.data() + 4 * static_cast<int64_t>(p.tri[3 * ids[slot] + v]);
          for (int c = 0; c < 4; ++c) dst[c] += terms[12 * slot + 4 * v + c];
        }
      }
    }
    if (!shared_pos) {
      T* out = p.grad_pos + b * p.pos_batch_stride;
      for (int64_t i = 0; i < 4 * p.num_vertices; ++i) out[i] = static_cast<T>(total[i]);
    }
  }
  if (shared_pos) {
    for (int64_t i = 0; i < 4 * p.num_vertices; ++i) p.grad_pos[i] = static_cast<T>(total[i]);
  }
}

template void rasterize_forward<float>(const raster::RasterizeParams<float>&);
template void rasterize_forward<double>(const raster::RasterizeParams<double>&);
template void rasterize_backward<float>(const raster::RasterizeParams<float>&);
template void rasterize_backward<double>(const raster::RasterizeParams<double>&);

}  // namespace cpu
}  // namespace facegeom
