"""One face-model language (API.md section 6): FLAME, BFM and the synthetic head take
the same argument names and return the same output fields; the old BFM names are
deprecated aliases; everything works under torch.set_default_dtype(torch.float64)."""
import dataclasses
import inspect
import warnings

import pytest
import torch

from facegeom import testing, transforms
from facegeom.cameras import Pinhole, WeakPerspective
from facegeom.models import BFM, BFMOutput, FLAMEOutput, synthetic_head

FIELDS = {"vertices", "albedo", "specular", "landmarks2d", "landmarks3d"}


@pytest.fixture(scope="module")
def head():
    return synthetic_head(seed=2, n_shape=6, n_exp=5, n_tex=4, dtype=torch.float64)


@pytest.fixture(scope="module")
def bfm(head):
    return BFM.from_flame(head)


def test_same_fields_and_argument_names(head, bfm):
    assert FIELDS <= {f.name for f in dataclasses.fields(FLAMEOutput)}
    assert FIELDS == {f.name for f in dataclasses.fields(BFMOutput)}
    for model in (head, bfm):
        params = inspect.signature(model.forward).parameters
        assert {"shape", "expression", "texture", "pose", "translation"} <= set(params)
        assert (model.n_shape, model.n_exp, model.n_tex) == (6, 5, 4)
    g = torch.Generator().manual_seed(0)
    kw = dict(shape=torch.randn(2, 6, generator=g, dtype=torch.float64),
              expression=torch.randn(2, 5, generator=g, dtype=torch.float64),
              texture=torch.randn(2, 4, generator=g, dtype=torch.float64))
    a, b = head(**kw), bfm(**kw)
    for out in (a, b):
        assert out.vertices.shape == (2, head.num_vertices, 3)
        assert out.albedo.shape == (2, head.num_vertices, 3)
        assert out.landmarks2d.shape == out.landmarks3d.shape == (2, 68, 3)
        assert out.specular is None
    torch.testing.assert_close(a.vertices, b.vertices, atol=1e-12, rtol=0)
    torch.testing.assert_close(a.albedo, b.albedo)


def test_bfm_pose_rotation_translation(bfm):
    g = torch.Generator().manual_seed(1)
    shape = torch.randn(2, 6, generator=g, dtype=torch.float64)
    pose = torch.randn(2, 3, generator=g, dtype=torch.float64) * 0.3
    t = torch.randn(2, 3, generator=g, dtype=torch.float64)
    rest = bfm(shape=shape)
    R = transforms.axis_angle_to_matrix(pose)
    want = torch.einsum("bij,bnj->bni", R, rest.vertices) + t[:, None]
    out = bfm(shape=shape, pose=pose, translation=t)
    torch.testing.assert_close(out.vertices, want)
    torch.testing.assert_close(out.landmarks2d, want[:, bfm.keypoints])
    # Deep3D: p' = Rz Ry Rx p + t with euler_to_matrix
    angles = torch.tensor([[0.1, -0.2, 0.05]], dtype=torch.float64)
    deep = bfm(shape=shape[:1], rotation=transforms.euler_to_matrix(angles), translation=t[:1])
    torch.testing.assert_close(deep.vertices, rest.vertices[:1] @ transforms.euler_to_matrix(angles)[0].T + t[:1, None])
    with pytest.raises(ValueError, match="not both"):
        bfm(pose=pose, rotation=R)
    with pytest.raises(ValueError, match="rotation"):
        bfm(rotation=torch.eye(3, dtype=torch.float64))


def test_bfm_deprecated_names(bfm):
    g = torch.Generator().manual_seed(2)
    s, e, t = (torch.randn(1, k, generator=g, dtype=torch.float64) for k in (6, 5, 4))
    new = bfm(shape=s, expression=e, texture=t)
    with pytest.warns(DeprecationWarning, match="is deprecated"):
        old = bfm(id=s, exp=e, tex=t)
    torch.testing.assert_close(old.vertices, new.vertices)
    torch.testing.assert_close(old.albedo, new.albedo)
    with pytest.warns(DeprecationWarning, match="albedo"):
        torch.testing.assert_close(old.texture, new.albedo)
    with pytest.warns(DeprecationWarning, match="landmarks3d"):
        torch.testing.assert_close(old.landmarks, new.landmarks3d)
    with pytest.warns(DeprecationWarning, match="n_shape"):
        assert bfm.n_id == 6
    with pytest.warns(DeprecationWarning), pytest.raises(TypeError, match="both shape and"):
        bfm(s, id=s)
    with pytest.raises(TypeError, match="unexpected"):
        bfm(identity=s)
    with warnings.catch_warnings():  # the new names warn about nothing
        warnings.simplefilter("error")
        bfm(s, e, t)


def test_float64_default_dtype():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        head = synthetic_head(seed=0, n_shape=4, n_exp=3, n_tex=2)
        assert head.v_template.dtype == torch.float64
        out = head(shape=torch.zeros(1, 4), jaw=torch.tensor([[0.2, 0.0, 0.0]]), texture=torch.zeros(1, 2))
        assert out.vertices.dtype == torch.float64
        bfm = BFM.from_flame(head)
        assert bfm(torch.zeros(1, 4), pose=torch.zeros(1, 3)).vertices.dtype == torch.float64
        cam = WeakPerspective(torch.tensor([[5.5, 0.0, 0.02]]))
        assert cam.project(out.vertices).dtype == torch.float64
        assert Pinhole.deep3d().project(out.vertices).dtype == torch.float64
        case = testing.lbs_case(batch=1, num_vertices=10, num_betas=4)
        assert case["v_template"].dtype == torch.float64
    finally:
        torch.set_default_dtype(old)
    assert synthetic_head(seed=0, n_shape=4, n_exp=3, n_tex=2).v_template.dtype == old
