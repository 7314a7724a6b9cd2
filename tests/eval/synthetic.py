"""Synthetic face-like surfaces and scans for the protocol tests (millimetres)."""
import math

import numpy as np
import torch

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
