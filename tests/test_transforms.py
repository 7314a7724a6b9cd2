"""facegeom.transforms: round trips, equality with transcriptions of the authors' formulas
(PyTorch3D, Deep3DFaceRecon, DECA) and with scipy, gradcheck in float64."""
import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from facegeom import transforms as T
from facegeom.cameras import Camera, Pinhole, WeakPerspective

D = torch.float64


def rand(*shape, seed=0, scale=1.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=D) * scale


# ----------------------------------------------------------------------------- rotations

def test_axis_angle_matches_scipy_and_round_trips():
    aa = rand(50, 3, scale=1.2)
    R = T.axis_angle_to_matrix(aa)
    np.testing.assert_allclose(R.numpy(), Rotation.from_rotvec(aa.numpy()).as_matrix(), atol=1e-7)
    back = T.matrix_to_axis_angle(R)
    np.testing.assert_allclose(back.numpy(), Rotation.from_matrix(R.numpy()).as_rotvec(), atol=1e-7)
    small = aa[:aa.shape[0]] / aa.norm(dim=-1, keepdim=True) * torch.linspace(0, 3.1, aa.shape[0], dtype=D)[:, None]
    torch.testing.assert_close(T.matrix_to_axis_angle(T.axis_angle_to_matrix(small)), small, atol=1e-7, rtol=0)
    # every branch of the quaternion extraction: near-pi rotations about each axis
    for axis in torch.eye(3, dtype=D):
        v = axis * 3.0
        torch.testing.assert_close(T.matrix_to_axis_angle(T.axis_angle_to_matrix(v)), v, atol=1e-7, rtol=0)


def test_axis_angle_batch_shapes_and_identity():
    R = T.axis_angle_to_matrix(torch.zeros(2, 4, 3, dtype=D))
    assert R.shape == (2, 4, 3, 3)
    torch.testing.assert_close(T.matrix_to_axis_angle(R), torch.zeros(2, 4, 3, dtype=D))


def p3d_rotation_6d_to_matrix(d6):
    """Transcription of P3D:pytorch3d/transforms/rotation_conversions.py rotation_6d_to_matrix."""
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = torch.nn.functional.normalize(a1, dim=-1)
    b2 = a2 - (b1 * a2).sum(-1, keepdim=True) * b1
    b2 = torch.nn.functional.normalize(b2, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack((b1, b2, b3), dim=-2)


def test_rotation_6d_matches_pytorch3d_and_round_trips():
    d6 = rand(20, 6, seed=2)
    R = T.rotation_6d_to_matrix(d6)
    torch.testing.assert_close(R, p3d_rotation_6d_to_matrix(d6))
    torch.testing.assert_close(R @ R.transpose(-1, -2), torch.eye(3, dtype=D).expand(20, 3, 3))
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(20, dtype=D))
    # first two ROWS (PyTorch3D "dropping the last row")
    torch.testing.assert_close(T.matrix_to_rotation_6d(R), R[:, :2, :].reshape(20, 6))
    torch.testing.assert_close(T.rotation_6d_to_matrix(T.matrix_to_rotation_6d(R)), R)
    # the tracker's identity I6D
    torch.testing.assert_close(T.rotation_6d_to_matrix(torch.tensor([1.0, 0, 0, 0, 1, 0], dtype=D)),
                               torch.eye(3, dtype=D))


def deep3d_compute_rotation(angles):
    """Transcription of D3D:models/bfm.py:174-207 compute_rotation (returns R^T)."""
    b = angles.shape[0]
    ones, zeros = torch.ones([b, 1], dtype=D), torch.zeros([b, 1], dtype=D)
    x, y, z = angles[:, :1], angles[:, 1:2], angles[:, 2:]
    rot_x = torch.cat([ones, zeros, zeros, zeros, torch.cos(x), -torch.sin(x), zeros, torch.sin(x), torch.cos(x)],
                      dim=1).reshape([b, 3, 3])
    rot_y = torch.cat([torch.cos(y), zeros, torch.sin(y), zeros, ones, zeros, -torch.sin(y), zeros, torch.cos(y)],
                      dim=1).reshape([b, 3, 3])
    rot_z = torch.cat([torch.cos(z), -torch.sin(z), zeros, torch.sin(z), torch.cos(z), zeros, zeros, zeros, ones],
                      dim=1).reshape([b, 3, 3])
    rot = rot_z @ rot_y @ rot_x
    return rot.permute(0, 2, 1)


