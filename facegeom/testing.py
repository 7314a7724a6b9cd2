"""Shared fixtures: procedural meshes, random models and synthetic scans used by
the tests (``tests/``), the benchmarks (``benchmarks/``, ``facegeom bench``) and
the examples (README). One generator of each kind lives here; nothing in it
needs pytest.

- models: :func:`lbs_case` (FLAME-shaped, float32, ``facegeom.ops.lbs`` keyword
  arguments), :func:`make_model` / :func:`make_params` (small smplx-layout models
  for the tests, float64);
- meshes in metres: :func:`head_mesh` (closed, bumpy, head-sized, target face
  count), :func:`clip_space` (a perspective view of it), :func:`near_surface_queries`
  and :func:`uniform_queries` (point sets around it);
- synthetic face scans in millimetres for the NoW / Stirling protocol tests:
  :func:`height`, :func:`grid_surface`, :func:`landmarks`, :func:`rotation`,
  :func:`sample_surface`, :func:`icosahedron`, :func:`centred_landmarks`;
- a NoW dataset of synthetic identities (:func:`write_picked_points`,
  :func:`write_synthetic_now`): scans, picked points and the image list in NoW's layout,
  with rendered images and landmark sidecars for ``facegeom reconstruct``.
- stand-ins for nvdiffrast's sample data (numpy, the samples' ``.npz`` layouts):
  :func:`uv_sphere`, :func:`earth_npz`, :func:`envphong_npz`.

Layouts follow smplx's ``lbs.py`` (API.md §1: ``shapedirs [V, 3, K]``,
``posedirs [(J-1)*9, V*3]``, ``J_regressor [J, V]``).

Example:
    >>> from facegeom import testing
    >>> model = testing.lbs_case(batch=2)
    >>> vertices, joints = facegeom.ops.lbs(**model)   # doctest: +SKIP
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import numpy as np
import torch

FLAME_PARENTS = [-1, 0, 1, 1, 1]  # global, neck, jaw, left eye, right eye
SMPL_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
# Face counts of the two reference face models: BFM's front face (Deep3DFaceRecon)
# and FLAME.
BFM_FACES, FLAME_FACES = 70789, 9976


# --------------------------------------------------------------------------- #
# Random models (smplx layouts)                                               #
# --------------------------------------------------------------------------- #

def lbs_case(batch: int, dtype: Optional[torch.dtype] = None, requires_grad: bool = False, seed: int = 0,
             num_vertices: int = 5023, num_betas: int = 400, parents=FLAME_PARENTS) -> Dict[str, torch.Tensor]:
    """Keyword arguments of ``facegeom.ops.lbs`` for a FLAME-shaped model (V = 5023,
    K = 300 shape + 100 expression, J = 5, 36 pose features) with random bases;
    ``dtype`` defaults to ``torch.get_default_dtype()``."""
    dtype = torch.get_default_dtype() if dtype is None else dtype
    g = torch.Generator().manual_seed(seed)
    num_joints = len(parents)
    regressor = torch.rand(num_joints, num_vertices, generator=g, dtype=dtype)
    weights = torch.rand(num_vertices, num_joints, generator=g, dtype=dtype)
    return dict(
        betas=torch.randn(batch, num_betas, generator=g, dtype=dtype).requires_grad_(requires_grad),
        pose=(torch.randn(batch, 3 * num_joints, generator=g, dtype=dtype) * 0.3).requires_grad_(requires_grad),
        v_template=torch.randn(num_vertices, 3, generator=g, dtype=dtype) * 0.1,
        shapedirs=torch.randn(num_vertices, 3, num_betas, generator=g, dtype=dtype) * 1e-3,
        posedirs=torch.randn(9 * (num_joints - 1), 3 * num_vertices, generator=g, dtype=dtype) * 1e-3,
        J_regressor=regressor / regressor.sum(1, keepdim=True),
        parents=torch.tensor(parents),
        lbs_weights=weights / weights.sum(1, keepdim=True),
    )


def make_model(num_vertices, num_betas, parents, dtype=torch.float64, seed=0, scale=1.0):
    """A random smplx-layout model: dict of lbs()'s keyword arguments minus betas/pose."""
    g = torch.Generator().manual_seed(seed)
    num_joints = len(parents)
    regressor = torch.rand(num_joints, num_vertices, generator=g, dtype=dtype)
    regressor = regressor / regressor.sum(1, keepdim=True)
    weights = torch.rand(num_vertices, num_joints, generator=g, dtype=dtype) ** 4
    weights = weights / weights.sum(1, keepdim=True)
    return dict(
        v_template=torch.randn(num_vertices, 3, generator=g, dtype=dtype) * 0.1 * scale,
        shapedirs=torch.randn(num_vertices, 3, num_betas, generator=g, dtype=dtype) * 1e-3 * scale,
        posedirs=torch.randn(9 * (num_joints - 1), 3 * num_vertices, generator=g, dtype=dtype) * 1e-3 * scale,
        J_regressor=regressor,
        parents=torch.tensor(parents),
        lbs_weights=weights,
    )


