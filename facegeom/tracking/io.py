"""The tracker's inputs and outputs in the authors' layouts (PIPELINES.md §7.1, §7.6).

Input (``MT:datasets/image_dataset.py:21-68``): an actor folder with ``images/*.png|jpg`` (or the images directly
in the folder, or a video read with ``imageio``), ``kpt/<stem>.npy`` (68 FAN points, pixels),
``kpt_dense/<stem>.npy`` (478 MediaPipe points, pixels) and MICA's ``identity.npy`` (300 shape coefficients).
A missing landmark file or an all-zero row means "not detected": those points are masked
(``MT:tracker.py:662-663``), not fatal.

Output per frame (``MT:tracker.py:183-225``): ``checkpoint/<id>.frame`` (``torch.save`` of the authors' dict:
``flame``, ``camera``, ``opencv`` K/R/t, ``img_size``, ``frame_id``, ``global_step``), ``mesh/<id>.ply`` and
``overlay/<id>.png`` (input | render over input with the landmarks: detections green, model red),
``depth/<id>.png`` (16-bit millimetres, ``MT:tracker.py:631-634``); ``canonical.obj`` after the initialisation
(``MT:tracker.py:227-236,706``); ``video.mp4`` of the overlays when ``imageio`` (with ffmpeg) is installed.
"""
from __future__ import annotations

import glob
import os
import warnings
from typing import List, Optional, Sequence

import numpy as np
import torch

from facegeom.tracking.model import MEDIAPIPE_POINTS
from facegeom.tracking.tracker import FrameData

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")


def _imageio():
    try:
        import imageio.v3 as iio
    except ImportError as error:
        raise ImportError("reading or writing a video needs imageio with its ffmpeg plugin "
                          "(pip install 'imageio[ffmpeg]'); or extract the frames first: "
                          "ffmpeg -i video.mp4 -vf fps=25 images/%05d.png") from error
    return iio


def read_image(path) -> torch.Tensor:
    """``[3, H, W]`` float32 RGB in [0, 1] (torchvision's ``to_tensor`` of a PIL RGB image)."""
    from PIL import Image

    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def load_identity(path) -> torch.Tensor:
    """MICA's ``identity.npy`` -> ``[n]`` float32 shape coefficients."""
    source = os.fspath(path)
    if not os.path.isfile(source):
        raise FileNotFoundError(f"{source} not found: the tracker needs MICA's identity.npy (the shape prior); "
                                "run MICA on a frame first (https://github.com/Zielon/MICA)")
    array = np.load(source, allow_pickle=False)
    if array.ndim not in (1, 2) or (array.ndim == 2 and array.shape[0] != 1):
        raise ValueError(f"{source}: identity must be [n] or [1, n] shape coefficients, got {list(array.shape)}")
    return torch.from_numpy(array.astype(np.float32).reshape(-1))


def _landmarks(path: str, count: int) -> torch.Tensor:
    if not os.path.isfile(path):
        return torch.zeros(count, 2)
    array = np.load(path, allow_pickle=False)
    if array.ndim != 2 or array.shape[0] != count or array.shape[1] < 2:
        raise ValueError(f"{path}: expected [{count}, 2] landmarks in pixels, got {list(array.shape)}")
    return torch.from_numpy(np.ascontiguousarray(array[:, :2], dtype=np.float32))


