"""FLAME from the official file layouts (written synthetically, chumpy objects as
raw opcodes): forward against the numpy FLAME formula and smplx's lbs, landmark
embeddings in DECA/MICA and RingNet formats, masks, malicious and broken files."""
import math
import pickle

import numpy as np
import pytest
import torch

from facegeom.models import FLAME, load_flame_masks
from facegeom.models import _pickle
from tests.models import model_files
from tests.models.numpy_flame import barycentric_points, contour_row_for_yaw, flame_forward


@pytest.fixture(scope="module")
def arrays():
    return model_files.flame_arrays()


@pytest.fixture(scope="module")
def files(tmp_path_factory, arrays):
    folder = tmp_path_factory.mktemp("flame")
    model_files.write_generic_model(folder / "generic_model.pkl", arrays)
    lmk = model_files.landmark_arrays(len(arrays["f"]))
    deca = dict(lmk)
    # DECA ships the dynamic entries as torch tensors inside the pickled dict.
    deca["dynamic_lmk_faces_idx"] = torch.from_numpy(lmk["dynamic_lmk_faces_idx"])
    deca["dynamic_lmk_bary_coords"] = torch.from_numpy(lmk["dynamic_lmk_bary_coords"]).float()
    np.save(folder / "landmark_embedding.npy", deca, allow_pickle=True)
    with open(folder / "flame_static_embedding.pkl", "wb") as f:
        pickle.dump({"lmk_face_idx": lmk["static_lmk_faces_idx"].astype(np.uint32),
                     "lmk_b_coords": lmk["static_lmk_bary_coords"]}, f, protocol=2)
    np.save(folder / "flame_dynamic_embedding.npy",
            {"lmk_face_idx": list(lmk["dynamic_lmk_faces_idx"]), "lmk_b_coords": list(lmk["dynamic_lmk_bary_coords"])},
            allow_pickle=True)
    return folder, lmk


def full_pose(pose, neck, jaw, eyes):
    return torch.cat([pose, neck, jaw, eyes], 1)


# --------------------------------------------------------------------------- #
# Loading and forward                                                         #
# --------------------------------------------------------------------------- #

def test_from_file_reads_the_official_layout(files, arrays):
    folder, _ = files
    flame = FLAME.from_file(folder / "generic_model.pkl", n_shape=10, n_exp=5, dtype=torch.float64)
    np.testing.assert_array_equal(flame.v_template.numpy(), arrays["v_template"])
    sd = arrays["shapedirs"]
    np.testing.assert_array_equal(flame.shapedirs.numpy(), np.concatenate([sd[:, :, :10], sd[:, :, 300:305]], 2))
    np.testing.assert_array_equal(flame.posedirs.numpy(), arrays["posedirs"].reshape(-1, 36).T)
    np.testing.assert_allclose(flame.J_regressor.numpy(), arrays["J_regressor"], rtol=0, atol=0)
    np.testing.assert_array_equal(flame.lbs_weights.numpy(), arrays["weights"])
    assert flame.parents.tolist() == [-1, 0, 1, 1, 1]
    assert flame.faces.dtype == torch.int64 and np.array_equal(flame.faces.numpy(), arrays["f"])
    assert (flame.n_shape, flame.n_exp, flame.n_tex) == (10, 5, 0) and not flame.has_landmarks
    full = FLAME.from_file(folder / "generic_model.pkl", n_exp=20)  # n_shape defaults to 300
    assert (full.n_shape, full.n_exp, full.shapedirs.dtype) == (300, 20, torch.float32)


