"""Basel Face Model loaders on small synthetic files in each exact format, with
each paper's own decoding formula (written in numpy here) as the reference."""
import pickle

import numpy as np
import pytest
import scipy.io
import torch

from facegeom.models import BFM
from tests.conftest import cuda
from tests.models.model_files import icosphere_1

V = 42  # vertices of the test mesh
VERTS, FACES = icosphere_1()


def rng(seed=0):
    return np.random.default_rng(seed)


def interleave(points):
    """[N, 3] -> [3N] x, y, z per vertex (how every BFM file stores a shape)."""
    return points.reshape(-1)


# --------------------------------------------------------------------------- #
# Deep3DFaceRecon BFM_model_front.mat                                         #
# --------------------------------------------------------------------------- #

@pytest.fixture(scope="module")
def deep3d_file(tmp_path_factory):
    r = rng(0)
    content = {
        "meanshape": (interleave(VERTS + [0.0, 0.1, 0.2]))[None].astype(np.float32),  # [1, 3N], off-centre
        "idBase": r.standard_normal((3 * V, 80)).astype(np.float32) * 1e-3,
        "exBase": r.standard_normal((3 * V, 64)).astype(np.float32) * 1e-3,
        "meantex": r.uniform(50, 200, (1, 3 * V)).astype(np.float32),
        "texBase": r.standard_normal((3 * V, 80)).astype(np.float32),
        "tri": (FACES + 1).astype(np.float64),  # MATLAB: 1-based, double
        "point_buf": np.zeros((V, 8)),
        "keypoints": (r.choice(V, 68) + 1).astype(np.float64)[None],
        "frontmask2_idx": (np.arange(10, 30) + 1)[:, None].astype(np.float64),
        "tri_mask2": (FACES[:5] + 1).astype(np.float64),
        "skinmask": r.random((1, V)),
    }
    for v in range(V):  # faces around each vertex, 1-based, 0-padded
        around = np.nonzero((FACES == v).any(1))[0][:8] + 1
        content["point_buf"][v, : len(around)] = around
    path = tmp_path_factory.mktemp("deep3d") / "BFM_model_front.mat"
    scipy.io.savemat(path, content)
    return path, content


