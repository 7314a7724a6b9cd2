"""Transcriptions of the metrical tracker's arithmetic and of the PyTorch3D / torchvision functions it calls,
written line by line from the sources (not from facegeom.tracking), for the tests to compare against.

MT = Zielon/metrical-tracker @ c2a517244759d7eeaa0e84893d6748e75293f81a;
P3D = facebookresearch/pytorch3d @ 9381c4016376345bb795b97c45a6c2de66db354a;
TV = torchvision ``transforms/_functional_tensor.py`` (``_get_gaussian_kernel1d/2d``, ``gaussian_blur``).
"""
import math

import numpy as np
import torch
import torch.nn.functional as F

# MT:flame/mediapipe/landmarks.py:46 (MP_LANDMARKS, as stored in mediapipe_landmark_embedding.npz
# 'landmark_indices'; checked against the file of MT's repository).
MP_LANDMARKS = np.array([276, 282, 283, 285, 293, 295, 296, 300, 334, 336, 46, 52, 53, 55, 63, 65, 66, 70, 105, 107,
                         249, 263, 362, 373, 374, 380, 381, 382, 384, 385, 386, 387, 388, 390, 398, 466, 7, 33, 133,
                         144, 145, 153, 154, 155, 157, 158, 159, 160, 161, 163, 173, 246, 168, 6, 197, 195, 5, 4, 129,
                         98, 97, 2, 326, 327, 358, 0, 13, 14, 17, 37, 39, 40, 61, 78, 80, 81, 82, 84, 87, 88, 91, 95,
                         146, 178, 181, 185, 191, 267, 269, 270, 291, 308, 310, 311, 312, 314, 317, 318, 321, 324,
                         375, 402, 405, 409, 415])
NOSE_LANDMARK_IDS = np.array([168, 6, 197, 195, 5, 4, 129, 98, 97, 2, 326, 327, 358])  # MT:.../landmarks.py:44
LIPS_LANDMARK_IDS = np.unique(MP_LANDMARKS[65:])  # keypoints_to_array(FACEMESH_LIPS): the lips block of the 105


def get_idx(index):  # MT:flame/mediapipe/landmarks.py:55-60
    idx = []
    for i, j in enumerate(MP_LANDMARKS):
        if j in index:
            idx.append(i)
    return idx


# ------------------------------------------------------------------ MT:util.py
def scale_lmks(opt_lmks, target_lmks, image_size):  # MT:util.py:93-98
    h, w = image_size
    size = torch.tensor([1 / w, 1 / h]).to(opt_lmks)[None, None, ...]
    opt_lmks = opt_lmks * size
    target_lmks = target_lmks * size
    return opt_lmks, target_lmks


def lmk_loss(opt_lmks, target_lmks, image_size, lmk_mask):  # MT:util.py:101-104
    opt_lmks, target_lmks = scale_lmks(opt_lmks, target_lmks, image_size)
    diff = torch.pow(opt_lmks - target_lmks, 2)
    return (diff * lmk_mask).mean()


def face_lmk_loss(opt_lmks, target_lmks, image_size, is_mediapipe, lmk_mask):  # MT:util.py:107-112 (+39-42)
    nose_mask_mp = torch.ones([1, 105, 2]).to(opt_lmks)
    nose_mask_mp[:, get_idx(NOSE_LANDMARK_IDS), :] *= 8.0
    opt_lmks, target_lmks = scale_lmks(opt_lmks, target_lmks, image_size)
    diff = torch.pow(opt_lmks - target_lmks, 2)
    assert is_mediapipe
    return (diff * nose_mask_mp * lmk_mask).mean()


def oval_lmk_loss(opt_lmks, target_lmks, image_size, lmk_mask):  # MT:util.py:115-119
    oval_ids = [i for i in range(17)]
    opt_lmks, target_lmks = scale_lmks(opt_lmks, target_lmks, image_size)
    diff = torch.pow(opt_lmks[:, oval_ids, :] - target_lmks[:, oval_ids, :], 2)
    return (diff * lmk_mask[:, oval_ids, :]).mean()


