"""An independent numpy evaluation of the FLAME formula (Li et al. 2017, eqs. 1-4),
written from the paper, for checking facegeom.models against: rotations from
scipy, the kinematic chain as explicit 4x4 products."""
import numpy as np
from scipy.spatial.transform import Rotation


def flame_forward(v_template, shapedirs, posedirs, J_regressor, weights, parents, betas, pose):
    """One mesh. shapedirs [V, 3, K], posedirs [(J-1)*9, V*3], J_regressor [J, V]
    dense, weights [V, J], betas [K], pose [J*3] axis-angle -> vertices [V, 3], joints [J, 3]."""
    num_joints = len(parents)
    v_shaped = v_template + np.einsum("vck,k->vc", shapedirs, betas)
    joints = J_regressor @ v_shaped
    rotations = Rotation.from_rotvec(pose.reshape(num_joints, 3)).as_matrix()
    pose_feature = (rotations[1:] - np.eye(3)).reshape(-1)
    v_posed = v_shaped + (pose_feature @ posedirs).reshape(-1, 3)
    world = []
    for j in range(num_joints):
        local = np.eye(4)
        local[:3, :3] = rotations[j]
        local[:3, 3] = joints[j] - (joints[parents[j]] if parents[j] >= 0 else 0.0)
        world.append(local if parents[j] < 0 else world[parents[j]] @ local)
    world = np.stack(world)
    posed_joints = world[:, :3, 3].copy()
    # Remove the rest-pose joint location: G_j (x - J_j) for each joint.
    world[:, :3, 3] -= np.einsum("jab,jb->ja", world[:, :3, :3], joints)
    blended = np.einsum("vj,jab->vab", weights, world)
    vertices = np.einsum("vab,vb->va", blended[:, :3, :3], v_posed) + blended[:, :3, 3]
    return vertices, posed_joints


def barycentric_points(vertices, faces, face_index, bary):
    return np.einsum("lk,lkc->lc", bary, vertices[faces[face_index]])


def contour_row_for_yaw(yaw_degrees):
    """The official table's row for a yaw (DECA sign), written out case by case."""
    degrees = int(round(max(-39.0, min(39.0, yaw_degrees))))
    if degrees >= 0:
        return degrees
    return 39 + (-degrees)
