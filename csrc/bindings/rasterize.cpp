// Schemas, checks and device registrations of rasterize (interpolate has its
// own file). The CUDA forward's passes run in cuda/rasterize_host.cpp.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <limits>
#include <optional>

#include "bindings/checks.h"
#include "bindings/dispatch.h"
#include "cpu/rasterize_cpu.h"
#ifdef FACEGEOM_WITH_CUDA
#include "cuda/rasterize_host.h"
#endif

namespace facegeom {
namespace {

constexpr int64_t kMaxResolution = 16384;

// rasterize, or with `previous` (a rast of the same size) its depth-peeling pass.
std::tuple<at::Tensor, at::Tensor> rasterize_layer(const at::Tensor& pos, const at::Tensor& tri,
                                                   int64_t height, int64_t width,
                                                   const std::optional<at::Tensor>& ranges,
                                                   bool grad_db,
                                                   const std::optional<at::Tensor>& previous) {
  check_float(pos, "pos");
  const bool range_mode = ranges.has_value();
  if (range_mode) {
    TORCH_CHECK_VALUE(pos.dim() == 2 && pos.size(1) == 4,
                      "pos must have shape [V, 4] in range mode, got ", pos.sizes());
  } else {
    TORCH_CHECK_VALUE(pos.dim() == 3 && pos.size(2) == 4,
                      "pos must have shape [B, V, 4] in instanced mode, got ", pos.sizes());
  }
  TORCH_CHECK_VALUE(height > 0 && width > 0 && height <= kMaxResolution && width <= kMaxResolution,
                    "resolution must be in [1, ", kMaxResolution, "] per side, got (", height,
                    ", ", width, ")");
  const int64_t num_vertices = pos.size(-2);
  check_rast_tri(tri, pos, num_vertices);
  const int64_t num_triangles = tri.size(0);
  at::Tensor rng;
  int64_t max_count = num_triangles;
  if (range_mode) {
    rng = ranges->contiguous();
    TORCH_CHECK_TYPE(rng.scalar_type() == at::kInt, "ranges must be int32, got ", rng.scalar_type());
    TORCH_CHECK(rng.is_cpu(), "ranges must be a CPU tensor, got ", rng.device());
    TORCH_CHECK_VALUE(rng.dim() == 2 && rng.size(1) == 2, "ranges must have shape [N, 2], got ",
                      rng.sizes());
    const int32_t* r = rng.data_ptr<int32_t>();
    max_count = 0;
    for (int64_t n = 0; n < rng.size(0); ++n) {
      TORCH_CHECK_INDEX(r[2 * n] >= 0 && r[2 * n + 1] >= 0 &&
                            int64_t{r[2 * n]} + r[2 * n + 1] <= num_triangles,
                        "ranges[", n, "] = (", r[2 * n], ", ", r[2 * n + 1],
                        ") must satisfy first, count >= 0 and first + count <= F = ",
                        num_triangles);
      max_count = std::max<int64_t>(max_count, r[2 * n + 1]);
    }
  }
  const int64_t batch = range_mode ? rng.size(0) : pos.size(0);
  const int64_t pos_batch_stride = range_mode ? 0 : 4 * num_vertices;
  at::Tensor peel;
  if (previous.has_value()) {
    check_same(*previous, pos, "previous");
    check_shape(*previous, {batch, height, width, 4}, "previous");
    peel = previous->contiguous();
  }
  c10::DeviceGuard guard(pos.device());
  const auto p = pos.contiguous();
  const auto t = tri.contiguous();
  auto rast = at::empty({batch, height, width, 4}, p.options());
  auto rast_db = grad_db ? at::empty({batch, height, width, 4}, p.options()) : empty_grad(p);
  if (batch == 0) return {rast, rast_db};
  AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "rasterize", [&] {
    raster::RasterizeParams<scalar_t> params;
    params.batch = batch, params.height = height, params.width = width;
    params.num_vertices = num_vertices, params.num_triangles = num_triangles;
    params.pos = p.data_ptr<scalar_t>(), params.pos_batch_stride = pos_batch_stride;
    params.tri = t.data_ptr<int32_t>();
    params.rast = rast.data_ptr<scalar_t>(), params.rast_db = ptr_or_null<scalar_t>(rast_db);
    params.peel = peel.defined() ? peel.data_ptr<scalar_t>() : nullptr;
    if (p.is_cuda()) {
      FACEGEOM_CUDA_LAUNCH(
          cuda::rasterize_forward<scalar_t>(params, rng, max_count, p, current_stream()));
    } else {
      params.ranges = range_mode ? rng.data_ptr<int32_t>() : nullptr;
      cpu::rasterize_forward<scalar_t>(params);
    }
  });
  return {rast, rast_db};
}

std::tuple<at::Tensor, at::Tensor> rasterize(const at::Tensor& pos, const at::Tensor& tri,
                                             int64_t height, int64_t width,
                                             const std::optional<at::Tensor>& ranges,
                                             bool grad_db) {
  return rasterize_layer(pos, tri, height, width, ranges, grad_db, std::nullopt);
}

std::tuple<at::Tensor, at::Tensor> rasterize_next_layer(const at::Tensor& pos, const at::Tensor& tri,
                                                        int64_t height, int64_t width,
                                                        const std::optional<at::Tensor>& ranges,
                                                        bool grad_db, const at::Tensor& previous) {
  return rasterize_layer(pos, tri, height, width, ranges, grad_db, previous);
}

at::Tensor rasterize_backward(const at::Tensor& grad_rast, const std::optional<at::Tensor>& grad_db,
                              const at::Tensor& pos, const at::Tensor& tri, const at::Tensor& rast,
                              const std::optional<at::Tensor>& ranges) {
  check_float(pos, "pos");
  const bool range_mode = ranges.has_value();
  TORCH_CHECK_VALUE((range_mode && pos.dim() == 2) || (!range_mode && pos.dim() == 3),
                    "pos must have shape [B, V, 4] (or [V, 4] in range mode), got ", pos.sizes());
  TORCH_CHECK_VALUE(pos.size(-1) == 4, "pos must have 4 components per vertex, got ", pos.sizes());
  const int64_t num_vertices = pos.size(-2);
  check_rast_tri(tri, pos, num_vertices);
  check_same(rast, pos, "rast");
  TORCH_CHECK_VALUE(rast.dim() == 4 && rast.size(3) == 4 &&
                        rast.size(0) == (range_mode ? ranges->size(0) : pos.size(0)),
                    "rast must have shape [B, H, W, 4] matching pos, got ", rast.sizes());
  check_same(grad_rast, pos, "grad_rast");
  check_shape(grad_rast, rast.sizes(), "grad_rast");
  if (grad_db.has_value()) {
    check_same(*grad_db, pos, "grad_db");
    check_shape(*grad_db, rast.sizes(), "grad_db");
  }
  c10::DeviceGuard guard(pos.device());
  const auto p = pos.contiguous();
  const auto t = tri.contiguous();
  const auto r = rast.contiguous();
  const auto g = grad_rast.contiguous();
  const auto gdb = grad_db.has_value() ? grad_db->contiguous() : at::Tensor();
  const int64_t batch = r.size(0), height = r.size(1), width = r.size(2);
  const int64_t pos_batch_stride = range_mode ? 0 : 4 * num_vertices;
  auto grad_pos = at::zeros_like(p);
  if (r.numel() == 0 || tri.size(0) == 0) return grad_pos;
  AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "rasterize_backward", [&] {
    raster::RasterizeParams<scalar_t> params;
    params.batch = batch, params.height = height, params.width = width;
    params.num_vertices = num_vertices, params.num_triangles = tri.size(0);
    params.pos = p.data_ptr<scalar_t>(), params.pos_batch_stride = pos_batch_stride;
    params.tri = t.data_ptr<int32_t>();
    params.rast = r.data_ptr<scalar_t>();
    params.grad_rast = g.data_ptr<scalar_t>();
    params.grad_db = gdb.defined() ? gdb.data_ptr<scalar_t>() : nullptr;
    params.grad_pos = grad_pos.data_ptr<scalar_t>();
    if (p.is_cuda()) {
      FACEGEOM_CUDA_LAUNCH(cuda::rasterize_backward<scalar_t>(params, current_stream()));
    } else {
      cpu::rasterize_backward<scalar_t>(params);
    }
  });
  return grad_pos;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(facegeom, m) {
  m.def(
      "rasterize(Tensor pos, Tensor tri, int height, int width, Tensor? ranges, bool grad_db) "
      "-> (Tensor, Tensor)");
  m.def(
      "rasterize_backward(Tensor grad_rast, Tensor? grad_db, Tensor pos, Tensor tri, Tensor rast, "
      "Tensor? ranges) -> Tensor");
  m.def(
      "rasterize_next_layer(Tensor pos, Tensor tri, int height, int width, Tensor? ranges, "
      "bool grad_db, Tensor previous) -> (Tensor, Tensor)");
}

namespace {
void register_rasterize_kernels(torch::Library& m) {
  m.impl("rasterize", &rasterize);
  m.impl("rasterize_backward", &rasterize_backward);
  m.impl("rasterize_next_layer", &rasterize_next_layer);
}
}  // namespace

TORCH_LIBRARY_IMPL(facegeom, CPU, m) { register_rasterize_kernels(m); }

#ifdef FACEGEOM_WITH_CUDA
TORCH_LIBRARY_IMPL(facegeom, CUDA, m) { register_rasterize_kernels(m); }
#endif

}  // namespace facegeom