def test_forward_matches_numpy_flame_formula(files, arrays):
    folder, _ = files
    flame = FLAME.from_file(folder / "generic_model.pkl", n_shape=300, n_exp=20, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    shape = torch.randn(2, 40, generator=g, dtype=torch.float64)
    expression = torch.randn(2, 20, generator=g, dtype=torch.float64)
    pose, neck, jaw = (torch.randn(2, 3, generator=g, dtype=torch.float64) * 0.4 for _ in range(3))
    eyes = torch.randn(2, 6, generator=g, dtype=torch.float64) * 0.4
    translation = torch.randn(2, 3, generator=g, dtype=torch.float64)
    out = flame(shape, expression, pose, neck, jaw, eyes, translation)
    for b in range(2):
        betas = np.concatenate([shape[b].numpy(), np.zeros(260), expression[b].numpy()])
        verts, joints = flame_forward(arrays["v_template"], arrays["shapedirs"],
                                      arrays["posedirs"].reshape(-1, 36).T, arrays["J_regressor"],
                                      arrays["weights"], [-1, 0, 1, 1, 1], betas,
                                      full_pose(pose, neck, jaw, eyes)[b].numpy())
        np.testing.assert_allclose(out.vertices[b].numpy(), verts + translation[b].numpy(), atol=1e-9)
        np.testing.assert_allclose(out.joints[b].numpy(), joints + translation[b].numpy(), atol=1e-9)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-6)])
def test_forward_matches_smplx_lbs(files, dtype, tol):
    smplx_lbs = pytest.importorskip("smplx.lbs")
    folder, _ = files
    flame = FLAME.from_file(folder / "generic_model.pkl", n_shape=50, n_exp=20, dtype=dtype)
    g = torch.Generator().manual_seed(1)
    betas = torch.randn(3, 70, generator=g, dtype=dtype)
    pose = torch.randn(3, 15, generator=g, dtype=dtype) * 0.3
    out = flame(betas[:, :50], betas[:, 50:], pose[:, :3], pose[:, 3:6], pose[:, 6:9], pose[:, 9:])
    verts, joints = smplx_lbs.lbs(betas, pose, flame.v_template.expand(3, -1, -1), flame.shapedirs,
                                  flame.posedirs, flame.J_regressor, flame.parents, flame.lbs_weights)
    torch.testing.assert_close(out.vertices, verts, atol=tol, rtol=0)
    torch.testing.assert_close(out.joints, joints, atol=tol, rtol=0)


# --------------------------------------------------------------------------- #
# Landmarks                                                                   #
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("yaw", [0.0, 17.3, -17.3, 38.6, -38.6, 55.0, -80.0])
def test_deca_embedding_landmarks_and_contour_lookup(files, arrays, yaw):
    folder, lmk = files
    flame = FLAME.from_file(folder / "generic_model.pkl", n_shape=20, n_exp=10,
                            landmark_embedding=folder / "landmark_embedding.npy", dtype=torch.float64)
    # Split the yaw between the global and the neck rotation: the lookup uses their product.
    pose = torch.tensor([[0.1, math.radians(yaw) * 0.6, 0.0]], dtype=torch.float64)
    neck = torch.tensor([[0.0, math.radians(yaw) * 0.4, 0.0]], dtype=torch.float64)
    out = flame(pose=pose, neck=neck)
    verts = out.vertices[0].numpy()
    faces = arrays["f"].astype(np.int64)
    # Global pitch 0.1 about x and yaw about y do not commute, so compute the
    # yaw of R_global @ R_neck explicitly, as DECA's rot_mat_to_euler.
    from scipy.spatial.transform import Rotation

    rot = Rotation.from_rotvec(pose[0].numpy()).as_matrix() @ Rotation.from_rotvec(neck[0].numpy()).as_matrix()
    row = contour_row_for_yaw(math.degrees(math.atan2(-rot[2, 0], math.hypot(rot[0, 0], rot[1, 0]))))
    expected = np.concatenate([
        barycentric_points(verts, faces, lmk["dynamic_lmk_faces_idx"][row],
                           lmk["dynamic_lmk_bary_coords"][row].astype(np.float32).astype(np.float64)),
        barycentric_points(verts, faces, lmk["static_lmk_faces_idx"], lmk["static_lmk_bary_coords"])])
    np.testing.assert_allclose(out.landmarks2d[0].numpy(), expected, atol=1e-12)
    full = barycentric_points(verts, faces, lmk["full_lmk_faces_idx"][0], lmk["full_lmk_bary_coords"][0])
    np.testing.assert_allclose(out.landmarks3d[0].numpy(), full, atol=1e-12)


