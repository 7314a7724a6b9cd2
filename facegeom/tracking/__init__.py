"""The metrical tracker (MICA §4, ``Zielon/metrical-tracker``) on facegeom's kernels: PIPELINES.md §7.

- :mod:`facegeom.tracking.model`: FLAME as the tracker uses it (6D rotations, head pose in the camera,
  camera-dependent contour, eyelids, MediaPipe-105 and iris landmarks);
- :mod:`facegeom.tracking.camera`: PyTorch3D NDC pinhole, ``look_at_view_transform``;
- :mod:`facegeom.tracking.render`: back-face culling, cached rasterisation, DECA SH, the photometric mask;
- :mod:`facegeom.tracking.energies`: every energy and weight of ``MT:util.py`` / ``MT:tracker.py``;
- :mod:`facegeom.tracking.tracker`: :class:`Config`, the Gaussian pyramid, :class:`Tracker`
  (camera stage, colour pass, keyframes, per-frame tracking, best-loss keeping);
- :mod:`facegeom.tracking.io`: the authors' folder layout in, their checkpoint layout out;
- :mod:`facegeom.tracking.synthetic`: assets and rendered sequences for the synthetic head.
"""
from facegeom.tracking.camera import TrackerCamera, look_at_view_transform
from facegeom.tracking.model import TrackerFLAME, TrackerOutput
from facegeom.tracking.render import TrackerRenderer, TrackerRendering
from facegeom.tracking.tracker import Config, FrameData, Tracker, gaussian_blur, gaussian_pyramid, round_up_to_odd

__all__ = ["Config", "FrameData", "Tracker", "TrackerCamera", "TrackerFLAME", "TrackerOutput", "TrackerRenderer",
           "TrackerRendering", "gaussian_blur", "gaussian_pyramid", "look_at_view_transform", "round_up_to_odd"]
