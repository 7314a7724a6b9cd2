#include "cpu/point_to_surface_cpu.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <numeric>

#include "cpu/point_to_surface_wide_bvh.h"
#include "facegeom/bvh.h"

namespace facegeom {
namespace cpu {
namespace {

// Binned SAH (Wald 2007): 16 bins per axis; the cost of a split is one traversal
// step plus the triangles each child holds weighted by its share of the area.
// Boxes and centroids are float: they only steer the split choice, never the
// answers (refit fits the exact boxes).
constexpr int kBins = 16;
constexpr int32_t kMaxLeafSize = 4;
constexpr int32_t kMedianLeafSize = 4;
constexpr float kTraversalCost = 1.0f;  // relative to one closest-point test
// Subtrees of at least this many faces are built as parallel tasks.
constexpr int32_t kParallelBuildSize = 8192;

constexpr float kInf = std::numeric_limits<float>::infinity();

struct Box {
  float lo[3] = {kInf, kInf, kInf};
  float hi[3] = {-kInf, -kInf, -kInf};
  void grow(const float* lo_in, const float* hi_in) {
    for (int k = 0; k < 3; ++k) {
      lo[k] = std::min(lo[k], lo_in[k]);
      hi[k] = std::max(hi[k], hi_in[k]);
    }
  }
  void grow(const Box& other) { grow(other.lo, other.hi); }
  float area() const {
    const float dx = hi[0] - lo[0], dy = hi[1] - lo[1], dz = hi[2] - lo[2];
    if (!(dx >= 0 && dy >= 0 && dz >= 0)) return 0;  // empty box
    return 2 * (dx * dy + dy * dz + dz * dx);
  }
};

// One face as the builder sees it; the array of these is partitioned in place,
// so every pass over a node's faces reads contiguous memory.
struct FaceRef {
  Box box;
  float centroid[3];
  int32_t face;
};

struct BuildNode {
  int32_t first = 0, count = 0;  // leaf slots
  int32_t left = -1, right = -1;
  int32_t depth = 0;
};

// A subtree over n faces uses at most 2n - 1 nodes: the subtree of the faces
// [begin, end) owns node ids [base, base + 2 (end - begin) - 1), so parallel
// tasks never share a counter and the ids do not depend on scheduling.
class Builder {
 public:
  explicit Builder(std::vector<FaceRef> refs) : refs_(std::move(refs)), nodes_(2 * refs_.size()) {}

  void build_root() {
#pragma omp parallel num_threads(at::get_num_threads())
#pragma omp single
    build(0, static_cast<int32_t>(refs_.size()), 0, 0);
  }

  BvhTopology flatten() const {
    // Breadth-first renumbering: children become consecutive, levels contiguous.
    std::vector<int32_t> bfs{0};
    bfs.reserve(nodes_.size());
    for (size_t i = 0; i < bfs.size(); ++i) {
      const BuildNode& node = nodes_[bfs[i]];
      if (node.left >= 0) {
        bfs.push_back(node.left);
        bfs.push_back(node.right);
      }
    }
    std::vector<int32_t> new_index(nodes_.size());
    for (size_t i = 0; i < bfs.size(); ++i) new_index[bfs[i]] = static_cast<int32_t>(i);
    BvhTopology topology;
    topology.nodes.resize(2 * bfs.size());
    topology.levels.push_back(0);
    for (size_t i = 0; i < bfs.size(); ++i) {
      const BuildNode& node = nodes_[bfs[i]];
      if (i > 0 && node.depth != nodes_[bfs[i - 1]].depth) topology.levels.push_back(i);
      topology.nodes[2 * i] = node.left >= 0 ? new_index[node.left] : node.first;
      topology.nodes[2 * i + 1] = node.left >= 0 ? 0 : node.count;
    }
    topology.levels.push_back(static_cast<int64_t>(bfs.size()));
    topology.order.resize(refs_.size());
    for (size_t i = 0; i < refs_.size(); ++i) topology.order[i] = refs_[i].face;
    return topology;
  }

