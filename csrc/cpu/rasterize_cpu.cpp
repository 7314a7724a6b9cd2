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
                     const std::vector<double>& qy, T* rast, T* rast_db) {
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
void rasterize_forward(int64_t batch, int64_t num_vertices, const T* pos, int64_t pos_batch_stride,
                       const int32_t* tri, int64_t num_triangles, const int32_t* ranges,
                       int64_t height, int64_t width, T* rast, T* rast_db) {
  const auto qx = pixel_centres(width), qy = pixel_centres(height);
  const int64_t image = 4 * height * width;
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t first = ranges == nullptr ? 0 : ranges[2 * b];
    const int64_t count = ranges == nullptr ? num_triangles : ranges[2 * b + 1];
    rasterize_image(pos + b * pos_batch_stride, tri, first, count, height, width, qx, qy,
                    rast + b * image, rast_db == nullptr ? nullptr : rast_db + b * image);
  }
}

template <typename T>
void rasterize_backward(int64_t batch, int64_t num_vertices, const T* pos,
                        int64_t pos_batch_stride, const int32_t* tri, int64_t num_triangles,
                        int64_t height, int64_t width, const T* rast, const T* grad_rast,
                        const T* grad_db, T* grad_pos) {
  const auto qx = pixel_centres(width), qy = pixel_centres(height);
  const bool shared_pos = pos_batch_stride == 0;
  std::vector<double> total(4 * num_vertices, 0.0);
  const int64_t band_rows = std::max<int64_t>(1, kBackwardBandPixels / width);
  std::vector<double> terms(12 * band_rows * width);
  std::vector<int64_t> ids(band_rows * width);
  for (int64_t b = 0; b < batch; ++b) {
    const T* pos_b = pos + b * pos_batch_stride;
    if (!shared_pos) std::fill(total.begin(), total.end(), 0.0);
    for (int64_t y_begin = 0; y_begin < height; y_begin += band_rows) {
      const int64_t rows = std::min(band_rows, height - y_begin);
      // Per-pixel terms in parallel, then summed in pixel order (deterministic).
      at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) {
          const int64_t y = y_begin + r;
          for (int64_t x = 0; x < width; ++x) {
            const int64_t pixel = (b * height + y) * width + x, slot = r * width + x;
            const int64_t id = pixel_triangle(rast + 4 * pixel, num_triangles);
            ids[slot] = -1;
            if (id < 0) continue;
            const T* g = grad_rast + 4 * pixel;
            double g_db[4] = {0, 0, 0, 0};
            bool any = g[0] != T(0) || g[1] != T(0) || g[2] != T(0);
            if (grad_db != nullptr) {
              const T* gd = grad_db + 4 * pixel;
              // rast_db is per pixel; the math works per NDC unit (2 / W per pixel).
              g_db[0] = gd[0] * (2.0 / width);
              g_db[1] = gd[1] * (2.0 / height);
              g_db[2] = gd[2] * (2.0 / width);
              g_db[3] = gd[3] * (2.0 / height);
              any = any || g_db[0] != 0 || g_db[1] != 0 || g_db[2] != 0 || g_db[3] != 0;
            }
            if (!any) continue;
            double clip[3][4];
            load_triangle(pos_b, tri, id, clip);
            raster::pixel_gradient(clip, qx[x], qy[y], g[0], g[1], g[2],
                                   grad_db == nullptr ? nullptr : g_db,
                                   reinterpret_cast<double(*)[4]>(terms.data() + 12 * slot));
            ids[slot] = id;
          }
        }
      });
      for (int64_t slot = 0; slot < rows * width; ++slot) {
        if (ids[slot] < 0) continue;
        for (int v = 0; v < 3; ++v) {
          double* dst = total.data() + 4 * static_cast<int64_t>(tri[3 * ids[slot] + v]);
          for (int c = 0; c < 4; ++c) dst[c] += terms[12 * slot + 4 * v + c];
        }
      }
    }
    if (!shared_pos) {
      T* out = grad_pos + b * pos_batch_stride;
      for (int64_t i = 0; i < 4 * num_vertices; ++i) out[i] = static_cast<T>(total[i]);
    }
  }
  if (shared_pos) {
    for (int64_t i = 0; i < 4 * num_vertices; ++i) grad_pos[i] = static_cast<T>(total[i]);
  }
}

template <typename T>
void interpolate_forward(int64_t batch, int64_t height, int64_t width, int64_t num_vertices,
                         int64_t channels, const T* attr, int64_t attr_batch_stride, const T* rast,
                         const int32_t* tri, int64_t num_triangles, const T* rast_db,
                         const int64_t* diff_channels, int64_t num_diff, T* out, T* out_da) {
  const int64_t pixels = height * width;
  at::parallel_for(0, batch * pixels, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t pixel = begin; pixel < end; ++pixel) {
      const T* r = rast + 4 * pixel;
      raster::interpolate_pixel(r, pixel_triangle(r, num_triangles),
                                attr + (pixel / pixels) * attr_batch_stride, tri, channels,
                                out_da == nullptr ? nullptr : rast_db + 4 * pixel, diff_channels,
                                num_diff, std::numeric_limits<T>::quiet_NaN(),
                                out + channels * pixel,
                                out_da == nullptr ? nullptr : out_da + 2 * num_diff * pixel);
    }
  });
}

