"""Optional inputs and outputs with their packages absent (clear messages) and the detectors' wiring
(MT:datasets/generate_dataset.py:26,40-47,77-93, MT:face_detector.py:27-50) on stand-in modules."""
import contextlib
import sys
import types

import numpy as np
import pytest
import torch

from facegeom.tracking.detect import detect_missing
from facegeom.tracking.io import ActorFolder, write_actor_folder, write_video


def _folder(tmp_path, frames=2):
    images = torch.rand(frames, 3, 10, 16)
    write_actor_folder(tmp_path, images, torch.rand(frames, 68, 2), torch.rand(frames, 478, 2), torch.zeros(3))
    return images


@pytest.mark.parametrize("detector, module, folder", [("fan", "face_alignment", "kpt"),
                                                      ("mediapipe", "mediapipe", "kpt_dense")])
def test_missing_detector_package_is_named(tmp_path, monkeypatch, detector, module, folder):
    _folder(tmp_path)
    (tmp_path / folder / "00001.npy").unlink()
    with pytest.warns(UserWarning, match="kpt") if folder == "kpt" else contextlib.nullcontext():
        source = ActorFolder(tmp_path)
    monkeypatch.setitem(sys.modules, module, None)  # import fails as when not installed
    with pytest.raises(ImportError, match=rf"'{module}' package.*{folder}/<frame>.npy"):
        detect_missing(source, [detector])
    assert not (tmp_path / folder / "00001.npy").exists()
    # Nothing to detect: the package is not needed.
    other = "fan" if detector == "mediapipe" else "mediapipe"
    assert detect_missing(source, [other]) == {other: 0}
    with pytest.raises(ValueError, match="detectors"):
        detect_missing(source, ["dlib"])


def test_detectors_fill_the_missing_files(tmp_path, monkeypatch):
    images = _folder(tmp_path, 3)
    for sub in ("kpt", "kpt_dense"):
        for stem in ("00000", "00002"):
            (tmp_path / sub / f"{stem}.npy").unlink()
    seen = {}

    class FaceMesh:  # mp.solutions.face_mesh.FaceMesh
        def __init__(self, **kwargs):
            seen["mesh"] = kwargs
            self.calls = 0

        def process(self, image):
            self.calls += 1
            if self.calls == 2:
                return types.SimpleNamespace(multi_face_landmarks=None)
            points = [types.SimpleNamespace(x=0.25, y=0.5)] * 478
            return types.SimpleNamespace(multi_face_landmarks=[types.SimpleNamespace(landmark=points)])

    class FaceAlignment:
        def __init__(self, landmarks_type, device):
            seen["fan"] = (landmarks_type, device)

        def get_landmarks_from_image(self, image):
            seen.setdefault("images", []).append(image)
            return [np.full((68, 2), 3.0)]

    mediapipe = types.SimpleNamespace(solutions=types.SimpleNamespace(face_mesh=types.SimpleNamespace(FaceMesh=FaceMesh)))
    face_alignment = types.SimpleNamespace(LandmarksType=types.SimpleNamespace(TWO_D="2D"), FaceAlignment=FaceAlignment)
    monkeypatch.setitem(sys.modules, "mediapipe", mediapipe)
    monkeypatch.setitem(sys.modules, "face_alignment", face_alignment)
    with pytest.warns(UserWarning, match="kpt"):
        source = ActorFolder(tmp_path)
    assert detect_missing(source) == {"fan": 2, "mediapipe": 2}
    assert seen["mesh"] == dict(static_image_mode=False, max_num_faces=1, refine_landmarks=True,
                                min_detection_confidence=0.5, min_tracking_confidence=0.5)  # MT:face_detector.py:28-33
    assert seen["fan"] == ("2D", "cpu")
    # The detectors see the RGB frame as uint8 [H, W, 3].
    assert seen["images"][0].dtype == np.uint8 and seen["images"][0].shape == (10, 16, 3)
    assert np.abs(seen["images"][1] / 255.0 - images[2].permute(1, 2, 0).numpy()).max() <= 0.5 / 255 + 1e-6
    dense = np.load(tmp_path / "kpt_dense" / "00000.npy")
    assert dense.shape == (478, 2) and np.allclose(dense, [0.25 * 16, 0.5 * 10])  # normalised -> pixels
    assert not np.load(tmp_path / "kpt_dense" / "00002.npy").any()  # no face: zeros, masked by the tracker
    assert np.allclose(np.load(tmp_path / "kpt" / "00002.npy"), 3.0)
    frame = ActorFolder(tmp_path).frame(2)
    assert not bool(frame.parse()["mp_mask"].any()) and bool(frame.parse()["lmk_mask"].all())
    assert detect_missing(source) == {"fan": 0, "mediapipe": 0}  # nothing left to do


def test_video_without_imageio_is_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "imageio", None)
    monkeypatch.setitem(sys.modules, "imageio.v3", None)
    (tmp_path / "clip.mp4").write_bytes(b"")
    with pytest.raises(ImportError, match=r"imageio.*ffmpeg -i video.mp4"):
        ActorFolder(tmp_path / "clip.mp4")
    (tmp_path / "overlay").mkdir()
    from PIL import Image
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "overlay" / "00000.png")
    with pytest.warns(UserWarning, match="video.mp4 not written.*imageio"):
        assert write_video(tmp_path) is None
    assert not (tmp_path / "video.mp4").exists()


def test_track_detect_flag_runs_the_detectors_before_tracking(tmp_path, monkeypatch):
    from facegeom.cli import main

    _folder(tmp_path / "actor")
    (tmp_path / "actor" / "kpt_dense" / "00000.npy").unlink()
    monkeypatch.setitem(sys.modules, "mediapipe", None)
    args = ["track", str(tmp_path / "actor"), "--assets", str(tmp_path / "assets"), "--out", str(tmp_path / "o"),
            "--quiet"]
    with pytest.raises(ImportError, match="'mediapipe' package"):
        main(args + ["--detect", "mediapipe"])
    with pytest.raises(ImportError, match="'mediapipe' package"):
        main(args + ["--detect"])  # both detectors; FAN has nothing to do
    # Without --detect the missing file is masked, not detected: the run goes on to the assets.
    with pytest.raises(FileNotFoundError, match="generic_model.pkl"):
        main(args)
