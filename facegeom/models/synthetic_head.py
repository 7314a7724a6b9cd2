"""A procedurally generated morphable head in FLAME's layout.

FLAME and the Basel Face Model cannot be redistributed, so demos and tests need
a model of their own. :func:`synthetic_head` builds one from a seed: a smooth,
closed, head-shaped triangle mesh (skull, nose, eye sockets with eyeballs, lips
and a mouth line, chin, cheekbones, ear bumps and a neck), FLAME's five-joint
skeleton with skinning weights, identity / expression / pose-corrective bases,
a per-vertex albedo model and the 68 iBUG landmarks embedded on the surface
(with a dynamic jaw contour table in the official file's layout).

It is NOT a statistical model of real faces: the bases are smooth random fields
chosen to look plausible and to be well conditioned for fitting, nothing more.
"""
from __future__ import annotations

import functools
import math
from typing import Dict, Optional, Tuple

import numpy as np
import torch

from facegeom import _checks
from facegeom.models.flame import DYNAMIC_CONTOUR_ROWS, FLAME, MAX_CONTOUR_YAW

_RAD = math.pi / 180.0

# Face features as Gaussian bumps on the head's radius, in (azimuth, elevation)
# degrees (azimuth 0 = straight ahead, positive towards the subject's left, +x;
# elevation positive upwards): (azimuth, elevation, azimuth sigma, elevation
# sigma, amplitude in metres). Mirrored features are listed once with a "+-"
# flag and placed at +azimuth and -azimuth.
_FEATURES = (
    # azimuth, elevation, s_az, s_el, metres, mirrored
    (0.0, -8.0, 5.5, 11.0, 0.020, False),  # nose ridge
    (0.0, -15.0, 6.5, 4.5, 0.008, False),  # nose tip
    (7.0, -17.0, 4.0, 3.5, 0.004, True),  # nostril wings
    (21.0, 6.0, 8.0, 5.5, -0.011, True),  # eye sockets
    (21.0, 16.0, 11.0, 3.5, 0.004, True),  # brow ridges
    (0.0, -30.0, 13.0, 2.2, -0.004, False),  # mouth line
    (0.0, -26.5, 11.0, 2.6, 0.004, False),  # upper lip
    (0.0, -34.0, 11.0, 2.8, 0.004, False),  # lower lip
    (0.0, -48.0, 12.0, 6.0, 0.007, False),  # chin
    (40.0, -4.0, 10.0, 9.0, 0.004, True),  # cheekbones
    (94.0, 2.0, 6.5, 11.0, 0.012, True),  # ears
)
_EYE = (21.0, 6.0)  # eye socket centre (azimuth, elevation), mirrored
_EYEBALL_RADIUS = 0.0125
_JAW_HINGE = (78.0, -12.0)  # mirrored
_HEAD_AXES = np.array([0.076, 0.102, 0.094])  # ellipsoid semi-axes (x, y, z), metres
_NECK_RADII = (0.047, 0.052)  # x and z semi-axes of the neck cylinder
_NECK_TOP, _NECK_LENGTH, _NECK_OFFSET_Z = -0.07, 0.08, -0.012
_SUBDIVISIONS = 4  # icosphere level: 2562 head vertices
_FRONT_DENSITY = 0.5  # 0: uniform; 0.5: four times denser on the face than behind


def _landmark_directions() -> Tuple[np.ndarray, np.ndarray]:
    """(azimuth, elevation) in degrees of the 68 iBUG landmarks (subject's right,
    image left, first), and of the 17 contour points."""
    t = np.linspace(-1.0, 1.0, 17)
    contour = np.stack([72.0 * t, -10.0 - 42.0 * (1.0 - np.abs(t) ** 1.6)], 1)
    brow_r = [(-36, 14.5), (-30, 17.0), (-23, 18.0), (-16, 17.5), (-9, 16.0)]
    brow_l = [(-a, e) for a, e in reversed(brow_r)]
    nose = [(0, 5), (0, -2), (0, -8), (0, -15), (-8, -19), (-4, -20), (0, -20.5), (4, -20), (8, -19)]
    eye_r = [(-29, 6), (-24, 9.5), (-18, 9.5), (-13, 6), (-18, 2.5), (-24, 2.5)]
    eye_l = [(13, 6), (18, 9.5), (24, 9.5), (29, 6), (24, 2.5), (18, 2.5)]
    mouth_outer = [(-14, -30), (-9, -27), (-4, -26), (0, -26.3), (4, -26), (9, -27), (14, -30),
                   (9, -33.5), (4, -35), (0, -35.3), (-4, -35), (-9, -33.5)]
    mouth_inner = [(-11, -30), (-4, -29.2), (0, -29.2), (4, -29.2), (11, -30), (4, -30.8), (0, -30.8), (-4, -30.8)]
    static = np.array(brow_r + brow_l + nose + eye_r + eye_l + mouth_outer + mouth_inner, dtype=np.float64)
    return np.concatenate([contour, static]), contour