def test_euler_matches_deep3d_and_scipy():
    angles = rand(30, 3, seed=3, scale=0.8).clamp(-1.5, 1.5)  # y in (-pi/2, pi/2): unique angles
    R = T.euler_to_matrix(angles)
    torch.testing.assert_close(R.transpose(-1, -2), deep3d_compute_rotation(angles))
    scipy_R = Rotation.from_euler("ZYX", angles.flip(-1).numpy()).as_matrix()  # intrinsic Z, Y, X = Rz Ry Rx
    np.testing.assert_allclose(R.numpy(), scipy_R, atol=1e-12)
    # Deep3D transforms row vectors: face_shape @ rot == (R @ p^T)^T
    p = rand(30, 5, 3, seed=4)
    torch.testing.assert_close(p @ deep3d_compute_rotation(angles), p @ R.transpose(-1, -2))
    torch.testing.assert_close(T.matrix_to_euler(R), angles)
    with pytest.raises(ValueError, match="convention"):
        T.euler_to_matrix(angles, convention="xyz")


# ------------------------------------------------------------------------- DECA weak persp

def deca_batch_orth_proj(X, camera):
    """Transcription of DECA decalib/utils/util.py batch_orth_proj."""
    camera = camera.clone().view(-1, 1, 3)
    X_trans = X[:, :, :2] + camera[:, :, 1:]
    X_trans = torch.cat([X_trans, X[:, :, 2:]], 2)
    return camera[:, :, 0:1] * X_trans


def test_deca_pixels_and_the_half_pixel_trap():
    size = 224
    X = rand(2, 7, 3, seed=5, scale=0.1)
    cam = torch.tensor([[8.0, 0.01, -0.02], [6.0, -0.03, 0.02]], dtype=D)
    n = deca_batch_orth_proj(X, cam)[..., :2]
    n[..., 1] = -n[..., 1]  # DECA: landmarks2d[:, :, 1:] = -landmarks2d[:, :, 1:]
    deca_pixels = (n + 1) * size / 2  # DECA's drawing: n * size / 2 + size / 2 (edges at integers)
    projected = WeakPerspective(cam, size).project(X)
    torch.testing.assert_close(projected, deca_pixels - 0.5)
    torch.testing.assert_close(T.deca_to_pixels(n, size), projected)
    torch.testing.assert_close(T.pixels_to_deca(projected, size), n)
    # The trap: DECA normalises detector landmarks p as p / size * 2 - 1 (no half pixel).
    torch.testing.assert_close(T.deca_normalize_landmarks(projected + 0.5, size), n)
    offset = T.deca_normalize_landmarks(projected, size) - n
    torch.testing.assert_close(offset, torch.full_like(offset, -1.0 / size))  # half a pixel, in [-1, 1] units


def test_weak_perspective_pixel_affine():
    cam = torch.tensor([[5.0, 0.1, -0.2], [7.0, 0.0, 0.3]], dtype=D)
    X = rand(2, 6, 3, seed=6, scale=0.1)
    for size in (224, (96, 128)):
        A = T.weak_perspective_to_pixel_affine(cam, size)
        u = X[..., :2] @ A[:, :, :2].transpose(1, 2) + A[:, None, :, 2]
        torch.testing.assert_close(u, WeakPerspective(cam, size).project(X))
        torch.testing.assert_close(T.weak_perspective_from_pixel_affine(A, size), cam)


# ------------------------------------------------------------------------------ OpenCV

def test_opencv_round_trip_through_pinhole():
    K = torch.tensor([[[500.0, 0, 63.5], [0, 510.0, 40.2], [0, 0, 1]]], dtype=D)
    R = T.axis_angle_to_matrix(rand(1, 3, seed=7, scale=0.2))
    t = torch.tensor([[0.01, -0.02, 1.5]], dtype=D)
    cam = Pinhole.from_opencv(K, R, t, image_size=(96, 128))
    K2, R2, t2 = cam.to_opencv()
    torch.testing.assert_close(K2, K)
    torch.testing.assert_close(R2, R)
    X = rand(1, 9, 3, seed=8, scale=0.1)
    x = X @ R.transpose(1, 2) + t[:, None]
    want = torch.stack([500 * x[..., 0] / x[..., 2] + 63.5, 510 * x[..., 1] / x[..., 2] + 40.2], -1)  # cv2.projectPoints
    torch.testing.assert_close(cam.project(X), want)
    with pytest.raises(ValueError, match="skew"):
        T.intrinsics_from_matrix(torch.tensor([[1.0, 0.1, 0], [0, 1, 0], [0, 0, 1]], dtype=D))


# --------------------------------------------------------------------------- PyTorch3D

