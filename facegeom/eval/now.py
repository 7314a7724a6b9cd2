"""The NoW benchmark metric (Sanyal et al. 2019), original and metrical (Zielonka et al. 2022).

For one reconstruction (predicted mesh + its 7 landmarks) and one reference scan
(+ its 7 landmarks), ``now_distances`` does what the official ``now_evaluation``
code (``scan2mesh_computations.py`` / ``scan2mesh_computations_metrical.py``) does:

1. **Crop** the scan to a sphere around the face (``face_crop_sphere``):
   centre = lm4 + 0.3 (mean(lm1, lm2) - lm4), radius = 1.4 (||lm0 - lm3|| +
   ||mean(lm1, lm2) - lm4||) / 2; keep the scan vertices with distance <= radius.
2. **Landmark alignment** (``procrustes``): the predicted 7 landmarks are mapped
   onto the scan's by a similarity (original protocol) or, for the metrical one,
   by a rotation + translation after multiplying by the unit factor (m -> 1000,
   cm -> 10, mm -> 1) that brings the prediction to millimetres.
3. **Refinement** (``refine_alignment``): scale (original protocol only),
   rotation and translation minimise the sum of squared scan-to-mesh distances
   (the official code minimises the same sum of squares with chumpy's dogleg);
   here Levenberg-Marquardt on point-to-surface residuals whose Jacobian is the
   point-to-plane one, each iteration one closest-point query
   (``facegeom.ops.point_to_surface``).
4. **Distances**: for every cropped scan vertex, the distance (mm) to the closest
   point on the aligned predicted surface.

Landmark order (NoW and Stirling/FG2018): right eye outer corner, right eye
inner corner, left eye inner corner, left eye outer corner, nose bottom, right
mouth corner, left mouth corner; on a 68-point layout these are the indices
``NOW_LANDMARKS_68 = (36, 39, 42, 45, 33, 48, 54)``.

Differences from the official code, on purpose:
- The metrical protocol's initial translation is the one that matches the
  unit factor (centroid of the scaled, rotated prediction landmarks onto the scan
  landmarks); the official code reuses the translation computed for the
  Procrustes *scale*, which the refinement then has to undo. Both end at the same
  minimum when the refinement converges.
- The official refinement starts from Rodrigues ``r = 0`` and stops on chumpy's
  tolerances; here it stops when a step no longer lowers the cost by a relative
  ``tolerance``. Both minimise the same function.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Dict, Iterable, Optional, Sequence, Tuple, Union

import numpy as np
import torch

NOW_LANDMARKS_68 = (36, 39, 42, 45, 33, 48, 54)
UNIT_TO_MM = {"mm": 1.0, "cm": 10.0, "m": 1000.0}
NOW_CROP_RADIUS_FACTOR = 1.4
REFINEMENT_TOLERANCE = 1e-6  # relative decrease of the cost below which the refinement stops

ArrayLike = Union[np.ndarray, torch.Tensor, Sequence]


def _as_points(name: str, value, count: Optional[int] = None, min_count: int = 1) -> torch.Tensor:
    """float64 CPU tensor [N, 3], finite, with N == count (or >= min_count)."""
    if isinstance(value, torch.Tensor):
        if value.is_complex():
            raise TypeError(f"{name} must hold real coordinates, got complex values")
        t = value.detach().to("cpu", torch.float64)
    else:
        try:
            array = np.asarray(value)
            if array.dtype.kind == "c":
                raise TypeError(f"{name} must hold real coordinates, got complex values")
            t = torch.as_tensor(np.asarray(array, dtype=np.float64))
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be an array of 3D points, got {type(value).__name__}") from None
    if t.dim() == 3 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 2 or t.shape[1] != 3:
        raise ValueError(f"{name} must have shape [N, 3], got {list(t.shape)}")
    if count is not None and t.shape[0] != count:
        raise ValueError(f"{name} must hold exactly {count} points (shape [{count}, 3]), got {t.shape[0]}")
    if t.shape[0] < min_count:
        raise ValueError(f"{name} must hold at least {min_count} points, got {t.shape[0]}")
    t = t.contiguous()
    finite = np.isfinite(t.numpy())
    if not finite.all():
        bad = int((~finite).any(1).sum())
        raise ValueError(f"{name}: {bad} of {t.shape[0]} points have NaN or infinite coordinates")
    return t


def _as_faces(name: str, value, num_vertices: int) -> torch.Tensor:
    """int64 CPU tensor [F, 3] with indices in [0, num_vertices)."""
    t = value.detach().cpu() if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
    if t.dtype.is_floating_point or t.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer array, got {t.dtype}")
    if t.dim() != 2 or t.shape[1] != 3:
        raise ValueError(f"{name} must have shape [F, 3], got {list(t.shape)}")
    if t.shape[0] == 0:
        raise ValueError(f"{name} is empty: distances to a mesh need at least one triangle")
    t = t.to(torch.int64)
    low, high = int(t.min()), int(t.max())
    if low < 0 or high >= num_vertices:
        raise IndexError(f"{name} must index vertices in [0, {num_vertices - 1}], got [{low}, {high}]")
    return t.contiguous()


def unit_factor(unit: str) -> float:
    """Factor that converts a length in ``unit`` ('m', 'cm' or 'mm') to millimetres."""
    try:
        return UNIT_TO_MM[unit]
    except KeyError:
        raise ValueError(f"unit must be one of {sorted(UNIT_TO_MM)}, got {unit!r}") from None


# --------------------------------------------------------------------------- crop


def face_crop_sphere(landmarks: ArrayLike, radius_factor: float = NOW_CROP_RADIUS_FACTOR) -> Tuple[torch.Tensor, float]:
    """Centre and radius of the NoW face crop from the scan's 7 landmarks.

    ``landmarks``: [7, 3] in NoW order. With ``bridge = (lm1 + lm2) / 2`` (between
    the inner eye corners):
    ``centre = lm4 + 0.3 * (bridge - lm4)``,
    ``radius = radius_factor * (||lm0 - lm3|| + ||bridge - lm4||) / 2``.
    NoW uses ``radius_factor = 1.4``; Feng et al. 2018 (Stirling) uses 1.2.

    Returns ``(centre [3] float64, radius float)``.

    Example::

        centre, radius = face_crop_sphere(read_pp("scan.pp"))
    """
    lm = _as_points("landmarks", landmarks, count=7)
    nose_bottom = lm[4]
    bridge = (lm[1] + lm[2]) / 2
    centre = nose_bottom + 0.3 * (bridge - nose_bottom)
    outer_eye_distance = torch.linalg.norm(lm[0] - lm[3])
    nose_length = torch.linalg.norm(bridge - nose_bottom)
    return centre, float(radius_factor * (outer_eye_distance + nose_length) / 2)


@dataclass
class CroppedScan:
    """A scan restricted to the face sphere: ``vertices`` [N, 3] float64,
    ``indices`` [N] int64 into the original vertices, ``faces`` [F, 3] int64 into
    ``vertices`` (the triangles whose three corners were kept) or None."""

    vertices: torch.Tensor
    indices: torch.Tensor
    faces: Optional[torch.Tensor]
    centre: torch.Tensor
    radius: float


def crop_scan(
    vertices: ArrayLike,
    landmarks: ArrayLike,
    faces: Optional[ArrayLike] = None,
    radius_factor: float = NOW_CROP_RADIUS_FACTOR,
) -> CroppedScan:
    """Keep the scan vertices within the face sphere (``face_crop_sphere``), like
    the official ``crop_face_scan`` (distance <= radius keeps a vertex).

    ``vertices``: [V, 3]; ``landmarks``: [7, 3]; ``faces``: optional [F, 3]
    (re-indexed; triangles with a removed corner are dropped, as psbody's
    ``keep_vertices`` does).

    Example::

        crop = crop_scan(scan_vertices, scan_landmarks)
        crop.vertices.shape  # [N, 3], the points NoW measures from
    """
    v = _as_points("vertices", vertices)
    centre, radius = face_crop_sphere(landmarks, radius_factor)
    keep = np.linalg.norm(v.numpy() - centre.numpy(), axis=1) <= radius
    indices = torch.from_numpy(np.flatnonzero(keep))
    kept_faces = None
    if faces is not None:
        f = _as_faces("faces", faces, v.shape[0]) if len(faces) else torch.zeros(0, 3, dtype=torch.int64)
        new_index = torch.full((v.shape[0],), -1, dtype=torch.int64)
        new_index[indices] = torch.arange(indices.numel())
        remapped = new_index[f]
        kept_faces = remapped[(remapped >= 0).all(1)].contiguous()
    return CroppedScan(v[indices].contiguous(), indices, kept_faces, centre, radius)


# ---------------------------------------------------------------------- transforms


@dataclass
class Similarity:
    """``x -> scale * rotation @ x + translation`` (float64; ``rotation`` [3, 3]
    may be a reflection when produced by ``procrustes(allow_reflection=True)``)."""

    scale: float
    rotation: torch.Tensor
    translation: torch.Tensor

    def apply(self, points: torch.Tensor) -> torch.Tensor:
        """Transform points [N, 3] (float64)."""
        return self.scale * points @ self.rotation.T + self.translation

    def then(self, other: "Similarity") -> "Similarity":
        """The similarity that applies ``self`` first, then ``other``."""
        return Similarity(
            other.scale * self.scale,
            other.rotation @ self.rotation,
            other.scale * other.rotation @ self.translation + other.translation,
        )

    def as_dict(self) -> dict:
        return {
            "scale": float(self.scale),
            "rotation": self.rotation.tolist(),
            "translation": self.translation.tolist(),
        }


def procrustes(
    source: ArrayLike, target: ArrayLike, scale: bool = True, allow_reflection: bool = True
) -> Similarity:
    """Least-squares similarity mapping ``source`` points onto ``target`` points.

    Minimises ``sum_i ||target_i - (s R source_i + t)||^2`` (MATLAB's
    ``procrustes``, as ported in the NoW and FG2018 evaluation code): ``R`` from
    the SVD of the centred cross-covariance, ``s = trace(Sigma) * ||X0|| / ||Y0||``
    for unit-normalised centred sets (or 1 with ``scale=False``), ``t`` from the
    centroids. ``allow_reflection=True`` matches the official ``reflection='best'``
    (a reflection is returned when it fits better, which never happens for
    correctly ordered face landmarks); ``False`` forces ``det(R) = +1``.

    ``source``, ``target``: [N, 3] with N >= 3 and the same N.

    Example::

        T = procrustes(predicted_lmk7, scan_lmk7)
        aligned = T.apply(predicted_vertices)
    """
    y = _as_points("source", source, min_count=3)
    x = _as_points("target", target, count=y.shape[0])
    mu_x, mu_y = x.mean(0), y.mean(0)
    x0, y0 = x - mu_x, y - mu_y
    if not (torch.isfinite(x0).all() and torch.isfinite(y0).all()):
        raise ValueError("procrustes: the coordinates of source or target are too large (their centroid overflows)")
    norm_x, norm_y = _norm(x0), _norm(y0)
    if float(norm_x) == 0.0 or float(norm_y) == 0.0:
        raise ValueError("procrustes: the landmarks of source or target all coincide; no alignment is defined")
    # A = X0^T Y0 (unit-normalised); R maps centred source onto centred target
    u, sigma, vt = torch.linalg.svd((x0 / norm_x).T @ (y0 / norm_y))
    if not allow_reflection and torch.linalg.det(u @ vt) < 0:
        u = u.clone()
        u[:, -1] *= -1
        sigma = sigma.clone()
        sigma[-1] *= -1
    rotation = u @ vt
    s = float(sigma.sum() * norm_x / norm_y) if scale else 1.0
    translation = mu_x - s * rotation @ mu_y
    if not (0.0 < s < math.inf) or not torch.isfinite(translation).all():
        # e.g. coordinates near 1e154 and beyond: the scale under- or overflows and the
        # prediction would collapse to a point (or blow up) while looking aligned
        raise ValueError(f"procrustes: the similarity is not representable in float64 (scale {s!r}); "
                         "the coordinates of source and target differ by too many orders of magnitude")
    return Similarity(s, rotation, translation)


def _norm(x: torch.Tensor) -> torch.Tensor:
    """Frobenius norm without overflow or underflow of the squares (coordinates up to 1e308)."""
    largest = x.abs().max()
    if float(largest) == 0.0:
        return largest
    return largest * torch.linalg.norm(x / largest)


def _rotation_from_axis_angle(omega: np.ndarray) -> np.ndarray:
    angle = float(np.linalg.norm(omega))
    axis = omega / angle if angle > 1e-12 else omega
    k = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    if angle <= 1e-12:
        return np.eye(3) + k  # first order is exact to rounding here
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


# The protocol's own arithmetic runs in NumPy on [N, 3] arrays: tiny element-wise
# steps gain nothing from torch's intra-op threads and lose a lot to their start-up
# on a busy machine; the closest-point queries (the real work) run in the kernel.


def _closest(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray):
    """Squared distances [N], closest points [N, 3] and closest face ids [N] (NumPy)."""
    from facegeom.ops import point_to_surface

    dist2, face_index, bary = point_to_surface(
        torch.from_numpy(points)[None], torch.from_numpy(vertices)[None], torch.from_numpy(faces)
    )
    dist2, face_index, bary = dist2[0].numpy(), face_index[0].numpy(), bary[0].numpy()
    corners = vertices[faces[face_index]]  # [N, 3 corners, 3]
    closest = np.einsum("nc,ncx->nx", bary, corners)
    return dist2, closest, face_index


def _unit_face_normals(vertices: np.ndarray, faces: np.ndarray, face_index: np.ndarray) -> np.ndarray:
    corners = vertices[faces[face_index]]
    normal = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    return normal / np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-300)


def scan_to_mesh_distances(points: ArrayLike, vertices: ArrayLike, faces: ArrayLike) -> torch.Tensor:
    """Unsigned distance from each point to the closest point of the triangle mesh.

    ``points`` [N, 3], ``vertices`` [V, 3], ``faces`` [F, 3] -> float64 [N]
    (psbody ``ScanToMesh(signed=False)`` with vertex sampling; pymesh
    ``distance_to_mesh`` square-rooted).

    Example::

        d = scan_to_mesh_distances(crop.vertices, aligned_vertices, faces)
    """
    p = _as_points("points", points)
    v = _as_points("vertices", vertices)
    f = _as_faces("faces", faces, v.shape[0])
    dist2, _, _ = _closest(p.numpy(), v.numpy(), f.numpy())
    return torch.from_numpy(np.sqrt(np.maximum(dist2, 0)))


@dataclass
class RefinementInfo:
    """What the refinement did: accepted ``iterations``, closest-point
    ``evaluations`` (the last one is at the returned alignment), the cost (sum of
    squared residuals: distances, or point-to-plane distances for ICP) before/after,
    per-iteration ``costs`` and whether it ``converged`` (no step lowers the cost by
    more than the relative tolerance, or the fit is exact to rounding)."""

    iterations: int
    evaluations: int
    initial_cost: float
    final_cost: float
    costs: list
    converged: bool


def refine_alignment(
    points: ArrayLike,
    vertices: ArrayLike,
    faces: ArrayLike,
    initial: Optional[Similarity] = None,
    with_scale: bool = True,
    max_iterations: int = 50,
    tolerance: float = REFINEMENT_TOLERANCE,
) -> Tuple[Similarity, RefinementInfo]:
    """Similarity (or rigid, ``with_scale=False``) that minimises the sum of squared
    scan-to-mesh distances ``sum_i d(points_i, T(mesh))^2`` over T, starting from
    ``initial`` (the landmark alignment; identity if None).

    Levenberg-Marquardt: at each iterate every point ``p`` has its closest point
    ``c`` on the transformed mesh; the residual is ``||p - c||`` and its derivative
    w.r.t. an increment (log-scale, axis-angle, translation) applied about the
    points' centroid ``m`` is ``-[n.(c-m), (c-m) x n, n]`` with ``n = (p - c)/||p - c||``
    (the face normal when ``p`` lies on the surface) — the point-to-plane
    Jacobian, exact to first order for point-to-surface distances. A step is
    accepted when the true cost (a new closest-point query) decreases.
    The scale is optimised as ``exp(sigma)``, so it stays positive (the official
    code penalises ``s < 0`` instead).

    ``points`` [N, 3] (the cropped scan), ``vertices`` [V, 3] and ``faces`` [F, 3]
    (the prediction, in its own frame). Returns ``(T, info)`` with ``T`` mapping the
    prediction's original frame to the points' frame.

    Example::

        T0 = procrustes(pred_lmk7, scan_lmk7)
        T, info = refine_alignment(crop.vertices, pred_vertices, pred_faces, T0)
        distances = scan_to_mesh_distances(crop.vertices, T.apply(pred_vertices), pred_faces)
    """
    p = _as_points("points", points)
    v = _as_points("vertices", vertices)
    f = _as_faces("faces", faces, v.shape[0])
    alignment, info, _ = _fit_similarity(
        p.numpy(), v.numpy(), f.numpy(), initial, with_scale, max_iterations, tolerance, point_to_plane=False
    )
    return alignment, info


def _fit_similarity(p, v, f, initial, with_scale, max_iterations, tolerance, point_to_plane):
    """Levenberg-Marquardt over (log-scale, axis-angle, translation) of the mesh, applied
    about the points' centroid m, minimising sum_i r_i^2 with the closest point c_i of
    p_i on the transformed mesh and
      r_i = ||p_i - c_i||              Jacobian -[n.(c-m), (c-m) x n, n], n = (p-c)/r
      r_i = n_f . (p_i - c_i)          Jacobian [-n_f.(c-m), n_f x (p-m), -n_f]  (point_to_plane)
    where n_f is the unit normal of c_i's face (the plane moves with the mesh).
    p [N, 3], v [V, 3] float64 and f [F, 3] int64 NumPy arrays. Returns the
    similarity, the RefinementInfo and the residuals r_i at the returned similarity."""
    if initial is None:
        initial = Similarity(1.0, torch.eye(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    if max_iterations < 0:
        raise ValueError(f"max_iterations must be >= 0, got {max_iterations}")
    start = initial.scale * v @ initial.rotation.numpy().T + initial.translation.numpy()
    centroid = p.mean(0)
    start_centred = start - centroid
    # the current increment on top of `initial`, about the centroid: m + S R (x - m) + t
    log_s, rot, trans = 0.0, np.eye(3), np.zeros(3)

    def evaluate(log_s, rot, trans):
        current = centroid + np.exp(log_s) * start_centred @ rot.T + trans
        dist2, closest, face_index = _closest(p, current, f)
        normal = _unit_face_normals(current, f, face_index)
        if point_to_plane:
            residual = np.einsum("nx,nx->n", p - closest, normal)
        else:
            residual = np.sqrt(np.maximum(dist2, 0))
        return closest, normal, residual, float(residual @ residual)

    closest, face_normal, residual, cost = evaluate(log_s, rot, trans)
    info = RefinementInfo(0, 1, cost, cost, [cost], False)
    scale_hint = float(np.linalg.norm(p - centroid, axis=1).max()) or 1.0
    # below an RMS residual of 1e-9 of the scan's size the fit is exact up to rounding
    exact_cost = p.shape[0] * (1e-9 * scale_hint) ** 2
    damping = 1e-4
    while info.iterations < max_iterations and cost > exact_cost:
        arm = closest - centroid
        if point_to_plane:
            normal = face_normal
            columns = [-np.cross(normal, p - centroid), normal]
        else:
            on_surface = residual <= 1e-12 * scale_hint
            direction = (p - closest) / np.maximum(residual, 1e-300)[:, None]
            normal = np.where(on_surface[:, None], face_normal, direction)
            columns = [np.cross(arm, normal), normal]
        if with_scale:
            columns.insert(0, np.einsum("nx,nx->n", normal, arm)[:, None])
        jac = -np.concatenate(columns, 1)  # [N, 7] or [N, 6]
        gradient = jac.T @ residual
        hessian = jac.T @ jac
        diagonal = np.maximum(hessian.diagonal(), 1e-12 * float(hessian.diagonal().max()))
        improved = False
        while damping < 1e12:
            try:
                step = np.linalg.solve(hessian + damping * np.diag(diagonal), -gradient)
            except np.linalg.LinAlgError:  # singular system (e.g. all points on one plane): more damping
                damping *= 10
                continue
            # decrease the linearised cost ||r + J step||^2 promises; when even that is
            # negligible, this is the minimum (saves the closest-point queries of rejected trials)
            predicted_decrease = -float(2 * gradient @ step + step @ hessian @ step)
            if predicted_decrease <= tolerance * cost:
                break
            d_log_s = float(step[0]) if with_scale else 0.0
            rotation_step = _rotation_from_axis_angle(step[-6:-3])
            new_log_s = log_s + d_log_s
            new_rot = rotation_step @ rot
            new_trans = np.exp(d_log_s) * rotation_step @ trans + step[-3:]
            trial = evaluate(new_log_s, new_rot, new_trans)
            info.evaluations += 1
            if trial[-1] < cost:
                relative_decrease = (cost - trial[-1]) / cost
                log_s, rot, trans = new_log_s, new_rot, new_trans
                closest, face_normal, residual, cost = trial
                damping = max(damping / 10, 1e-9)
                improved = True
                break
            damping *= 10
        if not improved:
            info.converged = True  # no descent step left at any damping: a (local) minimum
            break
        info.iterations += 1
        info.costs.append(cost)
        if relative_decrease <= tolerance:
            info.converged = True
            break
    info.final_cost = cost
    info.converged = info.converged or cost <= exact_cost
    scale = float(np.exp(log_s))
    increment = Similarity(scale, torch.from_numpy(rot), torch.from_numpy(centroid - scale * rot @ centroid + trans))
    return initial.then(increment), info, residual


# ---------------------------------------------------------------------- one image


@dataclass
class NoWResult:
    """Result of one NoW evaluation.

    ``distances``: float64 [N] scan-to-mesh distance (mm) of each cropped scan vertex;
    ``scan_indices``: int64 [N] those vertices' indices in the full scan;
    ``alignment``: the similarity that maps the prediction (in its own units) to the scan;
    ``landmark_alignment``: the Procrustes / rigid initialisation;
    ``refinement``: ``RefinementInfo``; ``timings``: seconds per stage.
    """

    distances: torch.Tensor
    scan_indices: torch.Tensor
    alignment: Similarity
    landmark_alignment: Similarity
    refinement: Optional[RefinementInfo]
    timings: Dict[str, float] = field(default_factory=dict)

    def aligned_vertices(self, vertices: ArrayLike) -> torch.Tensor:
        """The prediction's vertices in the scan frame (for checking the alignment)."""
        return self.alignment.apply(_as_points("vertices", vertices))