def make_params(batch, num_betas, num_joints, dtype=torch.float64, seed=1):
    """Random ``betas [batch, num_betas]`` and axis-angle ``pose [batch, 3 * num_joints]``."""
    g = torch.Generator().manual_seed(seed)
    betas = torch.randn(batch, num_betas, generator=g, dtype=dtype)
    pose = torch.randn(batch, 3 * num_joints, generator=g, dtype=dtype) * 0.4
    return betas, pose


# --------------------------------------------------------------------------- #
# Procedural head-sized meshes and query points (metres)                      #
# --------------------------------------------------------------------------- #

def head_mesh(num_faces: int = FLAME_FACES, dtype=torch.float32) -> Tuple[torch.Tensor, torch.Tensor]:
    """A closed, bumpy, head-sized surface (0.16 x 0.2 x 0.18 m, centred at the
    origin, y up) with about ``num_faces`` faces.

    A latitude-longitude grid of ``rows x columns`` vertices (columns ~ 1.5 rows)
    plus two poles: ``F = 2 rows columns`` faces and ``V = rows columns + 2``
    vertices, so ``num_faces = 9976`` gives FLAME's 9976 faces (4990 vertices)
    and ``70789`` gives ~70.8k faces / ~35.4k vertices, BFM-front size. The
    bumps make parts of the surface occlude others (silhouette edges inside
    the image, as a nose and cheeks give). Faces wind counter-clockwise seen
    from outside.

    Returns:
        vertices ``[V, 3]`` (``dtype``), faces ``[F, 3]`` int64.
    """
    if num_faces < 12:
        raise ValueError(f"head_mesh: num_faces must be >= 12, got {num_faces}")
    rows = max(2, round(math.sqrt(num_faces / 3)))
    columns = max(3, round(num_faces / (2 * rows)))
    theta = torch.linspace(0, math.pi, rows + 2, dtype=torch.float64)[1:-1]
    phi = torch.arange(columns, dtype=torch.float64) * (2 * math.pi / columns)
    t, p = torch.meshgrid(theta, phi, indexing="ij")
    radius = 1 + 0.1 * torch.sin(4 * t) * torch.cos(3 * p) + 0.04 * torch.sin(9 * p) * torch.sin(t) ** 2
    ring = torch.stack([0.08 * radius * torch.sin(t) * torch.sin(p), 0.1 * radius * torch.cos(t),
                        0.09 * radius * torch.sin(t) * torch.cos(p)], -1).reshape(-1, 3)
    vertices = torch.cat([ring, torch.tensor([[0.0, 0.1, 0.0], [0.0, -0.1, 0.0]], dtype=torch.float64)])
    r, c = torch.meshgrid(torch.arange(rows - 1), torch.arange(columns), indexing="ij")
    a, b = r * columns + c, r * columns + (c + 1) % columns
    cols = torch.arange(columns)
    top, bottom = rows * columns, rows * columns + 1
    faces = torch.cat([
        torch.stack([a, a + columns, b], -1).reshape(-1, 3),
        torch.stack([b, a + columns, b + columns], -1).reshape(-1, 3),
        torch.stack([torch.full_like(cols, top), cols, (cols + 1) % columns], -1),
        torch.stack([torch.full_like(cols, bottom), (rows - 1) * columns + (cols + 1) % columns,
                     (rows - 1) * columns + cols], -1),
    ])
    return vertices.to(dtype), faces


