// Schemas, checks and device registrations of interpolate (nvdiffrast's
// interpolate over a rasterize output).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <optional>

#include "bindings/checks.h"
#include "bindings/dispatch.h"
#include "cpu/interpolate_cpu.h"
#ifdef FACEGEOM_WITH_CUDA
#include "cuda/interpolate_cuda.h"
#endif

namespace facegeom {
namespace {

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
  check_rast_tri(tri, rast, attr.size(-2));
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

// The checked inputs of interpolate and its backward, contiguous on rast's
// device, and the parameter fields they fill.
struct InterpolateInputs {
  at::Tensor attr, rast, tri, rast_db, diff_channels;
  int64_t num_diff;

  InterpolateInputs(const at::Tensor& attr_in, const at::Tensor& rast_in, const at::Tensor& tri_in,
                    const std::optional<at::Tensor>& rast_db_in, at::IntArrayRef diff_attrs)
      : attr(attr_in.contiguous()),
        rast(rast_in.contiguous()),
        tri(tri_in.contiguous()),
        num_diff(static_cast<int64_t>(diff_attrs.size())) {
    rast_db = num_diff ? rast_db_in->contiguous() : at::Tensor();
    diff_channels = at::tensor(diff_attrs, rast.options().dtype(at::kLong).device(at::kCPU))
                        .to(rast.device());
  }

  template <typename T>
  raster::InterpolateParams<T> params() const {
    raster::InterpolateParams<T> p;
    p.batch = rast.size(0), p.height = rast.size(1), p.width = rast.size(2);
    p.num_vertices = attr.size(-2), p.channels = attr.size(-1);
    p.num_triangles = tri.size(0);
    p.attr = attr.data_ptr<T>();
    p.attr_batch_stride = attr.dim() == 3 ? attr.size(1) * attr.size(2) : 0;
    p.rast = rast.data_ptr<T>();
    p.tri = tri.data_ptr<int32_t>();
    p.rast_db = num_diff ? rast_db.data_ptr<T>() : nullptr;
    p.diff_channels = num_diff ? diff_channels.data_ptr<int64_t>() : nullptr;
    p.num_diff = num_diff;
    return p;
  }
};

std::tuple<at::Tensor, at::Tensor> interpolate(const at::Tensor& attr, const at::Tensor& rast,
                                               const at::Tensor& tri,
                                               const std::optional<at::Tensor>& rast_db,
                                               at::IntArrayRef diff_attrs) {
  check_interpolate_inputs(attr, rast, tri, rast_db, diff_attrs);
  c10::DeviceGuard guard(rast.device());
  const InterpolateInputs in(attr, rast, tri, rast_db, diff_attrs);
  const int64_t batch = rast.size(0), height = rast.size(1), width = rast.size(2);
  auto out = at::empty({batch, height, width, attr.size(-1)}, in.attr.options());
  auto out_da = in.num_diff
                    ? at::empty({batch, height, width, 2 * in.num_diff}, in.attr.options())
                    : empty_grad(in.attr);
  if (in.rast.numel() == 0) return {out, out_da};
  AT_DISPATCH_FLOATING_TYPES(in.attr.scalar_type(), "interpolate", [&] {
    auto params = in.params<scalar_t>();
    params.out = out.data_ptr<scalar_t>();
    params.out_da = ptr_or_null<scalar_t>(out_da);
    if (in.rast.is_cuda()) {
      FACEGEOM_CUDA_LAUNCH(cuda::interpolate_forward<scalar_t>(params, current_stream()));
    } else {
      cpu::interpolate_forward<scalar_t>(params);
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
  const int64_t num_diff = static_cast<int64_t>(diff_attrs.size());
  check_same(grad_out, rast, "grad_out");
  check_shape(grad_out, {batch, height, width, attr.size(-1)}, "grad_out");
  const bool with_da = num_diff > 0 && grad_da.has_value();
  if (with_da) {
    check_same(*grad_da, rast, "grad_da");
    check_shape(*grad_da, {batch, height, width, 2 * num_diff}, "grad_da");
  }
  c10::DeviceGuard guard(rast.device());
  const InterpolateInputs in(attr, rast, tri, rast_db, diff_attrs);
  const auto g = grad_out.contiguous();
  const auto gda = with_da ? grad_da->contiguous() : at::Tensor();
  auto grad_attr = at::zeros_like(in.attr);
  auto grad_rast = at::empty_like(in.rast);
  auto grad_db = num_diff ? at::empty_like(in.rast_db) : empty_grad(in.rast);
  if (in.rast.numel() == 0) return {grad_attr, grad_rast, grad_db};
  AT_DISPATCH_FLOATING_TYPES(in.attr.scalar_type(), "interpolate_backward", [&] {
    auto params = in.params<scalar_t>();
    params.grad_out = g.data_ptr<scalar_t>();
    params.grad_da = with_da ? gda.data_ptr<scalar_t>() : nullptr;
    params.grad_attr = grad_attr.data_ptr<scalar_t>();
    params.grad_rast = grad_rast.data_ptr<scalar_t>();
    params.grad_rast_db = ptr_or_null<scalar_t>(grad_db);
    if (in.rast.is_cuda()) {
      FACEGEOM_CUDA_LAUNCH(cuda::interpolate_backward<scalar_t>(params, current_stream()));
    } else {
      cpu::interpolate_backward<scalar_t>(params);
    }
  });
  return {grad_attr, grad_rast, grad_db};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(facegeom, m) {
  m.def(
      "interpolate(Tensor attr, Tensor rast, Tensor tri, Tensor? rast_db, int[] diff_attrs) "
      "-> (Tensor, Tensor)");
  m.def(
      "interpolate_backward(Tensor grad_out, Tensor? grad_da, Tensor attr, Tensor rast, "
      "Tensor tri, Tensor? rast_db, int[] diff_attrs) -> (Tensor, Tensor, Tensor)");
}

namespace {
void register_interpolate_kernels(torch::Library& m) {
  m.impl("interpolate", &interpolate);
  m.impl("interpolate_backward", &interpolate_backward);
}
}  // namespace

TORCH_LIBRARY_IMPL(facegeom, CPU, m) { register_interpolate_kernels(m); }

#ifdef FACEGEOM_WITH_CUDA
TORCH_LIBRARY_IMPL(facegeom, CUDA, m) { register_interpolate_kernels(m); }
#endif

}  // namespace facegeom
