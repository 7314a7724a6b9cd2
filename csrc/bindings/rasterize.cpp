// Schemas and device registrations of the rasterizer family.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <limits>
#include <optional>

#include "bindings/checks.h"
#include "bindings/dispatch.h"
#include "cpu/rasterize_cpu.h"
#ifdef FACEGEOM_WITH_CUDA
#include "cuda/rasterize_cuda.h"
#endif

namespace facegeom {
namespace {

constexpr int64_t kMaxResolution = 16384;
// rast stores id + 1 as a float: float32 holds integers exactly up to 2**24.
constexpr int64_t kMaxTrianglesFloat32 = (int64_t{1} << 24) - 1;

void check_tri(const at::Tensor& tri, const at::Tensor& like, int64_t num_vertices) {
  TORCH_CHECK_TYPE(tri.scalar_type() == at::kInt, "tri must be int32, got ", tri.scalar_type());
  TORCH_CHECK(tri.device() == like.device(), "tri must be on ", like.device(), ", got ",
              tri.device());
  TORCH_CHECK_VALUE(tri.dim() == 2 && tri.size(1) == 3, "tri must have shape [F, 3], got ",
                    tri.sizes());
  TORCH_CHECK_VALUE(tri.size(0) < std::numeric_limits<int32_t>::max(),
                    "tri has too many triangles (", tri.size(0), ")");
  if (like.scalar_type() == at::kFloat) {
    TORCH_CHECK_VALUE(tri.size(0) <= kMaxTrianglesFloat32, "tri has ", tri.size(0),
                      " triangles; float32 rast holds ids exactly only up to ",
                      kMaxTrianglesFloat32);
  }
  if (tri.numel() > 0) {
    const auto [low, high] = at::aminmax(tri);
    const int64_t lo = low.item<int64_t>(), hi = high.item<int64_t>();
    TORCH_CHECK_INDEX(lo >= 0 && hi < num_vertices, "tri holds vertex indices in [", lo, ", ", hi,
                      "]; they must lie in [0, ", num_vertices, ")");
  }
}

std::tuple<at::Tensor, at::Tensor> rasterize(const at::Tensor& pos, const at::Tensor& tri,
                                             int64_t height, int64_t width,
                                             const std::optional<at::Tensor>& ranges,
                                             bool grad_db) {
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
  check_tri(tri, pos, num_vertices);
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
  c10::DeviceGuard guard(pos.device());
  const auto p = pos.contiguous();
  const auto t = tri.contiguous();
  auto rast = at::empty({batch, height, width, 4}, p.options());
  auto rast_db = grad_db ? at::empty({batch, height, width, 4}, p.options()) : empty_grad(p);
  if (batch == 0) return {rast, rast_db};
  AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "rasterize", [&] {
    if (p.is_cuda()) {
      FACEGEOM_CUDA_LAUNCH({
        const auto rng_device = range_mode ? rng.to(p.device()) : at::Tensor();
        const int32_t* ranges_ptr = range_mode ? rng_device.data_ptr<int32_t>() : nullptr;
        const auto int_options = p.options().dtype(at::kInt);
        auto boxes = at::empty({batch * max_count, 4}, int_options);
        auto tile_counts = at::empty({batch * max_count}, p.options().dtype(at::kLong));
        auto keys = at::full({batch, height, width}, -1, p.options().dtype(at::kLong));
        if (batch * max_count > 0) {
          cuda::rasterize_bin<scalar_t>(batch, max_count, num_vertices, p.data_ptr<scalar_t>(),
                                        pos_batch_stride, t.data_ptr<int32_t>(), num_triangles,
                                        ranges_ptr, height, width, boxes.data_ptr<int32_t>(),
                                        tile_counts.data_ptr<int64_t>(), current_stream());
          const auto pair_end = tile_counts.cumsum(0);
          const int64_t num_pairs = pair_end[-1].item<int64_t>();
          if (num_pairs > 0) {
            cuda::rasterize_pairs<scalar_t>(
                batch, max_count, num_vertices, p.data_ptr<scalar_t>(), pos_batch_stride,
                t.data_ptr<int32_t>(), num_triangles, ranges_ptr, height, width,
                boxes.data_ptr<int32_t>(),
                pair_end.data_ptr<int64_t>(), num_pairs,
                reinterpret_cast<unsigned long long*>(keys.data_ptr<int64_t>()), current_stream());
          }
        }
        cuda::rasterize_resolve<scalar_t>(
            batch, num_vertices, p.data_ptr<scalar_t>(), pos_batch_stride, t.data_ptr<int32_t>(), height, width,
            reinterpret_cast<const unsigned long long*>(keys.data_ptr<int64_t>()),
            rast.data_ptr<scalar_t>(), ptr_or_null<scalar_t>(rast_db), current_stream());
      });
    } else {
      cpu::rasterize_forward<scalar_t>(batch, num_vertices, p.data_ptr<scalar_t>(),
                                       pos_batch_stride, t.data_ptr<int32_t>(), num_triangles,
                                       range_mode ? rng.data_ptr<int32_t>() : nullptr, height,
                                       width, rast.data_ptr<scalar_t>(),
                                       ptr_or_null<scalar_t>(rast_db));
    }
  });
  return {rast, rast_db};
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
  check_tri(tri, pos, num_vertices);
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
    const scalar_t* gdb_ptr = gdb.defined() ? gdb.data_ptr<scalar_t>() : nullptr;
    if (p.is_cuda()) {
      FACEGEOM_CUDA_LAUNCH(cuda::rasterize_backward<scalar_t>(
          batch, num_vertices, p.data_ptr<scalar_t>(), pos_batch_stride, t.data_ptr<int32_t>(),
          tri.size(0), height, width, r.data_ptr<scalar_t>(), g.data_ptr<scalar_t>(), gdb_ptr,
          grad_pos.data_ptr<scalar_t>(), current_stream()));
    } else {
      cpu::rasterize_backward<scalar_t>(batch, num_vertices, p.data_ptr<scalar_t>(),
                                        pos_batch_stride, t.data_ptr<int32_t>(), tri.size(0),
                                        height, width, r.data_ptr<scalar_t>(),
                                        g.data_ptr<scalar_t>(), gdb_ptr,
                                        grad_pos.data_ptr<scalar_t>());
    }
  });
  return grad_pos;
}