def landmark_alignment(
    predicted_landmarks: ArrayLike, scan_landmarks: ArrayLike, metrical: bool = False, unit: str = "m"
) -> Similarity:
    """Step 2 of the protocol: Procrustes with scale (original), or rotation +
    translation of the prediction scaled by ``unit_factor(unit)`` (metrical).

    ``predicted_landmarks``, ``scan_landmarks``: [7, 3]. Example::

        T0 = landmark_alignment(pred_lmk7, scan_lmk7, metrical=True, unit="m")
    """
    pred = _as_points("predicted_landmarks", predicted_landmarks, count=7)
    scan = _as_points("scan_landmarks", scan_landmarks, count=7)
    if not metrical:
        return procrustes(pred, scan, scale=True)
    factor = unit_factor(unit)
    rigid = procrustes(pred * factor, scan, scale=False)
    return Similarity(factor, rigid.rotation, rigid.translation)


def now_distances(
    scan_vertices: ArrayLike,
    scan_landmarks: ArrayLike,
    predicted_vertices: ArrayLike,
    predicted_faces: ArrayLike,
    predicted_landmarks: ArrayLike,
    metrical: bool = False,
    unit: str = "m",
    refine: bool = True,
    max_iterations: int = 50,
    crop_radius_factor: float = NOW_CROP_RADIUS_FACTOR,
) -> NoWResult:
    """The NoW scan-to-mesh distances for one image (see the module docstring).

    ``scan_vertices`` [V, 3] (millimetres) and ``scan_landmarks`` [7, 3] from the
    reference scan; ``predicted_vertices`` [P, 3], ``predicted_faces`` [F, 3] and
    ``predicted_landmarks`` [7, 3] (or [1, 7, 3]) from the reconstruction, in any
    frame. ``metrical=True`` is the metrical protocol of MICA: no scale is
    estimated; the prediction is multiplied by ``unit_factor(unit)`` (``unit`` in
    'm', 'cm', 'mm'; ignored otherwise). ``refine=False`` stops after the
    landmark alignment (the FG2018/Feng et al. protocol does this).

    Returns a ``NoWResult`` whose ``distances`` (mm) are what the official code
    returns for the image. Not differentiable (an evaluation metric).

    Example::

        scan_v, _ = read_mesh(scan_obj); scan_lmk = read_pp(scan_pp)
        pred_v, pred_f = read_mesh(pred_obj); pred_lmk = read_landmarks(pred_npy, expected=7)
        result = now_distances(scan_v, scan_lmk, pred_v, pred_f, pred_lmk)
        print(result.distances.median(), result.distances.mean())
    """
    timings = {}
    tic = time.perf_counter()
    scan_vertices = _as_points("scan_vertices", scan_vertices)
    scan_landmarks = _as_points("scan_landmarks", scan_landmarks, count=7)
    crop = crop_scan(scan_vertices, scan_landmarks, radius_factor=crop_radius_factor)
    if crop.vertices.shape[0] == 0:
        raise ValueError(
            "scan_vertices: no scan vertex lies within the face crop sphere "
            f"(centre {crop.centre.tolist()}, radius {crop.radius:.3g}); are the scan landmarks from this scan?"
        )
    pred_v = _as_points("predicted_vertices", predicted_vertices)
    pred_f = _as_faces("predicted_faces", predicted_faces, pred_v.shape[0])
    timings["crop"] = time.perf_counter() - tic

    tic = time.perf_counter()
    initial = landmark_alignment(predicted_landmarks, scan_landmarks, metrical=metrical, unit=unit)
    timings["procrustes"] = time.perf_counter() - tic

    tic = time.perf_counter()
    info = None
    alignment = initial
    if refine:
        alignment, info, residual = _fit_similarity(
            crop.vertices.numpy(), pred_v.numpy(), pred_f.numpy(), initial, with_scale=not metrical,
            max_iterations=max_iterations, tolerance=REFINEMENT_TOLERANCE, point_to_plane=False,
        )
    timings["refinement"] = time.perf_counter() - tic

    tic = time.perf_counter()
    if refine:  # the refinement's last closest-point query was made at the final alignment
        distances = torch.from_numpy(residual)
    else:
        distances = scan_to_mesh_distances(crop.vertices, alignment.apply(pred_v), pred_f)
    timings["distances"] = time.perf_counter() - tic
    _check_outcome(alignment, distances, pred_v)
    return NoWResult(distances, crop.indices, alignment, initial, info, timings)


