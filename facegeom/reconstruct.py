"""``facegeom reconstruct``: single-image reconstruction with any pipeline (API.md §7).

``facegeom reconstruct --method NAME --checkpoint FILE --assets DIR IMAGES... --out DIR``

Methods plug in with :func:`register`: a factory ``factory(checkpoint, assets, options) ->
reconstructor`` where ``reconstructor(image, landmarks) -> Reconstruction`` takes one image
(``[H, W, 3]`` uint8 RGB) and its sidecar landmarks (``[5|68, 2]`` pixels, row 0 at the top).
:func:`get` imports ``facegeom.pipelines.<name>`` on first use, so a pipeline registers itself
on import (as with :mod:`facegeom.train`): ``deep3d``
(:func:`facegeom.pipelines.deep3d.reconstructor`), ``mica``
(:func:`facegeom.pipelines.mica.reconstructor`) and ``ringnet``
(:func:`facegeom.pipelines.ringnet.reconstructor`). A reconstructor whose attribute
``needs_landmarks`` is False (RingNet: the whole image is the loose crop) gets ``None`` when
an image has no sidecar.

Inputs
    ``IMAGES``: image files and/or folders (searched recursively for ``.png .jpg .jpeg .bmp``).
    Landmarks: ``<stem>.txt`` or ``<stem>.npy`` beside each image (5 or 68 (x, y) rows in
    pixels, row 0 at the top; :func:`facegeom.data.datasets.read_landmarks`), else in
    ``--landmarks DIR`` (same relative path as the image below ``--image-root``, or its stem).

Outputs, per image, under ``--out`` (relative path below ``--image-root`` when given, so a
``subject/challenge/`` layout is kept; else the image's file name):
    ``<stem>.obj`` (mesh, with vertex colours when the method has them), ``<stem>.npz``
    (parameters), ``<stem>_overlay.png`` (the render over the input image), and
    ``summary.json`` for the run: one entry per image, ``ok`` or the error.
    FLAME methods (``mica``, ``ringnet``) also write ``<stem>.npy``, the 7 NoW landmarks of
    the mesh, so ``--image-root`` at NoW's image folder gives the layout ``facegeom now-eval
    --predictions OUT`` reads (PIPELINES.md §8.1).

Failures: a bad image (unreadable, missing or malformed landmarks, a method error) is reported
on stderr and in ``summary.json`` and skipped; the run goes on. The command returns 1 when any
image failed, 0 otherwise, and 2 (with the message, no traceback) when the run cannot start:
unknown method, unreadable checkpoint or assets, missing input path.
"""
from __future__ import annotations

import importlib
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