void check_interpolate_inputs(const at::Tensor& attr, const at::Tensor& rast, const at::Tensor& tri,
                              const std::optional<at::Tensor>& rast_db,
                              at::IntArrayRef diff_attrs) {
  check_float(rast, "rast");
  check_same(attr, rast, "attr");
  TORCH_CHECK_VALUE(rast.dim() == 4 && rast.size(3) == 4, "rast must have shape [B, H, W, 4], got ",
                    rast.sizes());
  TORCH_CHECK_VALUE(attr.dim() == 2 || (attr.dim() == 3 && attr.size(0) == rast.size(0)),
                    "attr must have shape [V, C] or [B, V, C] with B = ", rast.size(0), ", got ",
                    attr.sizes());
  check_tri(tri, rast, attr.size(-2));
  for (const int64_t c : diff_attrs) {
    TORCH_CHECK_INDEX(c >= 0 && c < attr.size(-1), "diff_attrs index ", c,
                      " is out of range for C = ", attr.size(-1));
  }
  if (!diff_attrs.empty()) {
    TORCH_CHECK_VALUE(rast_db.has_value(), "diff_attrs needs rast_db");
    check_same(*rast_db, rast, "rast_db");
    check_shape(*rast_db, rast.sizes(), "rast_db");
  }
}

