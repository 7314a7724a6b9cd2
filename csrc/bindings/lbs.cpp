// Schemas and device registrations of the blendshape / skinning family.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <array>

#include "bindings/checks.h"
#include "bindings/dispatch.h"
#include "aten/lbs_shape_pose_blend.h"
#include "cpu/lbs_cpu.h"
#ifdef FACEGEOM_WITH_CUDA
#include "cuda/lbs_cuda.h"
#endif

namespace facegeom {
namespace {

at::Tensor rodrigues(const at::Tensor& axis_angle) {
  check_float(axis_angle, "axis_angle");
  TORCH_CHECK_VALUE(axis_angle.dim() == 2 && axis_angle.size(1) == 3,
                    "axis_angle must have shape [N, 3], got ", axis_angle.sizes());
  c10::DeviceGuard guard(axis_angle.device());
  const auto x = axis_angle.contiguous();
  auto rot = at::empty({x.size(0), 3, 3}, x.options());
  if (x.size(0) == 0) return rot;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "rodrigues", [&] {
    if (x.is_cuda()) {
      FACEGEOM_CUDA_LAUNCH(cuda::rodrigues_forward<scalar_t>(
          x.size(0), x.data_ptr<scalar_t>(), rot.data_ptr<scalar_t>(), current_stream()));
    } else {
      cpu::rodrigues_forward<scalar_t>(x.size(0), x.data_ptr<scalar_t>(), rot.data_ptr<scalar_t>());
    }
  });
  return rot;
}

at::Tensor rodrigues_backward(const at::Tensor& grad_rot, const at::Tensor& axis_angle) {
  check_float(axis_angle, "axis_angle");
  check_same(grad_rot, axis_angle, "grad_rot");
  check_shape(grad_rot, {axis_angle.size(0), 3, 3}, "grad_rot");
  c10::DeviceGuard guard(axis_angle.device());
  const auto x = axis_angle.contiguous();
  const auto g = grad_rot.contiguous();
  auto grad = at::empty_like(x);
  if (x.size(0) == 0) return grad;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "rodrigues_backward", [&] {
    if (x.is_cuda()) {
      FACEGEOM_CUDA_LAUNCH(cuda::rodrigues_backward<scalar_t>(
          x.size(0), x.data_ptr<scalar_t>(), g.data_ptr<scalar_t>(), grad.data_ptr<scalar_t>(),
          current_stream()));
    } else {
      cpu::rodrigues_backward<scalar_t>(x.size(0), x.data_ptr<scalar_t>(), g.data_ptr<scalar_t>(),
                                        grad.data_ptr<scalar_t>());
    }
  });
  return grad;
}

void check_chain_inputs(const at::Tensor& rot_mats, const at::Tensor& joints,
                        const at::Tensor& parents) {
  check_float(rot_mats, "rot_mats");
  TORCH_CHECK_VALUE(rot_mats.dim() == 4 && rot_mats.size(2) == 3 && rot_mats.size(3) == 3,
                    "rot_mats must have shape [B, J, 3, 3], got ", rot_mats.sizes());
  check_same(joints, rot_mats, "joints");
  check_shape(joints, {rot_mats.size(0), rot_mats.size(1), 3}, "joints");
  TORCH_CHECK_TYPE(parents.scalar_type() == at::kLong, "parents must be int64");
  TORCH_CHECK(parents.device() == rot_mats.device(), "parents must be on ", rot_mats.device());
  check_shape(parents, {rot_mats.size(1)}, "parents");
  TORCH_CHECK_VALUE(rot_mats.size(1) > 0, "the skeleton needs at least one joint");
  if (parents.is_cpu()) {
    const auto p = parents.contiguous();
    const int64_t* data = p.data_ptr<int64_t>();
    TORCH_CHECK_VALUE(data[0] == -1, "parents[0] must be -1 (the root), got ", data[0]);
    for (int64_t j = 1; j < p.numel(); ++j) {
      TORCH_CHECK_VALUE(data[j] >= 0 && data[j] < j, "parents must be topologically ordered ",
                        "(0 <= parents[j] < j); parents[", j, "] = ", data[j]);
    }
  }
}