__all__ = ["Reconstruction", "register", "get", "available", "find_images", "landmark_path", "write_outputs", "run",
           "fit_weak_perspective", "shaded_render", "require", "device"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
PIPELINES = ("deep3d", "ringnet", "mica", "tdasl", "specular")


@dataclass
class Reconstruction:
    """What a method returns for one image.

    Attributes:
        vertices: ``[N, 3]`` float mesh vertices (the method's output frame, documented by it).
        faces: ``[F, 3]`` int triangles (0-based).
        params: named arrays saved to ``<stem>.npz``.
        overlay: ``[H, W, 3]`` uint8 RGB, the render over the input image (input size).
        colors: optional ``[N, 3]`` vertex colours in [0, 1] written into the .obj.
        extra: optional ``{suffix: writer(path)}`` for method-specific files (e.g. NoW's).
    """

    vertices: np.ndarray
    faces: np.ndarray
    params: Dict[str, np.ndarray]
    overlay: np.ndarray
    colors: Optional[np.ndarray] = None
    extra: Dict[str, Callable[[str], None]] = field(default_factory=dict)


_FACTORIES: Dict[str, Callable[..., Callable]] = {}


def register(name: str, factory=None):
    """Register ``factory(checkpoint, assets, options) -> reconstructor`` under ``name``
    (usable as a decorator)."""

    def add(fn):
        if not isinstance(name, str) or not name:
            raise ValueError(f"method name must be a non-empty str, got {name!r}")
        if not callable(fn):
            raise TypeError(f"reconstruct method {name!r}: the factory must be callable")
        _FACTORIES[name] = fn
        return fn

    return add(factory) if factory is not None else add


def available() -> List[str]:
    """Registered methods, after importing every pipeline that exists (they register on import)."""
    for name in PIPELINES:
        if name not in _FACTORIES:
            try:
                importlib.import_module(f"facegeom.pipelines.{name}")
            except ImportError:
                pass
    return sorted(_FACTORIES)


def get(name: str):
    """The factory registered as ``name``; imports ``facegeom.pipelines.<name>`` first."""
    if name not in _FACTORIES and name in PIPELINES:
        try:
            importlib.import_module(f"facegeom.pipelines.{name}")
        except ModuleNotFoundError as exc:
            raise ValueError(f"--method {name!r}: facegeom.pipelines.{name} is not available ({exc})") from None
    if name not in _FACTORIES:
        raise ValueError(f"--method {name!r} has no reconstruct support; available: {', '.join(available()) or 'none'}")
    return _FACTORIES[name]


def find_images(inputs: Sequence[str]) -> List[str]:
    """Image files from files and folders (recursive, sorted). Missing paths raise
    FileNotFoundError naming them; a file with another extension is kept (it will be reported
    as a bad image, not silently dropped)."""
    found = []
    for item in inputs:
        item = os.fspath(item)
        if os.path.isdir(item):
            for root, _, names in sorted(os.walk(item)):
                found += [os.path.join(root, n) for n in sorted(names) if n.lower().endswith(IMAGE_EXTENSIONS)]
        elif os.path.isfile(item):
            found.append(item)
        else:
            raise FileNotFoundError(f"IMAGES: {item} does not exist")
    return found


def _relative(image: str, image_root: Optional[str]) -> str:
    if image_root:
        rel = os.path.relpath(os.path.abspath(image), os.path.abspath(image_root))
        if rel.startswith(os.pardir):
            raise ValueError(f"image {image} is not below --image-root {image_root}")
        return rel
    return os.path.basename(image)


def landmark_path(image: str, landmarks_dir: Optional[str] = None, image_root: Optional[str] = None) -> str:
    """The sidecar of ``image``: ``<stem>.txt`` / ``<stem>.npy`` beside it, else in
    ``landmarks_dir`` (relative path below ``image_root``, then the bare stem).
    FileNotFoundError names what was looked for."""
    stem = os.path.splitext(image)[0]
    candidates = [stem + ".txt", stem + ".npy"]
    if landmarks_dir:
        rel = os.path.splitext(_relative(image, image_root))[0]
        base = os.path.basename(stem)
        for name in dict.fromkeys([rel, base]):
            candidates += [os.path.join(landmarks_dir, name + ".txt"), os.path.join(landmarks_dir, name + ".npy")]
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"no landmark file for {image} (looked for {', '.join(candidates)})")