def _check_outcome(alignment: Similarity, distances: torch.Tensor, vertices: torch.Tensor) -> None:
    """Refuse a result that float64 could not represent: a scale that under- or
    overflowed (the prediction collapses to a point or blows up and the fit still
    "converges"), or non-finite distances / aligned vertices. ``now-eval``
    reports the ``ValueError`` as a failed image."""
    scale = float(alignment.scale)
    aligned = alignment.apply(vertices)
    extent = float((aligned - aligned.mean(0)).abs().max()) if torch.isfinite(aligned).all() else math.inf
    if not (0.0 < scale < math.inf) or not math.isfinite(extent) or (extent == 0.0 and vertices.shape[0] > 1
                                                                     and float(vertices.std()) > 0.0):
        raise ValueError(f"the alignment is degenerate in float64 (scale {scale!r}, aligned prediction extent "
                         f"{extent!r}): coordinates too large or too small to evaluate")
    if not torch.isfinite(distances).all():
        raise ValueError("the scan-to-mesh distances overflow float64: coordinates too large to evaluate")


# ---------------------------------------------------------------------- aggregates


def _flatten(distances) -> np.ndarray:
    if isinstance(distances, (torch.Tensor, np.ndarray)):
        arrays = [distances]
    else:
        arrays = list(distances)
    flat = [np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a, dtype=np.float64).ravel() for a in arrays]
    return np.concatenate(flat) if flat else np.zeros(0)


