"""Dataset readers for the folder layouts the authors' code reads (PIPELINES.md §2.1, §7.1).

Layouts:

* Deep3D training (``D3D:data_preparation.py:21-44``, ``util/detect_lm68.py:59-106``,
  ``data/flist_dataset.py:46-109``): ``<folder>/<name>.png`` images,
  ``<folder>/landmarks/<name>.txt`` (68 points, ``np.savetxt``, **y-up**: ``y = H - 1 - y_img``),
  ``<folder>/mask/<name>.png`` skin masks; a list file (``datalist/train/masks.txt``) names the
  mask paths relative to ``data_root``; the image path is the mask path without ``mask/``, the
  landmark path replaces ``mask`` with ``landmarks`` and the extension with ``.txt``.
  :class:`Deep3DFlistDataset`.
* Deep3D test / generic (``D3D:test.py:14-36``): ``<folder>/<name>.png`` and
  ``<folder>/detections/<name>.txt`` (5 or 68 points, image coordinates, y down); the metrical
  tracker's ``images/*.png`` + ``kpt/*.npy`` (68, y down, ``MT:datasets/generate_dataset.py:58-93``)
  has the same shape. :class:`FaceImageFolder` reads ``.txt`` or ``.npy`` landmarks and an
  optional mask folder (the tracker's layout: ``FaceImageFolder('<actor>/images', landmarks='../kpt')``;
  its all-zero rows for undetected faces are returned as they are).

A bad or missing file never aborts an epoch: with ``skip_bad=True`` (default) the sample comes
back as ``{"failed": message, "index": i}`` (the message names the file), it is logged on the
``facegeom.data`` logger and counted in ``dataset.failures``, and :func:`collate_skip_failed`
drops it from the batch and reports ``n_failed`` / ``failed`` with the batch (with
``num_workers > 0`` the per-process ``dataset.failures`` lists stay in the workers; the batch
fields are the reliable report).
:meth:`load` raises the clear exception instead (FileNotFoundError or ValueError naming the file).
"""
from __future__ import annotations

import logging
import os
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, default_collate

from facegeom.data import augment as _aug
from facegeom.data import deep3d as _d3d
from facegeom.data._image import check_file

log = logging.getLogger("facegeom.data")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")


def read_image(path, mode: str = "RGB") -> Image.Image:
    """Open an image fully (so a truncated file fails here) and convert it to ``mode``.
    FileNotFoundError / ValueError name the file."""
    path = check_file(path, "image")
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert(mode)
    except Exception as exc:  # noqa: BLE001 - PIL raises several types for bad files
        raise ValueError(f"cannot read image {path}: {type(exc).__name__}: {exc}") from None


def read_landmarks(path, counts: Sequence[int] = (5, 68)) -> np.ndarray:
    """Landmarks from ``.txt`` (``np.loadtxt``, any whitespace layout) or ``.npy``.

    Returns ``[N, 2]`` float32 with ``N`` in ``counts``; FileNotFoundError / ValueError name the
    file (unreadable, wrong count, NaN/inf).
    """
    path = check_file(path, "landmark file")
    try:
        if path.endswith(".npy"):
            arr = np.load(path, allow_pickle=False)
        else:
            arr = np.loadtxt(path, ndmin=1)
        arr = np.asarray(arr, dtype=np.float32)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"cannot read landmark file {path}: {type(exc).__name__}: {exc}") from None
    if arr.size % 2 or arr.size // 2 not in counts or (arr.ndim == 2 and arr.shape[-1] != 2):
        raise ValueError(f"landmark file {path}: expected {' or '.join(map(str, counts))} points "
                         f"of (x, y), got an array of shape {list(arr.shape)}")
    arr = arr.reshape(-1, 2)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"landmark file {path}: contains NaN or inf")
    return arr


class _SkippingDataset(Dataset):
    """``__getitem__`` = :meth:`load`, or a failure record when ``skip_bad``."""

    skip_bad = True

    def __init__(self):
        self.failures: list[str] = []

    def load(self, index: int) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict:
        if not self.skip_bad:
            return self.load(index)
        try:
            return self.load(index)
        except (OSError, ValueError) as exc:
            msg = f"sample {index} skipped: {exc}"
            log.warning(msg)
            self.failures.append(msg)
            return {"failed": msg, "index": int(index)}