def _icosphere(subdivisions: int) -> Tuple[np.ndarray, np.ndarray]:
    """Unit icosphere: vertices [V, 3], faces [F, 3] wound counter-clockwise seen from outside."""
    p = (1.0 + 5.0 ** 0.5) / 2.0
    verts = np.array([(-1, p, 0), (1, p, 0), (-1, -p, 0), (1, -p, 0), (0, -1, p), (0, 1, p), (0, -1, -p),
                      (0, 1, -p), (p, 0, -1), (p, 0, 1), (-p, 0, -1), (-p, 0, 1)], dtype=np.float64)
    faces = np.array([(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4),
                      (11, 10, 2), (10, 7, 6), (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9),
                      (4, 9, 5), (2, 4, 11), (6, 2, 10), (8, 6, 7), (9, 8, 1)], dtype=np.int64)
    verts /= np.linalg.norm(verts, axis=1, keepdims=True)
    for _ in range(subdivisions):
        edges = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
        unique, inverse = np.unique(edges, axis=0, return_inverse=True)
        mids = verts[unique].mean(1)
        mids /= np.linalg.norm(mids, axis=1, keepdims=True)
        mid_index = (len(verts) + inverse.reshape(-1, 3))  # midpoints of edges (a,b), (b,c), (c,a)
        verts = np.concatenate([verts, mids])
        a, b, c = faces.T
        ab, bc, ca = mid_index.T
        faces = np.concatenate([np.stack(f, 1) for f in ((a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca))])
    return verts, faces