def _write_obj(path: str, vertices: np.ndarray, faces: np.ndarray, colors: Optional[np.ndarray]) -> None:
    """Wavefront OBJ, ``v x y z [r g b]`` and 1-based ``f`` lines (the authors' ``save_mesh`` writes
    the same through trimesh)."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"mesh must be vertices [N, 3] and faces [F, 3], got {list(v.shape)}, {list(f.shape)}")
    if not np.all(np.isfinite(v)):
        raise ValueError("mesh vertices are not finite")
    with open(path, "w") as out:
        if colors is not None:
            c = np.clip(np.asarray(colors, dtype=np.float64), 0, 1)
            out.writelines(f"v {a:.6f} {b:.6f} {z:.6f} {r:.4f} {g:.4f} {bl:.4f}\n"
                           for (a, b, z), (r, g, bl) in zip(v, c))
        else:
            out.writelines(f"v {a:.6f} {b:.6f} {z:.6f}\n" for a, b, z in v)
        out.writelines(f"f {i + 1} {j + 1} {k + 1}\n" for i, j, k in f)


def write_outputs(result: Reconstruction, out_stem: str) -> List[str]:
    """Write ``<out_stem>.obj``, ``.npz``, ``_overlay.png`` (+ the method's extra files); returns the paths."""
    from PIL import Image

    os.makedirs(os.path.dirname(out_stem) or ".", exist_ok=True)
    paths = [out_stem + ".obj", out_stem + ".npz", out_stem + "_overlay.png"]
    _write_obj(paths[0], result.vertices, result.faces, result.colors)
    np.savez(paths[1], **{k: np.asarray(v) for k, v in result.params.items()})
    overlay = np.asarray(result.overlay)
    if overlay.dtype != np.uint8 or overlay.ndim != 3 or overlay.shape[2] != 3:
        raise ValueError(f"overlay must be a uint8 [H, W, 3] image, got {overlay.dtype} {list(overlay.shape)}")
    Image.fromarray(overlay).save(paths[2])
    for suffix, writer in result.extra.items():
        writer(out_stem + suffix)
        paths.append(out_stem + suffix)
    return paths


def run(method: str, checkpoint: Optional[str], assets: Optional[str], images: Sequence[str], out: str,
        image_root: Optional[str] = None, landmarks_dir: Optional[str] = None,
        options: Optional[Dict[str, Any]] = None, progress: bool = True) -> Dict[str, Any]:
    """Reconstruct every image (see the module docstring); returns the summary (also written
    to ``<out>/summary.json``): ``{"method", "ok": n, "failed": n, "images": [{"image", "status",
    "outputs" | "error"}]}``."""
    from tqdm import tqdm

    from facegeom.data.datasets import read_image, read_landmarks

    factory = get(method)
    files = find_images(images)
    if image_root and not os.path.isdir(image_root):
        raise FileNotFoundError(f"--image-root {image_root} is not a folder")
    reconstructor = factory(checkpoint, assets, dict(options or {}))
    os.makedirs(out, exist_ok=True)
    entries = []
    for image in tqdm(files, desc=f"reconstruct ({method})", unit="image", disable=not progress, file=sys.stderr):
        entry: Dict[str, Any] = {"image": image}
        try:
            rel = _relative(image, image_root)
            pixels = np.asarray(read_image(image))
            try:
                lm = read_landmarks(landmark_path(image, landmarks_dir, image_root))
            except FileNotFoundError:
                if getattr(reconstructor, "needs_landmarks", True):
                    raise
                lm = None
            result = reconstructor(pixels, lm)
            entry["outputs"] = write_outputs(result, os.path.join(out, os.path.splitext(rel)[0]))
            entry["status"] = "ok"
        except Exception as exc:  # noqa: BLE001 - one bad image never aborts the run; it is reported
            entry["status"] = "failed"
            entry["error"] = f"{type(exc).__name__}: {exc}"
            print(f"facegeom reconstruct: skipped {image}: {entry['error']}", file=sys.stderr)
        entries.append(entry)
    ok = sum(e["status"] == "ok" for e in entries)
    summary = {"method": method, "ok": ok, "failed": len(entries) - ok, "images": entries}
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def require(method: str, checkpoint, assets, checkpoint_help: str, assets_help: str) -> None:
    """A factory's argument check: ``--checkpoint`` and ``--assets`` must be given (ValueError
    naming the option, the method and what it expects)."""
    if checkpoint is None:
        raise ValueError(f"--checkpoint is required for {method} ({checkpoint_help})")
    if assets is None:
        raise ValueError(f"--assets is required for {method}: {assets_help}")


def device(options: Dict[str, Any]):
    """``options["device"]`` (``auto`` | ``cpu`` | ``cuda``) as a torch device (auto: CUDA when available)."""
    import torch

    choice = options.get("device", "auto")
    return torch.device("cuda" if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()) else "cpu")