 private:
  void build(int32_t begin, int32_t end, int32_t base, int32_t depth) {
    BuildNode& node = nodes_[base];
    node.depth = depth;
    const int32_t count = end - begin;
    Box bounds, centroid_bounds;
    for (int32_t i = begin; i < end; ++i) {
      bounds.grow(refs_[i].box);
      centroid_bounds.grow(refs_[i].centroid, refs_[i].centroid);
    }
    int32_t mid = -1;
    if (depth < bvh::kBvhSahDepth) {
      if (count <= 1) return make_leaf(node, begin, count);
      mid = sah_split(begin, end, bounds, centroid_bounds);
      if (mid < 0) {
        if (count <= kMaxLeafSize) return make_leaf(node, begin, count);
        mid = median_split(begin, end, centroid_bounds);
      }
    } else {
      if (count <= kMedianLeafSize) return make_leaf(node, begin, count);
      mid = median_split(begin, end, centroid_bounds);
    }
    node.left = base + 1;
    node.right = base + 2 * (mid - begin);
#pragma omp task if (mid - begin >= kParallelBuildSize) default(shared) firstprivate(begin, mid, base, depth)
    build(begin, mid, base + 1, depth + 1);
    build(mid, end, base + 2 * (mid - begin), depth + 1);
#pragma omp taskwait
  }

  void make_leaf(BuildNode& node, int32_t begin, int32_t count) {
    node.first = begin;
    node.count = count;
  }

  static int largest_axis(const Box& box) {
    const float dx = box.hi[0] - box.lo[0], dy = box.hi[1] - box.lo[1], dz = box.hi[2] - box.lo[2];
    return dx >= dy && dx >= dz ? 0 : (dy >= dz ? 1 : 2);
  }

  // Object median along the widest centroid axis: always halves the count.
  int32_t median_split(int32_t begin, int32_t end, const Box& centroid_bounds) {
    const int axis = largest_axis(centroid_bounds);
    const int32_t mid = begin + (end - begin) / 2;
    std::nth_element(refs_.begin() + begin, refs_.begin() + mid, refs_.begin() + end,
                     [axis](const FaceRef& a, const FaceRef& b) {
                       return a.centroid[axis] < b.centroid[axis];
                     });
    return mid;
  }

  static int bin_of(float value, float lo, float inv_width) {
    const int bin = static_cast<int>((value - lo) * inv_width);
    return std::min(std::max(bin, 0), kBins - 1);
  }

  // Best binned-SAH split, or -1 when a leaf is cheaper (and small enough) or
  // the centroids cannot be separated.
  int32_t sah_split(int32_t begin, int32_t end, const Box& bounds, const Box& centroid_bounds) {
    const int32_t count = end - begin;
    float inv_width[3];
    bool usable[3];
    for (int axis = 0; axis < 3; ++axis) {
      const float extent = centroid_bounds.hi[axis] - centroid_bounds.lo[axis];
      usable[axis] = extent > 0 && std::isfinite(kBins / extent);
      inv_width[axis] = usable[axis] ? kBins / extent : 0.0f;
    }
    Box bin_boxes[3][kBins];
    int32_t bin_counts[3][kBins] = {};
    for (int32_t i = begin; i < end; ++i) {
      const FaceRef& ref = refs_[i];
      for (int axis = 0; axis < 3; ++axis) {
        const int bin = bin_of(ref.centroid[axis], centroid_bounds.lo[axis], inv_width[axis]);
        ++bin_counts[axis][bin];
        bin_boxes[axis][bin].grow(ref.box);
      }
    }
    float best_cost = kInf;
    int best_axis = -1, best_bin = -1;
    for (int axis = 0; axis < 3; ++axis) {
      if (!usable[axis]) continue;
      float right_area[kBins];
      int32_t right_count[kBins];
      Box right;
      int32_t n = 0;
      for (int bin = kBins - 1; bin > 0; --bin) {
        right.grow(bin_boxes[axis][bin]);
        n += bin_counts[axis][bin];
        right_area[bin] = right.area();
        right_count[bin] = n;
      }
      Box left;
      n = 0;
      for (int bin = 0; bin < kBins - 1; ++bin) {
        left.grow(bin_boxes[axis][bin]);
        n += bin_counts[axis][bin];
        if (n == 0 || right_count[bin + 1] == 0) continue;
        const float cost = left.area() * n + right_area[bin + 1] * right_count[bin + 1];
        if (cost < best_cost) {
          best_cost = cost;
          best_axis = axis;
          best_bin = bin;
        }
      }
    }
    if (best_axis < 0) return -1;
    const float parent_area = bounds.area();
    const float split_cost = kTraversalCost + (parent_area > 0 ? best_cost / parent_area : count);
    if (count <= kMaxLeafSize && split_cost >= count) return -1;
    const float lo = centroid_bounds.lo[best_axis], inv = inv_width[best_axis];
    auto middle = std::partition(refs_.begin() + begin, refs_.begin() + end,
                                 [&](const FaceRef& ref) {
                                   return bin_of(ref.centroid[best_axis], lo, inv) <= best_bin;
                                 });
    return static_cast<int32_t>(middle - refs_.begin());
  }

