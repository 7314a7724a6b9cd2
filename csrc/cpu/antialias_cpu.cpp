#include "cpu/antialias_cpu.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "facegeom/antialias.h"

namespace facegeom {
namespace cpu {
namespace {

// Rows per block of the pos-gradient pass: a fixed size, so the order in which
// contributions are added does not depend on the number of threads.
constexpr int64_t kRowsPerBlock = 8;
// Below this many pixels per task, waking worker threads costs more than the
// work (most pixels only compare two ids).
constexpr int64_t kPixelsPerTask = 16384;

int64_t row_grain(int64_t width) { return std::max<int64_t>(1, kPixelsPerTask / std::max<int64_t>(width, 1)); }

// One pair's contribution to grad_pos, kept until the ordered reduction.
template <typename T>
struct EdgeGradient {
  int64_t vi, vj;  // rows of grad_pos viewed as [B * V, 4] (or [V, 4])
  T gi[3], gj[3];  // d/d(x, y, w)
};

// The blend of every pair, computed once: pair (pixel, direction) with
// direction 0 = the right neighbour, 1 = the one above. target 0: no blend,
// 1: the first pixel is modified, 2: the second. The per-pixel gathers below
// then read four records instead of analysing four pairs (each pair would
// otherwise be analysed from both of its pixels).
template <typename T>
struct PairBlends {
  std::vector<int8_t> target;
  std::vector<T> weight;
};

template <typename T>
PairBlends<T> analyse_pairs(const aa::AntialiasProblem<T>& p, int64_t batch) {
  const int64_t pixels = batch * p.height * p.width;
  PairBlends<T> blends{std::vector<int8_t>(2 * pixels, 0), std::vector<T>(2 * pixels, T(0))};
  at::parallel_for(0, batch * p.height, row_grain(p.width), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / p.height, y = row % p.height;
      for (int64_t x = 0; x < p.width; ++x) {
        const int64_t pair = 2 * (row * p.width + x);
        for (int direction = 0; direction < 2; ++direction) {
          const bool horizontal = direction == 0;
          if (horizontal ? x + 1 >= p.width : y + 1 >= p.height) continue;
          aa::AntialiasCrossing<T> crossing;
          T c0[2], c1[2];
          if (!aa::aa_pair_at(p, b, y, x, horizontal, &crossing, c0, c1)) continue;
          bool modified_is_first;
          aa::aa_blend(crossing, &modified_is_first, &blends.weight[pair + direction]);
          blends.target[pair + direction] = modified_is_first ? 1 : 2;
        }
      }
    }
  });
  return blends;
}

// Calls visit(pair_record, other_pixel, pixel_is_first) for the pairs of
// `pixel` in aa_for_pairs_of_pixel's order (left, right, below, above).
template <typename Visit>
void for_pair_records(int64_t height, int64_t width, int64_t pixel, int64_t y, int64_t x,
                      Visit&& visit) {
  if (x > 0) visit(2 * (pixel - 1), pixel - 1, false);
  if (x + 1 < width) visit(2 * pixel, pixel + 1, true);
  if (y > 0) visit(2 * (pixel - width) + 1, pixel - width, false);
  if (y + 1 < height) visit(2 * pixel + 1, pixel + width, true);
}

}  // namespace

// Same sums in the same order as aa_pixel_forward (the CUDA path), from the
// precomputed blends.
template <typename T>
void antialias_forward(int64_t batch, const aa::AntialiasProblem<T>& problem, T* out) {
  const int64_t height = problem.height, width = problem.width, channels = problem.channels;
  const T* color = problem.color;
  const auto blends = analyse_pairs(problem, batch);
  const int64_t C = channels;
  at::parallel_for(0, batch * height, row_grain(width), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t y = row % height;
      for (int64_t x = 0; x < width; ++x) {
        const int64_t pixel = row * width + x;
        const T* own = color + C * pixel;
        T* o = out + C * pixel;
        for (int64_t c = 0; c < C; ++c) o[c] = own[c];
        for_pair_records(height, width, pixel, y, x, [&](int64_t pair, int64_t other, bool first) {
          if (blends.target[pair] != (first ? 1 : 2)) return;
          const T weight = blends.weight[pair];
          const T* source = color + C * other;
          for (int64_t c = 0; c < C; ++c) o[c] += weight * (source[c] - own[c]);
        });
      }
    }
  });
}