def fit_weak_perspective(points3d, pixels, image_size) -> np.ndarray:
    """Least-squares weak-perspective camera ``(s, tx, ty)`` of
    :class:`facegeom.cameras.WeakPerspective` (y up) that projects ``points3d [N, 3]``
    (their x, y) onto ``pixels [N, 2]`` (x right, y down, pixel centres at integers) in an image
    of ``image_size = (H, W)``: ``n = s (xy + t)`` with ``n_x = (u + 0.5) 2 / W - 1``,
    ``n_y = 1 - (v + 0.5) 2 / H``, solved linearly for ``(s, s tx, s ty)`` (a shared scale; the
    two axes are scaled by W and H separately, as the camera does)."""
    p = np.asarray(points3d, dtype=np.float64)
    q = np.asarray(pixels, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2 or q.shape != (p.shape[0], 2) or p.shape[0] < 2:
        raise ValueError(f"need points3d [N >= 2, 3] and pixels [N, 2], got {list(p.shape)} and {list(q.shape)}")
    height, width = image_size
    nx = (q[:, 0] + 0.5) * 2.0 / width - 1.0
    ny = 1.0 - (q[:, 1] + 0.5) * 2.0 / height
    n = p.shape[0]
    A = np.zeros((2 * n, 3))
    A[:n, 0], A[:n, 1] = p[:, 0], 1.0
    A[n:, 0], A[n:, 2] = p[:, 1], 1.0
    (s, a, b), *_ = np.linalg.lstsq(A, np.concatenate([nx, ny]), rcond=None)
    if not abs(s) > 1e-12:
        raise ValueError("weak-perspective fit: the points are degenerate (zero scale)")
    return np.array([s, a / s, b / s])


def shaded_render(vertices, faces, cam, image_size):
    """A grey, ambient-plus-frontal-light render of a mesh for the overlays:
    ``(rgb [H, W, 3] uint8, mask [H, W] bool)``.

    Args:
        vertices: ``[V, 3]`` (y up, the face towards +z); faces: ``[F, 3]``.
        cam: ``(s, tx, ty)`` of :class:`facegeom.cameras.WeakPerspective` (e.g. from
            :func:`fit_weak_perspective`); image_size: ``(H, W)``.
    """
    import torch

    from facegeom.cameras import WeakPerspective
    from facegeom.render import MeshRenderer

    v = torch.as_tensor(vertices).detach().float()[None]
    camera = WeakPerspective(torch.as_tensor(np.asarray(cam, dtype=np.float32))[None], tuple(image_size))
    renderer = MeshRenderer(torch.as_tensor(faces).long(), tuple(image_size), sh_convention="deep3d",
                            antialias=False)
    sh = torch.zeros(1, 9, 3)
    sh[:, 0] = 0.6  # ambient
    sh[:, 2] = 0.5  # light along +z (towards the viewer; deep3d basis index 2 = n_z)
    albedo = torch.full_like(v, 0.75)
    with torch.no_grad():
        out = renderer(v, albedo, sh, camera=camera)
    rgb = (out.image[0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return rgb, out.alpha[0, ..., 0].numpy() > 0.5


def add_arguments(parser) -> None:
    parser.add_argument("--method", required=True, help="pipeline (deep3d, ...)")
    parser.add_argument("--checkpoint", help="network weights: the authors' release (deep3d: epoch_20.pth) or "
                        "facegeom train's final.pt")
    parser.add_argument("--assets", help="folder with the model files under their official names (deep3d: "
                        "BFM_model_front.mat), or 'synthetic' for the built-in synthetic model")
    parser.add_argument("images", nargs="+", metavar="IMAGES", help="image files or folders")
    parser.add_argument("--out", default="reconstruct_out", help="output folder (default: reconstruct_out)")
    parser.add_argument("--image-root", help="keep image paths relative to this folder in --out")
    parser.add_argument("--landmarks", help="folder of landmark sidecars when they are not beside the images")
    parser.add_argument("--tiny", action="store_true", help="the method's tiny configuration (for checkpoints "
                        "trained with facegeom train --tiny)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary")


def main(args) -> int:
    """The ``facegeom reconstruct`` command (parsed by :mod:`facegeom.cli`)."""
    options = {"tiny": args.tiny, "device": args.device}
    try:
        summary = run(args.method, args.checkpoint, args.assets, args.images, args.out, image_root=args.image_root,
                      landmarks_dir=args.landmarks, options=options, progress=not args.quiet)
    except (ValueError, TypeError, FileNotFoundError) as exc:  # the setup (method, checkpoint, assets, inputs)
        print(f"facegeom reconstruct: error: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(json.dumps({"out": args.out, "ok": summary["ok"], "failed": summary["failed"]}))
    return 1 if summary["failed"] else 0