  std::vector<FaceRef> refs_;
  std::vector<BuildNode> nodes_;
};

// Queries per work chunk of the forward (see point_to_surface_forward).
constexpr int64_t kQueryChunk = 64;
// How many sorted queries ahead the forward prefetches a point.
constexpr int64_t kPrefetchDistance = 8;

// Spreads the low 10 bits of v so that two zero bits separate each.
uint32_t spread_bits(uint32_t v) {
  v &= 0x3ff;
  v = (v | (v << 16)) & 0x030000ff;
  v = (v | (v << 8)) & 0x0300f00f;
  v = (v | (v << 4)) & 0x030c30c3;
  v = (v | (v << 2)) & 0x09249249;
  return v;
}

// Query order along a 30-bit Morton curve over the points' bounding box:
// consecutive queries then walk the same part of the tree (cache) and start
// from each other's answers. LSD radix sort, 3 passes of 10 bits.
template <typename T>
void morton_order(int64_t n, const T* points, int64_t* order) {
  double lo[3], hi[3];
  for (int k = 0; k < 3; ++k) lo[k] = std::numeric_limits<double>::infinity(), hi[k] = -lo[k];
  for (int64_t i = 0; i < n; ++i)
    for (int k = 0; k < 3; ++k) {
      const double x = static_cast<double>(points[3 * i + k]);
      if (std::isfinite(x)) lo[k] = std::min(lo[k], x), hi[k] = std::max(hi[k], x);
    }
  double scale[3];
  for (int k = 0; k < 3; ++k) {
    scale[k] = hi[k] > lo[k] ? 1023.0 / (hi[k] - lo[k]) : 0.0;
    if (!(lo[k] <= hi[k])) lo[k] = 0;  // no finite coordinate at all
  }
  std::vector<uint32_t> codes(n), codes_tmp(n);
  std::vector<int64_t> tmp(n);
  for (int64_t i = 0; i < n; ++i) {
    uint32_t code = 0;
    for (int k = 0; k < 3; ++k) {
      double cell = (static_cast<double>(points[3 * i + k]) - lo[k]) * scale[k];
      cell = cell >= 0 ? (cell <= 1023 ? cell : 1023) : 0;  // NaN -> 0 too
      code |= spread_bits(static_cast<uint32_t>(cell)) << (2 - k);
    }
    codes[i] = code;
    order[i] = i;
  }
  int64_t* src = order;
  int64_t* dst = tmp.data();
  for (int shift = 0; shift < 30; shift += 10) {
    std::vector<int64_t> start(1025, 0);
    for (int64_t i = 0; i < n; ++i) ++start[((codes[i] >> shift) & 1023) + 1];
    for (int d = 0; d < 1024; ++d) start[d + 1] += start[d];
    for (int64_t i = 0; i < n; ++i) {
      const int64_t at = start[(codes[i] >> shift) & 1023]++;
      dst[at] = src[i];
      codes_tmp[at] = codes[i];
    }
    std::swap(src, dst);
    codes.swap(codes_tmp);
  }
  if (src != order) std::copy(src, src + n, order);
}

}  // namespace

template <typename T>
BvhTopology build_bvh(int64_t num_faces, const T* vertices, const int64_t* faces) {
  std::vector<FaceRef> refs(num_faces);
  at::parallel_for(0, num_faces, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t f = begin; f < end; ++f) {
      FaceRef& ref = refs[f];
      ref.face = static_cast<int32_t>(f);
      for (int corner = 0; corner < 3; ++corner) {
        float point[3];
        for (int k = 0; k < 3; ++k) point[k] = static_cast<float>(vertices[3 * faces[3 * f + corner] + k]);
        ref.box.grow(point, point);
      }
      // Non-finite corners must not poison the binning: such faces get a zero centroid.
      for (int k = 0; k < 3; ++k) {
        const float c = 0.5f * ref.box.lo[k] + 0.5f * ref.box.hi[k];
        ref.centroid[k] = std::isfinite(c) ? c : 0.0f;
      }
    }
  });
  Builder builder(std::move(refs));
  builder.build_root();
  return builder.flatten();
}