template <typename T>
void antialias_backward(int64_t batch, const aa::AntialiasProblem<T>& problem, const T* grad_out,
                        T* grad_color, T* grad_pos) {
  const int64_t height = problem.height, width = problem.width, channels = problem.channels;
  const int64_t pos_batch_stride = problem.pos_batch_stride;
  const auto blends = analyse_pairs(problem, batch);
  const int64_t rows = batch * height, C = channels;
  if (grad_color != nullptr) {
    // As aa_pixel_grad_color: minus weight * grad_out[pixel] where this pixel
    // was modified, plus weight * grad_out[modified] where it was the source.
    at::parallel_for(0, rows, row_grain(width), [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t y = row % height;
        for (int64_t x = 0; x < width; ++x) {
          const int64_t pixel = row * width + x;
          T* g = grad_color + C * pixel;
          for (int64_t c = 0; c < C; ++c) g[c] = grad_out[C * pixel + c];
          for_pair_records(height, width, pixel, y, x, [&](int64_t pair, int64_t other, bool first) {
            const int8_t target = blends.target[pair];
            if (target == 0) return;
            const T weight = blends.weight[pair];
            if (target == (first ? 1 : 2)) {
              for (int64_t c = 0; c < C; ++c) g[c] -= weight * grad_out[C * pixel + c];
            } else {
              for (int64_t c = 0; c < C; ++c) g[c] += weight * grad_out[C * other + c];
            }
          });
        }
      }
    });
  }
  if (grad_pos == nullptr) return;
  // Silhouette pairs are few (they lie along edges), so each block keeps a
  // short list that is added to grad_pos serially, in block order.
  const int64_t blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
  std::vector<std::vector<EdgeGradient<T>>> found(blocks);
  const int64_t vertex_rows_per_image = pos_batch_stride / 4;
  at::parallel_for(0, blocks, std::max<int64_t>(1, row_grain(width) / kRowsPerBlock), [&](int64_t begin, int64_t end) {
    for (int64_t block = begin; block < end; ++block) {
      const int64_t row_end = std::min(rows, (block + 1) * kRowsPerBlock);
      for (int64_t row = block * kRowsPerBlock; row < row_end; ++row) {
        const int64_t b = row / height, y = row % height;
        const int64_t base = b * vertex_rows_per_image;
        for (int64_t x = 0; x < width; ++x) {
          for (int direction = 0; direction < 2; ++direction) {
            const bool horizontal = direction == 0;
            if (blends.target[2 * (row * width + x) + direction] == 0) continue;
            EdgeGradient<T> e;
            if (aa::aa_pair_grad_pos(problem, grad_out, b, y, x, horizontal, &e.vi, &e.vj, e.gi, e.gj)) {
              e.vi += base;
              e.vj += base;
              found[block].push_back(e);
            }
          }
        }
      }
    }
  });
  for (const auto& list : found) {
    for (const auto& e : list) {
      T* gi = grad_pos + 4 * e.vi;
      T* gj = grad_pos + 4 * e.vj;
      gi[0] += e.gi[0];
      gi[1] += e.gi[1];
      gi[3] += e.gi[2];
      gj[0] += e.gj[0];
      gj[1] += e.gj[1];
      gj[3] += e.gj[2];
    }
  }
}

void antialias_topology(int64_t num_triangles, const int32_t* tri, int32_t* topology) {
  // (undirected edge key, 3 * f + k), sorted: the triangles sharing an edge
  // become neighbours, in a deterministic order.
  std::vector<std::pair<uint64_t, int64_t>> edges;
  edges.reserve(3 * num_triangles);
  for (int64_t f = 0; f < num_triangles; ++f) {
    const int32_t* v = tri + 3 * f;
    for (int k = 0; k < 3; ++k) topology[3 * f + k] = -1;
    if (v[0] == v[1] || v[1] == v[2] || v[2] == v[0]) continue;  // degenerate: pairs with nothing
    for (int k = 0; k < 3; ++k) {
      const uint32_t a = static_cast<uint32_t>(v[(k + 1) % 3]), b = static_cast<uint32_t>(v[(k + 2) % 3]);
      const uint64_t key = (static_cast<uint64_t>(std::min(a, b)) << 32) | std::max(a, b);
      edges.emplace_back(key, 3 * f + k);
    }
  }
  std::sort(edges.begin(), edges.end());
  for (size_t i = 0; i < edges.size();) {
    size_t end = i + 1;
    while (end < edges.size() && edges[end].first == edges[i].first) ++end;
    if (end - i == 2) {  // manifold: exactly two triangles share the edge
      topology[edges[i].second] = static_cast<int32_t>(edges[i + 1].second / 3);
      topology[edges[i + 1].second] = static_cast<int32_t>(edges[i].second / 3);
    }
    i = end;
  }
}

template void antialias_forward<float>(int64_t, const aa::AntialiasProblem<float>&, float*);
template void antialias_forward<double>(int64_t, const aa::AntialiasProblem<double>&, double*);
template void antialias_backward<float>(int64_t, const aa::AntialiasProblem<float>&, const float*,
                                        float*, float*);
template void antialias_backward<double>(int64_t, const aa::AntialiasProblem<double>&,
                                         const double*, double*, double*);

}  // namespace cpu
}  // namespace facegeom