def summarize(distances: Union[ArrayLike, Iterable[ArrayLike]]) -> dict:
    """Median, mean and std (population, as ``np.std``) over all distances of all
    images pooled, like the official ``cumulative_errors.py``; plus the count.

    ``distances``: one array, or a list of per-image arrays. An empty input gives
    NaN statistics and ``count`` 0. Example::

        summarize([r.distances for r in results])  # {'median': .., 'mean': .., 'std': .., 'count': ..}
    """
    flat = _flatten(distances)
    if flat.size == 0:
        return {"median": float("nan"), "mean": float("nan"), "std": float("nan"), "count": 0}
    return {
        "median": float(np.median(flat)),
        "mean": float(np.mean(flat)),
        "std": float(np.std(flat)),
        "count": int(flat.size),
    }


def cumulative_error_curve(
    distances: Union[ArrayLike, Iterable[ArrayLike]], thresholds: Optional[ArrayLike] = None
) -> Tuple[np.ndarray, np.ndarray]:
    """Percentage of distances ``<= x`` for each threshold ``x`` (mm).

    ``thresholds`` defaults to 0..8 mm in 0.01 mm steps (the official plot's
    range). The official code bins with ``np.histogram(errors, 100000)``; this is
    the exact empirical CDF the histogram approximates. Returns
    ``(thresholds, percent)``, float64 arrays of equal length. Example::

        x, y = cumulative_error_curve(all_distances)
        plt.plot(x, y)
    """
    flat = np.sort(_flatten(distances))
    x = np.arange(0, 8.0 + 1e-9, 0.01) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    if flat.size == 0:
        return x, np.full(x.shape, np.nan)
    return x, 100.0 * np.searchsorted(flat, x, side="right") / flat.size