def collate_skip_failed(batch: list) -> dict | None:
    """``default_collate`` of the samples that loaded, plus ``n_failed`` (int) and ``failed``
    (their messages). Returns None when every sample of the batch failed."""
    good = [b for b in batch if "failed" not in b]
    failed = [b["failed"] for b in batch if "failed" in b]
    if not good:
        return None
    out = default_collate(good)
    out["n_failed"] = len(failed)
    out["failed"] = failed
    return out


def _sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    # One generator per (seed, epoch, global index): the same sample gets the same augmentation
    # whichever process or worker loads it.
    g = torch.Generator()
    g.manual_seed((int(seed) * 1_000_003 + int(epoch)) * 1_000_000_007 + int(index) & ((1 << 63) - 1))
    return g


class Deep3DFlistDataset(_SkippingDataset):
    """Deep3D's training dataset (``D3D:data/flist_dataset.py:39-116``).

    Args:
        flist: text file, one mask path per line (relative to ``data_root``), or a list of them.
        data_root: prefix joined to each line (``opt.data_root``, default ``'./'``).
        lm3d_std: ``[5, 3]`` standard landmarks (default :data:`facegeom.data.deep3d.LM3D_STD`).
        use_aug: Deep3D's shift/scale/rotation/flip augmentation (:mod:`facegeom.data.augment`).
        seed: augmentation seed; a sample's draw depends on ``(seed, epoch, index)`` only.
        skip_bad: return a failure record for a bad sample instead of raising.

    Each sample: ``imgs`` ``[3, 224, 224]`` float32 in [0, 1], ``lms`` ``[68, 2]`` float32 (y-up
    in the crop), ``msks`` ``[1, 224, 224]`` float32, ``M`` ``[2, 3]`` float32
    (:func:`facegeom.data.deep3d.estimate_norm`), ``im_paths``, ``aug_flag``, ``index``.
    """

    def __init__(self, flist, data_root: str = "./", lm3d_std=None, use_aug: bool = False,
                 seed: int = 0, skip_bad: bool = True):
        super().__init__()
        if isinstance(flist, (str, os.PathLike)):
            flist = os.fspath(flist)
            check_file(flist, "file list")
            with open(flist) as fh:
                names = [ln.strip() for ln in fh if ln.strip()]
        else:
            names = [os.fspath(n) for n in flist]
        self.msk_paths = [os.path.join(os.fspath(data_root), n) for n in names]
        self.lm3d_std = _d3d.LM3D_STD if lm3d_std is None else np.asarray(lm3d_std, dtype=np.float64)
        self.use_aug, self.seed, self.skip_bad, self.epoch = bool(use_aug), int(seed), bool(skip_bad), 0

    def __len__(self) -> int:
        return len(self.msk_paths)

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation draw (as a new epoch of the authors' global ``random``)."""
        self.epoch = int(epoch)

    @staticmethod
    def paths(msk_path: str) -> tuple[str, str]:
        """``(image, landmark)`` paths of a mask path (``D3D:data/flist_dataset.py:81-82``)."""
        img_path = msk_path.replace("mask/", "")
        lm_path = ".".join(msk_path.replace("mask", "landmarks").split(".")[:-1]) + ".txt"
        return img_path, lm_path

    def load(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} samples")
        msk_path = self.msk_paths[index]
        img_path, lm_path = self.paths(msk_path)
        raw_img = read_image(img_path)
        raw_msk = read_image(msk_path)
        raw_lm = read_landmarks(lm_path, counts=(68,))
        if raw_msk.size != raw_img.size:
            raise ValueError(f"mask {msk_path} has size {raw_msk.size}, its image {img_path} has {raw_img.size}")
        _, img, lm, msk = _d3d.align_img(raw_img, raw_lm, self.lm3d_std, raw_msk)
        if self.use_aug:
            img, lm, msk, _ = _aug.augment(img, lm, msk, generator=_sample_generator(self.seed, self.epoch, index))
        M = _d3d.estimate_norm(lm, img.size[1])
        return {
            "imgs": _d3d.to_tensor(img),
            "lms": torch.from_numpy(lm.astype(np.float32)),
            "msks": _d3d.to_tensor(msk)[:1],
            "M": torch.from_numpy(M.astype(np.float32)),
            "im_paths": img_path,
            "aug_flag": self.use_aug,
            "index": int(index),
        }


class FaceImageFolder(_SkippingDataset):
    """Images with per-image landmark files (and optional masks) in sibling folders.

    Args:
        root: folder holding the images (``*.png``, ``*.jpg``, ``*.jpeg``, ``*.bmp``, sorted).
        landmarks: landmark folder relative to ``root`` (``'detections'`` for Deep3D's test
            layout, ``'landmarks'`` for its training layout) or absolute; the file for
            ``name.png`` is ``name.txt`` or ``name.npy``.
        masks: optional mask folder (same file names as the images), e.g. ``'mask'``.
        counts: allowed numbers of landmarks (default 5 or 68).
        y_up: the files store ``y = H - 1 - y_img`` (Deep3D's training landmarks); returned
            landmarks are always in image coordinates, y down.
        align: None (full image) or ``'deep3d'``: Deep3D's test preprocessing
            (``D3D:test.py:26-36``: y flip, :func:`facegeom.data.deep3d.align_img`); the sample
            then holds the 224 crop, its landmarks **y-up** (Deep3D's convention) and
            ``trans_params``.
        skip_bad: return a failure record for a bad sample instead of raising.

    Each sample: ``image`` ``[3, H, W]`` float32 in [0, 1], ``landmarks`` ``[N, 2]`` float32,
    ``mask`` ``[1, H, W]`` (when ``masks``), ``path``, ``index`` (+ ``trans_params`` ``[5]``).
    Use ``batch_size=1`` or equal sizes / counts when ``align`` is None.
    """

    def __init__(self, root, landmarks: str = "detections", masks: str | None = None,
                 counts: Sequence[int] = (5, 68), y_up: bool = False, align: str | None = None,
                 skip_bad: bool = True):
        super().__init__()
        self.root = os.fspath(root)
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"image folder not found: {self.root}")
        if align not in (None, "deep3d"):
            raise ValueError(f"align must be None or 'deep3d', got {align!r}")
        self.lm_dir = os.path.join(self.root, landmarks)
        self.mask_dir = os.path.join(self.root, masks) if masks else None
        self.counts, self.y_up, self.align, self.skip_bad = tuple(counts), bool(y_up), align, bool(skip_bad)
        self.names = sorted(n for n in os.listdir(self.root)
                            if n.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(self.root, n)))

    def __len__(self) -> int:
        return len(self.names)

    def landmark_path(self, name: str) -> str:
        stem = os.path.splitext(name)[0]
        for ext in (".txt", ".npy"):
            p = os.path.join(self.lm_dir, stem + ext)
            if os.path.isfile(p):
                return p
        return os.path.join(self.lm_dir, stem + ".txt")

    def load(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} samples")
        name = self.names[index]
        path = os.path.join(self.root, name)
        img = read_image(path)
        lm = read_landmarks(self.landmark_path(name), counts=self.counts)
        H = img.size[1]
        if self.y_up:
            lm[:, 1] = H - 1 - lm[:, 1]
        mask = read_image(os.path.join(self.mask_dir, name)) if self.mask_dir else None
        if mask is not None and mask.size != img.size:
            raise ValueError(f"mask {os.path.join(self.mask_dir, name)} has size {mask.size}, image {path} has {img.size}")
        out = {"path": path, "index": int(index)}
        if self.align == "deep3d":
            lm_up = lm.astype(np.float64)
            lm_up[:, 1] = H - 1 - lm_up[:, 1]
            tp, img, lm, mask = _d3d.align_img(img, lm_up, mask=mask)
            out["trans_params"] = torch.from_numpy(tp)
        out["image"] = _d3d.to_tensor(img)
        out["landmarks"] = torch.from_numpy(np.asarray(lm, dtype=np.float32))
        if mask is not None:
            out["mask"] = _d3d.to_tensor(mask)[:1]
        return out