def test_contour_sign_is_opposite_to_smplx(files):
    smplx_lbs = pytest.importorskip("smplx.lbs")
    folder, _ = files
    flame = FLAME.from_file(folder / "generic_model.pkl", n_shape=20, n_exp=10,
                            landmark_embedding=folder / "landmark_embedding.npy", dtype=torch.float64)
    for yaw in (12.0, -25.0, 33.0):
        pose = torch.zeros(1, 15, dtype=torch.float64)
        pose[0, 1] = math.radians(yaw)
        ours = flame.contour_rows(pose).item()
        mirrored = pose.clone()
        mirrored[0, 1] = -mirrored[0, 1]
        # smplx negates the yaw before the same table lookup.
        faces_idx, _ = smplx_lbs.find_dynamic_lmk_idx_and_bcoords(
            torch.zeros(1, 3, 3, dtype=torch.float64), mirrored, flame.dynamic_lmk_faces_idx,
            flame.dynamic_lmk_bary_coords, torch.tensor([1, 0]), pose2rot=True)
        assert torch.equal(faces_idx[0], flame.dynamic_lmk_faces_idx[ours])
        assert ours == contour_row_for_yaw(yaw)


def test_ringnet_embedding_gives_the_same_2d_landmarks(files):
    folder, _ = files
    deca = FLAME.from_file(folder / "generic_model.pkl", n_shape=20, n_exp=10,
                           landmark_embedding=folder / "landmark_embedding.npy", dtype=torch.float64)
    ringnet = FLAME.from_file(folder / "generic_model.pkl", n_shape=20, n_exp=10, dtype=torch.float64,
                              landmark_embedding=(folder / "flame_static_embedding.pkl",
                                                  folder / "flame_dynamic_embedding.npy"))
    pose = torch.tensor([[0.0, 0.4, 0.0], [0.0, -0.2, 0.0]], dtype=torch.float64)
    a, b = deca(pose=pose), ringnet(pose=pose)
    # DECA's file stores the dynamic barycentrics as float32 tensors.
    torch.testing.assert_close(a.landmarks2d, b.landmarks2d, atol=1e-7, rtol=0)
    assert b.landmarks3d is None and a.landmarks3d.shape == (2, 68, 3)


def test_landmark_gradients_flow(files):
    folder, _ = files
    flame = FLAME.from_file(folder / "generic_model.pkl", n_shape=20, n_exp=10,
                            landmark_embedding=folder / "landmark_embedding.npy", dtype=torch.float64)
    shape = torch.zeros(1, 20, dtype=torch.float64, requires_grad=True)
    pose = torch.tensor([[0.0, 0.3, 0.0]], dtype=torch.float64, requires_grad=True)
    out = flame(shape, pose=pose)
    (out.landmarks2d.sum() + out.landmarks3d.sum()).backward()
    assert shape.grad.abs().sum() > 0 and pose.grad.abs().sum() > 0


def test_flame_masks(tmp_path):
    regions = {"face": np.arange(10, 20), "left_eyeball": np.array([1, 2, 3]), "scalp": np.array([], dtype=np.int64)}
    path = tmp_path / "FLAME_masks.pkl"
    with open(path, "wb") as f:
        pickle.dump(regions, f, protocol=2)
    masks = load_flame_masks(path, num_vertices=42)
    assert set(masks) == set(regions)
    assert masks["face"].dtype == torch.int64 and masks["face"].tolist() == list(range(10, 20))
    with pytest.raises(IndexError, match="face"):
        load_flame_masks(path, num_vertices=15)


# --------------------------------------------------------------------------- #
# Malicious, missing and broken files                                         #
# --------------------------------------------------------------------------- #

