// Four-wide BVH for the CPU queries, collapsed from the binary BVH of
// facegeom/bvh.h (same leaves, same boxes, same type T) right before the
// queries. One node holds its four children's boxes axis by axis, so a query
// measures all four with a few vector instructions instead of walking two
// binary levels one box at a time; the traversal visits about half as many
// nodes and keeps a shorter stack. A leaf of two to four triangles becomes a
// node whose lanes are the triangles' own boxes (triangle_bounds), tested
// together and then in increasing order. The box distances are computed with
// exactly the operations of box_distance2 (lane by lane), and the triangles
// with closest_point_on_triangle, so the pruning stays exact: only the
// visiting order (and so which of two equidistant triangles is reported)
// differs from bvh_nearest.
#pragma once

#include <cstdint>
#include <limits>
#include <vector>

#include "facegeom/bvh.h"

namespace facegeom {
namespace cpu {

// Four lanes of T (GCC/Clang vector extension: SSE/AVX on x86, NEON on Arm, or
// scalar code where neither exists; element-wise IEEE arithmetic in every case).
template <typename T>
struct Lanes;
template <>
struct Lanes<float> {
  typedef float type __attribute__((vector_size(16)));
};
template <>
struct Lanes<double> {
  typedef double type __attribute__((vector_size(32)));
};

template <typename T>
struct alignas(64) WideNode {
  typename Lanes<T>::type lo[3], hi[3];  // child boxes, one vector per axis
  // count[i] == 0: child i is wide node first[i]; count[i] > 0: a leaf of
  // binary slots [first[i], first[i] + count[i]); count[i] < 0: no child (its
  // box is empty, lo = +inf > hi = -inf, so it is never closer than anything).
  int32_t first[4];
  int32_t count[4];
  // Every lane is one triangle of a leaf (see build_triangles): the query
  // tests them right away, nearest box first, without going through its stack.
  bool leaf_triangles;
};

// Collapses the binary BVH (nodes [N, 2], bounds [N, 6], facegeom/bvh.h) into
// wide nodes in depth-first order, root first. Each wide node takes a binary
// internal node's children and keeps opening its largest-area internal child
// until it has four children or only leaves.
template <typename T>
void collapse_bvh(const int32_t* nodes, const T* bounds, const T* triangles,
                  std::vector<WideNode<T>>& wide) {
  wide.clear();
  struct Builder {
    const int32_t* nodes;
    const T* bounds;
    const T* triangles;
    std::vector<WideNode<T>>& wide;
    double area(int32_t node) const {
      const T* b = bounds + 6 * static_cast<int64_t>(node);
      const double dx = b[3] - b[0], dy = b[4] - b[1], dz = b[5] - b[2];
      return dx * dy + dy * dz + dz * dx;
    }
    bool leaf(int32_t node) const { return nodes[2 * node + 1] > 0; }
    // A wide node whose lanes are the single triangles of a leaf (slots
    // [first, first + count), count <= 4), boxed by triangle_bounds: the
    // queries then reject and order a leaf's triangles four boxes at a time.
    int32_t build_triangles(int32_t first, int32_t count) {
      const int32_t index = static_cast<int32_t>(wide.size());
      wide.emplace_back();
      WideNode<T>& node = wide[index];
      const T inf = std::numeric_limits<T>::infinity();
      for (int i = 0; i < 4; ++i) {
        T box[6] = {inf, inf, inf, -inf, -inf, -inf};
        if (i < count) bvh::triangle_bounds(triangles + 9 * (static_cast<int64_t>(first) + i), box);
        for (int k = 0; k < 3; ++k) node.lo[k][i] = box[k], node.hi[k][i] = box[3 + k];
        node.first[i] = first + i;
        node.count[i] = i < count ? 1 : -1;
      }
      node.leaf_triangles = true;
      return index;
    }
    // Returns the index of the wide node made for binary node `root`.
    int32_t build(int32_t root) {
      int32_t children[4];
      int n = 0;
      if (leaf(root)) {
        children[n++] = root;  // a one-leaf tree (one to four faces)
      } else {
        children[n++] = nodes[2 * root];
        children[n++] = nodes[2 * root] + 1;
      }
      while (n < 4) {
        int open = -1;
        double best = -1;
        for (int i = 0; i < n; ++i) {
          if (leaf(children[i])) continue;
          const double a = area(children[i]);
          if (open < 0 || a > best) open = i, best = a;  // NaN area: first internal child
        }
        if (open < 0) break;
        const int32_t node = children[open];
        children[open] = nodes[2 * node];
        children[n++] = nodes[2 * node] + 1;
      }
      const int32_t index = static_cast<int32_t>(wide.size());
      wide.emplace_back();
      const T inf = std::numeric_limits<T>::infinity();
      for (int i = 0; i < 4; ++i) {
        int32_t first = 0, count = -1;
        T box[6] = {inf, inf, inf, -inf, -inf, -inf};
        if (i < n) {
          const int32_t child = children[i];
          for (int k = 0; k < 6; ++k) box[k] = bounds[6 * static_cast<int64_t>(child) + k];
          const int32_t leaf_count = leaf(child) ? nodes[2 * child + 1] : 0;
          first = leaf_count == 0 ? build(child) : nodes[2 * child];
          count = leaf_count;
          if (leaf_count > 1 && leaf_count <= 4) first = build_triangles(first, leaf_count), count = 0;
        }
        WideNode<T>& node = wide[index];  // build() may have moved the vector
        for (int k = 0; k < 3; ++k) node.lo[k][i] = box[k], node.hi[k][i] = box[3 + k];
        node.first[i] = first;
        node.count[i] = count;
      }
      wide[index].leaf_triangles = false;
      return index;
    }
  } builder{nodes, bounds, triangles, wide};
  builder.build(0);
}

// Nearest triangle to p (as bvh_nearest): depth-first over the wide nodes,
// children in increasing box distance, pruning every box no closer than the
// best distance so far (NaN prunes). The starting bound is the distance to the
// triangle of slot `start` (hit_on_slot; none when start < 0). terms:
// triangle_terms of every slot's triangle.
// flatten: inlines closest_point_on_triangle, which GCC otherwise calls with its
// corners passed through memory.
template <typename T>
__attribute__((flatten)) bvh::NearestHit<T> wide_bvh_nearest(Vec3<T> p, const WideNode<T>* wide,
                                                       const T* triangles,
                                                       const geometry::TriangleTerms<T>* terms,
                                                       int32_t start) {
  bvh::NearestHit<T> hit =
      start >= 0 ? bvh::hit_on_slot(p, triangles, start, terms[start]) : bvh::empty_hit<T>();
  typedef typename Lanes<T>::type V;
  struct Entry {
    int32_t first, count;
    T dist2;
  };
  // Each wide level pushes at most three siblings; depth < kBvhMaxDepth.
  Entry stack[3 * bvh::kBvhMaxDepth + 1];
  int top = 0;
  const V px = {p.x, p.x, p.x, p.x}, py = {p.y, p.y, p.y, p.y}, pz = {p.z, p.z, p.z, p.z};
  const V zero = {T(0), T(0), T(0), T(0)};
  auto test_triangle = [&](int32_t slot) {
    const T* tri = triangles + 9 * static_cast<int64_t>(slot);
    T bary[3];
    const T d = geometry::closest_point_on_triangle(p, load3(tri), load3(tri + 3), load3(tri + 6),
                                          terms[slot], bary);
    if (d < hit.dist2) {
      hit.dist2 = d;
      hit.slot = slot;
      hit.bary[0] = bary[0], hit.bary[1] = bary[1], hit.bary[2] = bary[2];
    }
  };
  Entry current{0, 0, T(0)};
  while (true) {
    if (current.count == 1) {
      // A triangle whose box was found closer than the best.
      test_triangle(current.first);
    } else if (current.count > 1) {
      bvh::nearest_in_leaf(p, triangles, current.first, current.count, hit);
    } else {
      const WideNode<T>& node = wide[current.first];
      // box_distance2 lane by lane: max2(max2(lo - p, p - hi), 0), squared, summed.
      V a = node.lo[0] - px, b = px - node.hi[0];
      V dx = a < b ? b : a;
      dx = dx < zero ? zero : dx;
      a = node.lo[1] - py, b = py - node.hi[1];
      V dy = a < b ? b : a;
      dy = dy < zero ? zero : dy;
      a = node.lo[2] - pz, b = pz - node.hi[2];
      V dz = a < b ? b : a;
      dz = dz < zero ? zero : dz;
      const V d = dx * dx + dy * dy + dz * dz;
      // The children closer than the best, sorted by distance (insertion sort
      // of at most four; equal distances keep the child order).
      Entry near[4];
      int n = 0;
      for (int i = 0; i < 4; ++i) {
        const T di = d[i];
        if (!(di < hit.dist2)) continue;
        int j = n++;
        for (; j > 0 && di < near[j - 1].dist2; --j) near[j] = near[j - 1];
        near[j] = Entry{node.first[i], node.count[i], di};
      }
      if (node.leaf_triangles) {
        for (int i = 0; i < n && near[i].dist2 < hit.dist2; ++i) test_triangle(near[i].first);
      } else if (n > 0) {
        for (int i = n - 1; i > 0; --i) stack[top++] = near[i];
        current = near[0];
        continue;
      }
    }
    // Pop the next box still closer than the best (the best may have shrunk
    // since it was pushed).
    bool found = false;
    while (top > 0) {
      --top;
      if (stack[top].dist2 < hit.dist2) {
        current = stack[top];
        found = true;
        break;
      }
    }
    if (!found) return hit;
  }
}

}  // namespace cpu
}  // namespace facegeom