std::tuple<at::Tensor, at::Tensor> interpolate(const at::Tensor& attr, const at::Tensor& rast,
                                               const at::Tensor& tri,
                                               const std::optional<at::Tensor>& rast_db,
                                               at::IntArrayRef diff_attrs) {
  check_interpolate_inputs(attr, rast, tri, rast_db, diff_attrs);
  c10::DeviceGuard guard(rast.device());
  const auto a = attr.contiguous();
  const auto r = rast.contiguous();
  const auto t = tri.contiguous();
  const int64_t num_diff = static_cast<int64_t>(diff_attrs.size());
  const auto db = num_diff ? rast_db->contiguous() : at::Tensor();
  const auto channels_index = at::tensor(diff_attrs, r.options().dtype(at::kLong).device(at::kCPU))
                                  .to(r.device());
  const int64_t batch = r.size(0), height = r.size(1), width = r.size(2);
  const int64_t num_channels = a.size(-1);
  const int64_t attr_batch_stride = a.dim() == 3 ? a.size(1) * num_channels : 0;
  auto out = at::empty({batch, height, width, num_channels}, a.options());
  auto out_da = num_diff ? at::empty({batch, height, width, 2 * num_diff}, a.options())
                         : empty_grad(a);
  if (r.numel() == 0) return {out, out_da};
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "interpolate", [&] {
    const scalar_t* db_ptr = num_diff ? db.data_ptr<scalar_t>() : nullptr;
    const int64_t* ch_ptr = num_diff ? channels_index.data_ptr<int64_t>() : nullptr;
    if (r.is_cuda()) {
      FACEGEOM_CUDA_LAUNCH(cuda::interpolate_forward<scalar_t>(
          batch, height, width, num_channels, a.data_ptr<scalar_t>(), attr_batch_stride,
          r.data_ptr<scalar_t>(), t.data_ptr<int32_t>(), t.size(0), db_ptr, ch_ptr, num_diff,
          out.data_ptr<scalar_t>(), ptr_or_null<scalar_t>(out_da), current_stream()));
    } else {
      cpu::interpolate_forward<scalar_t>(batch, height, width, a.size(-2), num_channels,
                                         a.data_ptr<scalar_t>(), attr_batch_stride,
                                         r.data_ptr<scalar_t>(), t.data_ptr<int32_t>(), t.size(0),
                                         db_ptr, ch_ptr, num_diff, out.data_ptr<scalar_t>(),
                                         ptr_or_null<scalar_t>(out_da));
    }
  });
  return {out, out_da};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> interpolate_backward(
    const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_da, const at::Tensor& attr,
    const at::Tensor& rast, const at::Tensor& tri, const std::optional<at::Tensor>& rast_db,
    at::IntArrayRef diff_attrs) {
  check_interpolate_inputs(attr, rast, tri, rast_db, diff_attrs);
  const int64_t batch = rast.size(0), height = rast.size(1), width = rast.size(2);
  const int64_t num_channels = attr.size(-1);
  const int64_t num_diff = static_cast<int64_t>(diff_attrs.size());
  check_same(grad_out, rast, "grad_out");
  check_shape(grad_out, {batch, height, width, num_channels}, "grad_out");
  const bool with_da = num_diff > 0 && grad_da.has_value();
  if (with_da) {
    check_same(*grad_da, rast, "grad_da");
    check_shape(*grad_da, {batch, height, width, 2 * num_diff}, "grad_da");
  }
  c10::DeviceGuard guard(rast.device());
  const auto a = attr.contiguous();
  const auto r = rast.contiguous();
  const auto t = tri.contiguous();
  const auto g = grad_out.contiguous();
  const auto gda = with_da ? grad_da->contiguous() : at::Tensor();
  const auto db = num_diff ? rast_db->contiguous() : at::Tensor();
  const auto channels_index = at::tensor(diff_attrs, r.options().dtype(at::kLong).device(at::kCPU))
                                  .to(r.device());
  const int64_t attr_batch_stride = a.dim() == 3 ? a.size(1) * num_channels : 0;
  auto grad_attr = at::zeros_like(a);
  auto grad_rast = at::empty_like(r);
  auto grad_db = num_diff ? at::empty_like(db) : empty_grad(r);
  if (r.numel() == 0) return {grad_attr, grad_rast, grad_db};
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "interpolate_backward", [&] {
    const scalar_t* db_ptr = num_diff ? db.data_ptr<scalar_t>() : nullptr;
    const int64_t* ch_ptr = num_diff ? channels_index.data_ptr<int64_t>() : nullptr;
    const scalar_t* gda_ptr = with_da ? gda.data_ptr<scalar_t>() : nullptr;
    if (r.is_cuda()) {
      FACEGEOM_CUDA_LAUNCH(cuda::interpolate_backward<scalar_t>(
          batch, height, width, num_channels, a.data_ptr<scalar_t>(), attr_batch_stride,
          r.data_ptr<scalar_t>(), t.data_ptr<int32_t>(), t.size(0), db_ptr, ch_ptr, num_diff,
          g.data_ptr<scalar_t>(), gda_ptr, grad_attr.data_ptr<scalar_t>(),
          grad_rast.data_ptr<scalar_t>(), ptr_or_null<scalar_t>(grad_db), current_stream()));
    } else {
      cpu::interpolate_backward<scalar_t>(
          batch, height, width, a.size(-2), num_channels, a.data_ptr<scalar_t>(),
          attr_batch_stride, r.data_ptr<scalar_t>(), t.data_ptr<int32_t>(), t.size(0), db_ptr,
          ch_ptr, num_diff, g.data_ptr<scalar_t>(), gda_ptr, grad_attr.data_ptr<scalar_t>(),
          grad_rast.data_ptr<scalar_t>(), ptr_or_null<scalar_t>(grad_db));
    }
  });
  return {grad_attr, grad_rast, grad_db};
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
      "interpolate(Tensor attr, Tensor rast, Tensor tri, Tensor? rast_db, int[] diff_attrs) "
      "-> (Tensor, Tensor)");
  m.def(
      "interpolate_backward(Tensor grad_out, Tensor? grad_da, Tensor attr, Tensor rast, "
      "Tensor tri, Tensor? rast_db, int[] diff_attrs) -> (Tensor, Tensor, Tensor)");
}

namespace {
void register_rasterize_kernels(torch::Library& m) {
  m.impl("rasterize", &rasterize);
  m.impl("rasterize_backward", &rasterize_backward);
  m.impl("interpolate", &interpolate);
  m.impl("interpolate_backward", &interpolate_backward);
}
}  // namespace

TORCH_LIBRARY_IMPL(facegeom, CPU, m) { register_rasterize_kernels(m); }

#ifdef FACEGEOM_WITH_CUDA
TORCH_LIBRARY_IMPL(facegeom, CUDA, m) { register_rasterize_kernels(m); }
#endif

}  // namespace facegeom
