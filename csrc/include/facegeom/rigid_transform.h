// Kinematic chain of a skeleton (smplx batch_rigid_transform), forward and
// reverse mode, for one batch element. Joints are topologically ordered:
// parents[0] == -1 and parents[j] < j, so one sweep up (forward) and one sweep
// down (backward) visit every parent before / after its children.
#pragma once

#include "facegeom/common.h"

namespace facegeom {
namespace lbs {

// Local transform of joint j: [R_j | J_j - J_parent(j)] (the root uses J_0).
template <typename T>
FG_HD void local_joint_transform(const T* rot, const T* joints, const int64_t* parents, int64_t j,
                                 T* local) {
  const int64_t p = parents[j];
  for (int r = 0; r < 3; ++r) {
    local[4 * r + 0] = rot[9 * j + 3 * r + 0];
    local[4 * r + 1] = rot[9 * j + 3 * r + 1];
    local[4 * r + 2] = rot[9 * j + 3 * r + 2];
    local[4 * r + 3] = joints[3 * j + r] - (j > 0 ? joints[3 * p + r] : T(0));
  }
}

// Global transforms world [J,3,4] of every joint: world_j = world_parent(j) * local_j.
template <typename T>
FG_HD void rigid_transform_world(int64_t num_joints, const T* rot, const T* joints,
                                 const int64_t* parents, T* world) {
  for (int64_t j = 0; j < num_joints; ++j) {
    if (j == 0) {
      local_joint_transform(rot, joints, parents, j, world);
    } else {
      T local[12];
      local_joint_transform(rot, joints, parents, j, local);
      affine_compose(world + 12 * parents[j], local, world + 12 * j);
    }
  }
}

// rot [J,3,3], joints [J,3] -> world [J,3,4] (global transforms, scratch),
// posed [J,3] (transformed joints), rel [J,4,4] (global transform with the rest
// pose joint removed: the matrices LBS blends, smplx's "A").
template <typename T>
FG_HD void rigid_transform_forward(int64_t num_joints, const T* rot, const T* joints,
                                   const int64_t* parents, T* world, T* posed, T* rel) {
  rigid_transform_world(num_joints, rot, joints, parents, world);
  for (int64_t j = 0; j < num_joints; ++j) {
    const T* g = world + 12 * j;
    T* a = rel + 16 * j;
    for (int r = 0; r < 3; ++r) {
      posed[3 * j + r] = g[4 * r + 3];
      a[4 * r + 0] = g[4 * r + 0];
      a[4 * r + 1] = g[4 * r + 1];
      a[4 * r + 2] = g[4 * r + 2];
      a[4 * r + 3] = g[4 * r + 3] - (g[4 * r + 0] * joints[3 * j] + g[4 * r + 1] * joints[3 * j + 1] +
                                     g[4 * r + 2] * joints[3 * j + 2]);
    }
    a[12] = T(0);
    a[13] = T(0);
    a[14] = T(0);
    a[15] = T(1);
  }
}

// Reverse mode of rigid_transform_forward. world must hold the forward's global
// transforms; grad_world [J,3,4] is scratch. The bottom row of rel is constant,
// so its incoming gradient is ignored.
template <typename T>
FG_HD void rigid_transform_backward(int64_t num_joints, const T* rot, const T* joints,
                                    const int64_t* parents, const T* world, const T* grad_posed,
                                    const T* grad_rel, T* grad_world, T* grad_rot, T* grad_joints) {
  for (int64_t j = 0; j < num_joints; ++j) {
    const T* g = world + 12 * j;
    const T* ga = grad_rel + 16 * j;
    T* gw = grad_world + 12 * j;
    for (int r = 0; r < 3; ++r) {
      for (int c = 0; c < 3; ++c) gw[4 * r + c] = ga[4 * r + c] - ga[4 * r + 3] * joints[3 * j + c];
      gw[4 * r + 3] = ga[4 * r + 3] + grad_posed[3 * j + r];
    }
    for (int c = 0; c < 3; ++c) {
      grad_joints[3 * j + c] =
          -(g[c] * ga[3] + g[4 + c] * ga[7] + g[8 + c] * ga[11]);
    }
  }
  for (int64_t j = num_joints - 1; j >= 0; --j) {
    T local[12];
    local_joint_transform(rot, joints, parents, j, local);
    const T* gw = grad_world + 12 * j;
    T grad_local[12];
    if (j == 0) {
      for (int i = 0; i < 12; ++i) grad_local[i] = gw[i];
    } else {
      const int64_t p = parents[j];
      const T* gp = world + 12 * p;
      T* gwp = grad_world + 12 * p;
      // world_j = world_p * local_j (affine): propagate to both factors.
      for (int m = 0; m < 3; ++m) {
        for (int c = 0; c < 4; ++c) {
          grad_local[4 * m + c] = gp[m] * gw[c] + gp[4 + m] * gw[4 + c] + gp[8 + m] * gw[8 + c];
        }
      }
      for (int r = 0; r < 3; ++r) {
        for (int m = 0; m < 3; ++m) {
          gwp[4 * r + m] += gw[4 * r] * local[4 * m] + gw[4 * r + 1] * local[4 * m + 1] +
                            gw[4 * r + 2] * local[4 * m + 2] + gw[4 * r + 3] * local[4 * m + 3];
        }
        gwp[4 * r + 3] += gw[4 * r + 3];
      }
    }
    for (int r = 0; r < 3; ++r) {
      for (int c = 0; c < 3; ++c) grad_rot[9 * j + 3 * r + c] = grad_local[4 * r + c];
      grad_joints[3 * j + r] += grad_local[4 * r + 3];
      if (j > 0) grad_joints[3 * parents[j] + r] -= grad_local[4 * r + 3];
    }
  }
}

}  // namespace lbs
}  // namespace facegeom