def test_deep3d_matches_parametric_face_model(deep3d_file):
    path, c = deep3d_file
    bfm = BFM.from_deep3d(path, dtype=torch.float64)
    assert (bfm.n_shape, bfm.n_exp, bfm.n_tex, bfm.n_spec) == (80, 64, 80, 0)
    g = torch.Generator().manual_seed(0)
    ident, expr, tex = (torch.randn(2, k, generator=g, dtype=torch.float64) for k in (80, 64, 80))
    out = bfm(ident, expr, tex)
    # Deep3DFaceRecon ParametricFaceModel: recentre the mean shape, id_base @ id + exp_base @ exp + mean,
    # reshape [B, -1, 3]; texture = (tex_base @ tex + mean_tex) / 255.
    mean = c["meanshape"].astype(np.float64).reshape(-1, 3)
    mean = (mean - mean.mean(0, keepdims=True)).reshape(1, -1)
    shape = ident.numpy() @ c["idBase"].T.astype(np.float64) + expr.numpy() @ c["exBase"].T + mean
    texture = (tex.numpy() @ c["texBase"].T.astype(np.float64) + c["meantex"]) / 255.0
    np.testing.assert_allclose(out.vertices.numpy(), shape.reshape(2, -1, 3), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(out.albedo.numpy(), texture.reshape(2, -1, 3), rtol=1e-9, atol=1e-12)
    keypoints = c["keypoints"].reshape(-1).astype(np.int64) - 1
    np.testing.assert_allclose(out.landmarks3d.numpy(), shape.reshape(2, -1, 3)[:, keypoints], rtol=1e-9, atol=1e-12)
    assert np.array_equal(bfm.faces.numpy(), FACES)
    expected_buf = c["point_buf"].astype(np.int64) - 1
    expected_buf[expected_buf < 0] = len(FACES)  # 0-padding -> the appended zero-normal slot F
    assert np.array_equal(bfm.masks["point_buf"].numpy(), expected_buf)
    assert bfm.masks["point_buf"].max() == len(FACES)  # padding
    assert bfm.masks["front_mask"].tolist() == list(range(10, 30))
    assert np.array_equal(bfm.masks["front_faces"].numpy(), FACES[:5])
    raw = BFM.from_deep3d(path, recenter=False, dtype=torch.float64)
    np.testing.assert_allclose(raw.mean_shape.numpy(), c["meanshape"].reshape(-1, 3), rtol=1e-7)


def deep3d_compute_norm(face_shape, face_buf, point_buf):
    """Transcription of D3D:models/bfm.py:117-137 (compute_norm) in numpy, with
    point_buf already ``file - 1`` (so 0-padding gives -1 and F+1 padding gives F,
    both the appended zero normal)."""
    v1, v2, v3 = face_shape[:, face_buf[:, 0]], face_shape[:, face_buf[:, 1]], face_shape[:, face_buf[:, 2]]
    face_norm = np.cross(v1 - v2, v2 - v3)
    face_norm = face_norm / np.maximum(np.linalg.norm(face_norm, axis=-1, keepdims=True), 1e-12)
    face_norm = np.concatenate([face_norm, np.zeros((face_norm.shape[0], 1, 3))], 1)
    vertex_norm = face_norm[:, point_buf].sum(2)
    return vertex_norm / np.maximum(np.linalg.norm(vertex_norm, axis=-1, keepdims=True), 1e-12)


@pytest.mark.parametrize("padding", ["zero", "official"])
def test_deep3d_point_buf_padding_and_unit_normals(deep3d_file, tmp_path, padding):
    """The official file pads point_buf with F + 1 (transferBFM09); older files with 0.
    Both load, and deep3d_normals equals the authors' compute_norm."""
    path, c = deep3d_file
    point_buf = c["point_buf"].copy()
    if padding == "official":
        point_buf[point_buf == 0] = len(FACES) + 1
        path = tmp_path / "official.mat"
        scipy.io.savemat(path, dict(c, point_buf=point_buf))
    bfm = BFM.from_deep3d(path, dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    shape = bfm(torch.randn(2, 80, generator=g, dtype=torch.float64) * 30).vertices
    got = bfm.deep3d_normals(shape)
    want = deep3d_compute_norm(shape.numpy(), FACES, point_buf.astype(np.int64) - 1)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-12)
    # not the area-weighted normals: on this randomly deformed mesh they differ
    from facegeom import ops
    assert (ops.vertex_normals(shape, bfm.faces) - got).abs().max() > 1e-3
    # float32 and gradients
    bfm32 = BFM.from_deep3d(path)
    shape32 = shape.float().requires_grad_()
    np.testing.assert_allclose(bfm32.deep3d_normals(shape32).detach().numpy(), want, atol=1e-5)
    bfm32.deep3d_normals(shape32).sum().backward()
    assert torch.isfinite(shape32.grad).all() and shape32.grad.abs().sum() > 0


def test_deep3d_point_buf_errors(deep3d_file, tmp_path):
    path, c = deep3d_file
    bad = tmp_path / "bad_buf.mat"
    scipy.io.savemat(bad, dict(c, point_buf=c["point_buf"] + len(FACES) + 5))
    with pytest.raises(IndexError, match=r"bad_buf\.mat: point_buf"):
        BFM.from_deep3d(bad)
    short = tmp_path / "short_buf.mat"
    scipy.io.savemat(short, dict(c, point_buf=c["point_buf"][:-1]))
    with pytest.raises(ValueError, match=r"short_buf\.mat: point_buf must have shape"):
        BFM.from_deep3d(short)
    # without point_buf: every incident face, unit-weighted (the icosphere has valence <= 6,
    # so this equals the file's 8-slot point_buf)
    no_buf = tmp_path / "no_buf.mat"
    scipy.io.savemat(no_buf, {k: v for k, v in c.items() if k != "point_buf"})
    shape = torch.randn(2, V, 3, dtype=torch.float64)
    torch.testing.assert_close(BFM.from_deep3d(no_buf, dtype=torch.float64).deep3d_normals(shape),
                               BFM.from_deep3d(path, dtype=torch.float64).deep3d_normals(shape))


def test_point_buf_from_faces():
    from facegeom.models.bfm import point_buf_from_faces

    faces = torch.as_tensor(FACES)
    buf = point_buf_from_faces(faces, V)
    for v in range(V):  # the file's construction: faces around v in increasing order, padded with F
        around = np.nonzero((FACES == v).any(1))[0]
        assert buf[v, : len(around)].tolist() == around.tolist()
        assert (buf[v, len(around):] == len(FACES)).all()
    assert point_buf_from_faces(faces, V, slots=3).shape == (V, 3)
    with pytest.raises(IndexError, match="faces"):
        point_buf_from_faces(faces, 10)


def test_deep3d_fewer_coefficients_and_float32(deep3d_file):
    path, _ = deep3d_file
    bfm = BFM.from_deep3d(path)
    assert bfm.shape_basis.dtype == torch.float32
    ident = torch.randn(1, 10)
    full = torch.cat([ident, torch.zeros(1, 70)], 1)
    torch.testing.assert_close(bfm(ident).vertices, bfm(full).vertices)
    assert bfm().albedo.shape == (1, V, 3)  # the mean texture when tex is None


def test_deep3d_errors_name_file_and_key(deep3d_file, tmp_path):
    path, c = deep3d_file
    for key in ("idBase", "tri", "keypoints"):
        broken = tmp_path / f"no_{key}.mat"
        scipy.io.savemat(broken, {k: v for k, v in c.items() if k != key})
        with pytest.raises(ValueError, match=rf"no_{key}\.mat: missing key '{key}'"):
            BFM.from_deep3d(broken)
    zero_based = tmp_path / "zero_based.mat"
    scipy.io.savemat(zero_based, dict(c, tri=FACES.astype(np.float64)))  # a 0 in a 1-based index
    with pytest.raises(IndexError, match=r"zero_based\.mat: tri must hold 1-based"):
        BFM.from_deep3d(zero_based)
    wrong = tmp_path / "wrong.mat"
    scipy.io.savemat(wrong, dict(c, exBase=c["exBase"][:-3]))
    with pytest.raises(ValueError, match=r"wrong\.mat: exBase must have shape"):
        BFM.from_deep3d(wrong)
    corrupt = tmp_path / "corrupt.mat"
    corrupt.write_bytes(b"MATLAB 5.0 MAT-file" + b"\x00" * 20)
    with pytest.raises(ValueError, match=r"corrupt\.mat"):
        BFM.from_deep3d(corrupt)
    with pytest.raises(FileNotFoundError):
        BFM.from_deep3d(tmp_path / "absent.mat")


def test_bad_coefficients(deep3d_file):
    bfm = BFM.from_deep3d(deep3d_file[0])
    with pytest.raises(ValueError, match="shape has 81"):
        bfm(torch.zeros(1, 81))
    with pytest.raises(TypeError, match="exp"):
        bfm(expression=torch.zeros(1, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="spec"):
        bfm(specular=torch.zeros(1, 3))
    with pytest.raises(ValueError, match="batch sizes"):
        bfm(torch.zeros(2, 3), torch.zeros(3, 3))


def test_gradients_flow(deep3d_file):
    bfm = BFM.from_deep3d(deep3d_file[0], dtype=torch.float64)
    params = [torch.zeros(1, k, dtype=torch.float64, requires_grad=True) for k in (80, 64, 80)]
    out = bfm(*params)
    (out.vertices.sum() + out.albedo.sum() + out.landmarks3d.sum()).backward()
    assert all(p.grad.abs().sum() > 0 for p in params)


# --------------------------------------------------------------------------- #
# 3DDFA bfm_noneck_v3.pkl + tri.pkl                                           #
# --------------------------------------------------------------------------- #

def write_3ddfa(folder, with_tri=False):
    r = rng(1)
    keypoint_vertices = r.choice(V, 68)
    keypoints = np.stack([3 * keypoint_vertices, 3 * keypoint_vertices + 1, 3 * keypoint_vertices + 2], 1).reshape(-1)
    content = {
        "u": interleave(VERTS * 1e5)[:, None].astype(np.float32),
        "w_shp": r.standard_normal((3 * V, 199)).astype(np.float32) * 1e3,
        "w_exp": r.standard_normal((3 * V, 29)).astype(np.float32) * 1e3,
        "keypoints": keypoints,
    }
    if with_tri:
        content["tri"] = FACES.T.copy()
    with open(folder / "bfm_noneck_v3.pkl", "wb") as f:
        pickle.dump(content, f, protocol=2)
    with open(folder / "tri.pkl", "wb") as f:
        pickle.dump(FACES.T.astype(np.int32), f, protocol=2)  # 3DDFA_V2 stores [3, F]
    return content, keypoint_vertices


def test_3ddfa_matches_its_reconstruction(tmp_path):
    c, keypoint_vertices = write_3ddfa(tmp_path)
    bfm = BFM.from_3ddfa(tmp_path / "bfm_noneck_v3.pkl", tmp_path / "tri.pkl", dtype=torch.float64)
    assert (bfm.n_shape, bfm.n_exp, bfm.n_tex) == (40, 10, 0)
    g = torch.Generator().manual_seed(2)
    alpha_shp, alpha_exp = torch.randn(3, 40, generator=g, dtype=torch.float64), torch.randn(3, 10, generator=g,
                                                                                              dtype=torch.float64)
    out = bfm(alpha_shp, alpha_exp)
    for b in range(3):
        # 3DDFA: (u + w_shp @ alpha_shp + w_exp @ alpha_exp).reshape(3, -1, order='F')
        flat = (c["u"].astype(np.float64) + c["w_shp"][:, :40].astype(np.float64) @ alpha_shp[b].numpy()[:, None]
                + c["w_exp"][:, :10].astype(np.float64) @ alpha_exp[b].numpy()[:, None])
        pts = flat.reshape(3, -1, order="F")
        np.testing.assert_allclose(out.vertices[b].numpy(), pts.T, rtol=1e-9, atol=1e-6)
        # 3DDFA's sparse landmarks: u[keypoints] reshaped the same way.
        np.testing.assert_allclose(out.landmarks3d[b].numpy(), flat[c["keypoints"]].reshape(3, -1, order="F").T,
                                   rtol=1e-9, atol=1e-6)
    assert np.array_equal(bfm.faces.numpy(), FACES)
    assert np.array_equal(bfm.keypoints.numpy(), keypoint_vertices)
    own = BFM.from_3ddfa(tmp_path / "bfm_noneck_v3.pkl", tmp_path / "tri.pkl", n_shape=60, n_exp=29)
    assert (own.n_shape, own.n_exp) == (60, 29)


def test_3ddfa_tri_inside_the_file_and_errors(tmp_path):
    write_3ddfa(tmp_path, with_tri=True)
    bfm = BFM.from_3ddfa(tmp_path / "bfm_noneck_v3.pkl")
    assert np.array_equal(bfm.faces.numpy(), FACES)
    write_3ddfa(tmp_path)
    with pytest.raises(ValueError, match="tri_path"):
        BFM.from_3ddfa(tmp_path / "bfm_noneck_v3.pkl")
    with pytest.raises(ValueError, match="w_exp"):
        BFM.from_3ddfa(tmp_path / "bfm_noneck_v3.pkl", tmp_path / "tri.pkl", n_exp=30)
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(b"cposix\nsystem\n(X\x04\x00\x00\x00trueTR.".replace(b"TR", b"tR"))
    with pytest.raises(pickle.UnpicklingError, match="posix.system"):
        BFM.from_3ddfa(evil, tmp_path / "tri.pkl")


# --------------------------------------------------------------------------- #
# Basel 2009 01_MorphableModel.mat + Exp_Pca.bin                              #
# --------------------------------------------------------------------------- #

def write_basel2009(folder):
    r = rng(3)
    content = {
        "shapeMU": interleave(VERTS * 1e5)[:, None].astype(np.float32),  # micrometres
        "shapePC": np.linalg.qr(r.standard_normal((3 * V, 30)))[0].astype(np.float32),
        "shapeEV": np.linspace(5e3, 1e3, 30)[:, None].astype(np.float32),
        "texMU": r.uniform(50, 200, (3 * V, 1)).astype(np.float32),
        "texPC": np.linalg.qr(r.standard_normal((3 * V, 30)))[0].astype(np.float32),
        "texEV": np.linspace(40, 5, 30)[:, None].astype(np.float32),
        "tl": (FACES + 1).astype(np.int32),
    }
    scipy.io.savemat(folder / "01_MorphableModel.mat", content)
    # Exp_Pca.bin covering the first M vertices: int32 K, float32 mean [3M], float32 basis [K, 3M].
    covered = np.arange(5, V)
    exp_pc = r.standard_normal((3 * len(covered), 7)).astype(np.float32) * 1e3
    with open(folder / "Exp_Pca.bin", "wb") as f:
        np.array([7], dtype="<i4").tofile(f)
        np.zeros(3 * len(covered), dtype="<f4").tofile(f)
        exp_pc.T.astype("<f4").tofile(f)
    return content, exp_pc, covered


def test_basel2009_with_expression_bin(tmp_path):
    c, exp_pc, covered = write_basel2009(tmp_path)
    bfm = BFM.from_basel2009(tmp_path / "01_MorphableModel.mat", expression=tmp_path / "Exp_Pca.bin",
                             expression_vertices=covered, n_shape=20, n_tex=10, scale=1e-6, dtype=torch.float64)
    assert (bfm.n_shape, bfm.n_exp, bfm.n_tex) == (20, 7, 10)
    g = torch.Generator().manual_seed(4)
    ident, expr, tex = (torch.randn(2, k, generator=g, dtype=torch.float64) for k in (20, 7, 10))
    out = bfm(ident, expr, tex)
    f64 = {k: v.astype(np.float64) for k, v in c.items()}
    for b in range(2):
        flat = f64["shapeMU"][:, 0] + f64["shapePC"][:, :20] @ (ident[b].numpy() * f64["shapeEV"][:20, 0])
        shape = flat.reshape(-1, 3)
        shape[covered] += (exp_pc.astype(np.float64) @ expr[b].numpy()).reshape(-1, 3)
        np.testing.assert_allclose(out.vertices[b].numpy(), shape * 1e-6, rtol=1e-9, atol=1e-12)
        tex_flat = f64["texMU"][:, 0] + f64["texPC"][:, :10] @ (tex[b].numpy() * f64["texEV"][:10, 0])
        np.testing.assert_allclose(out.albedo[b].numpy(), tex_flat.reshape(-1, 3) / 255, rtol=1e-9, atol=1e-12)
    assert np.array_equal(bfm.faces.numpy(), FACES)
    plain = BFM.from_basel2009(tmp_path / "01_MorphableModel.mat")
    assert plain.n_exp == 0 and plain.n_shape == 30
    with pytest.raises(ValueError, match="expression_vertices"):
        BFM.from_basel2009(tmp_path / "01_MorphableModel.mat", expression=tmp_path / "Exp_Pca.bin")
    short = tmp_path / "short.bin"
    short.write_bytes((tmp_path / "Exp_Pca.bin").read_bytes()[:-6])
    with pytest.raises(ValueError, match=r"short\.bin"):
        BFM.from_basel2009(tmp_path / "01_MorphableModel.mat", expression=short, expression_vertices=covered)
    with pytest.raises(ValueError, match=r"01_MorphableModel\.mat.*shapePC"):
        BFM.from_basel2009(tmp_path / "01_MorphableModel.mat", n_shape=31)


# --------------------------------------------------------------------------- #
# Basel 2017 h5 + AlbedoMM                                                    #
# --------------------------------------------------------------------------- #

def write_statismo(group, mean, basis, variance):
    group.create_dataset("model/mean", data=mean.astype(np.float32))
    group.create_dataset("model/pcaBasis", data=basis.astype(np.float32))
    group.create_dataset("model/pcaVariance", data=variance.astype(np.float32))
    group.create_dataset("model/noiseVariance", data=np.float32(0.0))


def write_basel2017(folder):
    h5py = pytest.importorskip("h5py")
    r = rng(5)
    arrays = {
        "shape": (interleave(VERTS * 1e3), r.standard_normal((3 * V, 12)), np.linspace(40, 4, 12)),
        "expression": (np.zeros(3 * V), r.standard_normal((3 * V, 6)), np.linspace(9, 1, 6)),
        "color": (r.uniform(0.2, 0.8, 3 * V), r.standard_normal((3 * V, 8)) * 0.01, np.linspace(2, 1, 8)),
    }
    with h5py.File(folder / "model2017-1_bfm_nomouth.h5", "w") as f:
        for name, (mean, basis, variance) in arrays.items():
            write_statismo(f.create_group(name), mean, basis, variance)
        f.create_dataset("shape/representer/cells", data=FACES.T.astype(np.uint32))  # [3, F], 0-based
        f.create_dataset("shape/representer/points", data=VERTS.T.astype(np.float32))
    albedo = {
        "diffuseAlbedo": (r.uniform(0.2, 0.8, 3 * V), r.standard_normal((3 * V, 9)) * 0.01, np.linspace(3, 1, 9)),
        "specularAlbedo": (r.uniform(0.0, 0.3, 3 * V), r.standard_normal((3 * V, 9)) * 0.01, np.linspace(2, 1, 9)),
    }
    with h5py.File(folder / "albedoModel2020_bfm_albedoPart.h5", "w") as f:
        for name, (mean, basis, variance) in albedo.items():
            write_statismo(f.create_group(name), mean, basis, variance)
    return arrays, albedo


def statismo_sample(mean, basis, variance, coeffs):
    f32 = [np.asarray(a, dtype=np.float32).astype(np.float64) for a in (mean, basis, variance)]
    return (f32[0] + f32[1][:, : len(coeffs)] @ (coeffs * np.sqrt(f32[2][: len(coeffs)]))).reshape(-1, 3)


def test_basel2017_with_albedomm(tmp_path):
    arrays, albedo = write_basel2017(tmp_path)
    bfm = BFM.from_basel2017(tmp_path / "model2017-1_bfm_nomouth.h5", tmp_path / "albedoModel2020_bfm_albedoPart.h5",
                             scale=1e-3, dtype=torch.float64)
    assert (bfm.n_shape, bfm.n_exp, bfm.n_tex, bfm.n_spec) == (12, 6, 9, 9)
    g = torch.Generator().manual_seed(6)
    ident, expr, tex, spec = (torch.randn(2, k, generator=g, dtype=torch.float64) for k in (12, 6, 9, 9))
    out = bfm(ident, expr, tex, spec)
    for b in range(2):
        shape = statismo_sample(*arrays["shape"], ident[b].numpy()) + statismo_sample(*arrays["expression"],
                                                                                     expr[b].numpy())
        np.testing.assert_allclose(out.vertices[b].numpy(), shape * 1e-3, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(out.albedo[b].numpy(), statismo_sample(*albedo["diffuseAlbedo"], tex[b].numpy()),
                                   rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(out.specular[b].numpy(),
                                   statismo_sample(*albedo["specularAlbedo"], spec[b].numpy()), rtol=1e-9, atol=1e-12)
    assert np.array_equal(bfm.faces.numpy(), FACES)
    colour = BFM.from_basel2017(tmp_path / "model2017-1_bfm_nomouth.h5", n_shape=5, n_exp=3, dtype=torch.float64)
    assert (colour.n_shape, colour.n_exp, colour.n_tex, colour.n_spec) == (5, 3, 8, 0)
    np.testing.assert_allclose(colour().albedo[0].numpy(), statismo_sample(*arrays["color"], np.zeros(1)),
                               rtol=1e-9, atol=1e-12)


def test_basel2017_errors(tmp_path):
    h5py = pytest.importorskip("h5py")
    write_basel2017(tmp_path)
    broken = tmp_path / "broken.h5"
    with h5py.File(broken, "w") as f:
        write_statismo(f.create_group("shape"), np.zeros(3 * V), np.zeros((3 * V, 2)), np.ones(2))
    with pytest.raises(ValueError, match=r"broken\.h5: missing key 'shape/representer/cells'"):
        BFM.from_basel2017(broken)
    with pytest.raises(ValueError, match=r"model2017-1_bfm_nomouth\.h5: missing key 'diffuseAlbedo'"):
        BFM.from_basel2017(tmp_path / "model2017-1_bfm_nomouth.h5", tmp_path / "model2017-1_bfm_nomouth.h5")
    not_h5 = tmp_path / "not.h5"
    not_h5.write_bytes(b"nope")
    with pytest.raises(ValueError, match=r"not\.h5"):
        BFM.from_basel2017(not_h5)
    with pytest.raises(ValueError, match="expression"):
        BFM.from_basel2017(broken, n_exp=3)


@pytest.mark.cuda
@cuda
def test_cuda_matches_cpu(deep3d_file):
    bfm = BFM.from_deep3d(deep3d_file[0], dtype=torch.float64)
    g = torch.Generator().manual_seed(9)
    coeffs = [torch.randn(2, k, generator=g, dtype=torch.float64) for k in (80, 64, 80)]
    cpu = bfm(*coeffs)
    gpu = bfm.cuda()(*[c.cuda() for c in coeffs])
    for name in ("vertices", "albedo", "landmarks2d", "landmarks3d"):
        torch.testing.assert_close(getattr(gpu, name).cpu(), getattr(cpu, name), atol=1e-10, rtol=0)


def test_from_flame_synthetic_head():
    from facegeom.models import synthetic_head

    head = synthetic_head(seed=1, n_shape=8, n_exp=6, n_tex=5, dtype=torch.float64)
    bfm = BFM.from_flame(head)
    assert (bfm.n_shape, bfm.n_exp, bfm.n_tex) == (8, 6, 5)
    g = torch.Generator().manual_seed(10)
    ident, expr, tex = (torch.randn(2, k, generator=g, dtype=torch.float64) for k in (8, 6, 5))
    ours, theirs = bfm(ident, expr, tex), head(ident, expr, texture=tex)
    # Zero pose: FLAME's forward is its linear part (up to its pose-corrective-free skinning).
    torch.testing.assert_close(ours.vertices, theirs.vertices, atol=1e-12, rtol=0)
    torch.testing.assert_close(ours.albedo, theirs.albedo)
    # Keypoints are the landmark triangles' dominant corners: close to the landmarks.
    assert (ours.landmarks3d - theirs.landmarks3d).norm(dim=-1).max() < 6e-3