template <typename T>
void refit_bvh(int64_t batch, int64_t num_vertices, int64_t num_faces, const T* vertices,
               const int64_t* faces, const BvhTopology& topology, T* triangles, T* bounds) {
  const int32_t* order = topology.order.data();
  at::parallel_for(0, batch * num_faces, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / num_faces, slot = i % num_faces;
      const int64_t* face = faces + 3 * static_cast<int64_t>(order[slot]);
      const T* mesh = vertices + 3 * num_vertices * b;
      T* tri = triangles + 9 * i;
      for (int corner = 0; corner < 3; ++corner)
        for (int k = 0; k < 3; ++k) tri[3 * corner + k] = mesh[3 * face[corner] + k];
    }
  });
  const int64_t num_nodes = topology.num_nodes();
  const int64_t* levels = topology.levels.data();
  // Deepest level first: a node's children are always one level further down.
  for (int64_t level = static_cast<int64_t>(topology.levels.size()) - 2; level >= 0; --level) {
    const int64_t first = levels[level], width = levels[level + 1] - first;
    at::parallel_for(0, batch * width, 1024, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t b = i / width, node = first + i % width;
        bvh::refit_node(topology.nodes.data(), node, triangles + 9 * num_faces * b,
                             bounds + 6 * num_nodes * b);
      }
    });
  }
}

template <typename T>
void point_to_surface_forward(int64_t batch, int64_t num_points, int64_t num_faces,
                              int64_t num_nodes, int64_t mesh_batch_stride, const T* points,
                              const int32_t* nodes, const int32_t* order, const T* bounds,
                              const T* triangles, T* dist2, int64_t* face_index, T* bary) {
  std::vector<int64_t> sorted(num_points);
  std::vector<WideNode<T>> wide;
  std::vector<geometry::TriangleTerms<T>> terms(num_faces);
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t mesh = b * mesh_batch_stride;
    const T* mesh_triangles = triangles + 9 * num_faces * mesh;
    if (b == 0 || mesh_batch_stride != 0) {
      collapse_bvh(nodes, bounds + 6 * num_nodes * mesh, mesh_triangles, wide);
      // Computed once per mesh rather than once per triangle test.
      at::parallel_for(0, num_faces, 4096, [&](int64_t begin, int64_t end) {
        for (int64_t slot = begin; slot < end; ++slot) {
          const T* tri = mesh_triangles + 9 * slot;
          terms[slot] = geometry::triangle_terms(load3(tri), load3(tri + 3), load3(tri + 6));
        }
      });
    }
    const int64_t offset = b * num_points;
    morton_order(num_points, points + 3 * offset, sorted.data());
    // Fixed chunks of the sorted queries: each starts its search from the
    // previous query's triangle, and only within its chunk, so results do not
    // depend on the thread count.
    // Threads take chunks from a shared counter rather than a fixed half each:
    // traversal costs vary a lot between regions, and on a busy machine one
    // thread may be descheduled.
    const int64_t chunks = (num_points + kQueryChunk - 1) / kQueryChunk;
    std::atomic<int64_t> next_chunk{0};
    at::parallel_for(0, std::min<int64_t>(chunks, at::get_num_threads()), 1, [&](int64_t, int64_t) {
      for (int64_t chunk = next_chunk++; chunk < chunks; chunk = next_chunk++) {
        int32_t previous = -1;
        const int64_t end = std::min(num_points, (chunk + 1) * kQueryChunk);
        for (int64_t k = chunk * kQueryChunk; k < end; ++k) {
          const int64_t i = offset + sorted[k];
          // Sorted queries read the points out of order: fetch a few ahead.
          if (k + kPrefetchDistance < num_points)
            __builtin_prefetch(points + 3 * (offset + sorted[k + kPrefetchDistance]));
          const Vec3<T> p = load3(points + 3 * i);
          // A neighbouring query's triangle gives a starting bound that is
          // usually close to the answer.
          const bvh::NearestHit<T> hit =
              wide_bvh_nearest(p, wide.data(), mesh_triangles, terms.data(), previous);
          if (hit.slot < 0) {  // NaN query or mesh
            dist2[i] = std::numeric_limits<T>::quiet_NaN();
            face_index[i] = -1;
            for (int c = 0; c < 3; ++c) bary[3 * i + c] = std::numeric_limits<T>::quiet_NaN();
            continue;
          }
          previous = hit.slot;
          dist2[i] = hit.dist2;
          face_index[i] = order[hit.slot];
          for (int c = 0; c < 3; ++c) bary[3 * i + c] = hit.bary[c];
        }
      }
    });
  }
}