def p3d_project_screen(X, R, Tv, f, p, H, W):
    """PyTorch3D PerspectiveCameras(in_ndc=True).transform_points_screen, transcribed
    (P3D:pytorch3d/renderer/cameras.py:1763-1830): X_view = X R + T; ndc = f X/Z + p;
    screen = (W/2, H/2) - min(H, W)/2 * ndc."""
    Xv = X @ R + Tv[:, None, :]
    ndc = f[:, None, :] * Xv[..., :2] / Xv[..., 2:] + p[:, None, :]
    s = min(H, W) / 2.0
    return torch.stack([W / 2.0 - s * ndc[..., 0], H / 2.0 - s * ndc[..., 1]], -1)


def p3d_cameras_from_opencv(R, tvec, K, image_size_hw):
    """Transcription of pytorch3d/renderer/camera_conversions.py _cameras_from_opencv_projection."""
    focal_length = torch.stack([K[:, 0, 0], K[:, 1, 1]], dim=-1)
    principal_point = K[:, :2, 2]
    image_size_wh = image_size_hw.to(R).flip(dims=(1,))
    scale = image_size_wh.min(dim=1, keepdim=True)[0] / 2.0
    scale = scale.expand(-1, 2)
    c0 = image_size_wh / 2.0
    focal_p3d = focal_length / scale
    p0_p3d = -(principal_point - c0) / scale
    R_p3d = R.clone().permute(0, 2, 1)
    T_p3d = tvec.clone()
    R_p3d[:, :, :2] *= -1
    T_p3d[:, :2] *= -1
    return R_p3d, T_p3d, focal_p3d, p0_p3d


@pytest.mark.parametrize("hw", [(512, 512), (48, 64), (64, 40)])
def test_pytorch3d_ndc_camera_to_pixels(hw):
    H, W = hw
    # the tracker's initial camera: look_at_view_transform(dist=1): R = diag(-1, 1, -1), T = (0, 0, 1)
    R = (torch.diag(torch.tensor([-1.0, 1.0, -1.0], dtype=D)) @ T.axis_angle_to_matrix(rand(3, seed=9, scale=0.1)))[None]
    Tv = torch.tensor([[0.01, 0.02, 1.0]], dtype=D)
    f = torch.tensor([[5000.0 / H, 5000.0 / H * 1.01]], dtype=D)
    p = torch.tensor([[0.02, -0.03]], dtype=D)
    X = rand(1, 8, 3, seed=10, scale=0.05)
    screen = p3d_project_screen(X, R, Tv, f, p, H, W)
    cam = Pinhole.from_pytorch3d(R, Tv, f, p, image_size=hw)
    torch.testing.assert_close(cam.project(X), screen - 0.5)
    xy_ndc = T.screen_to_ndc(screen, hw)
    torch.testing.assert_close(T.ndc_to_pixels(xy_ndc, hw), screen - 0.5)
    torch.testing.assert_close(T.pixels_to_ndc(screen - 0.5, hw), xy_ndc)
    torch.testing.assert_close(T.ndc_to_screen(xy_ndc, hw), screen)
    back = cam.to_pytorch3d()
    for got, want in zip(back, (R, Tv, f, p)):
        torch.testing.assert_close(got, want)
    # half_pixel=False is PyTorch3D's own cameras_from_opencv_projection
    K, R_cv, t_cv = T.pytorch3d_to_opencv(R, Tv, f, p, hw, half_pixel=False)
    ref = p3d_cameras_from_opencv(R_cv, t_cv, K, torch.tensor([hw]))
    for got, want in zip(T.opencv_to_pytorch3d(K, R_cv, t_cv, hw, half_pixel=False), ref):
        torch.testing.assert_close(got, want)
    for got, want in zip(ref, (R, Tv, f, p)):
        torch.testing.assert_close(got, want)


def test_pytorch3d_pixel_centre_lands_on_its_pixel():
    # pixel i's centre is x_s = i + 0.5 in PyTorch3D screen space, u = i here.
    hw = (4, 6)
    pixels = torch.tensor([[0.0, 0.0], [5.0, 3.0]], dtype=D)
    ndc = T.pixels_to_ndc(pixels, hw)
    s = 2.0  # min(4, 6) / 2
    torch.testing.assert_close(ndc, torch.tensor([[(3 - 0.5) / s, (2 - 0.5) / s], [(3 - 5.5) / s, (2 - 3.5) / s]],
                                                 dtype=D))


# --------------------------------------------------------------------- nvdiffrast clip