def mouth_lmk_loss(opt_lmks, target_lmks, image_size, is_mediapipe, lmk_mask):  # MT:util.py:122-129
    mouth_ids = get_idx(LIPS_LANDMARK_IDS)
    opt_lmks, target_lmks = scale_lmks(opt_lmks, target_lmks, image_size)
    diff = torch.pow(opt_lmks[:, mouth_ids, :] - target_lmks[:, mouth_ids, :], 2)
    return (diff * lmk_mask[:, mouth_ids, :]).mean()


def eye_closure_lmk_loss(opt_lmks, target_lmks, image_size, lmk_mask):  # MT:util.py:132-139
    upper_eyelid_lmk_ids = [47, 46, 45, 29, 30, 31]
    lower_eyelid_lmk_ids = [39, 40, 41, 25, 24, 23]
    opt_lmks, target_lmks = scale_lmks(opt_lmks, target_lmks, image_size)
    diff_opt = opt_lmks[:, upper_eyelid_lmk_ids, :] - opt_lmks[:, lower_eyelid_lmk_ids, :]
    diff_target = target_lmks[:, upper_eyelid_lmk_ids, :] - target_lmks[:, lower_eyelid_lmk_ids, :]
    diff = torch.pow(diff_opt - diff_target, 2)
    return (diff * lmk_mask[:, upper_eyelid_lmk_ids, :]).mean()


def pixel_loss(opt_img, target_img, mask=None):  # MT:util.py:152-158
    if mask is None:
        mask = torch.ones_like(opt_img)
    n_pixels = torch.sum((mask[:, 0, ...] > 0).int()).detach().float()
    loss = (mask * (opt_img - target_img)).abs()
    loss = torch.sum(loss) / n_pixels
    return loss