class ActorFolder:
    """A tracker input folder (see the module docstring).

    Args:
        path: the actor folder, a folder of images, or a video file (its landmarks then live in
            ``kpt/<index:05d>.npy`` beside it).
        identity: path of ``identity.npy`` (default: ``<folder>/identity.npy``).
    """

    def __init__(self, path, identity=None):
        source = os.fspath(path)
        self.video = None
        if os.path.isfile(source) and source.lower().endswith(VIDEO_EXTENSIONS):
            self.root = os.path.dirname(os.path.abspath(source))
            self.video = source
            frames = list(_imageio().imiter(source))
            self._frames = [torch.from_numpy(np.asarray(f, dtype=np.float32)[..., :3] / 255.0).permute(2, 0, 1)
                            for f in frames]
            self.stems = [str(k).zfill(5) for k in range(len(frames))]
        elif os.path.isdir(source):
            self.root = source
            images = os.path.join(source, "images")
            folder = images if os.path.isdir(images) else source
            self.paths = sorted(p for p in glob.glob(os.path.join(folder, "*"))
                                if p.lower().endswith(IMAGE_EXTENSIONS))
            if not self.paths:
                raise FileNotFoundError(f"{source}: no frames (*.png, *.jpg) in {folder}")
            self.stems = [os.path.splitext(os.path.basename(p))[0] for p in self.paths]
        else:
            raise FileNotFoundError(f"{source}: not a folder of frames or a video file ({', '.join(VIDEO_EXTENSIONS)})")
        self.identity_path = os.path.join(self.root, "identity.npy") if identity is None else os.fspath(identity)
        missing = [s for s in self.stems if not os.path.isfile(os.path.join(self.root, "kpt", s + ".npy"))]
        if missing:
            warnings.warn(f"{self.root}: {len(missing)} of {len(self.stems)} frames have no kpt/<frame>.npy "
                          f"(first: {missing[0]}); their 68 landmarks are masked", stacklevel=2)

    def __len__(self) -> int:
        return len(self.stems)

    def identity(self) -> torch.Tensor:
        return load_identity(self.identity_path)

    def image(self, index: int) -> torch.Tensor:
        return self._frames[index] if self.video is not None else read_image(self.paths[index])

    def frame(self, index: int) -> FrameData:
        """Frame ``index`` as a batch of one."""
        stem = self.stems[index]
        lmk = _landmarks(os.path.join(self.root, "kpt", stem + ".npy"), 68)
        dense = _landmarks(os.path.join(self.root, "kpt_dense", stem + ".npy"), MEDIAPIPE_POINTS)
        return FrameData(self.image(index)[None], lmk[None], dense[None], [stem])


