// lbs_shape_pose_blend at the ATen level (both devices): the choice between
// the CPU streaming kernel (cpu/lbs_cpu.h) and GEMMs, and the GEMM path itself.
// The bindings (bindings/lbs.cpp) check the arguments and set the device guard,
// then call these. Shapes: betas [B, K], rot_mats [B, J, 3, 3], v_template
// [V, 3] or [B, V, 3], shapedirs [V, 3, K], posedirs [9 (J - 1), 3 V],
// J_regressor [J, V] (smplx lbs: blend_shapes, vertices2joints, pose offsets).
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <optional>
#include <tuple>

namespace facegeom {
namespace aten {

// Up to this batch size the CPU reads each basis row once for the whole batch
// (memory bound); above it the product is compute bound and BLAS wins.
constexpr int64_t kStreamingBlendMaxBatch = 8;

// (v_shaped, v_posed, joints): [B, V, 3], [B, V, 3], [B, J, 3].
std::tuple<at::Tensor, at::Tensor, at::Tensor> lbs_shape_pose_blend_forward(
    const at::Tensor& betas, const at::Tensor& rot_mats, const at::Tensor& v_template,
    const at::Tensor& shapedirs, const at::Tensor& posedirs, const at::Tensor& J_regressor);

// Gradients of (betas, rot_mats, v_template, shapedirs, posedirs, J_regressor);
// an entry whose output_mask is false is an empty tensor.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lbs_shape_pose_blend_backward(const std::optional<at::Tensor>& grad_v_shaped,
                              const at::Tensor& grad_v_posed, const at::Tensor& grad_joints,
                              const at::Tensor& betas, const at::Tensor& rot_mats,
                              const at::Tensor& v_template, const at::Tensor& shapedirs,
                              const at::Tensor& posedirs, const at::Tensor& J_regressor,
                              const at::Tensor& v_shaped, std::array<bool, 6> output_mask);

}  // namespace aten
}  // namespace facegeom
