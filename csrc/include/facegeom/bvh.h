// Bounding volume hierarchy over triangles: flat-array layout, refit steps and
// the nearest-point traversal, shared by the CPU and CUDA back ends. The build
// (binned SAH) is host code in csrc/cpu/point_to_surface_cpu.cpp.
//
// Layout (N nodes, F faces; one topology, boxes and triangles per mesh of a batch):
//   nodes     int32 [N, 2]   (first, count). count == 0: internal node whose
//                            children are nodes first and first + 1; count > 0:
//                            leaf holding BVH slots [first, first + count).
//                            Nodes are in breadth-first order, so children
//                            come after their parent and each depth is a
//                            contiguous range (refit runs level by level).
//   order     int32 [F]      BVH slot -> face index.
//   triangles T     [F, 9]   corners of the face in each slot (a, b, c),
//                            gathered at refit so leaves read contiguous memory.
//   bounds    T     [N, 6]   box of each node (lo xyz, hi xyz).
#pragma once

#include "facegeom/closest_point.h"

namespace facegeom {
namespace bvh {

// The build keeps every leaf at depth < kBvhMaxDepth (binned SAH down to
// kBvhSahDepth, then median splits, which halve the count: 2^30 faces at most),
// so the traversal stack below never overflows.
constexpr int kBvhMaxDepth = 64;
constexpr int kBvhSahDepth = 32;

// Box of the three corners of a slot (9 values).
template <typename T>
FG_HD void triangle_bounds(const T* tri, T* box) {
  for (int k = 0; k < 3; ++k) {
    box[k] = min2(min2(tri[k], tri[3 + k]), tri[6 + k]);
    box[3 + k] = max2(max2(tri[k], tri[3 + k]), tri[6 + k]);
  }
}

// Refit of one node, its children (or its slots' triangles) being up to date.
template <typename T>
FG_HD void refit_node(const int32_t* nodes, int64_t node, const T* triangles, T* bounds) {
  const int32_t first = nodes[2 * node], count = nodes[2 * node + 1];
  T* box = bounds + 6 * node;
  if (count == 0) {
    const T* left = bounds + 6 * static_cast<int64_t>(first);
    const T* right = left + 6;
    for (int k = 0; k < 3; ++k) {
      box[k] = min2(left[k], right[k]);
      box[3 + k] = max2(left[3 + k], right[3 + k]);
    }
    return;
  }
  triangle_bounds(triangles + 9 * static_cast<int64_t>(first), box);
  for (int32_t i = 1; i < count; ++i) {
    T tri_box[6];
    triangle_bounds(triangles + 9 * (static_cast<int64_t>(first) + i), tri_box);
    for (int k = 0; k < 3; ++k) {
      box[k] = min2(box[k], tri_box[k]);
      box[3 + k] = max2(box[3 + k], tri_box[3 + k]);
    }
  }
}

// Squared distance from p to an axis-aligned box (0 inside). NaN propagates.
template <typename T>
FG_HD T box_distance2(Vec3<T> p, const T* box) {
  const T dx = max2(max2(box[0] - p.x, p.x - box[3]), T(0));
  const T dy = max2(max2(box[1] - p.y, p.y - box[4]), T(0));
  const T dz = max2(max2(box[2] - p.z, p.z - box[5]), T(0));
  return dx * dx + dy * dy + dz * dz;
}

template <typename T>
struct NearestHit {
  T dist2;       // +inf until a triangle is found (stays so for NaN queries)
  int32_t slot;  // BVH slot of the closest triangle, -1 if none
  T bary[3];
};

// No triangle yet: +inf, slot -1.
template <typename T>
FG_HD NearestHit<T> empty_hit() {
  NearestHit<T> hit;
  hit.dist2 = T(INFINITY);
  hit.slot = -1;
  hit.bary[0] = hit.bary[1] = hit.bary[2] = T(0);
  return hit;
}

// The exact distance to one triangle: a valid starting bound for bvh_nearest
// (a neighbouring query's answer is usually close to this one's). terms:
// triangle_terms of the slot's triangle.
template <typename T>
FG_HD NearestHit<T> hit_on_slot(Vec3<T> p, const T* triangles, int32_t slot,
                                const geometry::TriangleTerms<T>& terms) {
  NearestHit<T> hit;
  const T* tri = triangles + 9 * static_cast<int64_t>(slot);
  hit.dist2 =
      geometry::closest_point_on_triangle(p, load3(tri), load3(tri + 3), load3(tri + 6), terms,
                                          hit.bary);
  hit.slot = slot;
  if (!(hit.dist2 == hit.dist2)) return empty_hit<T>();  // NaN: no bound
  return hit;
}

// Updates hit with the triangles of the BVH slots [first, first + count) that
// are strictly closer (ties keep the earlier hit).
template <typename T>
FG_HD void nearest_in_leaf(Vec3<T> p, const T* triangles, int32_t first, int32_t count,
                           NearestHit<T>& hit) {
  for (int32_t slot = first; slot < first + count; ++slot) {
    const T* tri = triangles + 9 * static_cast<int64_t>(slot);
    // The triangle's own box is a cheap lower bound: most leaf triangles
    // are rejected by it once the best distance is tight.
    T box[6];
    triangle_bounds(tri, box);
    if (!(box_distance2(p, box) < hit.dist2)) continue;
    T bary[3];
    const T d =
        geometry::closest_point_on_triangle(p, load3(tri), load3(tri + 3), load3(tri + 6), bary);
    if (d < hit.dist2) {
      hit.dist2 = d;
      hit.slot = slot;
      hit.bary[0] = bary[0], hit.bary[1] = bary[1], hit.bary[2] = bary[2];
    }
  }
}

// Nearest triangle to p: depth-first, nearer child first, pruning every box no
// closer than the best distance so far (a NaN box distance prunes too). `hit`
// is the starting bound (empty_hit() or hit_on_slot()); ties keep the triangle
// found first.
template <typename T>
FG_HD NearestHit<T> bvh_nearest(Vec3<T> p, const int32_t* nodes, const T* bounds,
                                const T* triangles, NearestHit<T> hit) {
  int32_t stack_node[kBvhMaxDepth];
  T stack_dist2[kBvhMaxDepth];
  int top = 0;
  if (!(box_distance2(p, bounds) < hit.dist2)) return hit;
  int32_t node = 0;
  while (true) {
    const int32_t first = nodes[2 * node], count = nodes[2 * node + 1];
    if (count > 0) {
      nearest_in_leaf(p, triangles, first, count, hit);
    } else {
      int32_t near_node = first, far_node = first + 1;
      T near_d = box_distance2(p, bounds + 6 * static_cast<int64_t>(near_node));
      T far_d = box_distance2(p, bounds + 6 * static_cast<int64_t>(far_node));
      if (far_d < near_d) {
        const int32_t n = near_node;
        near_node = far_node, far_node = n;
        const T d = near_d;
        near_d = far_d, far_d = d;
      }
      if (near_d < hit.dist2) {
        if (far_d < hit.dist2) {
          stack_node[top] = far_node;
          stack_dist2[top] = far_d;
          ++top;
        }
        node = near_node;
        continue;
      }
    }
    // Pop the next box still closer than the best (the best may have shrunk
    // since it was pushed).
    node = -1;
    while (top > 0) {
      --top;
      if (stack_dist2[top] < hit.dist2) {
        node = stack_node[top];
        break;
      }
    }
    if (node < 0) return hit;
  }
}

}  // namespace bvh
}  // namespace facegeom
