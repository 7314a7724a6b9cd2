"""facegeom.data.synthetic: determinism, identity grouping, landmark placement, shapes."""
import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from facegeom.data.synthetic import SyntheticConfig, SyntheticFaces, extract_5p


@pytest.fixture(scope="module")
def ds():
    return SyntheticFaces(num_samples=12, image_size=(40, 48), images_per_identity=3, seed=3)


def _same(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return torch.equal(a, b)


def test_shapes_and_dtypes(ds):
    s = ds[4]
    assert s["image"].shape == (3, 40, 48) and s["image"].dtype == torch.float32
    assert 0 <= float(s["image"].min()) and float(s["image"].max()) <= 1
    assert s["landmarks"].shape == (68, 2) and s["landmarks"].dtype == torch.float32
    assert s["keypoints5"].shape == (5, 2)
    assert s["identity"].dtype == torch.int64 and s["identity"].dim() == 0
    assert s["mask"].shape == (1, 40, 48)
    assert s["vertices"].shape == (ds.head.num_vertices, 3)
    assert ds.faces.dtype == torch.int64 and int(ds.faces.max()) == ds.head.num_vertices - 1
    p = s["params"]
    assert p["shape"].shape == (50,) and p["expression"].shape == (50,) and p["texture"].shape == (50,)
    assert p["rotation"].shape == (3,) and p["light"].shape == (9, 3) and p["K"].shape == (3, 3)
    # The mesh and camera in params reproduce the landmarks' projection of the vertices.
    cam = (s["vertices"].double() @ p["R"].double().T + p["t"].double()) @ p["K"].double().T
    pix = cam[:, :2] / cam[:, 2:]
    assert float(pix[:, 0].min()) > -5 and float(pix[:, 1].max()) < 45 + 40


def test_deterministic_and_order_independent():
    cfg = dict(num_samples=6, image_size=32, images_per_identity=2, seed=7)
    a = SyntheticFaces(**cfg)
    b = SyntheticFaces(**cfg)
    later = b[5]  # access order must not matter
    assert _same(a[5], later)
    assert _same(a[2], b[2])
    assert not torch.equal(a[2]["image"], a[3]["image"])
    assert not torch.equal(a[2]["params"]["expression"], a[3]["params"]["expression"])
    c = SyntheticFaces(**{**cfg, "seed": 8})
    assert not torch.equal(a[2]["params"]["shape"], c[2]["params"]["shape"])
    # Pickled (as for DataLoader workers): same samples; the head is not pickled.
    d = pickle.loads(pickle.dumps(a))
    assert d._cache is None and _same(d[4], a[4])


def test_identity_grouping(ds):
    params = [ds.sample_params(i) for i in range(6)]
    ids = [int(ds[i]["identity"]) for i in (0, 2, 3, 5)]
    assert ids == [0, 0, 1, 1]
    for i, j in ((0, 1), (0, 2), (3, 5)):  # same identity: shape and texture shared, expression not
        assert torch.equal(params[i]["shape"], params[j]["shape"])
        assert torch.equal(params[i]["texture"], params[j]["texture"])
        assert not torch.equal(params[i]["expression"], params[j]["expression"])
    assert not torch.equal(params[2]["shape"], params[3]["shape"])


def test_landmarks_on_rendered_face():
    ds = SyntheticFaces(num_samples=6, image_size=64, seed=1, background=0.0)
    for i in range(0, 6, 2):
        s = ds[i]
        lm = s["landmarks"]
        col, row = lm[17:, 0].round().long(), lm[17:, 1].round().long()
        assert bool(((col >= 0) & (col < 64) & (row >= 0) & (row < 64)).all())
        assert float(s["mask"][0, row, col].min()) > 0.99  # inner landmarks: on the mesh
        # background pixels are the background colour, face pixels are lit skin
        bg = s["mask"][0] == 0
        assert float(s["image"][:, bg].abs().max()) == 0.0


def test_neutral_face_centred_pixel_centre_convention():
    # No pose, shift or scale jitter: the mean of the neutral face's 68 landmarks
    # projects to the image centre, ((W - 1) / 2, (H - 1) / 2) with integer pixel centres.
    ds = SyntheticFaces(num_samples=1, image_size=(30, 50), seed=0, shape_std=0.0, expression_std=0.0,
                        rotation_std=(0.0, 0.0, 0.0), max_jaw=0.0, shift_std=0.0, scale_std=0.0)
    sample = ds[0]
    p = {k: v.double() for k, v in sample["params"].items()}
    cam = p["R"] @ ds._state().centre.double() + p["t"]
    uv = (p["K"] @ cam)[:2] / cam[2]
    assert torch.allclose(uv, torch.tensor([24.5, 14.5], dtype=torch.float64), atol=1e-9)
    # The landmarks are the pinhole projection (u = fx x / z + cx) of the head's landmarks2d.
    out = ds.head(shape=p["shape"][None].float(), expression=p["expression"][None].float())
    x = out.landmarks2d[0].double() @ p["R"].T + p["t"]
    expected = torch.stack([p["K"][0, 0] * x[:, 0] / x[:, 2] + p["K"][0, 2],
                            p["K"][1, 1] * x[:, 1] / x[:, 2] + p["K"][1, 2]], 1)
    assert torch.allclose(sample["landmarks"].double(), expected, atol=1e-3)
    height = float(expected[:, 1].max() - expected[:, 1].min())
    assert abs(height / (0.55 * 30) - 1) < 0.03  # face_fraction of min(H, W), up to perspective


def test_skin_mask_inside_alpha():
    alpha = SyntheticFaces(num_samples=2, image_size=48, seed=2)[1]
    skin = SyntheticFaces(num_samples=2, image_size=48, seed=2, mask="skin")[1]
    assert torch.equal(alpha["image"], skin["image"])
    assert 0 < float(skin["mask"].sum()) < float((alpha["mask"] > 0.5).sum())
    assert bool((skin["mask"] <= (alpha["mask"] > 0)).all())
    assert "mask" not in SyntheticFaces(num_samples=1, image_size=16, mask=None)[0]


def test_extract_5p_matches_deep3d_transcription():
    # D3D util/preprocess.py extract_5p, transcribed.
    lm = np.random.default_rng(0).standard_normal((68, 2))
    lm_idx = np.array([31, 37, 40, 43, 46, 49, 55]) - 1
    lm5p = np.stack([lm[lm_idx[0], :], np.mean(lm[lm_idx[[1, 2]], :], 0),
                     np.mean(lm[lm_idx[[3, 4]], :], 0), lm[lm_idx[5], :], lm[lm_idx[6], :]], axis=0)
    lm5p = lm5p[[1, 2, 0, 3, 4], :]
    np.testing.assert_allclose(extract_5p(torch.from_numpy(lm)).numpy(), lm5p, rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="68"):
        extract_5p(torch.zeros(5, 2))


def _add_area(sample, context):
    sample["face_area"] = sample["mask"].sum()
    sample["noise"] = torch.from_numpy(context.rng.standard_normal(2))


def test_hooks_and_default_collate():
    ds = SyntheticFaces(num_samples=4, image_size=24, seed=0, hooks=(_add_area,))
    batch = next(iter(DataLoader(ds, batch_size=2, num_workers=1)))
    assert batch["image"].shape == (2, 3, 24, 24) and batch["params"]["shape"].shape == (2, 50)
    assert batch["identity"].tolist() == [0, 0] and batch["face_area"].shape == (2,)
    assert torch.equal(batch["noise"][1], ds[1]["noise"])
    assert torch.equal(batch["image"][1], ds[1]["image"])  # worker process: same sample


def test_bad_arguments():
    with pytest.raises(ValueError, match="images_per_identity"):
        SyntheticConfig(images_per_identity=0)
    with pytest.raises(ValueError, match="mask"):
        SyntheticConfig(mask="hair")
    with pytest.raises(ValueError, match="image_size"):
        SyntheticConfig(image_size=(4, 0))
    with pytest.raises(IndexError, match="out of range"):
        SyntheticFaces(num_samples=2, image_size=16)[2]
    with pytest.raises(TypeError, match="hooks"):
        SyntheticConfig(hooks=(3,))


def test_leading_components_keep_the_unrestricted_draws():
    # shape/expression/texture_components keep the leading coefficients of the same draws.
    full = SyntheticFaces(num_samples=4, image_size=16, n_shape=10, n_exp=6, n_tex=5, seed=3)
    low = SyntheticFaces(num_samples=4, image_size=16, n_shape=10, n_exp=6, n_tex=5, seed=3,
                         shape_components=3, expression_components=0, texture_components=5)
    for i in range(4):
        a, b = full.sample_params(i), low.sample_params(i)
        assert torch.equal(b["shape"][:3], a["shape"][:3]) and not b["shape"][3:].any()
        assert a["shape"][3:].abs().min() > 0
        assert not b["expression"].any() and torch.equal(b["texture"], a["texture"])
        for key in ("rotation", "jaw", "light", "t"):
            assert torch.equal(a[key], b[key])
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="shape_components"):
            SyntheticFaces(num_samples=1, shape_components=bad)