def write_actor_folder(root, images: torch.Tensor, landmarks: torch.Tensor, landmarks_dense: Optional[torch.Tensor],
                       identity: torch.Tensor, stems: Optional[Sequence[str]] = None) -> List[str]:
    """Write frames ``[N, 3, H, W]`` in [0, 1], landmarks ``[N, 68, 2]`` / ``[N, 478, 2]`` and ``identity [n]`` in
    the authors' layout; returns the stems."""
    from PIL import Image

    root = os.fspath(root)
    for sub in ("images", "kpt", "kpt_dense"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    stems = [str(k).zfill(5) for k in range(images.shape[0])] if stems is None else list(stems)
    for k, stem in enumerate(stems):
        array = (images[k].detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
        Image.fromarray(array).save(os.path.join(root, "images", stem + ".png"))
        np.save(os.path.join(root, "kpt", stem + ".npy"), landmarks[k].detach().cpu().numpy().astype(np.float32))
        if landmarks_dense is not None:
            np.save(os.path.join(root, "kpt_dense", stem + ".npy"),
                    landmarks_dense[k].detach().cpu().numpy().astype(np.float32))
    np.save(os.path.join(root, "identity.npy"), identity.detach().cpu().numpy().astype(np.float32))
    return stems


def _dots(image: np.ndarray, points: np.ndarray, colour) -> None:
    h, w = image.shape[:2]
    for x, y in np.round(points).astype(int):
        if 0 <= x < w and 0 <= y < h:
            image[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2] = colour


def overlay(image: torch.Tensor, rendering: torch.Tensor, mask: torch.Tensor, landmarks: np.ndarray,
            predicted: np.ndarray) -> np.ndarray:
    """``[H, 2W, 3]`` uint8: the input | the render over the input inside ``mask`` with the detected (green) and
    model (red) landmarks (``View.COLOR_OVERLAY`` / ``View.LANDMARKS`` of ``MT:tracker.py:585-605``)."""
    mask = mask.clamp(0, 1)
    blended = rendering * mask + image * (1 - mask)
    left = (image.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)
    right = (blended.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)
    shown = np.abs(landmarks).sum(1) > 0
    _dots(right, landmarks[shown], (0, 255, 0))
    _dots(right, predicted, (255, 0, 0))
    return np.concatenate([left, right], 1)


def save_frame(out_dir, checkpoint: dict, vertices: np.ndarray, faces: np.ndarray,
               overlay_image: Optional[np.ndarray] = None) -> None:
    """``checkpoint/<id>.frame``, ``mesh/<id>.ply``, ``overlay/<id>.png`` under ``out_dir``."""
    import trimesh
    from PIL import Image

    frame_id = checkpoint["frame_id"]
    for sub in ("checkpoint", "mesh", "overlay"):
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
    torch.save(checkpoint, os.path.join(out_dir, "checkpoint", f"{frame_id}.frame"))
    trimesh.Trimesh(vertices=vertices, faces=faces, process=False).export(os.path.join(out_dir, "mesh", f"{frame_id}.ply"))
    if overlay_image is not None:
        Image.fromarray(overlay_image).save(os.path.join(out_dir, "overlay", f"{frame_id}.png"))


def depth_to_png(depth: torch.Tensor) -> np.ndarray:
    """``[H, W]`` (or ``[1, H, W]``) view depth in metres -> ``[H, W]`` uint16 millimetres, truncated as
    ``(depth * 1000.0).astype(np.uint16)`` (``MT:tracker.py:633-634``; 0 = background)."""
    array = depth.detach().float().cpu().numpy()
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f"depth must be [H, W] or [1, H, W], got {list(depth.shape)}")
    millimetres = array * 1000.0
    if millimetres.size and (millimetres.min() < 0 or millimetres.max() >= 65536):
        raise ValueError(f"depth outside the 16-bit millimetre range [0, 65.535] m: "
                         f"[{array.min():.4g}, {array.max():.4g}] m")
    return millimetres.astype(np.uint16)


def save_depth(out_dir, frame_id: str, depth: torch.Tensor) -> str:
    """``depth/<frame_id>.png``: a 16-bit grey PNG of the depth in millimetres (:func:`depth_to_png`)."""
    from PIL import Image

    folder = os.path.join(os.fspath(out_dir), "depth")
    os.makedirs(folder, exist_ok=True)
    target = os.path.join(folder, f"{frame_id}.png")
    Image.fromarray(depth_to_png(depth)).save(target)
    return target


def read_depth(path) -> np.ndarray:
    """A depth PNG written by :func:`save_depth` (or the authors' tracker) -> ``[H, W]`` float32 metres."""
    from PIL import Image

    with Image.open(path) as image:
        array = np.asarray(image)
    if array.dtype != np.uint16:
        raise ValueError(f"{path}: not a 16-bit depth PNG (dtype {array.dtype})")
    return array.astype(np.float32) / 1000.0


def save_canonical(out_dir, vertices: np.ndarray, faces: np.ndarray) -> Optional[str]:
    """``canonical.obj`` (``save_canonical``, ``MT:tracker.py:227-236``); as the authors, an existing file is
    kept (returns None then)."""
    import trimesh

    target = os.path.join(os.fspath(out_dir), "canonical.obj")
    if os.path.exists(target):
        return None
    os.makedirs(os.fspath(out_dir), exist_ok=True)
    trimesh.Trimesh(vertices=vertices, faces=faces, process=False).export(target)
    return target


def write_video(out_dir, fps: int = 25) -> Optional[str]:
    """``video.mp4`` from ``overlay/*.png`` when imageio (with ffmpeg) is installed; None (with a warning) if not."""
    paths = sorted(glob.glob(os.path.join(out_dir, "overlay", "*.png")))
    if not paths:
        return None
    try:
        import imageio.v3 as iio
    except ImportError:
        warnings.warn(f"video.mp4 not written: it needs imageio with ffmpeg (pip install 'imageio[ffmpeg]'); "
                      f"the overlays are in {os.path.join(out_dir, 'overlay')}", stacklevel=2)
        return None
    try:
        from PIL import Image

        frames = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
        target = os.path.join(out_dir, "video.mp4")
        iio.imwrite(target, np.stack(frames), fps=fps)
        return target
    except Exception as error:  # e.g. no ffmpeg plugin: the overlays are still there
        warnings.warn(f"video not written ({error}); the overlays are in {os.path.join(out_dir, 'overlay')}",
                      stacklevel=2)
        return None
