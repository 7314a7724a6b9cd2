"""nvdiffrast's five PyTorch samples (NVlabs/nvdiffrast samples/torch/{triangle,
cube, pose, earth, envphong}.py), their core loops re-created with
``import facegeom.compat.nvdiffrast as dr`` on the CPU at small resolution and few
iterations, asserting the convergence each sample shows (docs/migration/nvdiffrast.md
lists the figures). The samples' data files are replaced by stand-ins of the same
format generated here (earth.npz is missing from nvdiffrast's repository snapshot;
cube_*.npz and envphong.npz are NVIDIA's and are not copied): a cube, a UV sphere
with a procedural texture atlas, a sphere with normals and a procedural cube map
(:func:`facegeom.testing.earth_npz`, :func:`facegeom.testing.envphong_npz`).
benchmarks/nvdiffrast_samples.py runs nvdiffrast's own sample scripts."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import facegeom.compat.nvdiffrast as dr  # the samples' `import nvdiffrast.torch as dr`
from facegeom import testing
from tests.conftest import requires_native

pytestmark = requires_native


# --------------------------------------------------------------------------- #
# samples/torch/util.py, re-created                                           #
# --------------------------------------------------------------------------- #

def projection(x=0.1, n=1.0, f=50.0):  # util.py:16
    return np.array([[n / x, 0, 0, 0], [0, n / x, 0, 0],
                     [0, 0, -(f + n) / (f - n), -(2 * f * n) / (f - n)], [0, 0, -1, 0]]).astype(np.float32)


def translate(x, y, z):  # util.py:22
    return np.array([[1, 0, 0, x], [0, 1, 0, y], [0, 0, 1, z], [0, 0, 0, 1]]).astype(np.float32)


def random_rotation_translation(t, rng):  # util.py:42 (with an explicit generator)
    m = rng.normal(size=[3, 3])
    m[1] = np.cross(m[0], m[2])
    m[2] = np.cross(m[0], m[1])
    m = m / np.linalg.norm(m, axis=1, keepdims=True)
    m = np.pad(m, [[0, 1], [0, 1]], mode="constant")
    m[3, 3] = 1.0
    m[:3, 3] = rng.uniform(-t, t, size=[3])
    return m


def bilinear_downsample(x):  # util.py:56
    w = torch.tensor([[1, 3, 3, 1], [3, 9, 9, 3], [3, 9, 9, 3], [1, 3, 3, 1]], dtype=torch.float32) / 64.0
    w = w.expand(x.shape[-1], 1, 4, 4)
    x = torch.nn.functional.conv2d(x.permute(0, 3, 1, 2), w, padding=1, stride=2, groups=x.shape[-1])
    return x.permute(0, 2, 3, 1)


def transform_pos(mtx, pos):  # cube.py / pose.py / earth.py transform_pos
    t_mtx = torch.from_numpy(mtx) if isinstance(mtx, np.ndarray) else mtx
    posw = torch.cat([pos, torch.ones([pos.shape[0], 1])], axis=1)
    return torch.matmul(posw, t_mtx.t())[None, ...]


def render_colored(glctx, mtx, pos, pos_idx, col, col_idx, resolution):  # cube.py:27, pose.py:108
    pos_clip = transform_pos(mtx, pos)
    rast_out, _ = dr.rasterize(glctx, pos_clip, pos_idx, resolution=[resolution, resolution])
    color, _ = dr.interpolate(col[None, ...], rast_out, col_idx)
    return dr.antialias(color, rast_out, pos_clip, pos_idx)


# --------------------------------------------------------------------------- #
# Stand-in data in the samples' formats                                       #
# --------------------------------------------------------------------------- #

def cube_npz():
    """cube_c.npz's arrays (pos_idx [12, 3], pos [8, 3], col_idx [12, 3], col [8, 3]):
    corners at +-0.5, a colour per corner."""
    pos = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)], np.float32)
    pos_idx = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                        [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]], np.int32)
    col = pos + 0.5
    return pos_idx, pos, pos_idx.copy(), col


def cube_p_npz():
    """cube_p.npz's arrays: the cube with one flat colour per face (col_idx indexes
    6 face colours), so the pose is recoverable from shading."""
    pos_idx, pos, _, _ = cube_npz()
    col = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]], np.float32)
    col_idx = np.repeat(np.arange(6, dtype=np.int32), 2)[:, None].repeat(3, 1)
    return pos_idx, pos, col_idx, col


def earth_npz():
    """earth.npz's arrays, small: a 12 x 24 UV sphere, a 64 x 64 texture."""
    return tuple(testing.earth_npz(tex_shape=(64, 64), rings=12, segments=24).values())


