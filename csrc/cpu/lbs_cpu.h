// CPU launchers of the blendshape / skinning family: plain pointers, contiguous
// row-major buffers; the bindings allocate and check. T is float or double.
#pragma once

#include <cstdint>

namespace facegeom {
namespace cpu {

// Fixed work-chunk sizes: reductions sum per-chunk partials in chunk order, so
// results do not depend on the number of threads.
constexpr int64_t kVertexChunk = 256;

template <typename T>
void rodrigues_forward(int64_t n, const T* axis_angle, T* rot);
template <typename T>
void rodrigues_backward(int64_t n, const T* axis_angle, const T* grad_rot, T* grad_axis_angle);

template <typename T>
void rigid_transform_forward(int64_t batch, int64_t num_joints, const T* rot, const T* joints,
                             const int64_t* parents, T* posed, T* rel);
template <typename T>
void rigid_transform_backward(int64_t batch, int64_t num_joints, const T* rot, const T* joints,
                              const int64_t* parents, const T* grad_posed, const T* grad_rel,
                              T* grad_rot, T* grad_joints);

// weights_batch_stride is 0 for weights shared by the batch ([V,J]).
template <typename T>
void skin_forward(int64_t batch, int64_t num_vertices, int64_t num_joints, const T* vertices,
                  const T* weights, int64_t weights_batch_stride, const T* transforms, T* out);
// Null outputs are skipped. grad_weights has the layout of weights: when they
// are shared, contributions of the whole batch are summed into one [V,J].
template <typename T>
void skin_backward(int64_t batch, int64_t num_vertices, int64_t num_joints, const T* vertices,
                   const T* weights, int64_t weights_batch_stride, const T* transforms,
                   const T* grad_out, T* grad_vertices, T* grad_weights, T* grad_transforms);

// One pass over the bases: v_shaped = template + shapedirs . betas,
// v_posed = v_shaped + posedirs^T . pose_feature, joints = J_regressor v_shaped.
// shapedirs [V*3, K] (smplx's [V,3,K]), posedirs [P, V*3], J_regressor [J, V].
template <typename T>
void lbs_shape_pose_blend_forward(int64_t batch, int64_t num_vertices, int64_t num_betas,
                              int64_t num_pose_features, int64_t num_joints, const T* betas,
                              const T* pose_feature, const T* v_template,
                              int64_t template_batch_stride, const T* shapedirs,
                              const T* posedirs, const T* J_regressor, T* v_shaped, T* v_posed,
                              T* joints);
// grad_v_shaped_total [B, V*3] receives the total gradient reaching v_shaped
// (its own, through v_posed and through the joints); grad_betas and
// grad_pose_feature may be null.
template <typename T>
void lbs_shape_pose_blend_backward(int64_t batch, int64_t num_vertices, int64_t num_betas,
                               int64_t num_pose_features, int64_t num_joints,
                               const T* grad_v_shaped, const T* grad_v_posed, const T* grad_joints,
                               const T* shapedirs, const T* posedirs, const T* J_regressor,
                               T* grad_v_shaped_total, T* grad_betas, T* grad_pose_feature);

}  // namespace cpu
}  // namespace facegeom