template <typename T>
void point_to_surface_backward(int64_t batch, int64_t num_points, int64_t num_vertices,
                               int64_t vertex_batch, const T* grad_dist2, const T* points,
                               const T* vertices, const int64_t* faces, const int64_t* face_index,
                               const T* bary, T* grad_points, T* grad_vertices) {
  const int64_t vertex_stride = vertex_batch == 1 ? 0 : 3 * num_vertices;
  // grad_points = 2 (p - c) g, pointwise.
  at::parallel_for(0, batch * num_points, 2048, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      T* out = grad_points + 3 * i;
      const int64_t f = face_index[i];
      if (f < 0) {
        for (int k = 0; k < 3; ++k) out[k] = std::numeric_limits<T>::quiet_NaN();
        continue;
      }
      const T* mesh = vertices + vertex_stride * (i / num_points);
      const T* w = bary + 3 * i;
      const T scale = T(2) * grad_dist2[i];
      for (int k = 0; k < 3; ++k) {
        const T closest = w[0] * mesh[3 * faces[3 * f] + k] + w[1] * mesh[3 * faces[3 * f + 1] + k] +
                          w[2] * mesh[3 * faces[3 * f + 2] + k];
        out[k] = scale * (points[3 * i + k] - closest);
      }
    }
  });
  // grad_vertices: a scatter, summed point by point in index order for each
  // destination mesh, so the result never depends on the thread count.
  auto scatter = [&](int64_t b) {
    T* out = grad_vertices + vertex_stride * b;
    for (int64_t i = b * num_points; i < (b + 1) * num_points; ++i) {
      const int64_t f = face_index[i];
      if (f < 0) continue;
      for (int corner = 0; corner < 3; ++corner) {
        const T w = bary[3 * i + corner];
        T* dst = out + 3 * faces[3 * f + corner];
        for (int k = 0; k < 3; ++k) dst[k] -= w * grad_points[3 * i + k];
      }
    }
  };
  if (vertex_batch == 1) {
    for (int64_t b = 0; b < batch; ++b) scatter(b);
  } else {
    at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) scatter(b);
    });
  }
}

#define FACEGEOM_INSTANTIATE(T)                                                                  \
  template BvhTopology build_bvh<T>(int64_t, const T*, const int64_t*);                          \
  template void refit_bvh<T>(int64_t, int64_t, int64_t, const T*, const int64_t*,               \
                             const BvhTopology&, T*, T*);                                        \
  template void point_to_surface_forward<T>(int64_t, int64_t, int64_t, int64_t, int64_t,         \
                                            const T*, const int32_t*, const int32_t*, const T*,  \
                                            const T*, T*, int64_t*, T*);                         \
  template void point_to_surface_backward<T>(int64_t, int64_t, int64_t, int64_t, const T*,       \
                                             const T*, const T*, const int64_t*, const int64_t*, \
                                             const T*, T*, T*);
FACEGEOM_INSTANTIATE(float)
FACEGEOM_INSTANTIATE(double)
#undef FACEGEOM_INSTANTIATE

}  // namespace cpu
}  // namespace facegeom
