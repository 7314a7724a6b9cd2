"""Optional landmark detection for the tracker's input folder, as the authors' data generator does it
(``MT:datasets/generate_dataset.py:26,40-47,77-93``, ``MT:face_detector.py:27-50``).

facegeom ships no detector: when the packages are installed, :func:`detect_missing` fills the ``kpt/<stem>.npy``
(68 FAN points, pixels) and ``kpt_dense/<stem>.npy`` (478 MediaPipe FaceMesh points with ``refine_landmarks``,
pixels) files an actor folder lacks; when they are not, it raises an ImportError that names the package and
the alternative (run the detectors elsewhere and put their outputs in that layout). A frame without a face gets
zeros (``MT:datasets/generate_dataset.py:79-85``), which the tracker masks.

- FAN: ``face_alignment.FaceAlignment(LandmarksType.TWO_D)``, ``get_landmarks_from_image`` on the RGB frame, the
  first face (``MT:datasets/generate_dataset.py:26,40-47``). face_alignment downloads its weights on first use.
- MediaPipe: ``mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True,
  min_detection_confidence=0.5, min_tracking_confidence=0.5)``, normalised ``(x, y)`` times ``(W, H)``
  (``MT:face_detector.py:27-50``); its model ships inside the wheel.

The authors' cropping (``crop_image``, ``bbox.pt``) is not reproduced: the frames are used as they are.
"""
from __future__ import annotations

import os
from typing import Callable, Dict, Optional, Sequence

import numpy as np

from facegeom.tracking.model import MEDIAPIPE_POINTS

DETECTORS = ("fan", "mediapipe")

_MISSING = {  # detector: (module, what it gives, its folder, how to install)
    "fan": ("face_alignment", "68 FAN landmarks", "kpt", "pip install face-alignment (its weights are downloaded "
            "on first use)"),
    "mediapipe": ("mediapipe", "478 MediaPipe landmarks", "kpt_dense", "pip install mediapipe"),
}


def _require(detector: str):
    module, what, folder, how = _MISSING[detector]
    try:
        return __import__(module)
    except ImportError as error:
        raise ImportError(f"detecting the {what} needs the '{module}' package, which is not installed: {how}; "
                          f"or run the detector elsewhere and save its points as <actor>/{folder}/<frame>.npy "
                          "([N, 2] pixels)") from error


def fan_detector(device: str = "cpu") -> Callable[[np.ndarray], Optional[np.ndarray]]:
    """``image [H, W, 3] uint8 RGB -> [68, 2] pixels or None`` (``MT:datasets/generate_dataset.py:26,40-47``)."""
    face_alignment = _require("fan")
    landmarks_type = getattr(face_alignment.LandmarksType, "TWO_D", None) or face_alignment.LandmarksType._2D
    detector = face_alignment.FaceAlignment(landmarks_type, device=device)

    def detect(image):
        found = detector.get_landmarks_from_image(image)
        if not found:
            return None
        return np.asarray(found[0], dtype=np.float32)[:, :2]

    return detect


def mediapipe_detector() -> Callable[[np.ndarray], Optional[np.ndarray]]:
    """``image [H, W, 3] uint8 RGB -> [478, 2] pixels or None`` (``MT:face_detector.py:27-50``)."""
    mp = _require("mediapipe")
    mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True,
                                           min_detection_confidence=0.5, min_tracking_confidence=0.5)

    def detect(image):
        results = mesh.process(image)
        if results.multi_face_landmarks is None:
            return None
        points = np.array([[p.x, p.y] for p in results.multi_face_landmarks[0].landmark], dtype=np.float32)
        points[:, 0] *= image.shape[1]
        points[:, 1] *= image.shape[0]
        return points

    return detect


def detect_missing(source, detectors: Sequence[str] = DETECTORS, device: str = "cpu") -> Dict[str, int]:
    """Write the landmark files ``source`` (an :class:`facegeom.tracking.io.ActorFolder`) lacks.

    Args:
        source: the actor folder (its frames and ``root``).
        detectors: any of ``"fan"`` (``kpt/``) and ``"mediapipe"`` (``kpt_dense/``).
        device: FAN's torch device.

    Returns:
        ``{detector: files written}``. Raises ImportError (see the module docstring) for a detector whose
        package is missing, before anything is written.
    """
    unknown = [d for d in detectors if d not in DETECTORS]
    if unknown:
        raise ValueError(f"detectors must be among {DETECTORS}, got {unknown}")
    folders = {"fan": ("kpt", 68), "mediapipe": ("kpt_dense", MEDIAPIPE_POINTS)}
    todo = {d: [i for i, stem in enumerate(source.stems)
                if not os.path.isfile(os.path.join(source.root, folders[d][0], stem + ".npy"))] for d in detectors}
    built = {d: (fan_detector(device) if d == "fan" else mediapipe_detector()) for d in detectors if todo[d]}
    written = {d: 0 for d in detectors}
    for detector, indices in todo.items():
        if not indices:
            continue
        sub, count = folders[detector]
        os.makedirs(os.path.join(source.root, sub), exist_ok=True)
        for index in indices:
            image = (source.image(index).permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
            points = built[detector](image)
            if points is None:  # no face: zeros, masked by the tracker (MT:datasets/generate_dataset.py:79-85)
                points = np.zeros((count, 2), dtype=np.float32)
            if points.shape != (count, 2):
                raise ValueError(f"{detector} returned {list(points.shape)} points for frame "
                                 f"{source.stems[index]}, expected [{count}, 2]")
            np.save(os.path.join(source.root, sub, source.stems[index] + ".npy"), points)
            written[detector] += 1
    return written