def envphong_npz():
    """envphong.npz's arrays, small: a 10 x 20 sphere, a 6 x 16 x 16 cube map."""
    return tuple(testing.envphong_npz(env_size=16, rings=10, segments=20).values())


# --------------------------------------------------------------------------- #
# triangle.py                                                                 #
# --------------------------------------------------------------------------- #

def test_triangle():
    glctx = dr.RasterizeCudaContext()
    pos = torch.tensor([[[-0.8, -0.8, 0, 1], [0.8, -0.8, 0, 1], [-0.8, 0.8, 0, 1]]], dtype=torch.float32)
    col = torch.tensor([[[1, 0, 0], [0, 1, 0], [0, 0, 1]]], dtype=torch.float32)
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    rast, _ = dr.rasterize(glctx, pos, tri, resolution=[256, 256])
    out, _ = dr.interpolate(col, rast, tri)
    img = out.cpu().numpy()[0, ::-1, :, :]  # flip vertically, as the sample
    img = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
    # nvdiffrast's published docs/img/tri.png (this image equals it pixel for pixel, checked
    # against the file; NVIDIA's image is not stored here): the lower-left half of
    # [-0.8, 0.8]^2 at pixel centres (i + 0.5) / 128 - 1, the centres exactly on the
    # hypotenuse left out, red at the bottom-left corner, green bottom-right, blue top-left.
    centre = (np.arange(256) + 0.5) / 128 - 1
    x, y = np.meshgrid(centre, centre[::-1])
    inside = (x >= -0.8) & (y >= -0.8) & (x + y < 0)
    assert np.array_equal(img.any(-1), inside)
    assert img[255 - 26, 26].tolist() == [253, 1, 1]  # next to the red vertex
    expected = np.stack([(-x - y) / 1.6, (x + 0.8) / 1.6, (y + 0.8) / 1.6], -1)  # barycentrics
    assert np.abs(img[inside].astype(float) - np.rint(expected[inside] * 255)).max() <= 1


# --------------------------------------------------------------------------- #
# cube.py                                                                     #
# --------------------------------------------------------------------------- #