def test_malicious_pickles_are_rejected(tmp_path, arrays):
    marker = tmp_path / "pwned"
    evil_call = f"cos\nsystem\n(X{len('touch ' + str(marker)).to_bytes(4, 'little').decode('latin1')}touch {marker}tR"
    payloads = {
        "os.system": evil_call.encode("latin1") + b".",
        "builtins.eval": b"c__builtin__\neval\n(X\x04\x00\x00\x001+1tR.",
        "reconstructor of a foreign class": b"ccopy_reg\n_reconstructor\n(c__builtin__\nobject\nc__builtin__\nobject\nNtR.",
    }
    for name, payload in payloads.items():
        path = tmp_path / f"{name}.pkl"
        path.write_bytes(payload)
        with pytest.raises(pickle.UnpicklingError, match=str(path).replace("\\", "\\\\")):
            FLAME.from_file(path)
    # The payload hidden inside a chumpy object's state of an otherwise valid model.
    path = tmp_path / "generic_model.pkl"
    model_files.write_generic_model(path, arrays, extra={"trap": model_files.ChumpyVariable(
        np.zeros(3), hook=model_files.RawOpcodes(evil_call.encode("latin1")))})
    with pytest.raises(pickle.UnpicklingError, match="os.system"):
        FLAME.from_file(path)
    assert not marker.exists()


def test_missing_key_and_bad_shapes_name_file_and_key(tmp_path, arrays):
    for key in ("shapedirs", "f", "kintree_table", "J_regressor"):
        path = tmp_path / f"no_{key}.pkl"
        model_files.write_generic_model(path, arrays, drop=(key,))
        with pytest.raises(ValueError, match=rf"no_{key}\.pkl: missing key '{key}'"):
            FLAME.from_file(path, n_exp=20)
    bad = dict(arrays, posedirs=arrays["posedirs"][:-1])
    path = tmp_path / "bad_posedirs.pkl"
    model_files.write_generic_model(path, bad)
    with pytest.raises(ValueError, match=r"bad_posedirs\.pkl: posedirs"):
        FLAME.from_file(path, n_exp=20)
    for key, value in (("weights", arrays["weights"][:, :4]), ("J_regressor", arrays["J_regressor"][:, :-1])):
        path = tmp_path / f"bad_{key}.pkl"
        model_files.write_generic_model(path, dict(arrays, **{key: value}))
        with pytest.raises(ValueError, match=rf"bad_{key}\.pkl: {key} must have shape"):
            FLAME.from_file(path, n_exp=20)
    path = tmp_path / "generic_model.pkl"
    model_files.write_generic_model(path, arrays)
    with pytest.raises(ValueError, match="n_shape"):
        FLAME.from_file(path, n_shape=301, n_exp=20)
    with pytest.raises(ValueError, match="n_exp must be in \\[0, 20\\]"):
        FLAME.from_file(path)  # the default 100 expression components: this file has 20


def test_corrupt_and_absent_files(tmp_path, arrays):
    path = tmp_path / "generic_model.pkl"
    model_files.write_generic_model(path, arrays)
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(pickle.UnpicklingError, match=r"truncated\.pkl"):
        FLAME.from_file(truncated, n_exp=20)
    with pytest.raises(FileNotFoundError):
        FLAME.from_file(tmp_path / "absent.pkl")
    listing = tmp_path / "list.pkl"
    listing.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(ValueError, match=r"list\.pkl: expected a pickled dict"):
        FLAME.from_file(listing)
    # A derived chumpy expression (no array 'x') cannot be evaluated without chumpy.
    derived = tmp_path / "derived.pkl"
    obj = model_files.ChumpyVariable(np.zeros(2))
    obj.state = {"a": np.zeros(2), "idxs": np.arange(2)}
    derived.write_bytes(model_files.dumps({"v_template": obj}))
    with pytest.raises(pickle.UnpicklingError, match="no array 'x'"):
        FLAME.from_file(derived)