std::tuple<at::Tensor, at::Tensor> rigid_transform(const at::Tensor& rot_mats,
                                                   const at::Tensor& joints,
                                                   const at::Tensor& parents) {
  check_chain_inputs(rot_mats, joints, parents);
  c10::DeviceGuard guard(rot_mats.device());
  const auto rot = rot_mats.contiguous();
  const auto jts = joints.contiguous();
  const auto par = parents.contiguous();
  const int64_t batch = rot.size(0), num_joints = rot.size(1);
  auto posed = at::empty({batch, num_joints, 3}, rot.options());
  auto rel = at::empty({batch, num_joints, 4, 4}, rot.options());
  if (batch == 0) return {posed, rel};
  AT_DISPATCH_FLOATING_TYPES(rot.scalar_type(), "rigid_transform", [&] {
    if (rot.is_cuda()) {
      FACEGEOM_CUDA_LAUNCH({
        auto world = at::empty({batch, num_joints, 12}, rot.options());
        cuda::rigid_transform_forward<scalar_t>(
            batch, num_joints, rot.data_ptr<scalar_t>(), jts.data_ptr<scalar_t>(),
            par.data_ptr<int64_t>(), world.data_ptr<scalar_t>(), posed.data_ptr<scalar_t>(),
            rel.data_ptr<scalar_t>(), current_stream());
      });
    } else {
      cpu::rigid_transform_forward<scalar_t>(batch, num_joints, rot.data_ptr<scalar_t>(),
                                             jts.data_ptr<scalar_t>(), par.data_ptr<int64_t>(),
                                             posed.data_ptr<scalar_t>(), rel.data_ptr<scalar_t>());
    }
  });
  return {posed, rel};
}

std::tuple<at::Tensor, at::Tensor> rigid_transform_backward(const at::Tensor& grad_posed,
                                                            const at::Tensor& grad_rel,
                                                            const at::Tensor& rot_mats,
                                                            const at::Tensor& joints,
                                                            const at::Tensor& parents) {
  check_chain_inputs(rot_mats, joints, parents);
  check_same(grad_posed, rot_mats, "grad_posed");
  check_same(grad_rel, rot_mats, "grad_rel");
  check_shape(grad_posed, joints.sizes(), "grad_posed");
  check_shape(grad_rel, {rot_mats.size(0), rot_mats.size(1), 4, 4}, "grad_rel");
  c10::DeviceGuard guard(rot_mats.device());
  const auto rot = rot_mats.contiguous();
  const auto jts = joints.contiguous();
  const auto par = parents.contiguous();
  const auto gp = grad_posed.contiguous();
  const auto gr = grad_rel.contiguous();
  const int64_t batch = rot.size(0), num_joints = rot.size(1);
  auto grad_rot = at::empty_like(rot);
  auto grad_joints = at::empty_like(jts);
  if (batch == 0) return {grad_rot, grad_joints};
  AT_DISPATCH_FLOATING_TYPES(rot.scalar_type(), "rigid_transform_backward", [&] {
    if (rot.is_cuda()) {
      FACEGEOM_CUDA_LAUNCH({
        auto world = at::empty({batch, num_joints, 12}, rot.options());
        auto grad_world = at::empty({batch, num_joints, 12}, rot.options());
        cuda::rigid_transform_backward<scalar_t>(
            batch, num_joints, rot.data_ptr<scalar_t>(), jts.data_ptr<scalar_t>(),
            par.data_ptr<int64_t>(), gp.data_ptr<scalar_t>(), gr.data_ptr<scalar_t>(),
            world.data_ptr<scalar_t>(), grad_world.data_ptr<scalar_t>(),
            grad_rot.data_ptr<scalar_t>(), grad_joints.data_ptr<scalar_t>(), current_stream());
      });
    } else {
      cpu::rigid_transform_backward<scalar_t>(
          batch, num_joints, rot.data_ptr<scalar_t>(), jts.data_ptr<scalar_t>(),
          par.data_ptr<int64_t>(), gp.data_ptr<scalar_t>(), gr.data_ptr<scalar_t>(),
          grad_rot.data_ptr<scalar_t>(), grad_joints.data_ptr<scalar_t>());
    }
  });
  return {grad_rot, grad_joints};
}

