// See lbs_shape_pose_blend.h. The caller has checked the arguments and holds
// the device guard.
#include "aten/lbs_shape_pose_blend.h"

#include <ATen/ATen.h>

#include "bindings/dispatch.h"
#include "cpu/lbs_cpu.h"

namespace facegeom {
namespace aten {
namespace {

// smplx's pose feature: the non-root rotations minus the identity, flattened [B, (J-1)*9].
at::Tensor smplx_pose_feature(const at::Tensor& rot_mats) {
  const int64_t batch = rot_mats.size(0), num_joints = rot_mats.size(1);
  return (rot_mats.narrow(1, 1, num_joints - 1) - at::eye(3, rot_mats.options()))
      .reshape({batch, 9 * (num_joints - 1)});
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> lbs_shape_pose_blend_forward(
    const at::Tensor& betas, const at::Tensor& rot_mats, const at::Tensor& v_template,
    const at::Tensor& shapedirs, const at::Tensor& posedirs, const at::Tensor& J_regressor) {
  const int64_t batch = betas.size(0), num_betas = betas.size(1);
  const int64_t num_vertices = shapedirs.size(0), rows = 3 * num_vertices;
  const int64_t num_joints = J_regressor.size(0), num_pose = 9 * (num_joints - 1);
  const auto pose_feature = smplx_pose_feature(rot_mats);
  if (betas.is_cpu() && batch <= kStreamingBlendMaxBatch) {
    const auto be = betas.contiguous(), pf = pose_feature;
    const auto vt = v_template.contiguous(), sd = shapedirs.contiguous();
    const auto pd = posedirs.contiguous(), jr = J_regressor.contiguous();
    auto v_shaped = at::empty({batch, num_vertices, 3}, be.options());
    auto v_posed = at::empty_like(v_shaped);
    auto joints = at::empty({batch, num_joints, 3}, be.options());
    if (batch == 0) return {v_shaped, v_posed, joints};
    AT_DISPATCH_FLOATING_TYPES(be.scalar_type(), "lbs_shape_pose_blend", [&] {
      cpu::lbs_shape_pose_blend_forward<scalar_t>(
          batch, num_vertices, num_betas, num_pose, num_joints, be.data_ptr<scalar_t>(),
          pf.data_ptr<scalar_t>(), vt.data_ptr<scalar_t>(), vt.dim() == 3 ? rows : 0,
          sd.data_ptr<scalar_t>(), pd.data_ptr<scalar_t>(), jr.data_ptr<scalar_t>(),
          v_shaped.data_ptr<scalar_t>(), v_posed.data_ptr<scalar_t>(), joints.data_ptr<scalar_t>());
    });
    return {v_shaped, v_posed, joints};
  }
  // Compute-bound regime (and CUDA, where cuBLAS is already at the bandwidth
  // floor for one row): GEMMs in the [V*3, B] layout BLAS runs fastest for a
  // [V*3, K] basis, which also makes the joint regression a single GEMM.
  const auto basis = shapedirs.reshape({rows, num_betas});
  const auto v_shaped_t = at::addmm(v_template.reshape({-1, rows}).t(), basis, betas.t());  // [rows, B]
  auto joints = at::mm(J_regressor, v_shaped_t.view({num_vertices, 3 * batch}))
                    .view({num_joints, 3, batch})
                    .permute({2, 0, 1})
                    .contiguous();
  auto v_shaped = v_shaped_t.t().contiguous();
  auto v_posed = at::addmm(v_shaped, pose_feature, posedirs);
  return {v_shaped.view({batch, num_vertices, 3}), v_posed.view({batch, num_vertices, 3}), joints};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lbs_shape_pose_blend_backward(const std::optional<at::Tensor>& grad_v_shaped,
                              const at::Tensor& grad_v_posed, const at::Tensor& grad_joints,
                              const at::Tensor& betas, const at::Tensor& rot_mats,
                              const at::Tensor& v_template, const at::Tensor& shapedirs,
                              const at::Tensor& posedirs, const at::Tensor& J_regressor,
                              const at::Tensor& v_shaped, std::array<bool, 6> output_mask) {
  const int64_t batch = betas.size(0), num_betas = betas.size(1);
  const int64_t num_vertices = shapedirs.size(0), rows = 3 * num_vertices;
  const int64_t num_joints = J_regressor.size(0), num_pose = 9 * (num_joints - 1);
  const auto gvp = grad_v_posed.contiguous();
  const auto gj = grad_joints.contiguous();
  at::Tensor total, grad_betas, grad_pose;  // total: all gradient reaching v_shaped, [B, V, 3]
  if (betas.is_cpu() && batch <= kStreamingBlendMaxBatch) {
    // v_shaped's own gradient is usually absent: the kernel reads zeros then.
    const auto gvs = grad_v_shaped.has_value() ? grad_v_shaped->contiguous() : at::zeros_like(gvp);
    const auto sd = shapedirs.contiguous(), pd = posedirs.contiguous(), jr = J_regressor.contiguous();
    total = at::empty({batch, num_vertices, 3}, betas.options());
    grad_betas = output_mask[0] ? at::empty_like(betas) : empty_grad(betas);
    grad_pose = output_mask[1] ? at::empty({batch, num_pose}, betas.options()) : empty_grad(betas);
    if (batch > 0) {
      AT_DISPATCH_FLOATING_TYPES(betas.scalar_type(), "lbs_shape_pose_blend_backward", [&] {
        cpu::lbs_shape_pose_blend_backward<scalar_t>(
            batch, num_vertices, num_betas, num_pose, num_joints, gvs.data_ptr<scalar_t>(),
            gvp.data_ptr<scalar_t>(), gj.data_ptr<scalar_t>(), sd.data_ptr<scalar_t>(),
            pd.data_ptr<scalar_t>(), jr.data_ptr<scalar_t>(), total.data_ptr<scalar_t>(),
            ptr_or_null<scalar_t>(grad_betas), ptr_or_null<scalar_t>(grad_pose));
      });
    }
  } else {
    // Transposed layout [rows, B], as in the forward: the joints' share is one GEMM.
    auto total_t = at::mm(J_regressor.t(), gj.permute({1, 2, 0}).reshape({num_joints, 3 * batch}))
                       .view({rows, batch});
    total_t.add_(gvp.view({batch, rows}).t());
    if (grad_v_shaped.has_value()) total_t.add_(grad_v_shaped->reshape({batch, rows}).t());
    total = total_t.t().view({batch, num_vertices, 3});
    grad_betas = output_mask[0] ? at::mm(shapedirs.reshape({rows, num_betas}).t(), total_t).t().contiguous()
                                : empty_grad(betas);
    grad_pose = output_mask[1] ? at::mm(gvp.view({batch, rows}), posedirs.t()) : empty_grad(betas);
  }
  // Gradients of the model's own tensors are rarely wanted; they are plain GEMMs.
  auto grad_template = empty_grad(betas);
  if (output_mask[2]) grad_template = v_template.dim() == 3 ? total.contiguous() : total.sum(0);
  auto grad_shapedirs = output_mask[3]
                            ? at::mm(total.reshape({batch, rows}).t(), betas).view({num_vertices, 3, num_betas})
                            : empty_grad(betas);
  auto grad_posedirs = output_mask[4] ? at::mm(smplx_pose_feature(rot_mats).t(), gvp.view({batch, rows}))
                                      : empty_grad(betas);
  auto grad_regressor = output_mask[5] ? at::einsum("bjc,bvc->jv", {gj, v_shaped}) : empty_grad(betas);
  // pose_feature = rot_mats[:, 1:] - I: the root rotation gets no gradient here.
  auto grad_rot = empty_grad(betas);
  if (output_mask[1]) {
    grad_rot = at::zeros_like(rot_mats);
    grad_rot.narrow(1, 1, num_joints - 1).copy_(grad_pose.view({batch, num_joints - 1, 3, 3}));
  }
  return {grad_betas, grad_rot, grad_template, grad_shapedirs, grad_posedirs, grad_regressor};
}

}  // namespace aten
}  // namespace facegeom