def clip_space(vertices: torch.Tensor, batch: int = 1, distance: float = 0.6, focal: float = 4.8,
               near: float = 0.1, far: float = 10.0, yaw: float = 0.05) -> torch.Tensor:
    """Clip-space positions ``[batch, V, 4]`` of ``vertices [V, 3]`` (metres) seen by
    an OpenGL-style perspective camera ``distance`` in front of the origin,
    looking down -z, ``focal`` in NDC units (4.8 at 0.6 m: a 0.2 m head spans
    ~80 % of the image height). Image ``k`` is the mesh turned by ``k * yaw``
    radians about y, so the batch's images differ."""
    v = vertices.double()
    out = []
    for k in range(batch):
        c, s = math.cos(k * yaw), math.sin(k * yaw)
        rot = torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=torch.float64)
        cam = v @ rot.T
        z = cam[:, 2] - distance  # negative in front of the camera
        clip_z = (far + near) / (near - far) * z + 2 * far * near / (near - far)
        out.append(torch.stack([focal * cam[:, 0], focal * cam[:, 1], clip_z, -z], -1))
    return torch.stack(out).to(vertices.dtype)


def near_surface_queries(vertices: torch.Tensor, faces: torch.Tensor, count: int, noise: float = 0.01,
                         seed: int = 0) -> torch.Tensor:
    """``count`` points ``[count, 3]`` near the surface: area-weighted uniform
    samples on the faces plus Gaussian noise of ``noise`` x the bounding box
    diagonal (per axis)."""
    g = torch.Generator().manual_seed(seed)
    v = vertices.double()
    tri = v[faces.long()]
    area = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]).norm(dim=1)
    face = torch.multinomial(area, count, replacement=True, generator=g)
    u = torch.rand(count, 2, generator=g, dtype=torch.float64)
    u = torch.where((u.sum(1) > 1)[:, None], 1 - u, u)  # fold onto the triangle
    w = torch.stack([1 - u.sum(1), u[:, 0], u[:, 1]], 1)
    surface = (w[:, :, None] * tri[face]).sum(1)
    diagonal = (v.max(0).values - v.min(0).values).norm()
    return (surface + noise * diagonal * torch.randn(count, 3, generator=g, dtype=torch.float64)).to(vertices.dtype)


def uniform_queries(vertices: torch.Tensor, count: int, seed: int = 0) -> torch.Tensor:
    """``count`` points ``[count, 3]`` uniform in the bounding box of ``vertices``."""
    g = torch.Generator().manual_seed(seed)
    v = vertices.double()
    low, high = v.min(0).values, v.max(0).values
    return (low + (high - low) * torch.rand(count, 3, generator=g, dtype=torch.float64)).to(vertices.dtype)


# --------------------------------------------------------------------------- #
# Synthetic face-like surfaces and scans for the protocol tests (millimetres) #
# --------------------------------------------------------------------------- #

# NoW order: right eye outer, right eye inner, left eye inner, left eye outer, nose bottom, mouth right, mouth left
LANDMARKS_XY = np.array(
    [[-45.0, 30.0], [-15.0, 30.0], [15.0, 30.0], [45.0, 30.0], [0.0, -10.0], [-25.0, -40.0], [25.0, -40.0]]
)