def fit_cube(max_iter=200, resolution=16, seed=0):
    """cube.py's fit_cube: vertex positions and colours from random views, Adam with
    the sample's learning-rate schedule; returns the geometric error per iteration."""
    rng = np.random.RandomState(seed)
    pos_idx, vtxp, col_idx, vtxc = cube_npz()
    pos_idx, col_idx = torch.from_numpy(pos_idx), torch.from_numpy(col_idx)
    vtx_pos, vtx_col = torch.from_numpy(vtxp), torch.from_numpy(vtxc)
    glctx = dr.RasterizeCudaContext()
    vtx_pos_opt = torch.tensor(rng.uniform(-0.5, 0.5, size=vtxp.shape) + vtxp, dtype=torch.float32, requires_grad=True)
    vtx_col_opt = torch.tensor(rng.uniform(0.0, 1.0, size=vtxc.shape), dtype=torch.float32, requires_grad=True)
    optimizer = torch.optim.Adam([vtx_pos_opt, vtx_col_opt], lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=lambda x: max(0.01, 10 ** (-x * 0.0005)))
    errors = []
    for _ in range(max_iter + 1):
        r_mvp = np.matmul(projection(x=0.4), np.matmul(translate(0, 0, -3.5),
                                                        random_rotation_translation(0.25, rng))).astype(np.float32)
        with torch.no_grad():
            errors.append(float(torch.mean(torch.sum((torch.abs(vtx_pos_opt) - .5) ** 2, dim=1) ** 0.5)))
        color = render_colored(glctx, r_mvp, vtx_pos, pos_idx, vtx_col, col_idx, resolution)
        color_opt = render_colored(glctx, r_mvp, vtx_pos_opt, pos_idx, vtx_col_opt, col_idx, resolution)
        loss = torch.mean((color - color_opt) ** 2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    return errors


def test_cube():
    errors = fit_cube()
    # The sample's log: err falls from ~0.3 towards 0 over the first few hundred iterations.
    assert errors[0] > 0.15
    assert np.mean(errors[-10:]) < errors[0] / 3, (errors[0], errors[-10:])


# --------------------------------------------------------------------------- #
# pose.py                                                                     #
# --------------------------------------------------------------------------- #

def q_rnd(rng):  # pose.py q_rnd
    u, v, w = rng.uniform(0.0, 1.0, size=[3])
    v, w = v * 2.0 * np.pi, w * 2.0 * np.pi
    return np.asarray([(1.0 - u) ** 0.5 * np.sin(v), (1.0 - u) ** 0.5 * np.cos(v),
                       u ** 0.5 * np.sin(w), u ** 0.5 * np.cos(w)], np.float32)


def q_slerp(p, q, t):  # pose.py q_slerp
    d = np.dot(p, q)
    if d < 0.0:
        q, d = -q, -d
    if d > 0.999:
        a = p + t * (q - p)
        return a / np.linalg.norm(a)
    t0 = np.arccos(d)
    st = np.sin(t0 * t)
    s1 = st / np.sin(t0)
    return (np.cos(t0 * t) - d * s1) * p + s1 * q


def q_mul_torch(p, q):  # pose.py q_mul_torch
    return torch.stack([p[0] * q[0] - p[1] * q[1] - p[2] * q[2] - p[3] * q[3],
                        p[0] * q[1] + p[1] * q[0] + p[2] * q[3] - p[3] * q[2],
                        p[0] * q[2] + p[2] * q[0] + p[3] * q[1] - p[1] * q[3],
                        p[0] * q[3] + p[3] * q[0] + p[1] * q[2] - p[2] * q[1]])


def q_to_mtx(q):  # pose.py q_to_mtx
    r0 = torch.stack([1.0 - 2.0 * q[1] ** 2 - 2.0 * q[2] ** 2, 2.0 * q[0] * q[1] - 2.0 * q[2] * q[3],
                      2.0 * q[0] * q[2] + 2.0 * q[1] * q[3]])
    r1 = torch.stack([2.0 * q[0] * q[1] + 2.0 * q[2] * q[3], 1.0 - 2.0 * q[0] ** 2 - 2.0 * q[2] ** 2,
                      2.0 * q[1] * q[2] - 2.0 * q[0] * q[3]])
    r2 = torch.stack([2.0 * q[0] * q[2] - 2.0 * q[1] * q[3], 2.0 * q[1] * q[2] + 2.0 * q[0] * q[3],
                      1.0 - 2.0 * q[0] ** 2 - 2.0 * q[1] ** 2])
    rr = torch.transpose(torch.stack([r0, r1, r2]), 1, 0)
    rr = torch.cat([rr, torch.zeros(3, 1)], dim=1)
    return torch.cat([rr, torch.tensor([[0, 0, 0, 1]], dtype=torch.float32)], dim=0)


def q_angle_deg(p, q):  # pose.py q_angle_deg
    d = min(abs(float(torch.dot(p.detach(), q.detach()))), 1.0)
    return float(np.degrees(2.0 * np.arccos(d)))


def fit_pose(max_iter=300, resolution=32, seed=0, lr_base=0.01, nr_base=1.0, nr_falloff=1e-4, grad_phase_start=0.5):
    """pose.py's fit_pose: a noise-search phase keeping the best pose, then Adam on the
    quaternion; returns (initial, best, final) angular errors in degrees."""
    rng = np.random.RandomState(seed)
    pos_idx, pos, col_idx, col = cube_p_npz()
    pos_idx, col_idx = torch.from_numpy(pos_idx), torch.from_numpy(col_idx)
    vtx_pos, vtx_col = torch.from_numpy(pos), torch.from_numpy(col)
    glctx = dr.RasterizeCudaContext()
    pose_target = torch.tensor(q_rnd(rng))
    pose_init = q_rnd(rng)
    pose_opt = torch.tensor(pose_init / np.sum(pose_init ** 2) ** 0.5, dtype=torch.float32, requires_grad=True)
    initial = q_angle_deg(pose_opt, pose_target)
    loss_best, pose_best = np.inf, pose_opt.detach().clone()
    mvp = torch.tensor(np.matmul(projection(x=0.4), translate(0, 0, -3.5)).astype(np.float32))
    optimizer = torch.optim.Adam([pose_opt], betas=(0.9, 0.999), lr=lr_base)
    for it in range(max_iter + 1):
        itf = 1.0 * it / max_iter
        nr = nr_base * nr_falloff ** itf
        if itf >= grad_phase_start:
            noise = np.asarray([1, 0, 0, 0], np.float32)
        else:
            noise = q_slerp(np.asarray([1, 0, 0, 0], np.float32), q_rnd(rng), nr).astype(np.float32)
        color = render_colored(glctx, torch.matmul(mvp, q_to_mtx(pose_target)), vtx_pos, pos_idx, vtx_col, col_idx,
                               resolution)
        pose_total_opt = q_mul_torch(pose_opt, torch.from_numpy(noise))
        color_opt = render_colored(glctx, torch.matmul(mvp, q_to_mtx(pose_total_opt)), vtx_pos, pos_idx, vtx_col,
                                   col_idx, resolution)
        diff = torch.tanh(5.0 * torch.max((color_opt - color) ** 2, dim=-1)[0])
        loss = torch.mean(diff)
        loss_val = float(loss.detach())
        if loss_val < loss_best and loss_val > 0.0:
            pose_best, loss_best = pose_total_opt.detach().clone(), loss_val
            if itf < grad_phase_start:
                with torch.no_grad():
                    pose_opt[:] = pose_best
        if itf >= grad_phase_start:
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            pose_opt /= torch.sum(pose_opt ** 2) ** 0.5
    return initial, q_angle_deg(pose_best, pose_target), q_angle_deg(pose_opt, pose_target)


def test_pose():
    initial, best, final = fit_pose()
    # The sample: err drops from a random start to a fraction of a degree when the noise
    # search lands in the right basin (the sample notes it does not always: here seeds 0, 2
    # and 5 of 0-5 converge at 300 iterations; seeds 1 and 4 stop at 90 degrees).
    assert initial > 20
    assert final < 2.0, (initial, best, final)


# --------------------------------------------------------------------------- #
# earth.py                                                                    #
# --------------------------------------------------------------------------- #

def render_earth(glctx, mtx, pos, pos_idx, uv, uv_idx, tex, resolution, enable_mip, max_mip_level):  # earth.py:27
    pos_clip = transform_pos(mtx, pos)
    rast_out, rast_out_db = dr.rasterize(glctx, pos_clip, pos_idx, resolution=[resolution, resolution])
    if enable_mip:
        texc, texd = dr.interpolate(uv[None, ...], rast_out, uv_idx, rast_db=rast_out_db, diff_attrs="all")
        color = dr.texture(tex[None, ...], texc, texd, filter_mode="linear-mipmap-linear", max_mip_level=max_mip_level)
    else:
        texc, _ = dr.interpolate(uv[None, ...], rast_out, uv_idx)
        color = dr.texture(tex[None, ...], texc, filter_mode="linear")
    return color * torch.clamp(rast_out[..., -1:], 0, 1)


def fit_earth(enable_mip, max_iter=60, res=32, ref_res=64, lr_base=1e-1, lr_ramp=0.1, seed=2):
    """earth.py's fit_earth: optimise the texture from random views (distance up to
    48.5 units), the reference rendered with mipmaps at ref_res and box-downsampled;
    returns the texture RMSE per iteration."""
    rng = np.random.RandomState(seed)
    pos_idx, pos, uv_idx, uv, tex = earth_npz()
    tex = tex.astype(np.float32) / 255.0
    max_mip_level = 9
    pos_idx, uv_idx = torch.from_numpy(pos_idx), torch.from_numpy(uv_idx)
    vtx_pos, vtx_uv = torch.from_numpy(pos), torch.from_numpy(uv)
    tex = torch.from_numpy(tex)
    tex_opt = torch.full(tex.shape, 0.2, requires_grad=True)
    glctx = dr.RasterizeCudaContext()
    optimizer = torch.optim.Adam([tex_opt], lr=lr_base)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=lambda x: lr_ramp ** (float(x) / float(max_iter)))
    rmse = []
    for _ in range(max_iter + 1):
        r_rot = random_rotation_translation(0.25, rng)
        dist = rng.uniform(0.0, 8.0)  # the sample's 48.5 shrunk with the resolution (64 px, not 2048)
        r_mvp = np.matmul(projection(x=0.4, n=1.0, f=200.0), np.matmul(translate(0, 0, -2.5 - dist), r_rot))
        r_mvp = r_mvp.astype(np.float32)
        with torch.no_grad():
            rmse.append(float(torch.sqrt(torch.mean((tex - tex_opt) ** 2))))
        color = render_earth(glctx, r_mvp, vtx_pos, pos_idx, vtx_uv, uv_idx, tex, ref_res, True, max_mip_level)
        color_opt = render_earth(glctx, r_mvp, vtx_pos, pos_idx, vtx_uv, uv_idx, tex_opt, res, enable_mip,
                                 max_mip_level)
        while color.shape[1] > res:
            color = bilinear_downsample(color)
        loss = torch.mean((color - color_opt) ** 2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    return rmse


@pytest.mark.parametrize("enable_mip", [True, False], ids=["mip", "no_mip"])
def test_earth(enable_mip):
    rmse = fit_earth(enable_mip)
    # The sample's log: texture PSNR rises steadily from the flat 0.2 start.
    assert rmse[-1] < rmse[0] * 0.6, (rmse[0], rmse[-1])  # measured: 0.356 -> 0.108 (mip), 0.189 (no mip)


def test_earth_mip_learns_what_magnified_views_miss():
    # earth.py's point: far views sampled without mipmaps alias, so the texture learns less
    # (the published comparison: the '--mip' run's texture is the cleaner one).
    with_mip, without = fit_earth(True)[-1], fit_earth(False)[-1]
    assert with_mip < without * 0.8, (with_mip, without)  # measured: 0.108 vs 0.189


# --------------------------------------------------------------------------- #
# envphong.py                                                                 #
# --------------------------------------------------------------------------- #

def fit_env_phong(max_iter=80, res=32, lr_base=1e-1, lr_ramp=1.0, seed=3):
    """envphong.py's fit_env_phong: learn a cube environment map and Phong parameters
    from random views of a reflective sphere; returns (image losses, Phong colour
    RMSE per iteration, final Phong exponent relative error)."""
    rng = np.random.RandomState(seed)
    pos_idx, pos, normals, env = envphong_npz()
    env = env.astype(np.float32) / 255.0
    env = np.stack(env)[:, ::-1].copy()
    pos_idx = torch.as_tensor(pos_idx, dtype=torch.int32)
    pos = torch.as_tensor(pos, dtype=torch.float32)
    normals = torch.as_tensor(normals, dtype=torch.float32)
    env = torch.as_tensor(env, dtype=torch.float32)
    phong_rgb = np.asarray([1.0, 0.8, 0.6], np.float32)
    phong_exp = 25.0
    phong_rgb_t = torch.as_tensor(phong_rgb)
    env_var = (torch.ones_like(env) * .5).requires_grad_()
    phong_var_raw = torch.as_tensor(rng.uniform(size=[4]), dtype=torch.float32).requires_grad_()
    phong_var_mul = torch.as_tensor([1.0, 1.0, 1.0, 10.0])
    glctx = dr.RasterizeCudaContext()
    zero_tensor, one_tensor = torch.tensor(0.0), torch.tensor(1.0)
    optimizer = torch.optim.Adam([env_var, phong_var_raw], lr=lr_base)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=lambda x: lr_ramp ** (float(x) / float(max_iter)))
    losses, rgb_rmse = [], []
    for _ in range(max_iter + 1):
        phong_var = phong_var_raw * phong_var_mul
        r_rot = random_rotation_translation(0.25, rng)
        r_mv = np.matmul(translate(0, 0, -3.5), r_rot)
        r_mvp = torch.as_tensor(np.matmul(projection(x=0.4, n=1.0, f=200.0), r_mv).astype(np.float32))
        r_campos = torch.as_tensor(np.linalg.inv(r_mv)[:3, 3], dtype=torch.float32)
        lightdir = rng.normal(size=[3])
        lightdir = torch.as_tensor(lightdir / (np.linalg.norm(lightdir) + 1e-8), dtype=torch.float32)

        viewvec = pos[..., :3] - r_campos[np.newaxis, np.newaxis, :]
        reflvec = viewvec - 2.0 * normals[np.newaxis, ...] * torch.sum(normals[np.newaxis, ...] * viewvec, -1,
                                                                       keepdim=True)
        reflvec = reflvec / torch.sum(reflvec ** 2, -1, keepdim=True) ** 0.5
        pos_clip = torch.matmul(torch.cat([pos, torch.ones(pos.shape[0], 1)], 1), r_mvp.t())[np.newaxis, ...]
        rast_out, rast_out_db = dr.rasterize(glctx, pos_clip, pos_idx, [res, res])
        refl, refld = dr.interpolate(reflvec, rast_out, pos_idx, rast_db=rast_out_db, diff_attrs="all")
        refl = refl / (torch.sum(refl ** 2, -1, keepdim=True) + 1e-8) ** 0.5
        ldotr = torch.sum(-lightdir * refl, -1, keepdim=True)
        mask = rast_out[..., -1:] == 0

        color = dr.texture(env[np.newaxis, ...], refl, uv_da=refld, filter_mode="linear-mipmap-linear",
                           boundary_mode="cube")
        color = color + phong_rgb_t * torch.max(zero_tensor, ldotr) ** phong_exp
        color = torch.where(mask, one_tensor, color)
        color_opt = dr.texture(env_var[np.newaxis, ...], refl, uv_da=refld, filter_mode="linear-mipmap-linear",
                               boundary_mode="cube")
        color_opt = color_opt + phong_var[:3] * torch.max(zero_tensor, ldotr) ** phong_var[3]
        color_opt = torch.where(mask, one_tensor, color_opt)
        loss = torch.mean((color - color_opt) ** 2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        rgb_rmse.append(float(np.mean((phong_var.detach().numpy()[:3] - phong_rgb) ** 2) ** 0.5))
    exp_rel_err = abs(float(phong_var[3]) - phong_exp) / phong_exp
    return losses, rgb_rmse, exp_rel_err


def test_envphong():
    losses, rgb_rmse, exp_rel_err = fit_env_phong()
    # The sample's log: img_rmse and phong_rgb_rmse fall as the map and the highlight are learnt.
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) / 4, (losses[:10], losses[-10:])
    assert rgb_rmse[-1] < rgb_rmse[0] / 4, (rgb_rmse[0], rgb_rmse[-1])  # measured: 0.32 -> 0.028
    assert exp_rel_err < 0.2, exp_rel_err  # measured: 0.056 (the exponent starts 60-100% off)