template <typename T>
void interpolate_backward(int64_t batch, int64_t height, int64_t width, int64_t num_vertices,
                          int64_t channels, const T* attr, int64_t attr_batch_stride,
                          const T* rast, const int32_t* tri, int64_t num_triangles,
                          const T* rast_db, const int64_t* diff_channels, int64_t num_diff,
                          const T* grad_out, const T* grad_da, T* grad_attr, T* grad_rast,
                          T* grad_rast_db) {
  const int64_t pixels = height * width;
  // Gradients w.r.t. rast and rast_db: independent per pixel.
  at::parallel_for(0, batch * pixels, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t pixel = begin; pixel < end; ++pixel) {
      T* gr = grad_rast + 4 * pixel;
      T* gdb = grad_rast_db == nullptr ? nullptr : grad_rast_db + 4 * pixel;
      std::fill(gr, gr + 4, T(0));
      if (gdb != nullptr) std::fill(gdb, gdb + 4, T(0));
      const int64_t id = pixel_triangle(rast + 4 * pixel, num_triangles);
      if (id < 0) continue;
      const T* a = attr + (pixel / pixels) * attr_batch_stride;
      const T* a0 = a + channels * tri[3 * id];
      const T* a1 = a + channels * tri[3 * id + 1];
      const T* a2 = a + channels * tri[3 * id + 2];
      const T* g = grad_out + channels * pixel;
      for (int64_t c = 0; c < channels; ++c) {
        gr[0] += g[c] * (a0[c] - a2[c]);
        gr[1] += g[c] * (a1[c] - a2[c]);
      }
      if (gdb == nullptr || grad_da == nullptr) continue;
      const T* gda = grad_da + 2 * num_diff * pixel;
      for (int64_t j = 0; j < num_diff; ++j) {
        const int64_t c = diff_channels[j];
        const T d0 = a0[c] - a2[c], d1 = a1[c] - a2[c];
        gdb[0] += gda[2 * j] * d0;
        gdb[1] += gda[2 * j + 1] * d0;
        gdb[2] += gda[2 * j] * d1;
        gdb[3] += gda[2 * j + 1] * d1;
      }
    }
  });
  // Gradient w.r.t. attr: scattered in pixel order (deterministic), summed in
  // float64 over every pixel that reads a vertex.
  const bool shared = attr_batch_stride == 0;
  std::vector<double> total((shared ? 1 : batch) * num_vertices * channels, 0.0);
  for (int64_t pixel = 0; pixel < batch * pixels; ++pixel) {
    const T* r = rast + 4 * pixel;
    const int64_t id = pixel_triangle(r, num_triangles);
    if (id < 0) continue;
    double* acc = total.data() + (shared ? 0 : (pixel / pixels) * num_vertices * channels);
    double* g0 = acc + channels * tri[3 * id];
    double* g1 = acc + channels * tri[3 * id + 1];
    double* g2 = acc + channels * tri[3 * id + 2];
    const T* g = grad_out + channels * pixel;
    const double u = r[0], v = r[1], w = 1.0 - u - v;
    for (int64_t c = 0; c < channels; ++c) {
      g0[c] += u * g[c];
      g1[c] += v * g[c];
      g2[c] += w * g[c];
    }
    if (grad_da == nullptr || num_diff == 0) continue;
    const T* db = rast_db + 4 * pixel;
    const T* gda = grad_da + 2 * num_diff * pixel;
    for (int64_t j = 0; j < num_diff; ++j) {
      const int64_t c = diff_channels[j];
      const double along_u = gda[2 * j] * db[0] + gda[2 * j + 1] * db[1];
      const double along_v = gda[2 * j] * db[2] + gda[2 * j + 1] * db[3];
      g0[c] += along_u;
      g1[c] += along_v;
      g2[c] -= along_u + along_v;
    }
  }
  for (size_t i = 0; i < total.size(); ++i) grad_attr[i] = static_cast<T>(total[i]);
}

#define FACEGEOM_INSTANTIATE(T)                                                                  \
  template void rasterize_forward<T>(int64_t, int64_t, const T*, int64_t, const int32_t*,      \
                                     int64_t, const int32_t*, int64_t, int64_t, T*, T*);        \
  template void rasterize_backward<T>(int64_t, int64_t, const T*, int64_t, const int32_t*,     \
                                      int64_t, int64_t, int64_t, const T*, const T*, const T*, \
                                      T*);                                                       \
  template void interpolate_forward<T>(int64_t, int64_t, int64_t, int64_t, int64_t, const T*,  \
                                       int64_t, const T*, const int32_t*, int64_t, const T*,   \
                                       const int64_t*, int64_t, T*, T*);                         \
  template void interpolate_backward<T>(int64_t, int64_t, int64_t, int64_t, int64_t, const T*, \
                                        int64_t, const T*, const int32_t*, int64_t, const T*,  \
                                        const int64_t*, int64_t, const T*, const T*, T*, T*,    \
                                        T*);
FACEGEOM_INSTANTIATE(float)
FACEGEOM_INSTANTIATE(double)
#undef FACEGEOM_INSTANTIATE

}  // namespace cpu
}  // namespace facegeom