def height(x, y):
    """A face-like height field without symmetries that would let a rigid motion slide along it."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    dome = 60.0 * np.sqrt(np.clip(1.0 - (x / 95.0) ** 2 - (y / 120.0) ** 2, 0.05, None))
    nose = 25.0 * np.exp(-((x / 9.0) ** 2 + ((y - 5.0) / 22.0) ** 2))
    brow = 6.0 * np.exp(-(((y - 42.0) / 8.0) ** 2)) * np.exp(-((x / 60.0) ** 2))
    chin = 8.0 * np.exp(-((x / 25.0) ** 2 + ((y + 70.0) / 14.0) ** 2))
    cheek = 4.0 * np.exp(-(((x - 40.0) / 18.0) ** 2 + ((y + 5.0) / 18.0) ** 2))
    return dome + nose + brow + chin + cheek


def grid_surface(n=40, extent=(90.0, 110.0), jitter=0.0, seed=0):
    """Height-field triangle mesh on an n x n grid over [-ex, ex] x [-ey, ey]."""
    ex, ey = extent
    xs, ys = np.meshgrid(np.linspace(-ex, ex, n), np.linspace(-ey, ey, n), indexing="ij")
    if jitter:
        rng = np.random.default_rng(seed)
        xs = xs + rng.uniform(-jitter, jitter, xs.shape)
        ys = ys + rng.uniform(-jitter, jitter, ys.shape)
    vertices = np.stack([xs, ys, height(xs, ys)], -1).reshape(-1, 3)
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()
    faces = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    return vertices, faces.astype(np.int64)


def landmarks():
    return np.concatenate([LANDMARKS_XY, height(LANDMARKS_XY[:, 0], LANDMARKS_XY[:, 1])[:, None]], 1)


def rotation(axis, angle_deg):
    axis = np.asarray(axis, dtype=np.float64)
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    a = math.radians(angle_deg)
    return np.eye(3) + math.sin(a) * k + (1 - math.cos(a)) * k @ k


def as_tensor(a):
    return torch.as_tensor(np.asarray(a, dtype=np.float64))


def sample_surface(vertices, faces, count, seed=0, margin=0.1):
    """Points on the mesh (random faces, barycentrics at least ``margin`` from every edge),
    with their face ids and unit face normals."""
    rng = np.random.default_rng(seed)
    face_ids = rng.integers(0, len(faces), count)
    bary = rng.dirichlet((2.0, 2.0, 2.0), count)
    bary = margin + (1 - 3 * margin) * bary
    corners = vertices[faces[face_ids]]
    points = (bary[:, :, None] * corners).sum(1)
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    return points, face_ids, normals / np.linalg.norm(normals, axis=1, keepdims=True)


def icosahedron(radius=50.0):
    """Regular icosahedron (outward-wound faces) centred at the origin."""
    phi = (1 + 5 ** 0.5) / 2
    v = np.array(
        [[-1, phi, 0], [1, phi, 0], [-1, -phi, 0], [1, -phi, 0], [0, -1, phi], [0, 1, phi],
         [0, -1, -phi], [0, 1, -phi], [phi, 0, -1], [phi, 0, 1], [-phi, 0, -1], [-phi, 0, 1]],
        dtype=np.float64,
    )
    v *= radius / np.linalg.norm(v[0])
    f = np.array(
        [[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4], [11, 10, 2],
         [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5],
         [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]],
        dtype=np.int64,
    )
    return v, f


def centred_landmarks(half_width=100.0, a=10.0):
    """7 NoW-order landmarks whose crop sphere is centred at the origin with a radius
    of 1.4 * (2 * half_width + a / 0.3) / 2, so a crop keeps everything near the origin."""
    bridge_y = a / 0.3 - a
    return np.array(
        [[-half_width, bridge_y, 1.0], [-5.0, bridge_y, 2.0], [5.0, bridge_y, 2.0], [half_width, bridge_y, 1.0],
         [0.0, -a, 3.0], [-20.0, -30.0, 4.0], [25.0, -30.0, 0.0]]
    )


# --------------------------------------------------------------------------- #
# Stand-ins for nvdiffrast's sample data (NVlabs/nvdiffrast samples/data)      #
# --------------------------------------------------------------------------- #

def uv_sphere(rings: int, segments: int):
    """A UV sphere of radius 1 as numpy arrays: positions ``[V, 3]`` float32, triangles
    ``[F, 3]`` int32, texture coordinates ``[V, 2]`` float32 (u = longitude, v = 1 at the
    north pole; the seam column is duplicated) and their triangles (the same indices)."""
    import numpy as np

    theta = np.linspace(0, np.pi, rings + 1)
    phi = np.linspace(0, 2 * np.pi, segments + 1)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    pos = np.stack([np.sin(t) * np.cos(p), np.cos(t), np.sin(t) * np.sin(p)], -1).reshape(-1, 3)
    uv = np.stack([p / (2 * np.pi), 1 - t / np.pi], -1).reshape(-1, 2)
    index = np.arange((rings + 1) * (segments + 1)).reshape(rings + 1, segments + 1)
    a, b = index[:-1, :-1].ravel(), index[:-1, 1:].ravel()
    c, d = index[1:, :-1].ravel(), index[1:, 1:].ravel()
    tri = np.concatenate([np.stack([a, c, b], -1), np.stack([b, c, d], -1)]).astype(np.int32)
    return pos.astype(np.float32), tri, uv.astype(np.float32), tri.copy()


def earth_npz(tex_shape=(64, 64), rings: int = 12, segments: int = 24) -> dict:
    """The arrays of nvdiffrast's ``earth.npz`` (``pos_idx, pos, uv_idx, uv, tex``, in the
    order ``earth.py`` unpacks them; ``tex`` uint8 ``[H, W, 3]``): a UV sphere and a
    procedural texture with detail at every scale (a checker and smooth bands). The
    sample's own atlas is 1536 x 2048 (``tex_shape=(1536, 2048)``)."""
    import numpy as np

    pos, pos_idx, uv, uv_idx = uv_sphere(rings, segments)
    y, x = np.mgrid[0:tex_shape[0], 0:tex_shape[1]]
    y, x = y / tex_shape[0], x / tex_shape[1]
    checker = (np.floor(x * 16) + np.floor(y * 8)) % 2
    tex = np.stack([0.6 * checker + 0.2 * np.sin(6 * np.pi * x) ** 2, 0.5 + 0.4 * np.sin(4 * np.pi * y),
                    0.3 + 0.6 * x * y], -1)
    return dict(pos_idx=pos_idx, pos=pos, uv_idx=uv_idx, uv=uv, tex=np.clip(tex * 255, 0, 255).astype(np.uint8))