def _angles(directions: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Unit vectors -> (azimuth, elevation) in degrees."""
    azimuth = np.degrees(np.arctan2(directions[:, 0], directions[:, 2]))
    elevation = np.degrees(np.arcsin(np.clip(directions[:, 1], -1.0, 1.0)))
    return azimuth, elevation


def direction(azimuth, elevation) -> np.ndarray:
    """``[..., 3]`` unit vectors of azimuth / elevation in degrees (the head's frame: azimuth
    about +y from +z, elevation towards +y). Shared with :mod:`facegeom.tracking.synthetic`."""
    az, el = np.radians(azimuth), np.radians(elevation)
    return np.stack([np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)], -1)


def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _bump(azimuth, elevation, centre_az, centre_el, sigma_az, sigma_el):
    d_az = (azimuth - centre_az + 180.0) % 360.0 - 180.0
    return np.exp(-0.5 * ((d_az / sigma_az) ** 2 + ((elevation - centre_el) / sigma_el) ** 2))


def _head_surface(directions: np.ndarray) -> np.ndarray:
    """Head point for each unit direction (the head is star-shaped around the origin)."""
    azimuth, elevation = _angles(directions)
    # Ray / ellipsoid intersection, then features along the ray.
    radius = 1.0 / np.sqrt(((directions / _HEAD_AXES) ** 2).sum(1))
    # Narrower jaw: the lower face tapers towards the chin.
    radius *= 1.0 - 0.10 * _smoothstep((-elevation - 10.0) / 40.0) * np.abs(np.sin(np.radians(azimuth)))
    for az, el, s_az, s_el, metres, mirrored in _FEATURES:
        radius = radius + metres * _bump(azimuth, elevation, az, el, s_az, s_el)
        if mirrored:
            radius = radius + metres * _bump(azimuth, elevation, -az, el, s_az, s_el)
    points = directions * radius[:, None]
    # Neck: below the jaw the surface blends into a vertical elliptic cylinder,
    # closed at the bottom by a flat disk.
    blend = _smoothstep((-elevation - 50.0) / 25.0)[:, None]
    depth = np.clip((-elevation - 50.0) / 30.0, 0.0, 1.0)  # 0 at the jaw, 1 at the bottom rim
    cap = np.clip((90.0 + elevation) / 10.0, 0.0, 1.0)  # shrinks to the disk's centre
    az = np.radians(azimuth)
    neck = np.stack([_NECK_RADII[0] * np.sin(az) * cap, _NECK_TOP - _NECK_LENGTH * depth,
                     _NECK_RADII[1] * np.cos(az) * cap + _NECK_OFFSET_Z], 1)
    return (1.0 - blend) * points + blend * neck


def _warp_towards_face(directions: np.ndarray) -> np.ndarray:
    """Move sphere points towards +z so the face gets more vertices than the back."""
    polar = np.arccos(np.clip(directions[:, 2], -1.0, 1.0))
    new_polar = polar - _FRONT_DENSITY * np.sin(polar)
    side = directions[:, :2]
    norm = np.linalg.norm(side, axis=1, keepdims=True)
    side = np.where(norm > 1e-12, side / np.maximum(norm, 1e-12), np.array([1.0, 0.0]))
    return np.concatenate([side * np.sin(new_polar)[:, None], np.cos(new_polar)[:, None]], 1)


def _ray_hits(unit_vertices, faces, directions, candidates):
    """Moller-Trumbore for rays from the origin: hit mask, u, v for each (ray, candidate face)."""
    a, b, c = (unit_vertices[faces[candidates, i]] for i in range(3))  # [L, C, 3]
    e1, e2 = b - a, c - a
    d = np.broadcast_to(directions[:, None, :], a.shape)
    p = np.cross(d, e2)
    det = (p * e1).sum(-1)
    s = -a
    u = (s * p).sum(-1) / det
    q = np.cross(s, e1)
    v = (d * q).sum(-1) / det
    t = (e2 * q).sum(-1) / det
    hit = (u >= -1e-9) & (v >= -1e-9) & (u + v <= 1 + 1e-9) & (t > 0)
    return hit, u, v


def embed_directions(unit_vertices: np.ndarray, faces: np.ndarray, directions: np.ndarray):
    """Face index and barycentrics of the ray from the origin along each direction
    through a star-shaped triangle mesh whose vertices are ``unit_vertices``.

    Shared with :mod:`facegeom.tracking.synthetic` (its MediaPipe embedding on this head)."""
    # Candidate faces: those around the three vertices nearest to each ray.
    corners = faces.ravel()
    face_of_corner = np.argsort(corners, kind="stable") // 3
    counts = np.bincount(corners, minlength=len(unit_vertices))
    starts = np.cumsum(counts) - counts
    slots = np.minimum(np.arange(counts.max())[None, :], counts[:, None] - 1)
    adjacency = face_of_corner[starts[:, None] + slots]  # [V, max valence], padded by repetition
    closeness = (torch.from_numpy(directions) @ torch.from_numpy(unit_vertices).T).numpy()
    nearest = np.argpartition(-closeness, 3, axis=1)[:, :3]  # [L, 3]
    candidates = adjacency[nearest].reshape(len(directions), -1)
    hit, u, v = _ray_hits(unit_vertices, faces, directions, candidates)
    missed = ~hit.any(1)
    if missed.any():  # rare: fall back to every face for those rays
        every = np.broadcast_to(np.arange(len(faces)), (int(missed.sum()), len(faces)))
        hit_m, u_m, v_m = _ray_hits(unit_vertices, faces, directions[missed], every)
        if not hit_m.any(1).all():
            raise RuntimeError("synthetic head: a landmark ray missed the mesh")
        pick = np.argmax(hit_m, 1)
        rows = np.arange(len(pick))
        face_m, um, vm = every[rows, pick], u_m[rows, pick], v_m[rows, pick]
    pick = np.argmax(hit, 1)
    rows = np.arange(len(directions))
    face, u, v = candidates[rows, pick], u[rows, pick], v[rows, pick]
    if missed.any():
        face[missed], u[missed], v[missed] = face_m, um, vm
    bary = np.clip(np.stack([1.0 - u - v, u, v], 1), 0.0, 1.0)
    return face.astype(np.int64), bary / bary.sum(1, keepdims=True)


def _orthonormal_fields(fields: np.ndarray) -> np.ndarray:
    """Columns of ``fields`` [N, K] (full column rank) orthonormalised, in order."""
    # Cholesky QR, twice for accuracy: a K x K factorisation instead of a
    # Householder QR of the tall matrix. In torch rather than numpy, whose
    # multi-threaded OpenBLAS was 10x slower on a busy machine.
    # One thread: these products are small, and on a busy machine the
    # intra-op threads cost more in synchronisation than they save (0.6 s vs
    # 1.3-1.9 s for the whole build on a loaded 2-core VM).
    tall = torch.from_numpy(np.ascontiguousarray(fields))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(2):
            lower = torch.linalg.cholesky(tall.T @ tall)
            tall = torch.linalg.solve_triangular(lower, tall.T, upper=False).T
    finally:
        torch.set_num_threads(threads)
    return tall.numpy()


def _smooth_features(rng, points: np.ndarray, count: int, length: float) -> np.ndarray:
    """[N, 10 + count] smooth scalar functions of position: the monomials of
    degree <= 2 (global scalings and shears) and ``count`` random Fourier
    features with wavelength about ``length`` metres (local bumps). Mixed at
    random into vector fields they give linearly independent, well conditioned
    bases of any size."""
    x, y, z = (points / np.abs(points).max(0)).T
    monomials = np.stack([np.ones_like(x), x, y, z, x * x, y * y, z * z, x * y, y * z, z * x], 1)
    frequencies = rng.standard_normal((3, count)) * (2.0 * math.pi / length)
    phases = rng.uniform(0.0, 2.0 * math.pi, count)
    return np.concatenate([monomials, np.cos(points @ frequencies + phases)], 1)


def _spectrum(first: float, count: int, num_vertices: int) -> np.ndarray:
    """Scales for orthonormal components so that component k moves a vertex by
    ``first / (1 + k / 3)`` RMS (orthonormal columns have RMS 1 / sqrt(V) per vertex)."""
    return first * math.sqrt(num_vertices) / (1.0 + np.arange(count) / 3.0)


_MOUTH_OPEN_MEAN = 0.2  # radians: the jaw opening of the mean face with mouth_open


def _without_rigid_motion(fields: np.ndarray, points: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``fields`` [N, 3, K] minus their weighted least-squares rigid motion: the translation
    and infinitesimal rotation ``t + w x (p - c)`` about the weighted centroid ``c`` of
    ``points`` [N, 3] that best explain each field under the vertex ``weights`` [N]. The
    result is orthogonal, in the weighted inner product, to every rigid motion (also after
    any linear mixing of the columns), as the components of a morphable model built by PCA
    of Procrustes-aligned scans are."""
    w = weights / weights.sum()
    r = points - w @ points
    rigid = np.zeros((6, len(points), 3))
    for axis in range(3):
        rigid[axis, :, axis] = 1.0
        unit = np.zeros(3)
        unit[axis] = 1.0
        rigid[3 + axis] = np.cross(unit, r)
    root = np.repeat(np.sqrt(w), 3)[:, None]  # [3N, 1]: the weights on each coordinate
    basis = rigid.reshape(6, -1).T * root  # [3N, 6], weighted
    target = fields.reshape(len(points) * 3, -1) * root
    coef = np.linalg.lstsq(basis, target, rcond=None)[0]  # [6, K]
    return fields - np.einsum("jvc,jk->vck", rigid, coef)


@functools.lru_cache(maxsize=8)
def _build(seed: int, n_shape: int, n_exp: int, n_tex: int, rigid_free: bool = False,
           mouth_open: bool = False) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    sphere, head_faces = _icosphere(_SUBDIVISIONS)
    sphere = _warp_towards_face(sphere)
    head = _head_surface(sphere)
    num_head = len(head)
    azimuth, elevation = _angles(sphere)

    # Eyeballs: small spheres sitting in the sockets, driven by the eye joints.
    ball, ball_faces = _icosphere(2)
    eye_centres = []
    for sign in (1.0, -1.0):  # FLAME's order: left eye (+x) then right eye
        socket = _head_surface(direction(sign * _EYE[0], _EYE[1])[None])[0]
        eye_centres.append(socket - 0.0055 * socket / np.linalg.norm(socket))
    eye_centres = np.array(eye_centres)
    vertices = np.concatenate([head] + [centre + _EYEBALL_RADIUS * ball for centre in eye_centres])
    faces = np.concatenate([head_faces] + [ball_faces + num_head + k * len(ball) for k in range(2)])
    num_vertices = len(vertices)
    is_eye = np.zeros((num_vertices, 2), dtype=bool)
    is_eye[num_head:num_head + len(ball), 0] = True
    is_eye[num_head + len(ball):, 1] = True
    on_head = ~is_eye.any(1)

    # ---- skeleton: global (root), neck, jaw, left eye, right eye ----------
    neck_y = head[:, 1].min()
    regressor = np.zeros((5, num_vertices))

    def ring(y_level, width):
        mask = on_head & (np.abs(vertices[:, 1] - y_level) < width)
        return mask / mask.sum()

    regressor[0] = ring(neck_y + 0.015, 0.006)  # root: base of the neck
    regressor[1] = ring(neck_y + 0.045, 0.006)  # neck: top of the neck
    hinges = np.array([_head_surface(direction(s * _JAW_HINGE[0], _JAW_HINGE[1])[None])[0] for s in (1, -1)])
    near_hinge = np.min(np.linalg.norm(vertices[:, None] - hinges[None], axis=-1), 1)
    jaw_patch = np.exp(-0.5 * (near_hinge / 0.008) ** 2) * on_head
    regressor[2] = jaw_patch / jaw_patch.sum()
    regressor[3] = is_eye[:, 0] / is_eye[:, 0].sum()
    regressor[4] = is_eye[:, 1] / is_eye[:, 1].sum()
    joints = regressor @ vertices

    weights = np.zeros((num_vertices, 5))
    az_all = np.concatenate([azimuth, np.zeros(num_vertices - num_head)])
    el_all = np.concatenate([elevation, np.zeros(num_vertices - num_head)])
    # The jaw moves the face below the mouth line and in front of the hinge,
    # fading out under the chin so the neck stays put.
    below_mouth = _smoothstep((-29.0 - el_all) / 2.5)
    front = _smoothstep((75.0 - np.abs(az_all)) / 20.0)
    above_neck = 1.0 - _smoothstep((-el_all - 58.0) / 12.0)
    jaw = below_mouth * front * above_neck * on_head
    root = _smoothstep((joints[1, 1] - vertices[:, 1]) / 0.03) * on_head
    weights[:, 2] = jaw
    weights[:, 0] = (1.0 - jaw) * root
    weights[:, 1] = (1.0 - jaw) * (1.0 - root) * on_head
    weights[:, 3] = is_eye[:, 0]
    weights[:, 4] = is_eye[:, 1]

    # ---- bases ---------------------------------------------------------------
    # Smooth vector fields on the head (polynomials of the position, randomly
    # mixed); eyeballs move rigidly with their socket.
    socket_index = [np.argsort(np.linalg.norm(head - c, axis=1))[:12] for c in eye_centres]

    face_mask = (_smoothstep((70.0 - np.abs(azimuth)) / 25.0) * _smoothstep((elevation + 62.0) / 15.0)
                 * _smoothstep((35.0 - elevation) / 15.0))

    def head_fields(features: np.ndarray, count: int, mask: np.ndarray, eyes_follow: bool,
                    aligned: bool = False, leading: Optional[np.ndarray] = None) -> np.ndarray:
        mixing = rng.standard_normal((features.shape[1], 3, count))
        fields = np.einsum("vm,mck->vck", features, mixing) * mask[:, None, None]  # [V_head, 3, K]
        if leading is not None:  # component 0 given (the orthonormalisation keeps its direction)
            fields[..., 0] = leading
        if aligned:
            fields = _without_rigid_motion(fields, head, face_mask)
        full = np.zeros((num_vertices, 3, count))
        full[:num_head] = fields
        for k, idx in enumerate(socket_index if eyes_follow else ()):
            full[is_eye[:, k]] = fields[idx].mean(0)
        flat = _orthonormal_fields(full.reshape(-1, count))
        return flat.reshape(num_vertices, 3, count)

    features = _smooth_features(rng, head, n_shape, 0.25)
    feature_bumps = np.stack(
        [_bump(azimuth, elevation, sign * az, el, s_az, s_el)
         for az, el, s_az, s_el, _, mirrored in _FEATURES for sign in ((1.0, -1.0) if mirrored else (1.0,))], 1)
    identity_features = np.concatenate([features, feature_bumps * sphere[:, [2]], feature_bumps * sphere[:, [0]]], 1)
    identity = head_fields(identity_features, n_shape, np.ones(num_head), eyes_follow=True, aligned=rigid_free)
    # Standard deviations decay like a PCA spectrum: N(0, 1) coefficients move
    # vertices by about 5 mm RMS in all (3 mm for the first component alone).
    sigma_shape = _spectrum(0.003, n_shape, num_vertices)
    shapedirs_shape = identity * sigma_shape

    mouth_focus = 1.0 + 2.0 * _bump(azimuth, elevation, 0.0, -30.0, 18.0, 10.0)
    # mouth_open: expression component 0 is the jaw's opening rotation about its hinge,
    # linearised (the displacement per radian of the jaw's skinning weights): an open mouth
    # in the linear model, which the skinned jaw gives only through the pose.
    opening = None
    template = vertices
    if mouth_open:
        opening = jaw[:num_head, None] * np.cross(np.array([1.0, 0.0, 0.0]), head - joints[2])
        template = vertices.copy()
        template[:num_head] += _MOUTH_OPEN_MEAN * opening  # the mean face's mouth open
    expression = head_fields(_smooth_features(rng, head, n_exp, 0.12), n_exp, face_mask * mouth_focus,
                             eyes_follow=False, aligned=rigid_free, leading=opening)
    sigma_exp = _spectrum(0.001, n_exp, num_vertices)  # concentrated on the face: ~1 cm peaks
    shapedirs_exp = expression * sigma_exp
    shapedirs = np.concatenate([shapedirs_shape, shapedirs_exp], 2)

    # Pose correctives: small smooth fields over the jaw and neck regions for
    # the neck and jaw rotations (per unit of (R - I) entry, as FLAME's
    # posedirs); the eye rotations have none, so they move only the eyeballs.
    corrective_mask = np.maximum(jaw[:num_head], (1.0 - above_neck[:num_head]) * on_head[:num_head])
    neck_jaw = head_fields(_smooth_features(rng, head, 18, 0.1), 18, corrective_mask + 1e-3, eyes_follow=False)
    posedirs = np.zeros((num_vertices, 3, 36))
    posedirs[..., :18] = neck_jaw * (0.002 * math.sqrt(num_vertices))
    posedirs = posedirs.reshape(-1, 36).T  # [36, V*3]

    albedo_mean, albedo_basis = _albedo(rng, vertices, head, azimuth, elevation, num_head, is_eye,
                                        eye_centres, n_tex)

    all_dirs, contour_dirs = _landmark_directions()
    full_faces, full_bary = embed_directions(sphere, head_faces, direction(all_dirs[:, 0], all_dirs[:, 1]))
    # Dynamic contour (FLAME's table layout, DECA's yaw sign): at yaw y the
    # contour point at azimuth a sits where the head is seen at azimuth a + y;
    # points that would turn past the silhouette slide to it, as a detector
    # finds the cheek outline.
    rows = np.arange(DYNAMIC_CONTOUR_ROWS)
    yaw = np.where(rows <= MAX_CONTOUR_YAW, rows, MAX_CONTOUR_YAW - rows).astype(np.float64)
    limit = 80.0
    dyn_az = np.clip(contour_dirs[None, :, 0], -limit - yaw[:, None], limit - yaw[:, None])
    dyn_el = np.broadcast_to(contour_dirs[None, :, 1], dyn_az.shape)
    dyn_faces, dyn_bary = embed_directions(sphere, head_faces, direction(dyn_az.ravel(), dyn_el.ravel()))
    return dict(
        v_template=template, faces=faces, shapedirs=shapedirs, posedirs=posedirs, J_regressor=regressor,
        lbs_weights=weights, albedo_mean=albedo_mean, albedo_basis=albedo_basis,
        static_faces=full_faces[17:], static_bary=full_bary[17:],
        dynamic_faces=dyn_faces.reshape(DYNAMIC_CONTOUR_ROWS, 17),
        dynamic_bary=dyn_bary.reshape(DYNAMIC_CONTOUR_ROWS, 17, 3),
        full_faces=full_faces, full_bary=full_bary,
        face_weights=np.concatenate([face_mask, np.zeros(num_vertices - num_head)]),
    )


def _albedo(rng, vertices, head, azimuth, elevation, num_head, is_eye, eye_centres, n_tex):
    """Per-vertex albedo: skin, lips, brows, hair, white eyeballs with an iris."""
    num_vertices = len(vertices)
    skin = np.array([0.80, 0.60, 0.50])
    colour = np.tile(skin, (num_head, 1))

    def blend(weight, rgb):
        nonlocal colour
        colour = colour * (1.0 - weight[:, None]) + np.asarray(rgb)[None] * weight[:, None]

    lips = np.maximum(_bump(azimuth, elevation, 0.0, -26.5, 11.0, 2.6), _bump(azimuth, elevation, 0.0, -34.0, 11.0, 2.8))
    blend(0.8 * lips, (0.72, 0.36, 0.36))
    brows = np.maximum(_bump(azimuth, elevation, 21.0, 16.5, 10.0, 2.2), _bump(azimuth, elevation, -21.0, 16.5, 10.0, 2.2))
    blend(0.85 * brows, (0.30, 0.20, 0.14))
    cheeks = np.maximum(_bump(azimuth, elevation, 35.0, -12.0, 10.0, 8.0), _bump(azimuth, elevation, -35.0, -12.0, 10.0, 8.0))
    blend(0.3 * cheeks, (0.85, 0.50, 0.45))
    # Hair: the top and back of the skull.
    back = np.abs(azimuth) > 100.0
    hair = np.maximum(_smoothstep((elevation - 28.0) / 8.0), back * _smoothstep((elevation + 15.0) / 15.0))
    blend(0.9 * hair, (0.25, 0.18, 0.12))

    albedo = np.zeros((num_vertices, 3))
    albedo[:num_head] = colour
    for k in range(2):
        rel = vertices[is_eye[:, k]] - eye_centres[k]
        forward = rel[:, 2] / _EYEBALL_RADIUS  # 1 at the front of the eyeball
        iris = _smoothstep((forward - 0.80) / 0.05)
        pupil = _smoothstep((forward - 0.95) / 0.02)
        eye = np.array([0.93, 0.92, 0.90]) * (1 - iris[:, None]) + np.array([0.35, 0.25, 0.15]) * iris[:, None]
        albedo[is_eye[:, k]] = eye * (1 - pupil[:, None]) + 0.05 * pupil[:, None]

    # Basis: overall brightness and redness first, then smooth random colour fields.
    features = _smooth_features(rng, vertices, n_tex, 0.2)
    fields = [np.ones((num_vertices, 3)), np.tile([[1.0, -0.5, -0.5]], (num_vertices, 1))]
    mixing = rng.standard_normal((features.shape[1], 3, max(n_tex - 2, 0)))
    random_fields = np.einsum("vm,mck->kvc", features, mixing)
    stacked = np.concatenate([np.stack(fields)[: n_tex], random_fields])[:n_tex]  # [K, V, 3]
    flat = _orthonormal_fields(stacked.reshape(n_tex, -1).T).T.reshape(n_tex, num_vertices, 3)
    sigma = _spectrum(0.05, n_tex, num_vertices)
    return albedo, flat * sigma[:, None, None]


def synthetic_head(seed: int = 0, n_shape: int = 50, n_exp: int = 50, n_tex: int = 50,
                   dtype: Optional[torch.dtype] = None, rigid_free: bool = False,
                   mouth_open: bool = False) -> FLAME:
    """A procedurally generated morphable head, as a :class:`~facegeom.models.FLAME`.

    NOT a statistical model of real faces: the geometry is a smooth closed
    head-like surface with nose, eye sockets (with eyeballs), lips, chin,
    cheekbones, ear bumps and a neck, and the identity, expression, pose-corrective
    and albedo bases are smooth random fields. It exists so that demos and tests
    run without the licensed FLAME / BFM files, and it works wherever FLAME does.

    - Frame and units as FLAME: metres, y up, the face looks along +z, x to the
      subject's left; about 2,900 vertices (2,562 on the head, 162 per eyeball).
    - Skeleton: FLAME's five joints (global, neck, jaw, left eye, right eye) and
      tree; the jaw opens the mouth below the mouth line, the eyes turn the eyeballs.
    - Bases: ``n_shape`` identity and ``n_exp`` expression components (orthogonal,
      coefficients ~ N(0, 1) give millimetre-scale changes), 36 pose correctives,
      ``n_tex`` albedo components around a mean skin / lips / brows / hair / eye texture.
    - Landmarks: the 68 iBUG points embedded barycentrically on the surface, with
      a 79-row dynamic jaw-contour table laid out as FLAME's (same yaw lookup).

    Deterministic for a given seed (identical arrays on every call; across
    machines, up to floating-point differences of the BLAS). Building takes
    under a second (0.6-0.9 s measured on a busy 2-core VM) and the arrays are
    cached per argument set; each call returns a fresh module.

    Args:
        seed: selects the random bases (the mean geometry and landmarks do not change).
        n_shape, n_exp, n_tex: number of identity, expression and albedo components (>= 1).
        dtype: float32 or float64 buffers (default: ``torch.get_default_dtype()``).
        rigid_free: remove from every identity and expression field, before it is
            orthonormalised, its least-squares rigid motion over the face (translation and
            infinitesimal rotation, weighted by the smooth face region), as the components of
            a morphable model built by PCA of Procrustes-aligned scans are. Without it the
            random fields' linear part holds rigid motion: on the 68 landmark vertices the
            first identity component of seed 0 is 70 % a rotation (2.3 degrees per unit
            coefficient), which a fit can trade for head pose (docs/specular.md measures it).
            The random draws are the same either way: only the two bases change.
        mouth_open: expression component 0 is the jaw's opening (its rotation about the jaw
            joint through the skinning weights, linearised: +1 opens the lips by about 2 mm),
            the other components stay random; and the mean face's jaw is open by 0.2 rad
            (lips about 11 mm apart), so that coefficients down to about -5 keep the lips
            apart. The linear model then opens the mouth, as the leading expression
            components of the BFM-family models do (the skinned jaw does it only through
            the pose). Default False for both: the arrays of every earlier release.

    Example:
        >>> head = synthetic_head(seed=0)
        >>> out = head(torch.randn(1, 50) * 0.5, torch.randn(1, 50) * 0.5, texture=torch.zeros(1, 50))
        >>> out.vertices.shape, out.landmarks2d.shape, out.albedo.shape
        (torch.Size([1, 2886, 3]), torch.Size([1, 68, 3]), torch.Size([1, 2886, 3]))
    """
    for name, value in (("n_shape", n_shape), ("n_exp", n_exp), ("n_tex", n_tex)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    _checks.boolean("rigid_free", rigid_free)
    _checks.boolean("mouth_open", mouth_open)
    arrays = _build(seed, n_shape, n_exp, n_tex, rigid_free, mouth_open)
    model = FLAME(arrays["v_template"], arrays["shapedirs"], arrays["posedirs"], arrays["J_regressor"],
                  arrays["lbs_weights"], arrays["faces"], n_shape=n_shape, n_exp=n_exp,
                  albedo_mean=arrays["albedo_mean"], albedo_basis=arrays["albedo_basis"], dtype=dtype)
    model.set_landmark_embedding(arrays["static_faces"], arrays["static_bary"], arrays["dynamic_faces"],
                                 arrays["dynamic_bary"], arrays["full_faces"], arrays["full_bary"],
                                 source="synthetic head")
    return model
