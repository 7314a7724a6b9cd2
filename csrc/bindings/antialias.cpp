// Schemas and device registrations of antialias.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <array>
#include <limits>

#include "bindings/checks.h"
#include "bindings/dispatch.h"
#include "cpu/antialias_cpu.h"
#ifdef FACEGEOM_WITH_CUDA
#include "cuda/antialias_cuda.h"
#endif

namespace facegeom {
namespace {

void check_antialias_inputs(const at::Tensor& color, const at::Tensor& rast, const at::Tensor& pos,
                            const at::Tensor& tri, const at::Tensor& topology) {
  check_float(color, "color");
  TORCH_CHECK_VALUE(color.dim() == 4, "color must have shape [B, H, W, C], got ", color.sizes());
  check_same(rast, color, "rast");
  check_shape(rast, {color.size(0), color.size(1), color.size(2), 4}, "rast");
  check_same(pos, color, "pos");
  TORCH_CHECK_VALUE((pos.dim() == 3 && pos.size(0) == color.size(0) && pos.size(2) == 4) ||
                        (pos.dim() == 2 && pos.size(1) == 4),
                    "pos must have shape [B, V, 4] with B = ", color.size(0), " or [V, 4], got ",
                    pos.sizes());
  TORCH_CHECK_TYPE(tri.scalar_type() == at::kInt, "tri must be int32, got ", tri.scalar_type());
  TORCH_CHECK(tri.device() == color.device(), "tri must be on ", color.device());
  TORCH_CHECK_VALUE(tri.dim() == 2 && tri.size(1) == 3, "tri must have shape [F, 3], got ",
                    tri.sizes());
  TORCH_CHECK_TYPE(topology.scalar_type() == at::kInt, "topology must be int32, got ",
                   topology.scalar_type());
  TORCH_CHECK(topology.device() == color.device(), "topology must be on ", color.device());
  check_shape(topology, tri.sizes(), "topology");
  // Vertex indices are int32; rast holds triangle ids as floats.
  TORCH_CHECK_VALUE(pos.size(-2) <= std::numeric_limits<int32_t>::max(),
                    "pos has more vertices than int32 indices can address");
}

// The launchers' parameters, filled field by field from contiguous tensors.
template <typename T>
aa::AntialiasProblem<T> make_problem(const at::Tensor& color, const at::Tensor& rast,
                                     const at::Tensor& pos, const at::Tensor& tri,
                                     const at::Tensor& topology) {
  aa::AntialiasProblem<T> problem;
  problem.height = color.size(1), problem.width = color.size(2), problem.channels = color.size(3);
  problem.color = color.data_ptr<T>();
  problem.rast = rast.data_ptr<T>();
  problem.pos = pos.data_ptr<T>();
  problem.pos_batch_stride = pos.dim() == 3 ? pos.size(1) * 4 : 0;
  problem.num_vertices = pos.size(-2);
  problem.tri = tri.data_ptr<int32_t>();
  problem.topology = topology.data_ptr<int32_t>();
  problem.num_triangles = tri.size(0);
  return problem;
}

at::Tensor antialias(const at::Tensor& color, const at::Tensor& rast, const at::Tensor& pos,
                     const at::Tensor& tri, const at::Tensor& topology) {
  check_antialias_inputs(color, rast, pos, tri, topology);
  c10::DeviceGuard guard(color.device());
  const auto c = color.contiguous(), r = rast.contiguous(), p = pos.contiguous();
  const auto t = tri.contiguous(), topo = topology.contiguous();
  auto out = at::empty_like(c);
  if (out.numel() == 0) return out;
  const int64_t batch = c.size(0);
  AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "antialias", [&] {
    const auto problem = make_problem<scalar_t>(c, r, p, t, topo);
    if (c.is_cuda()) {
      FACEGEOM_CUDA_LAUNCH(cuda::antialias_forward<scalar_t>(batch, problem,
                                                             out.data_ptr<scalar_t>(),
                                                             current_stream()));
    } else {
      cpu::antialias_forward<scalar_t>(batch, problem, out.data_ptr<scalar_t>());
    }
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> antialias_backward(const at::Tensor& grad_out,
                                                      const at::Tensor& color,
                                                      const at::Tensor& rast,
                                                      const at::Tensor& pos, const at::Tensor& tri,
                                                      const at::Tensor& topology,
                                                      std::array<bool, 2> output_mask) {
  check_antialias_inputs(color, rast, pos, tri, topology);
  check_same(grad_out, color, "grad_out");
  check_shape(grad_out, color.sizes(), "grad_out");
  c10::DeviceGuard guard(color.device());
  const auto g = grad_out.contiguous(), c = color.contiguous(), r = rast.contiguous();
  const auto p = pos.contiguous(), t = tri.contiguous(), topo = topology.contiguous();
  auto grad_color = output_mask[0] ? at::empty_like(c) : empty_grad(c);
  auto grad_pos = output_mask[1] ? at::zeros_like(p) : empty_grad(p);
  if (c.numel() == 0) return {grad_color, grad_pos};
  const int64_t batch = c.size(0);
  AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "antialias_backward", [&] {
    const auto problem = make_problem<scalar_t>(c, r, p, t, topo);
    if (c.is_cuda()) {
      FACEGEOM_CUDA_LAUNCH(cuda::antialias_backward<scalar_t>(
          batch, problem, g.data_ptr<scalar_t>(), ptr_or_null<scalar_t>(grad_color),
          ptr_or_null<scalar_t>(grad_pos), current_stream()));
    } else {
      cpu::antialias_backward<scalar_t>(batch, problem, g.data_ptr<scalar_t>(),
                                        ptr_or_null<scalar_t>(grad_color),
                                        ptr_or_null<scalar_t>(grad_pos));
    }
  });
  return {grad_color, grad_pos};
}

at::Tensor antialias_topology(const at::Tensor& tri) {
  TORCH_CHECK_TYPE(tri.scalar_type() == at::kInt, "tri must be int32, got ", tri.scalar_type());
  TORCH_CHECK_VALUE(tri.dim() == 2 && tri.size(1) == 3, "tri must have shape [F, 3], got ",
                    tri.sizes());
  TORCH_CHECK(tri.is_cpu(), "antialias_topology runs on CPU tensors (CUDA uses the PyTorch version)");
  TORCH_CHECK_VALUE(tri.size(0) <= std::numeric_limits<int32_t>::max() / 3,
                    "tri has too many triangles for int32 edge indices");
  const auto t = tri.contiguous();
  auto topology = at::empty({t.size(0), 3}, t.options());
  cpu::antialias_topology(t.size(0), t.data_ptr<int32_t>(), topology.data_ptr<int32_t>());
  return topology;
}

void register_antialias_kernels(torch::Library& m) {
  m.impl("antialias", &antialias);
  m.impl("antialias_backward", &antialias_backward);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(facegeom, m) {
  m.def(
      "antialias(Tensor color, Tensor rast, Tensor pos, Tensor tri, Tensor topology) -> Tensor");
  m.def(
      "antialias_backward(Tensor grad_out, Tensor color, Tensor rast, Tensor pos, Tensor tri, "
      "Tensor topology, bool[2] output_mask) -> (Tensor, Tensor)");
  m.def("antialias_topology(Tensor tri) -> Tensor");
}

TORCH_LIBRARY_IMPL(facegeom, CPU, m) {
  register_antialias_kernels(m);
  m.impl("antialias_topology", &antialias_topology);
}

#ifdef FACEGEOM_WITH_CUDA
TORCH_LIBRARY_IMPL(facegeom, CUDA, m) { register_antialias_kernels(m); }
#endif

}  // namespace facegeom