def envphong_npz(env_size: int = 16, rings: int = 10, segments: int = 20) -> dict:
    """The arrays of nvdiffrast's ``envphong.npz`` (``pos_idx, pos, normals, env``; ``env``
    uint8 ``[6, H, W, 3]``): a unit sphere with its normals and a smooth procedural cube
    map."""
    import numpy as np

    pos, pos_idx, _, _ = uv_sphere(rings, segments)
    normals = pos / np.linalg.norm(pos, axis=1, keepdims=True)
    s, t = np.mgrid[0:env_size, 0:env_size] / env_size
    faces = [np.stack([0.5 + 0.4 * np.sin(2 * np.pi * (s + f / 6)), 0.5 + 0.4 * np.cos(2 * np.pi * t),
                       np.full_like(s, f / 6)], -1) for f in range(6)]
    env = np.clip(np.stack(faces) * 255, 0, 255).astype(np.uint8)
    return dict(pos_idx=pos_idx, pos=pos, normals=normals.astype(np.float32), env=env)


# --------------------------------------------------------------------------- #
# A NoW dataset of synthetic identities (PIPELINES.md §8.1)                   #
# --------------------------------------------------------------------------- #

PICKED_POINTS = """<!DOCTYPE PickedPoints>
<PickedPoints>
 <DocumentData>
  <DateTime time="00:00:00" date="2026-01-01"/>
  <User name="synthetic"/>
  <DataFileName name="scan.obj"/>
  <templateName name=""/>
 </DocumentData>
{points}
</PickedPoints>
"""