def round_up_to_odd(f):  # MT:util.py:366-367
    return int(np.ceil(f) // 2 * 2 + 1)


def get_aspect_ratio(images):  # MT:util.py:328-335
    h, w = images.shape[2:4]
    ratio = w / h
    if ratio > 1.0:
        aspect_ratio = torch.tensor([1. / ratio, 1.0]).float()[None]
    else:
        aspect_ratio = torch.tensor([1.0, ratio]).float()[None]
    return aspect_ratio


def _get_gaussian_kernel1d(kernel_size, sigma):  # TV _functional_tensor.py
    ksize_half = (kernel_size - 1) * 0.5
    x = torch.linspace(-ksize_half, ksize_half, steps=kernel_size)
    pdf = torch.exp(-0.5 * (x / sigma).pow(2))
    kernel1d = pdf / pdf.sum()
    return kernel1d


def gaussian_blur(img, kernel_size, sigma):  # TV gaussian_blur (tensor path)
    kernel1d_x = _get_gaussian_kernel1d(kernel_size[0], sigma[0]).to(img)
    kernel1d_y = _get_gaussian_kernel1d(kernel_size[1], sigma[1]).to(img)
    kernel = torch.mm(kernel1d_y[:, None], kernel1d_x[None, :])
    kernel = kernel.expand(img.shape[-3], 1, kernel.shape[0], kernel.shape[1])
    padding = [kernel_size[0] // 2, kernel_size[0] // 2, kernel_size[1] // 2, kernel_size[1] // 2]
    img = F.pad(img, padding, mode="reflect")
    return F.conv2d(img, kernel, groups=img.shape[-3])


def get_gaussian_pyramid(levels, input, kernel_size, sigma):  # MT:util.py:297-307
    pyramid = []
    images = input.clone()
    for k, level in enumerate(reversed(levels)):
        image_size, iters = level
        size = [int(image_size[0]), int(image_size[1])]
        images = F.interpolate(images, size, mode='bilinear', align_corners=False)
        images = gaussian_blur(images, [kernel_size, kernel_size], sigma=[sigma, sigma])
        pyramid.append((images, iters, size, image_size))
    return list(reversed(pyramid))


def vertex_normals(vertices, faces):  # MT:util.py:186-222 (= P3D verts_normals_packed)
    bs, nv = vertices.shape[:2]
    normals = torch.zeros(bs * nv, 3).to(vertices)
    faces = faces + (torch.arange(bs, dtype=torch.int32) * nv)[:, None, None]
    vertices_faces = vertices.reshape((bs * nv, 3))[faces.long()]
    faces = faces.view(-1, 3)
    vertices_faces = vertices_faces.view(-1, 3, 3)
    normals.index_add_(0, faces[:, 1].long(), torch.cross(vertices_faces[:, 2] - vertices_faces[:, 1],
                                                          vertices_faces[:, 0] - vertices_faces[:, 1], dim=-1))
    normals.index_add_(0, faces[:, 2].long(), torch.cross(vertices_faces[:, 0] - vertices_faces[:, 2],
                                                          vertices_faces[:, 1] - vertices_faces[:, 2], dim=-1))
    normals.index_add_(0, faces[:, 0].long(), torch.cross(vertices_faces[:, 1] - vertices_faces[:, 0],
                                                          vertices_faces[:, 2] - vertices_faces[:, 0], dim=-1))
    normals = F.normalize(normals, eps=1e-6, dim=1)
    return normals.reshape((bs, nv, 3))


# ------------------------------------------------------------------ P3D transforms / cameras
def rotation_6d_to_matrix(d6):  # P3D:pytorch3d/transforms/rotation_conversions.py:601-622
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = F.normalize(a1, dim=-1)
    b2 = a2 - (b1 * a2).sum(-1, keepdim=True) * b1
    b2 = F.normalize(b2, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack((b1, b2, b3), dim=-2)


def look_at_view_transform(dist=1.0, elev=0.0, azim=0.0):  # P3D:renderer/cameras.py look_at_view_transform
    dist, elev, azim = (torch.tensor([float(v)], dtype=torch.float64) for v in (dist, elev, azim))
    at = torch.tensor(((0, 0, 0),), dtype=torch.float64)
    up = torch.tensor(((0, 1, 0),), dtype=torch.float64)
    elev, azim = math.pi / 180.0 * elev, math.pi / 180.0 * azim  # degrees=True
    x = dist * torch.cos(elev) * torch.sin(azim)  # camera_position_from_spherical_angles
    y = dist * torch.sin(elev)
    z = dist * torch.cos(elev) * torch.cos(azim)
    C = torch.stack([x, y, z], dim=1)
    z_axis = F.normalize(at - C, eps=1e-5)  # look_at_rotation
    x_axis = F.normalize(torch.cross(up, z_axis, dim=1), eps=1e-5)
    y_axis = F.normalize(torch.cross(z_axis, x_axis, dim=1), eps=1e-5)
    is_close = torch.isclose(x_axis, torch.tensor(0.0, dtype=torch.float64), atol=5e-3).all(dim=1, keepdim=True)
    if is_close.any():
        replacement = F.normalize(torch.cross(y_axis, z_axis, dim=1), eps=1e-5)
        x_axis = torch.where(is_close, replacement, x_axis)
    R = torch.cat((x_axis[:, None, :], y_axis[:, None, :], z_axis[:, None, :]), dim=1)
    R = R.transpose(1, 2)
    T = -torch.bmm(R.transpose(1, 2), C[:, :, None])[:, :, 0]
    return R, T


def transform_points_screen(points, R, T, focal_length, principal_point, image_size):
    """P3D ``PerspectiveCameras(in_ndc=True).transform_points_screen``: world->view 4x4 (row vectors), the NDC
    projection ``K`` of ``_get_sfm_calibration_matrix`` (orthographic=False), divide by w, then
    ``get_ndc_to_screen_transform`` (x_s = -s x + W/2 with s = min(H, W)/2, ``cameras.py:1763-1830``)."""
    B = points.shape[0]
    world_to_view = torch.zeros(B, 4, 4).to(points)
    world_to_view[:, :3, :3] = R
    world_to_view[:, 3, :3] = T
    world_to_view[:, 3, 3] = 1.0
    fx, fy = focal_length[:, 0], focal_length[:, -1]
    px, py = principal_point[:, 0], principal_point[:, 1]
    K = torch.zeros(B, 4, 4).to(points)
    K[:, 0, 0], K[:, 0, 2], K[:, 1, 1], K[:, 1, 2] = fx, px, fy, py
    K[:, 3, 2], K[:, 2, 3] = 1.0, 1.0
    full = world_to_view @ K.transpose(1, 2)
    homogeneous = torch.cat([points, torch.ones_like(points[..., :1])], -1) @ full
    ndc = homogeneous[..., :3] / homogeneous[..., 3:]
    H, W = float(image_size[0]), float(image_size[1])
    s = min(H, W) / 2.0
    x = -s * ndc[..., 0] + W / 2.0
    y = -s * ndc[..., 1] + H / 2.0
    return torch.stack([x, y], -1)


def ndc_vertices(points, R, T, focal_length, principal_point):
    """``MeshRasterizer.transform`` (P3D): NDC x, y of the perspective projection and z = view depth."""
    view = points @ R + T[:, None]
    xy = focal_length[:, None] * view[..., :2] / view[..., 2:] + principal_point[:, None]
    return torch.cat([xy, view[..., 2:]], -1)


def opencv_from_cameras_projection(R, T, focal_length, principal_point, image_size):
    # P3D:pytorch3d/renderer/camera_conversions.py _opencv_from_cameras_projection
    R_pytorch3d = R.clone()
    T_pytorch3d = T.clone()
    focal_pytorch3d = focal_length
    p0_pytorch3d = principal_point
    T_pytorch3d[:, :2] *= -1
    R_pytorch3d[:, :, :2] *= -1
    tvec = T_pytorch3d
    R = R_pytorch3d.permute(0, 2, 1)
    image_size_wh = image_size.to(R).flip(dims=(1,))
    scale = image_size_wh.to(R).min(dim=1, keepdim=True)[0] / 2.0
    scale = scale.expand(-1, 2)
    c0 = image_size_wh / 2.0
    principal_point = -p0_pytorch3d * scale + c0
    focal_length = focal_pytorch3d * scale
    camera_matrix = torch.zeros_like(R)
    camera_matrix[:, :2, 2] = principal_point
    camera_matrix[:, 2, 2] = 1.0
    camera_matrix[:, 0, 0] = focal_length[:, 0]
    camera_matrix[:, 1, 1] = focal_length[:, 1]
    return R, tvec, camera_matrix


# ------------------------------------------------------------------ MT:flame/FLAME.py + flame/lbs.py
def rot_mat_to_euler(rot_mats):  # MT:flame/FLAME.py:51-57
    sy = torch.sqrt(rot_mats[:, 0, 0] * rot_mats[:, 0, 0] + rot_mats[:, 1, 0] * rot_mats[:, 1, 0])
    return torch.atan2(-rot_mats[:, 2, 0], sy)


def find_dynamic_lmk_idx(pose, neck_kin_chain, cameras):  # MT:flame/FLAME.py:142-158
    batch_size = pose.shape[0]
    aa_pose = torch.index_select(pose.view(batch_size, -1, 6), 1, neck_kin_chain)
    rot_mats = rotation_6d_to_matrix(aa_pose.view(-1, 6)).view([batch_size, -1, 3, 3])
    rel_rot_mat = torch.eye(3).to(pose).unsqueeze_(dim=0).expand(batch_size, -1, -1)
    for idx in range(len(neck_kin_chain)):
        rel_rot_mat = torch.bmm(rot_mats[:, idx], rel_rot_mat)
    rel_rot_mat = cameras @ rel_rot_mat
    y_rot_angle = torch.round(torch.clamp(-rot_mat_to_euler(rel_rot_mat) * 180.0 / np.pi, max=39)).to(dtype=torch.long)
    neg_mask = y_rot_angle.lt(0).to(dtype=torch.long)
    mask = y_rot_angle.lt(-39).to(dtype=torch.long)
    neg_vals = mask * 78 + (1 - mask) * (39 - y_rot_angle)
    y_rot_angle = (neg_mask * neg_vals + (1 - neg_mask) * y_rot_angle)
    return y_rot_angle


def vertices2landmarks(vertices, faces, lmk_faces_idx, lmk_bary_coords):  # MT:flame/FLAME.py:184-193
    batch_size, num_verts = vertices.shape[:2]
    lmk_faces = torch.index_select(faces, 0, lmk_faces_idx.view(-1).to(torch.long)).view(batch_size, -1, 3)
    lmk_faces = lmk_faces + torch.arange(batch_size, dtype=torch.long).view(-1, 1, 1) * num_verts
    lmk_vertices = vertices.reshape(-1, 3)[lmk_faces].view(batch_size, -1, 3, 3)
    return torch.einsum('blfi,blf->bli', [lmk_vertices, lmk_bary_coords])


def lbs_6d(betas, pose, v_template, shapedirs, posedirs, J_regressor, parents, lbs_weights):
    """MT:flame/lbs.py:171-253 (smplx lbs with ``rotation_6d_to_matrix``)."""
    batch_size = max(betas.shape[0], pose.shape[0])
    v_shaped = v_template + torch.einsum('bl,mkl->bmk', [betas, shapedirs])
    J = torch.einsum('bik,ji->bjk', [v_shaped, J_regressor])
    ident = torch.eye(3).to(betas)
    rot_mats = rotation_6d_to_matrix(pose.view(-1, 6)).view([batch_size, -1, 3, 3])
    pose_feature = (rot_mats[:, 1:, :, :] - ident).view([batch_size, -1])
    pose_offsets = torch.matmul(pose_feature, posedirs).view(batch_size, -1, 3)
    v_posed = pose_offsets + v_shaped
    # batch_rigid_transform
    joints = torch.unsqueeze(J, dim=-1)
    rel_joints = joints.clone()
    rel_joints[:, 1:] -= joints[:, parents[1:]]
    transforms_mat = torch.cat([F.pad(rot_mats.reshape(-1, 3, 3), [0, 0, 0, 1]),
                                F.pad(rel_joints.reshape(-1, 3, 1), [0, 0, 0, 1], value=1)], dim=2)
    transforms_mat = transforms_mat.reshape(-1, joints.shape[1], 4, 4)
    transform_chain = [transforms_mat[:, 0]]
    for i in range(1, parents.shape[0]):
        transform_chain.append(torch.matmul(transform_chain[parents[i]], transforms_mat[:, i]))
    transforms = torch.stack(transform_chain, dim=1)
    joints_homogen = F.pad(joints, [0, 0, 0, 1])
    rel_transforms = transforms - F.pad(torch.matmul(transforms, joints_homogen), [3, 0, 0, 0, 0, 0, 0, 0])
    W = lbs_weights.unsqueeze(dim=0).expand([batch_size, -1, -1])
    T = torch.matmul(W, rel_transforms.view(batch_size, joints.shape[1], 16)).view(batch_size, -1, 4, 4)
    homogen_coord = torch.ones([batch_size, v_posed.shape[1], 1]).to(betas)
    v_posed_homo = torch.cat([v_posed, homogen_coord], dim=2)
    v_homo = torch.matmul(T, torch.unsqueeze(v_posed_homo, dim=-1))
    return v_homo[:, :, :3, 0]


def flame_forward(flame, shape_params, cameras, jaw, eyes, expression, eyelid_params=None, l_eyelid=None,
                  r_eyelid=None, mp_faces=None, mp_bary=None):
    """MT:flame/FLAME.py:195-270 on the buffers of a facegeom FLAME (global, neck = I6D; no translation)."""
    batch_size = shape_params.shape[0]
    I = torch.tensor([[1.0, 0, 0, 0, 1, 0]]).to(shape_params).expand(batch_size, 6)
    betas = torch.cat([shape_params, expression], dim=1)
    full_pose = torch.cat([I, I, jaw, eyes], dim=1)
    template_vertices = flame.v_template.unsqueeze(0).expand(batch_size, -1, -1)
    vertices = lbs_6d(betas, full_pose, template_vertices, flame.shapedirs, flame.posedirs, flame.J_regressor,
                      flame.parents, flame.lbs_weights)
    if eyelid_params is not None:
        vertices = vertices + r_eyelid.expand(batch_size, -1, -1) * eyelid_params[:, 1:2, None]
        vertices = vertices + l_eyelid.expand(batch_size, -1, -1) * eyelid_params[:, 0:1, None]
    lmk_faces_idx = flame.lmk_faces_idx.unsqueeze(dim=0).expand(batch_size, -1).contiguous()
    lmk_bary_coords = flame.lmk_bary_coords.unsqueeze(dim=0).expand(batch_size, -1, -1).contiguous()
    rows = find_dynamic_lmk_idx(full_pose, torch.tensor([1, 0]), cameras)
    dyn_lmk_faces_idx = torch.index_select(flame.dynamic_lmk_faces_idx, 0, rows)
    dyn_lmk_b_coords = torch.index_select(flame.dynamic_lmk_bary_coords, 0, rows)
    lmk_faces_idx = torch.cat([dyn_lmk_faces_idx, lmk_faces_idx], 1)
    lmk_bary_coords = torch.cat([dyn_lmk_b_coords, lmk_bary_coords], 1)
    lmk68 = vertices2landmarks(vertices, flame.faces, lmk_faces_idx, lmk_bary_coords)
    mp = None
    if mp_faces is not None:
        mp = vertices2landmarks(vertices, flame.faces, mp_faces.unsqueeze(0).expand(batch_size, -1).contiguous(),
                                mp_bary.unsqueeze(0).expand(batch_size, -1, -1).contiguous())
    return vertices, lmk68, mp, rows


# ------------------------------------------------------------------ P3D rasterizer (brute force) + MT:renderer.py
def edge_function(p, v0, v1):  # P3D EdgeFunctionForward
    return (p[..., 0] - v0[..., 0]) * (v1[..., 1] - v0[..., 1]) - (p[..., 1] - v0[..., 1]) * (v1[..., 0] - v0[..., 0])


def rasterize_p3d(ndc, faces, H, W, cull_backfaces=True):
    """PyTorch3D's ``rasterize_meshes`` for one mesh, ``faces_per_pixel=1``, ``blur_radius=0``,
    ``perspective_correct=True``, brute force: ``ndc [V, 3]`` (NDC x, y; view z). Pixel (row r, col c) has its
    centre at NDC ``((W - 1 - 2c)/ (2 s) ... )`` i.e. ``x = (W/2 - c - 0.5) / s``, ``y = (H/2 - r - 0.5) / s``.
    Returns ``pix_to_face [H, W]`` (-1 empty) and perspective-correct ``bary [H, W, 3]``."""
    s = min(H, W) / 2.0
    cols = (W / 2.0 - torch.arange(W, dtype=torch.float64) - 0.5) / s
    rows = (H / 2.0 - torch.arange(H, dtype=torch.float64) - 0.5) / s
    py, px = torch.meshgrid(rows, cols, indexing="ij")
    p = torch.stack([px, py], -1).reshape(-1, 1, 2)  # [P, 1, 2]
    v = ndc.double()[faces]  # [F, 3, 3]
    v0, v1, v2 = v[None, :, 0], v[None, :, 1], v[None, :, 2]
    area = edge_function(v0[..., :2], v1[..., :2], v2[..., :2])  # [1, F]
    w0 = edge_function(p, v1[..., :2], v2[..., :2]) / area
    w1 = edge_function(p, v2[..., :2], v0[..., :2]) / area
    w2 = edge_function(p, v0[..., :2], v1[..., :2]) / area
    z0, z1, z2 = v0[..., 2], v1[..., 2], v2[..., 2]
    c0, c1, c2 = w0 * z1 * z2, z0 * w1 * z2, z0 * z1 * w2  # BarycentricPerspectiveCorrectionForward
    denom = c0 + c1 + c2
    b0, b1, b2 = c0 / denom, c1 / denom, c2 / denom
    pz = b0 * z0 + b1 * z1 + b2 * z2
    inside = (w0 > 0) & (w1 > 0) & (w2 > 0) & (area.abs() > 1e-8) & (pz >= 0)
    if cull_backfaces:
        inside &= area >= 0
    depth = torch.where(inside, pz, torch.full_like(pz, math.inf))
    best = depth.argmin(1)
    hit = torch.isfinite(depth.min(1).values)
    index = torch.arange(len(best))
    bary = torch.stack([b0[index, best], b1[index, best], b2[index, best]], -1)
    pix_to_face = torch.where(hit, best, torch.full_like(best, -1))
    return pix_to_face.reshape(H, W), bary.reshape(H, W, 3) * hit.reshape(H, W, 1)


def interpolate_face_attributes(pix_to_face, bary, face_attributes):
    """``TrackerRasterizer.forward``'s gather (MT:tracker_rasterizer.py:46-58) for one image:
    ``face_attributes [F, 3, D]`` -> ``[D, H, W]``, 0 where empty."""
    mask = pix_to_face == -1
    idx = pix_to_face.clamp(min=0)
    values = (bary[..., None] * face_attributes[idx]).sum(-2)
    values[mask] = 0
    return values.permute(2, 0, 1)


def add_SHlight(normal_images, sh_coeff):  # MT:renderer.py:95-126
    pi = np.pi
    constant_factor = torch.tensor([1 / np.sqrt(4 * pi), ((2 * pi) / 3) * (np.sqrt(3 / (4 * pi))),
                                    ((2 * pi) / 3) * (np.sqrt(3 / (4 * pi))), ((2 * pi) / 3) * (np.sqrt(3 / (4 * pi))),
                                    (pi / 4) * (3) * (np.sqrt(5 / (12 * pi))), (pi / 4) * (3) * (np.sqrt(5 / (12 * pi))),
                                    (pi / 4) * (3) * (np.sqrt(5 / (12 * pi))),
                                    (pi / 4) * (3 / 2) * (np.sqrt(5 / (12 * pi))),
                                    (pi / 4) * (1 / 2) * (np.sqrt(5 / (4 * pi)))]).to(normal_images)
    N = normal_images
    sh = torch.stack([N[:, 0] * 0. + 1., N[:, 0], N[:, 1], N[:, 2], N[:, 0] * N[:, 1], N[:, 0] * N[:, 2],
                      N[:, 1] * N[:, 2], N[:, 0] ** 2 - N[:, 1] ** 2, 3 * (N[:, 2] ** 2) - 1], 1)
    sh = sh * constant_factor[None, :, None, None]
    return torch.sum(sh_coeff[:, :, :, None, None] * sh[:, :, None, :, :], 1)


def render(vertices, faces, ndc, albedo_vertex, sh, render_mask, H, W):
    """MT:renderer.py:143-198 for one image with per-vertex albedo (the UV path's grid_sample replaced by the
    interpolation of vertex colours): ``images, mask_images_rendering, position_images [2, H, W], alpha``."""
    pix_to_face, bary = rasterize_p3d(ndc, faces, H, W)
    normals = vertex_normals(vertices.double()[None], faces[None])[0]
    face_attr = torch.cat([ndc[:, :2].double(), normals, render_mask.double()[:, None].expand(-1, 3),
                           albedo_vertex.double()], -1)[faces]  # [F, 3, D]
    values = interpolate_face_attributes(pix_to_face, bary, face_attr)
    alpha = (pix_to_face >= 0).double()[None, None]
    shading = add_SHlight(values[None, 2:5], sh.double())
    images = values[None, 8:11] * shading * alpha
    return images, (values[None, 5:8] > 0).double(), values[:2], alpha, pix_to_face


def render_depth(vertices, faces, ndc, depth_mask, H, W):
    """MT:renderer.py:128-141 for one image: view-space positions and the depth mask interpolated through a
    fresh culled rasterisation; ``view_vertices_images * (mask > 0)``; the depth map is channel 2
    (MT:tracker.py:633). ``ndc [V, 3]``'s z is the view z; view x, y are not needed for channel 2."""
    pix_to_face, bary = rasterize_p3d(ndc, faces, H, W)
    view = torch.cat([torch.zeros_like(ndc[:, :2]), ndc[:, 2:3]], -1).double()
    mask = depth_mask.double()[:, None].expand(-1, 3)
    rendering = interpolate_face_attributes(pix_to_face, bary, torch.cat([view, mask], -1)[faces])
    return rendering[0:3] * (rendering[3:6] > 0)


def depth_png(depth_view):  # MT:tracker.py:633-634 (cv2.imwrite of the uint16 array)
    depth = depth_view.permute(1, 2, 0)[..., 2:].cpu().numpy() * 1000.0
    return depth.astype(np.uint16)[..., 0]


def save_canonical_vertices(flame, shape, camera_R):  # MT:tracker.py:227-236
    from scipy.spatial.transform import Rotation as R
    rotvec = np.zeros(3)
    rotvec[0] = 12.0 * np.pi / 180.0
    matrix = torch.from_numpy(R.from_rotvec(rotvec).as_matrix())[None, ...].to(shape)
    jaw = matrix[:, :2, :].reshape(1, 6)  # P3D matrix_to_rotation_6d
    I = torch.tensor([[1.0, 0, 0, 0, 1, 0]]).to(shape)
    expression = torch.zeros(1, flame.n_exp).to(shape)  # FLAME's default expression_params (zeros)
    return flame_forward(flame, shape, torch.inverse(camera_R), jaw, torch.cat([I, I], 1), expression)[0]