void check_skin_inputs(const at::Tensor& vertices, const at::Tensor& transforms,
                       const at::Tensor& weights) {
  check_float(vertices, "vertices");
  TORCH_CHECK_VALUE(vertices.dim() == 3 && vertices.size(2) == 3,
                    "vertices must have shape [B, V, 3], got ", vertices.sizes());
  check_same(transforms, vertices, "transforms");
  check_same(weights, vertices, "weights");
  TORCH_CHECK_VALUE(transforms.dim() == 4 && transforms.size(0) == vertices.size(0) &&
                        transforms.size(2) == 4 && transforms.size(3) == 4,
                    "transforms must have shape [B, J, 4, 4] with B = ", vertices.size(0),
                    ", got ", transforms.sizes());
  const int64_t num_joints = transforms.size(1);
  const bool shared = weights.dim() == 2;
  TORCH_CHECK_VALUE((shared && weights.size(0) == vertices.size(1) && weights.size(1) == num_joints) ||
                        (weights.dim() == 3 && weights.size(0) == vertices.size(0) &&
                         weights.size(1) == vertices.size(1) && weights.size(2) == num_joints),
                    "weights must have shape [V, J] or [B, V, J] with B, V, J = ",
                    vertices.size(0), ", ", vertices.size(1), ", ", num_joints, ", got ",
                    weights.sizes());
}

at::Tensor skin(const at::Tensor& vertices, const at::Tensor& transforms,
                const at::Tensor& weights) {
  check_skin_inputs(vertices, transforms, weights);
  c10::DeviceGuard guard(vertices.device());
  const auto x = vertices.contiguous();
  const auto a = transforms.contiguous();
  const auto w = weights.contiguous();
  const int64_t batch = x.size(0), num_vertices = x.size(1), num_joints = a.size(1);
  const int64_t w_stride = w.dim() == 2 ? 0 : num_vertices * num_joints;
  auto out = at::empty_like(x);
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "skin", [&] {
    if (x.is_cuda()) {
      FACEGEOM_CUDA_LAUNCH(cuda::skin_forward<scalar_t>(
          batch, num_vertices, num_joints, x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), w_stride,
          a.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), current_stream()));
    } else {
      cpu::skin_forward<scalar_t>(batch, num_vertices, num_joints, x.data_ptr<scalar_t>(),
                                  w.data_ptr<scalar_t>(), w_stride, a.data_ptr<scalar_t>(),
                                  out.data_ptr<scalar_t>());
    }
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> skin_backward(const at::Tensor& grad_out,
                                                             const at::Tensor& vertices,
                                                             const at::Tensor& transforms,
                                                             const at::Tensor& weights,
                                                             std::array<bool, 3> output_mask) {
  check_skin_inputs(vertices, transforms, weights);
  check_same(grad_out, vertices, "grad_out");
  check_shape(grad_out, vertices.sizes(), "grad_out");
  c10::DeviceGuard guard(vertices.device());
  const auto x = vertices.contiguous();
  const auto a = transforms.contiguous();
  const auto w = weights.contiguous();
  const auto g = grad_out.contiguous();
  const int64_t batch = x.size(0), num_vertices = x.size(1), num_joints = a.size(1);
  const bool shared = w.dim() == 2;
  const int64_t w_stride = shared ? 0 : num_vertices * num_joints;
  auto grad_vertices = output_mask[0] ? at::zeros_like(x) : empty_grad(x);
  auto grad_transforms = output_mask[1] ? at::zeros_like(a) : empty_grad(a);
  auto grad_weights = output_mask[2] ? at::zeros_like(w) : empty_grad(w);
  if (x.numel() == 0) return {grad_vertices, grad_transforms, grad_weights};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "skin_backward", [&] {
    if (x.is_cuda()) {
      FACEGEOM_CUDA_LAUNCH({
        auto outer = output_mask[1] ? at::empty({batch, num_vertices, 12}, x.options()) : at::Tensor();
        cuda::skin_backward_pointwise<scalar_t>(
            batch, num_vertices, num_joints, x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(),
            w_stride, a.data_ptr<scalar_t>(), g.data_ptr<scalar_t>(),
            ptr_or_null<scalar_t>(grad_vertices),
            shared ? nullptr : ptr_or_null<scalar_t>(grad_weights), ptr_or_null<scalar_t>(outer),
            current_stream());
        if (shared && output_mask[2]) {
          cuda::skin_backward_shared_weights<scalar_t>(
              batch, num_vertices, num_joints, x.data_ptr<scalar_t>(), a.data_ptr<scalar_t>(),
              g.data_ptr<scalar_t>(), grad_weights.data_ptr<scalar_t>(), current_stream());
        }
        if (output_mask[1]) {
          // grad A[b, j] = sum_v w[v, j] grad_out[b, v] (x) [x[b, v]; 1]: a batched matmul.
          grad_transforms.narrow(2, 0, 3).view({batch, num_joints, 12}).copy_(
              at::matmul(w.transpose(-1, -2), outer));
        }
      });
    } else {
      cpu::skin_backward<scalar_t>(batch, num_vertices, num_joints, x.data_ptr<scalar_t>(),
                                   w.data_ptr<scalar_t>(), w_stride, a.data_ptr<scalar_t>(),
                                   g.data_ptr<scalar_t>(), ptr_or_null<scalar_t>(grad_vertices),
                                   ptr_or_null<scalar_t>(grad_weights),
                                   ptr_or_null<scalar_t>(grad_transforms));
    }
  });
  return {grad_vertices, grad_transforms, grad_weights};
}