def write_picked_points(path, points) -> None:
    """MeshLab's ``.pp`` file, the format of NoW's ``scans_lmks_onlypp`` (the official reader
    takes lines 9-15: keep this header)."""
    rows = "\n".join(f' <point x="{x!r}" y="{y!r}" z="{z!r}" active="1" name="{i + 1}"/>'
                     for i, (x, y, z) in enumerate(np.asarray(points, dtype=float).tolist()))
    with open(path, "w") as f:
        f.write(PICKED_POINTS.format(points=rows))


def write_synthetic_now(root, faces, identities: int, challenges=None) -> Dict[str, str]:
    """A NoW-layout dataset from a :class:`facegeom.data.synthetic.SyntheticFaces` dataset.

    Subject ``SYNTH_<i>`` is synthetic identity ``i`` (``i < identities``); its scan is the
    head's neutral shape (zero expression and pose) in millimetres with its 7 NoW landmarks
    (68-indices 36, 39, 42, 45, 33, 48, 54); its images are the dataset's samples of that
    identity (``images_per_identity`` of them), assigned to the NoW challenges in turn.

    Writes under ``root``: ``now/scans/<subject>/natural_head_rotation.000001.obj``,
    ``now/scans_lmks_onlypp/<subject>/...picked_points.pp``, ``now/imagepathsvalidation.txt``
    and ``images/<subject>/<challenge>/<stem>.png`` with the 68 landmarks in ``<stem>.txt``
    (pixels, row 0 at the top: ``facegeom reconstruct``'s sidecar).

    Returns ``{"dataset", "images"}`` (the two folders).
    """
    import os

    import trimesh
    from PIL import Image

    from facegeom.eval.now import NOW_LANDMARKS_68

    challenges = tuple(challenges or ("multiview_neutral", "multiview_expressions", "multiview_occlusions", "selfie"))
    k = faces.config.images_per_identity
    if not isinstance(identities, int) or not 1 <= identities <= len(faces) // k:
        raise ValueError(f"identities must be an int in [1, {len(faces) // k}], got {identities!r}")
    dataset, images = os.path.join(os.fspath(root), "now"), os.path.join(os.fspath(root), "images")
    head = faces.head
    lines = []
    for i in range(identities):
        subject = f"SYNTH_{i:06d}"
        shape = faces.sample_params(i * k)["shape"].to(head.v_template.dtype)[None]
        with torch.no_grad():
            neutral = head(shape=shape)
        scan = 1000.0 * neutral.vertices[0].double().numpy()
        picked = 1000.0 * neutral.landmarks3d[0, list(NOW_LANDMARKS_68)].double().numpy()
        for folder in ("scans", "scans_lmks_onlypp"):
            os.makedirs(os.path.join(dataset, folder, subject), exist_ok=True)
        trimesh.Trimesh(scan, head.faces.numpy(), process=False).export(
            os.path.join(dataset, "scans", subject, "natural_head_rotation.000001.obj"))
        write_picked_points(os.path.join(dataset, "scans_lmks_onlypp", subject,
                                         "natural_head_rotation.000001_picked_points.pp"), picked)
        for j in range(k):
            sample = faces[i * k + j]
            challenge = challenges[j % len(challenges)]
            stem = f"IMG_{j:04d}"
            folder = os.path.join(images, subject, challenge)
            os.makedirs(folder, exist_ok=True)
            pixels = (sample["image"].permute(1, 2, 0).numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(os.path.join(folder, stem + ".png"))
            np.savetxt(os.path.join(folder, stem + ".txt"), sample["landmarks"].double().numpy(), fmt="%.4f")
            lines.append(f"{subject}/{challenge}/{stem}.png")
    with open(os.path.join(dataset, "imagepathsvalidation.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return {"dataset": dataset, "images": images}
