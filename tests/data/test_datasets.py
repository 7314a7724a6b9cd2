"""facegeom.data.datasets: the authors' folder layouts; a corrupt image or a missing landmark
file is reported by name and skipped, never aborting the epoch."""
import logging

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from facegeom.data import datasets, deep3d
from tests.data.conftest import face_landmarks68, smooth_image


def _deep3d_folder(root, n=3, h=200, w=180):
    """D3D:data_preparation.py layout: <folder>/x.png, landmarks/x.txt (y-up), mask/x.png."""
    folder = root / "train"
    for sub in ("landmarks", "mask"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        name = f"im{i}.png"
        Image.fromarray(smooth_image(h, w, i)).save(folder / name)
        Image.fromarray(smooth_image(h, w, 10 + i)).save(folder / "mask" / name)
        lm = face_landmarks68(90, 100, 70, i)
        lm[:, 1] = h - 1 - lm[:, 1]
        np.savetxt(folder / "landmarks" / f"im{i}.txt", lm)
        names.append(f"train/mask/{name}")
    flist = root / "masks.txt"
    flist.write_text("\n".join(names) + "\n")
    return folder, flist


def test_flist_dataset_sample_matches_pipeline(tmp_path):
    folder, flist = _deep3d_folder(tmp_path, n=1)
    ds = datasets.Deep3DFlistDataset(flist, data_root=str(tmp_path) + "/")
    assert len(ds) == 1
    s = ds[0]
    assert s["imgs"].shape == (3, 224, 224) and s["msks"].shape == (1, 224, 224)
    assert s["lms"].shape == (68, 2) and s["M"].shape == (2, 3) and s["aug_flag"] is False
    raw = Image.open(folder / "im0.png").convert("RGB")
    lm = np.loadtxt(folder / "landmarks" / "im0.txt").astype(np.float32)
    _, im, lm224, msk = deep3d.align_img(raw, lm, mask=Image.open(folder / "mask" / "im0.png").convert("RGB"))
    np.testing.assert_allclose(s["imgs"].numpy(), deep3d.to_tensor(im).numpy())
    np.testing.assert_allclose(s["lms"].numpy(), lm224, atol=1e-4)
    np.testing.assert_allclose(s["msks"].numpy(), deep3d.to_tensor(msk)[:1].numpy())
    np.testing.assert_allclose(s["M"].numpy(), deep3d.estimate_norm(lm224, 224), atol=1e-4)


def test_flist_augmentation_is_deterministic(tmp_path):
    _, flist = _deep3d_folder(tmp_path, n=2)
    a = datasets.Deep3DFlistDataset(flist, data_root=str(tmp_path) + "/", use_aug=True, seed=3)
    b = datasets.Deep3DFlistDataset(flist, data_root=str(tmp_path) + "/", use_aug=True, seed=3)
    assert torch.equal(a[1]["imgs"], b[1]["imgs"])
    assert torch.equal(a[1]["lms"], b[1]["lms"])
    plain = datasets.Deep3DFlistDataset(flist, data_root=str(tmp_path) + "/")
    assert not torch.equal(a[1]["lms"], plain[1]["lms"])
    a.set_epoch(1)
    assert not torch.equal(a[1]["lms"], b[1]["lms"])


def test_bad_files_are_skipped_and_reported(tmp_path, caplog):
    folder, flist = _deep3d_folder(tmp_path, n=4)
    (folder / "im1.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")     # corrupt image
    (folder / "landmarks" / "im2.txt").unlink()                                  # missing landmarks
    ds = datasets.Deep3DFlistDataset(flist, data_root=str(tmp_path) + "/")
    with pytest.raises(ValueError, match="im1.png"):
        ds.load(1)
    with pytest.raises(FileNotFoundError, match=r"landmark file not found: .*im2\.txt"):
        ds.load(2)
    loader = DataLoader(ds, batch_size=2, collate_fn=datasets.collate_skip_failed)
    with caplog.at_level(logging.WARNING, logger="facegeom.data"):
        batches = list(loader)                                  # the epoch completes
    assert [b["imgs"].shape[0] for b in batches] == [1, 1]
    assert [b["n_failed"] for b in batches] == [1, 1]
    assert "im1.png" in batches[0]["failed"][0] and "im2.txt" in batches[1]["failed"][0]
    assert len(ds.failures) == 2 and "im1.png" in caplog.text
    assert datasets.collate_skip_failed([ds[1], ds[2]]) is None  # every sample failed


def test_face_image_folder_txt_npy_mask_and_align(tmp_path):
    (tmp_path / "detections").mkdir()
    (tmp_path / "mask").mkdir()
    h, w = 160, 150
    for i in range(3):
        Image.fromarray(smooth_image(h, w, i)).save(tmp_path / f"f{i}.png")
        Image.fromarray(smooth_image(h, w, 5 + i)).save(tmp_path / "mask" / f"f{i}.png")
    lm68 = face_landmarks68(75, 80, 60, 0)
    np.savetxt(tmp_path / "detections" / "f0.txt", lm68)
    np.save(tmp_path / "detections" / "f1.npy", deep3d.extract_5p(lm68).astype(np.float32))
    (tmp_path / "detections" / "f2.txt").write_text("1 2 3\n")                     # 1.5 points: bad
    (tmp_path / "notes.md").write_text("not an image")
    ds = datasets.FaceImageFolder(tmp_path, landmarks="detections", masks="mask")
    assert len(ds) == 3
    s0, s1 = ds[0], ds[1]
    assert s0["image"].shape == (3, h, w) and s0["mask"].shape == (1, h, w)
    np.testing.assert_allclose(s0["landmarks"].numpy(), lm68, atol=1e-4)
    assert s1["landmarks"].shape == (5, 2)
    assert "f2.txt" in ds[2]["failed"]
    with pytest.raises(ValueError, match="f2.txt"):
        ds.load(2)
    # Deep3D test layout: y flip then align_img (D3D:test.py:26-36)
    al = datasets.FaceImageFolder(tmp_path, landmarks="detections", align="deep3d")
    a0 = al[0]
    lm_up = lm68.copy()
    lm_up[:, 1] = h - 1 - lm_up[:, 1]
    tp, im, lm224, _ = deep3d.align_img(Image.open(tmp_path / "f0.png").convert("RGB"), lm_up.astype(np.float32))
    np.testing.assert_allclose(a0["trans_params"].numpy(), tp, rtol=1e-6)
    np.testing.assert_allclose(a0["image"].numpy(), deep3d.to_tensor(im).numpy())
    np.testing.assert_allclose(a0["landmarks"].numpy(), lm224, atol=1e-3)


def test_reader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        datasets.FaceImageFolder(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="file list"):
        datasets.Deep3DFlistDataset(tmp_path / "none.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2\nnan 4\n" + "0 0\n" * 3)
    with pytest.raises(ValueError, match="NaN"):
        datasets.read_landmarks(bad)
    (tmp_path / "x.npy").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="x.npy"):
        datasets.read_landmarks(tmp_path / "x.npy")
    ds = datasets.FaceImageFolder(tmp_path, skip_bad=False)
    assert len(ds) == 0
