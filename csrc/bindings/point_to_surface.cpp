// Schemas and device registrations of point-to-surface distance.
//
// The BVH topology is built on the CPU from the first mesh of the batch (for
// CUDA inputs that copies one mesh to the host); the refit and the queries run
// on the inputs' device. Topologies are cached by the faces' contents: any
// topology is correct for any vertex positions (refit fits exact boxes), so a
// cached one only has to be good, and it is rebuilt when the refitted tree's
// summed box area (its SAH cost) has grown well past the cost it had when it
// was built. Calls with the same faces (ICP, fitting, batches) then skip the
// build. _bvh_build / _bvh_refit expose the two stages for benchmarks.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <list>
#include <memory>
#include <mutex>

#include "bindings/checks.h"
#include "bindings/dispatch.h"
#include "cpu/point_to_surface_cpu.h"
#ifdef FACEGEOM_WITH_CUDA
#include "cuda/point_to_surface_cuda.h"
#endif

namespace facegeom {
namespace {

// Node and slot indices are int32 (nodes <= 2F - 1).
constexpr int64_t kMaxFaces = int64_t(1) << 30;

void check_mesh(const at::Tensor& vertices, const at::Tensor& faces) {
  check_float(vertices, "vertices");
  TORCH_CHECK_VALUE(vertices.dim() == 3 && vertices.size(2) == 3,
                    "vertices must have shape [B, V, 3], got ", vertices.sizes());
  TORCH_CHECK_TYPE(faces.scalar_type() == at::kLong, "faces must be int64, got ",
                   faces.scalar_type());
  TORCH_CHECK(faces.device() == vertices.device(), "faces must be on ", vertices.device(),
              ", got ", faces.device());
  TORCH_CHECK_VALUE(faces.dim() == 2 && faces.size(1) == 3, "faces must have shape [F, 3], got ",
                    faces.sizes());
  TORCH_CHECK_VALUE(faces.size(0) <= kMaxFaces, "faces has ", faces.size(0),
                    " faces; at most 2^30 are supported");
}

// Faces on the host, every index checked against the vertex count.
at::Tensor checked_host_faces(const at::Tensor& faces, int64_t num_vertices) {
  auto host = faces.to(at::kCPU).contiguous();
  const int64_t* data = host.data_ptr<int64_t>();
  for (int64_t i = 0; i < host.numel(); ++i) {
    TORCH_CHECK_INDEX(data[i] >= 0 && data[i] < num_vertices, "faces must index vertices ",
                      "(0 <= index < V = ", num_vertices, "), got ", data[i]);
  }
  return host;
}

template <typename T>
cpu::BvhTopology build_topology(const at::Tensor& vertices, const at::Tensor& host_faces) {
  const auto first_mesh = vertices[0].to(at::kCPU).contiguous();
  return cpu::build_bvh<T>(host_faces.size(0), first_mesh.data_ptr<T>(),
                           host_faces.data_ptr<int64_t>());
}

// SAH-style cost of the refitted tree of mesh 0: the nodes' summed box areas
// relative to the root's. NaN when the root box is flat or not finite.
double tree_cost(const at::Tensor& bounds) {
  const auto box = bounds[0].to(at::kDouble);
  const auto extent = box.narrow(1, 3, 3) - box.narrow(1, 0, 3);  // [N, 3]
  const auto x = extent.select(1, 0), y = extent.select(1, 1), z = extent.select(1, 2);
  const auto area = x * y + y * z + z * x;  // [N]
  const double root = area[0].item<double>();
  if (!(root > 0) || !std::isfinite(root)) return std::numeric_limits<double>::quiet_NaN();
  return area.sum().item<double>() / root;
}

// Rebuild once the refitted tree costs this much more than when it was built.
constexpr double kMaxRefitDegradation = 1.5;
constexpr size_t kCachedTopologies = 8;

struct CacheEntry {
  uint64_t key;
  int64_t num_vertices, num_faces;
  std::shared_ptr<const cpu::BvhTopology> topology;
  double built_cost;
};

std::mutex cache_mutex;
std::list<CacheEntry> cache;  // most recently used first

uint64_t faces_key(const at::Tensor& host_faces) {
  // FNV-1a over the indices.
  uint64_t hash = 1469598103934665603ull;
  const int64_t* data = host_faces.data_ptr<int64_t>();
  for (int64_t i = 0; i < host_faces.numel(); ++i) {
    hash ^= static_cast<uint64_t>(data[i]);
    hash *= 1099511628211ull;
  }
  return hash;
}

std::shared_ptr<const cpu::BvhTopology> cached_topology(uint64_t key, int64_t num_vertices,
                                                        int64_t num_faces, double* built_cost) {
  std::lock_guard<std::mutex> lock(cache_mutex);
  for (auto it = cache.begin(); it != cache.end(); ++it) {
    if (it->key == key && it->num_vertices == num_vertices && it->num_faces == num_faces) {
      cache.splice(cache.begin(), cache, it);
      *built_cost = it->built_cost;
      return it->topology;
    }
  }
  return nullptr;
}

void store_topology(uint64_t key, int64_t num_vertices, int64_t num_faces,
                    std::shared_ptr<const cpu::BvhTopology> topology, double built_cost) {
  std::lock_guard<std::mutex> lock(cache_mutex);
  cache.remove_if([&](const CacheEntry& e) {
    return e.key == key && e.num_vertices == num_vertices && e.num_faces == num_faces;
  });
  cache.push_front({key, num_vertices, num_faces, std::move(topology), built_cost});
  if (cache.size() > kCachedTopologies) cache.pop_back();
}

at::Tensor int32_tensor(const std::vector<int32_t>& values, const at::Device& device) {
  return at::tensor(at::ArrayRef<int32_t>(values), at::TensorOptions().dtype(at::kInt)).to(device);
}

// Triangles [Bv, F, 9] in BVH order and bounds [Bv, N, 6] for every mesh.
template <typename T>
std::pair<at::Tensor, at::Tensor> refit(const at::Tensor& vertices, const at::Tensor& faces,
                                        const cpu::BvhTopology& topology,
                                        const at::Tensor& nodes, const at::Tensor& order) {
  const int64_t batch = vertices.size(0), num_vertices = vertices.size(1), num_faces = faces.size(0);
  auto triangles = at::empty({batch, num_faces, 9}, vertices.options());
  auto bounds = at::empty({batch, topology.num_nodes(), 6}, vertices.options());
  if (vertices.is_cuda()) {
    FACEGEOM_CUDA_LAUNCH(cuda::refit_bvh<T>(
        batch, num_vertices, num_faces, vertices.data_ptr<T>(), faces.data_ptr<int64_t>(),
        order.data_ptr<int32_t>(), nodes.data_ptr<int32_t>(), topology.num_nodes(),
        topology.levels.data(), static_cast<int64_t>(topology.levels.size()) - 1,
        triangles.data_ptr<T>(), bounds.data_ptr<T>(), current_stream()));
  } else {
    cpu::refit_bvh<T>(batch, num_vertices, num_faces, vertices.data_ptr<T>(),
                      faces.data_ptr<int64_t>(), topology, triangles.data_ptr<T>(),
                      bounds.data_ptr<T>());
  }
  return {triangles, bounds};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> point_to_surface(const at::Tensor& points,
                                                                const at::Tensor& vertices,
                                                                const at::Tensor& faces) {
  check_float(points, "points");
  TORCH_CHECK_VALUE(points.dim() == 3 && points.size(2) == 3,
                    "points must have shape [B, P, 3], got ", points.sizes());
  check_same(vertices, points, "vertices");
  check_mesh(vertices, faces);
  const int64_t batch = points.size(0), num_points = points.size(1), num_faces = faces.size(0);
  TORCH_CHECK_VALUE(vertices.size(0) == batch || vertices.size(0) == 1,
                    "vertices must have a batch of ", batch, " or 1, got ", vertices.sizes());
  c10::DeviceGuard guard(points.device());
  auto dist2 = at::empty({batch, num_points}, points.options());
  auto face_index = at::empty({batch, num_points}, points.options().dtype(at::kLong));
  auto bary = at::empty({batch, num_points, 3}, points.options());
  if (batch * num_points == 0) return {dist2, face_index, bary};
  TORCH_CHECK_VALUE(num_faces > 0, "faces is empty (F = 0) but there are ", num_points,
                    " points: there is no surface to measure them against");
  const auto host_faces = checked_host_faces(faces, vertices.size(1));
  const auto p = points.contiguous();
  const auto v = vertices.contiguous();
  const auto f = faces.is_cpu() ? host_faces : faces.contiguous();
  const int64_t mesh_stride = v.size(0) == 1 ? 0 : 1;
  const uint64_t key = faces_key(host_faces);
  AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "point_to_surface", [&] {
    double built_cost = 0;
    auto shared = cached_topology(key, v.size(1), num_faces, &built_cost);
    const bool was_cached = shared != nullptr;
    if (!was_cached) shared = std::make_shared<const cpu::BvhTopology>(build_topology<scalar_t>(v, host_faces));
    auto nodes = int32_tensor(shared->nodes, p.device());
    auto order = int32_tensor(shared->order, p.device());
    auto [triangles, bounds] = refit<scalar_t>(v, f, *shared, nodes, order);
    const double cost = tree_cost(bounds);
    if (was_cached && !(cost <= kMaxRefitDegradation * built_cost)) {
      // The vertices moved too far from the ones the tree was built for.
      shared = std::make_shared<const cpu::BvhTopology>(build_topology<scalar_t>(v, host_faces));
      nodes = int32_tensor(shared->nodes, p.device());
      order = int32_tensor(shared->order, p.device());
      std::tie(triangles, bounds) = refit<scalar_t>(v, f, *shared, nodes, order);
      store_topology(key, v.size(1), num_faces, shared, tree_cost(bounds));
    } else if (!was_cached) {
      store_topology(key, v.size(1), num_faces, shared, cost);
    }
    const cpu::BvhTopology& topology = *shared;
    if (p.is_cuda()) {
      FACEGEOM_CUDA_LAUNCH(cuda::point_to_surface_forward<scalar_t>(
          batch, num_points, num_faces, topology.num_nodes(), mesh_stride, p.data_ptr<scalar_t>(),
          nodes.data_ptr<int32_t>(), order.data_ptr<int32_t>(), bounds.data_ptr<scalar_t>(),
          triangles.data_ptr<scalar_t>(), dist2.data_ptr<scalar_t>(),
          face_index.data_ptr<int64_t>(), bary.data_ptr<scalar_t>(), current_stream()));
    } else {
      cpu::point_to_surface_forward<scalar_t>(
          batch, num_points, num_faces, topology.num_nodes(), mesh_stride, p.data_ptr<scalar_t>(),
          topology.nodes.data(), topology.order.data(), bounds.data_ptr<scalar_t>(),
          triangles.data_ptr<scalar_t>(), dist2.data_ptr<scalar_t>(),
          face_index.data_ptr<int64_t>(), bary.data_ptr<scalar_t>());
    }
  });
  // Non-finite policy (docs/ops.md; the spec is the reference's _non_finite_policy): a
  // face with a NaN/Inf corner leaves its mesh's surface undefined, so every distance to
  // that mesh is NaN, as is the distance of a NaN/Inf point; a NaN distance (also from
  // an overflow) has face -1 and NaN barycentrics. Elementwise passes, no host sync.
  const auto corners = v.index_select(1, f.reshape({-1}));  // [Bv, 3F, 3]
  const auto bad_mesh = at::isfinite(corners).flatten(1).all(1).logical_not();  // [Bv]
  const auto bad_point = at::isfinite(p).all(2).logical_not();  // [B, P]
  const auto bad = bad_mesh.expand({batch}).unsqueeze(1).logical_or(dist2.isnan()).logical_or(bad_point);
  dist2.masked_fill_(bad, std::numeric_limits<double>::quiet_NaN());
  face_index.masked_fill_(bad, -1);
  bary.masked_fill_(bad.unsqueeze(2), std::numeric_limits<double>::quiet_NaN());
  return {dist2, face_index, bary};
}

std::tuple<at::Tensor, at::Tensor> point_to_surface_backward(
    const at::Tensor& grad_dist2, const at::Tensor& points, const at::Tensor& vertices,
    const at::Tensor& faces, const at::Tensor& face_index, const at::Tensor& bary) {
  check_float(points, "points");
  TORCH_CHECK_VALUE(points.dim() == 3 && points.size(2) == 3,
                    "points must have shape [B, P, 3], got ", points.sizes());
  check_same(vertices, points, "vertices");
  check_mesh(vertices, faces);
  const int64_t batch = points.size(0), num_points = points.size(1);
  const int64_t num_vertices = vertices.size(1), num_faces = faces.size(0);
  TORCH_CHECK_VALUE(vertices.size(0) == batch || vertices.size(0) == 1,
                    "vertices must have a batch of ", batch, " or 1, got ", vertices.sizes());
  check_same(grad_dist2, points, "grad_dist2");
  check_shape(grad_dist2, {batch, num_points}, "grad_dist2");
  check_same(bary, points, "bary");
  check_shape(bary, {batch, num_points, 3}, "bary");
  TORCH_CHECK_TYPE(face_index.scalar_type() == at::kLong, "face_index must be int64");
  TORCH_CHECK(face_index.device() == points.device(), "face_index must be on ", points.device());
  check_shape(face_index, {batch, num_points}, "face_index");
  c10::DeviceGuard guard(points.device());
  const auto p = points.contiguous(), v = vertices.contiguous(), f = faces.contiguous();
  const auto g = grad_dist2.contiguous(), fi = face_index.contiguous(), w = bary.contiguous();
  auto grad_points = at::empty_like(p);
  auto grad_vertices = at::zeros_like(v);
  if (batch * num_points == 0) return {grad_points, grad_vertices};
  if (p.is_cpu()) {
    // Direct calls must not read out of bounds (-1 marks a NaN query).
    checked_host_faces(f, num_vertices);
    const auto [low, high] = at::aminmax(fi);
    TORCH_CHECK_INDEX(low.item<int64_t>() >= -1 && high.item<int64_t>() < num_faces,
                      "face_index must be in [-1, F = ", num_faces, ")");
  }
  AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "point_to_surface_backward", [&] {
    if (p.is_cuda()) {
      FACEGEOM_CUDA_LAUNCH(cuda::point_to_surface_backward<scalar_t>(
          batch, num_points, num_vertices, num_faces, v.size(0), g.data_ptr<scalar_t>(),
          p.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(), f.data_ptr<int64_t>(),
          fi.data_ptr<int64_t>(), w.data_ptr<scalar_t>(), grad_points.data_ptr<scalar_t>(),
          grad_vertices.data_ptr<scalar_t>(), current_stream()));
    } else {
      cpu::point_to_surface_backward<scalar_t>(
          batch, num_points, num_vertices, v.size(0), g.data_ptr<scalar_t>(),
          p.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(), f.data_ptr<int64_t>(),
          fi.data_ptr<int64_t>(), w.data_ptr<scalar_t>(), grad_points.data_ptr<scalar_t>(),
          grad_vertices.data_ptr<scalar_t>());
    }
  });
  return {grad_points, grad_vertices};
}

// The BVH topology of vertices[0]: nodes [N, 2] int32, order [F] int32 and the
// breadth-first level offsets [depth + 1] int64, all on the CPU.
std::tuple<at::Tensor, at::Tensor, at::Tensor> bvh_build(const at::Tensor& vertices,
                                                         const at::Tensor& faces) {
  check_mesh(vertices, faces);
  TORCH_CHECK_VALUE(vertices.size(0) > 0 && faces.size(0) > 0,
                    "_bvh_build needs at least one mesh and one face");
  const auto host_faces = checked_host_faces(faces, vertices.size(1));
  at::Tensor nodes, order, levels;
  AT_DISPATCH_FLOATING_TYPES(vertices.scalar_type(), "_bvh_build", [&] {
    const cpu::BvhTopology topology = build_topology<scalar_t>(vertices, host_faces);
    nodes = int32_tensor(topology.nodes, at::kCPU).view({-1, 2});
    order = int32_tensor(topology.order, at::kCPU);
    levels = at::tensor(at::ArrayRef<int64_t>(topology.levels), at::TensorOptions().dtype(at::kLong));
  });
  return {nodes, order, levels};
}

// Refits a topology from _bvh_build to every mesh: triangles [B, F, 9] in BVH
// order and bounds [B, N, 6], on the vertices' device.
std::tuple<at::Tensor, at::Tensor> bvh_refit(const at::Tensor& vertices, const at::Tensor& faces,
                                             const at::Tensor& nodes, const at::Tensor& order,
                                             const at::Tensor& levels) {
  check_mesh(vertices, faces);
  const int64_t num_faces = faces.size(0);
  TORCH_CHECK_VALUE(nodes.scalar_type() == at::kInt && nodes.dim() == 2 && nodes.size(1) == 2 &&
                        order.scalar_type() == at::kInt && order.numel() == num_faces &&
                        levels.scalar_type() == at::kLong && levels.dim() == 1,
                    "_bvh_refit expects the (nodes, order, levels) of _bvh_build for these faces");
  c10::DeviceGuard guard(vertices.device());
  const auto host_faces = checked_host_faces(faces, vertices.size(1));
  cpu::BvhTopology topology;
  const auto n = nodes.to(at::kCPU).contiguous(), o = order.to(at::kCPU).contiguous();
  const auto l = levels.to(at::kCPU).contiguous();
  topology.nodes.assign(n.data_ptr<int32_t>(), n.data_ptr<int32_t>() + n.numel());
  topology.order.assign(o.data_ptr<int32_t>(), o.data_ptr<int32_t>() + o.numel());
  topology.levels.assign(l.data_ptr<int64_t>(), l.data_ptr<int64_t>() + l.numel());
  const auto v = vertices.contiguous();
  const auto f = faces.is_cpu() ? host_faces : faces.contiguous();
  at::Tensor triangles, bounds;
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "_bvh_refit", [&] {
    std::tie(triangles, bounds) = refit<scalar_t>(v, f, topology, nodes.to(v.device()).contiguous(),
                                                  order.to(v.device()).contiguous());
  });
  return {triangles, bounds};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(facegeom, m) {
  m.def("point_to_surface(Tensor points, Tensor vertices, Tensor faces) -> (Tensor, Tensor, Tensor)");
  m.def(
      "point_to_surface_backward(Tensor grad_dist2, Tensor points, Tensor vertices, Tensor faces, "
      "Tensor face_index, Tensor bary) -> (Tensor, Tensor)");
  m.def("_bvh_build(Tensor vertices, Tensor faces) -> (Tensor, Tensor, Tensor)");
  m.def(
      "_bvh_refit(Tensor vertices, Tensor faces, Tensor nodes, Tensor order, Tensor levels) "
      "-> (Tensor, Tensor)");
}

namespace {
void register_point_to_surface_kernels(torch::Library& m) {
  m.impl("point_to_surface", &point_to_surface);
  m.impl("point_to_surface_backward", &point_to_surface_backward);
  m.impl("_bvh_build", &bvh_build);
  m.impl("_bvh_refit", &bvh_refit);
}
}  // namespace

TORCH_LIBRARY_IMPL(facegeom, CPU, m) { register_point_to_surface_kernels(m); }

#ifdef FACEGEOM_WITH_CUDA
TORCH_LIBRARY_IMPL(facegeom, CUDA, m) { register_point_to_surface_kernels(m); }
#endif

}  // namespace facegeom
