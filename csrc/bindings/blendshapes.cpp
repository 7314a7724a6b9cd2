// blendshapes: out = base + coeffs @ basis. A single GEMM/GEMV is already at the
// memory-bandwidth floor on every device, so this op is a thin ATen
// composition registered once for all back ends.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "bindings/checks.h"

namespace facegeom {
namespace {

at::Tensor blendshapes(const at::Tensor& coeffs, const at::Tensor& basis,
                       const std::optional<at::Tensor>& base) {
  check_float(coeffs, "coeffs");
  check_same(basis, coeffs, "basis");
  TORCH_CHECK_VALUE(coeffs.dim() == 2, "coeffs must have shape [B, K], got ", coeffs.sizes());
  TORCH_CHECK_VALUE(basis.dim() == 3 && basis.size(0) == coeffs.size(1) && basis.size(2) == 3,
                    "basis must have shape [K, V, 3] with K = ", coeffs.size(1), ", got ",
                    basis.sizes());
  const int64_t batch = coeffs.size(0), num_vertices = basis.size(1);
  const auto flat_basis = basis.reshape({basis.size(0), 3 * num_vertices});
  if (!base.has_value()) return at::mm(coeffs, flat_basis).view({batch, num_vertices, 3});
  check_same(*base, coeffs, "base");
  TORCH_CHECK_VALUE((base->dim() == 2 && base->size(0) == num_vertices && base->size(1) == 3) ||
                        (base->dim() == 3 && base->size(0) == batch &&
                         base->size(1) == num_vertices && base->size(2) == 3),
                    "base must have shape [V, 3] or [B, V, 3], got ", base->sizes());
  // Explicit sizes: with V = 0 a -1 in reshape is ambiguous.
  const int64_t base_rows = base->dim() == 3 ? batch : 1;
  return at::addmm(base->reshape({base_rows, 3 * num_vertices}), coeffs, flat_basis)
      .view({batch, num_vertices, 3});
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(facegeom, m) {
  m.def("blendshapes(Tensor coeffs, Tensor basis, Tensor? base=None) -> Tensor");
}

TORCH_LIBRARY_IMPL(facegeom, CompositeExplicitAutograd, m) { m.impl("blendshapes", &blendshapes); }

}  // namespace facegeom