def test_bad_landmark_embedding_files(files, tmp_path):
    folder, lmk = files
    flame = FLAME.from_file(folder / "generic_model.pkl", n_shape=5, n_exp=5)
    missing = {k: v for k, v in lmk.items() if k != "dynamic_lmk_faces_idx"}
    np.save(tmp_path / "missing.npy", missing, allow_pickle=True)
    with pytest.raises(ValueError, match=r"missing\.npy: missing key 'dynamic_lmk_faces_idx'"):
        flame.load_landmark_embedding(tmp_path / "missing.npy")
    out_of_range = dict(lmk, static_lmk_faces_idx=lmk["static_lmk_faces_idx"] + 1000)
    np.save(tmp_path / "range.npy", out_of_range, allow_pickle=True)
    with pytest.raises(IndexError, match=r"range\.npy: static faces"):
        flame.load_landmark_embedding(tmp_path / "range.npy")
    wrong_rows = dict(lmk, dynamic_lmk_faces_idx=lmk["dynamic_lmk_faces_idx"][:70])
    np.save(tmp_path / "rows.npy", wrong_rows, allow_pickle=True)
    with pytest.raises(ValueError, match="79"):
        flame.load_landmark_embedding(tmp_path / "rows.npy")


def test_safe_unpickler_round_trips_the_allowed_types(tmp_path):
    import scipy.sparse

    value = {"a": np.arange(6.0).reshape(2, 3), "s": scipy.sparse.csr_matrix(np.eye(3)),
             "t": torch.arange(4.0), "n": np.float32(2.5), "l": [np.int64(3), (1, 2)]}
    loaded = _pickle.loads(pickle.dumps(value, protocol=2))
    np.testing.assert_array_equal(loaded["a"], value["a"])
    assert loaded["s"].format == "csr" and (loaded["s"].toarray() == np.eye(3)).all()
    assert torch.equal(loaded["t"], value["t"]) and loaded["n"] == np.float32(2.5)
    np.save(tmp_path / "plain.npy", np.arange(5))
    np.testing.assert_array_equal(_pickle.load_npy(tmp_path / "plain.npy"), np.arange(5))


def test_gradcheck_through_landmarks(files):
    folder, _ = files
    flame = FLAME.from_file(folder / "generic_model.pkl", n_shape=4, n_exp=3,
                            landmark_embedding=folder / "landmark_embedding.npy", dtype=torch.float64)
    g = torch.Generator().manual_seed(8)
    shape = torch.randn(2, 4, generator=g, dtype=torch.float64, requires_grad=True)
    expression = torch.randn(2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    # Yaws of 10.2 and -20.3 degrees: far from a contour-row boundary (x.5 degrees),
    # so finite differences do not switch rows.
    pose = torch.tensor([[0.0, 0.178, 0.0], [0.05, -0.354, 0.0]], dtype=torch.float64, requires_grad=True)
    jaw = torch.randn(2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    translation = torch.randn(2, 3, generator=g, dtype=torch.float64, requires_grad=True)

    def landmarks(*args):
        out = flame(*args[:3], jaw=args[3], translation=args[4])
        return out.landmarks2d, out.landmarks3d, out.joints

    assert torch.autograd.gradcheck(landmarks, (shape, expression, pose, jaw, translation))


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_numpy_only_generic_model(tmp_path, arrays, protocol):
    """The chumpy-free conversions users often hold (plain numpy + a current scipy
    csc_matrix), in the text protocol 0 and the binary protocols, load the same."""
    import scipy.sparse

    content = dict(arrays, J_regressor=scipy.sparse.csc_matrix(arrays["J_regressor"]))
    path = tmp_path / f"generic_model_p{protocol}.pkl"
    with open(path, "wb") as f:
        pickle.dump(content, f, protocol=protocol)
    plain = FLAME.from_file(path, n_shape=8, n_exp=4, dtype=torch.float64)
    reference_path = tmp_path / "chumpy.pkl"
    model_files.write_generic_model(reference_path, arrays)
    chumpy = FLAME.from_file(reference_path, n_shape=8, n_exp=4, dtype=torch.float64)
    for (name, a), (_, b) in zip(plain.named_buffers(), chumpy.named_buffers()):
        assert torch.equal(a, b), name