def test_projection_matrix_matches_pixel_centres_and_camera_to_clip():
    K = torch.tensor([[[300.0, 0, 30.2], [0, 280.0, 22.7], [0, 0, 1]]], dtype=D)
    hw, near, far = (48, 64), 0.5, 5.0
    P = T.opencv_projection_matrix(K, hw, near, far)
    x = torch.cat([rand(1, 10, 2, seed=11, scale=0.1), torch.rand(1, 10, 1, dtype=D) + 1.0], -1)
    clip = torch.cat([x, torch.ones_like(x[..., :1])], -1) @ P.transpose(1, 2)
    ndc = clip[..., :3] / clip[..., 3:]
    u = 300 * x[..., 0] / x[..., 2] + 30.2
    v = 280 * x[..., 1] / x[..., 2] + 22.7
    torch.testing.assert_close(ndc[..., 0], (u + 0.5) / 64 * 2 - 1)
    torch.testing.assert_close(ndc[..., 1], 1 - (v + 0.5) / 48 * 2)
    torch.testing.assert_close(clip[..., 3], x[..., 2])
    z = torch.tensor([[near, far]], dtype=D)
    zc = T.opencv_projection_matrix(K, hw, near, far)[0, 2, 2] * z + P[0, 2, 3]
    torch.testing.assert_close(zc / z, torch.tensor([[-1.0, 1.0]], dtype=D))
    cam = Pinhole.from_K(K, image_size=hw, near=near, far=far)
    torch.testing.assert_close(cam.to_clip(x), clip)
    torch.testing.assert_close(Camera.to_clip(cam, x), clip)  # the generic pixel-based path


# ------------------------------------------------------------------------ gradcheck etc.

def test_gradcheck():
    g = torch.autograd.gradcheck
    aa = rand(4, 3, seed=12).requires_grad_()
    assert g(T.axis_angle_to_matrix, (aa,))
    R = T.axis_angle_to_matrix(rand(4, 3, seed=13)).detach().requires_grad_()
    assert g(T.matrix_to_axis_angle, (R,))
    assert g(T.rotation_6d_to_matrix, (rand(4, 6, seed=14).requires_grad_(),))
    assert g(T.matrix_to_rotation_6d, (R,))
    ang = rand(4, 3, seed=15, scale=0.5).requires_grad_()
    assert g(T.euler_to_matrix, (ang,))
    assert g(T.matrix_to_euler, (T.euler_to_matrix(ang).detach().requires_grad_(),))
    cam = torch.tensor([[5.0, 0.1, -0.2]], dtype=D, requires_grad=True)
    assert g(lambda c: T.weak_perspective_to_pixel_affine(c, (32, 48)), (cam,))
    Rp = T.axis_angle_to_matrix(rand(1, 3, seed=16, scale=0.1)).detach().requires_grad_()
    Tv = torch.tensor([[0.0, 0.0, 1.0]], dtype=D, requires_grad=True)
    f = torch.tensor([[9.0]], dtype=D, requires_grad=True)
    p = torch.tensor([[0.01, 0.02]], dtype=D, requires_grad=True)
    assert g(lambda *a: T.pytorch3d_to_opencv(*a, image_size=(40, 50)), (Rp, Tv, f, p))
    fc = torch.tensor([300.0, 280.0, 30.0, 22.0], dtype=D, requires_grad=True)
    assert g(lambda v: T.opencv_projection_matrix(T.intrinsics_matrix(v[:2], v[2:]), (48, 64)), (fc,))
    assert g(lambda q: T.pixels_to_ndc(q, (40, 50)), (rand(3, 2, seed=17).requires_grad_(),))


def test_small_angle_axis_angle_gradient_is_finite():
    R = T.axis_angle_to_matrix(torch.tensor([1e-5, 0, 0], dtype=D)).requires_grad_()
    T.matrix_to_axis_angle(R).sum().backward()
    assert torch.isfinite(R.grad).all()


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="d6"):
        T.rotation_6d_to_matrix(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="matrix"):
        T.matrix_to_axis_angle(torch.zeros(3, 3, 2))
    with pytest.raises(TypeError, match="angles"):
        T.euler_to_matrix(torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="image_size"):
        T.ndc_to_screen(torch.zeros(2), (0, 4))
    with pytest.raises(ValueError, match="near"):
        T.opencv_projection_matrix(torch.eye(3), 8, near=1.0, far=0.5)
    with pytest.raises(ValueError, match="focal_length"):
        T.pytorch3d_to_opencv(torch.eye(3)[None], torch.zeros(1, 3), torch.ones(1, 3), torch.zeros(1, 2), 8)


def test_float64_default_dtype():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        cam = Pinhole.deep3d()
        assert cam.focal.dtype == torch.float64
        assert cam.project(torch.zeros(1, 3)).dtype == torch.float64
        assert T.euler_to_matrix(torch.zeros(3)).dtype == torch.float64
    finally:
        torch.set_default_dtype(old)