void check_blend_inputs(const at::Tensor& betas, const at::Tensor& rot_mats,
                        const at::Tensor& v_template, const at::Tensor& shapedirs,
                        const at::Tensor& posedirs, const at::Tensor& J_regressor) {
  check_float(betas, "betas");
  TORCH_CHECK_VALUE(betas.dim() == 2, "betas must have shape [B, K], got ", betas.sizes());
  const int64_t batch = betas.size(0), num_betas = betas.size(1);
  check_same(rot_mats, betas, "rot_mats");
  check_same(v_template, betas, "v_template");
  check_same(shapedirs, betas, "shapedirs");
  check_same(posedirs, betas, "posedirs");
  check_same(J_regressor, betas, "J_regressor");
  TORCH_CHECK_VALUE(shapedirs.dim() == 3 && shapedirs.size(1) == 3 && shapedirs.size(2) == num_betas,
                    "shapedirs must have shape [V, 3, ", num_betas, "], got ", shapedirs.sizes());
  const int64_t num_vertices = shapedirs.size(0);
  TORCH_CHECK_VALUE(J_regressor.dim() == 2, "J_regressor must have shape [J, V], got ",
                    J_regressor.sizes());
  check_shape(rot_mats, {batch, J_regressor.size(0), 3, 3}, "rot_mats");
  check_shape(posedirs, {9 * (J_regressor.size(0) - 1), 3 * num_vertices}, "posedirs");
  TORCH_CHECK_VALUE((v_template.dim() == 2 && v_template.size(0) == num_vertices &&
                     v_template.size(1) == 3) ||
                        (v_template.dim() == 3 && v_template.size(0) == batch &&
                         v_template.size(1) == num_vertices && v_template.size(2) == 3),
                    "v_template must have shape [V, 3] or [B, V, 3] with B, V = ", batch, ", ",
                    num_vertices, ", got ", v_template.sizes());
  TORCH_CHECK_VALUE(J_regressor.dim() == 2 && J_regressor.size(1) == num_vertices,
                    "J_regressor must have shape [J, ", num_vertices, "], got ",
                    J_regressor.sizes());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> lbs_shape_pose_blend(
    const at::Tensor& betas, const at::Tensor& rot_mats, const at::Tensor& v_template,
    const at::Tensor& shapedirs, const at::Tensor& posedirs, const at::Tensor& J_regressor) {
  check_blend_inputs(betas, rot_mats, v_template, shapedirs, posedirs, J_regressor);
  c10::DeviceGuard guard(betas.device());
  return aten::lbs_shape_pose_blend_forward(betas, rot_mats, v_template, shapedirs, posedirs,
                                            J_regressor);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lbs_shape_pose_blend_backward(const std::optional<at::Tensor>& grad_v_shaped,
                              const at::Tensor& grad_v_posed, const at::Tensor& grad_joints,
                              const at::Tensor& betas, const at::Tensor& rot_mats,
                              const at::Tensor& v_template, const at::Tensor& shapedirs,
                              const at::Tensor& posedirs, const at::Tensor& J_regressor,
                              const at::Tensor& v_shaped, std::array<bool, 6> output_mask) {
  check_blend_inputs(betas, rot_mats, v_template, shapedirs, posedirs, J_regressor);
  const int64_t batch = betas.size(0);
  const int64_t num_vertices = shapedirs.size(0), num_joints = J_regressor.size(0);
  if (grad_v_shaped.has_value()) {
    check_same(*grad_v_shaped, betas, "grad_v_shaped");
    check_shape(*grad_v_shaped, {batch, num_vertices, 3}, "grad_v_shaped");
  }
  check_same(grad_v_posed, betas, "grad_v_posed");
  check_same(grad_joints, betas, "grad_joints");
  check_same(v_shaped, betas, "v_shaped");
  check_shape(grad_v_posed, {batch, num_vertices, 3}, "grad_v_posed");
  check_shape(grad_joints, {batch, num_joints, 3}, "grad_joints");
  check_shape(v_shaped, {batch, num_vertices, 3}, "v_shaped");
  c10::DeviceGuard guard(betas.device());
  return aten::lbs_shape_pose_blend_backward(grad_v_shaped, grad_v_posed, grad_joints, betas,
                                             rot_mats, v_template, shapedirs, posedirs,
                                             J_regressor, v_shaped, output_mask);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(facegeom, m) {
  m.def("rodrigues(Tensor axis_angle) -> Tensor");
  m.def("rodrigues_backward(Tensor grad_rot, Tensor axis_angle) -> Tensor");
  m.def("rigid_transform(Tensor rot_mats, Tensor joints, Tensor parents) -> (Tensor, Tensor)");
  m.def(
      "rigid_transform_backward(Tensor grad_posed, Tensor grad_rel, Tensor rot_mats, "
      "Tensor joints, Tensor parents) -> (Tensor, Tensor)");
  m.def("skin(Tensor vertices, Tensor transforms, Tensor weights) -> Tensor");
  m.def(
      "skin_backward(Tensor grad_out, Tensor vertices, Tensor transforms, Tensor weights, "
      "bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
  // lbs_shape_pose_blend is an internal stage of facegeom.ops.lbs (it has no
  // public Python function of its own): smplx lbs's blend_shapes + joint
  // regression + pose correctives, fused. It carries the lbs_ prefix so that a
  // grep for "lbs" finds it in every layer (schema, cpu/lbs_cpu.*, ops/lbs.py).
  m.def(
      "lbs_shape_pose_blend(Tensor betas, Tensor rot_mats, Tensor v_template, Tensor shapedirs, "
      "Tensor posedirs, Tensor J_regressor) -> (Tensor, Tensor, Tensor)");
  m.def(
      "lbs_shape_pose_blend_backward(Tensor? grad_v_shaped, Tensor grad_v_posed, Tensor grad_joints, "
      "Tensor betas, Tensor rot_mats, Tensor v_template, Tensor shapedirs, Tensor posedirs, "
      "Tensor J_regressor, Tensor v_shaped, bool[6] output_mask) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
}

namespace {
// The same wrappers serve both devices: they dispatch on the tensors' device.
void register_lbs_kernels(torch::Library& m) {
  m.impl("rodrigues", &rodrigues);
  m.impl("rodrigues_backward", &rodrigues_backward);
  m.impl("rigid_transform", &rigid_transform);
  m.impl("rigid_transform_backward", &rigid_transform_backward);
  m.impl("skin", &skin);
  m.impl("skin_backward", &skin_backward);
  m.impl("lbs_shape_pose_blend", &lbs_shape_pose_blend);
  m.impl("lbs_shape_pose_blend_backward", &lbs_shape_pose_blend_backward);
}
}  // namespace

TORCH_LIBRARY_IMPL(facegeom, CPU, m) { register_lbs_kernels(m); }

#ifdef FACEGEOM_WITH_CUDA
TORCH_LIBRARY_IMPL(facegeom, CUDA, m) { register_lbs_kernels(m); }
#endif

}  // namespace facegeom
