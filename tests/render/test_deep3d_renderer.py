"""Deep3DRenderer against a transcription of the authors' MeshRenderer
(D3D:util/nvdiffrast.py:15-95), its nvdiffrast calls served by facegeom.compat.nvdiffrast."""
import numpy as np
import pytest
import torch
import trimesh

import facegeom.compat.nvdiffrast as dr
from facegeom.render.deep3d import Deep3DRenderer


def authors_ndc_projection(x=0.1, n=1.0, f=50.0):
    return np.array([[n / x, 0, 0, 0],
                     [0, n / -x, 0, 0],
                     [0, 0, -(f + n) / (f - n), -(2 * f * n) / (f - n)],
                     [0, 0, -1, 0]]).astype(np.float32)


class AuthorsMeshRenderer:
    """D3D:util/nvdiffrast.py MeshRenderer, line for line (instanced mode, shared tri),
    with ``import facegeom.compat.nvdiffrast as dr`` in place of ``nvdiffrast.torch``."""

    def __init__(self, rasterize_fov, znear=0.1, zfar=10, rasterize_size=224):
        x = np.tan(np.deg2rad(rasterize_fov * 0.5)) * znear
        self.ndc_proj = torch.tensor(authors_ndc_projection(x=x, n=znear, f=zfar)).matmul(
            torch.diag(torch.tensor([1., -1, -1, 1])))
        self.rasterize_size = rasterize_size
        self.ctx = dr.RasterizeGLContext()

    def __call__(self, vertex, tri, feat=None):
        rsize = int(self.rasterize_size)
        ndc_proj = self.ndc_proj
        if vertex.shape[-1] == 3:
            vertex = torch.cat([vertex, torch.ones([*vertex.shape[:2], 1])], dim=-1)
            vertex[..., 1] = -vertex[..., 1]
        vertex_ndc = vertex @ ndc_proj.t()
        tri = tri.type(torch.int32).contiguous()
        rast_out, _ = dr.rasterize(self.ctx, vertex_ndc.contiguous(), tri, resolution=[rsize, rsize])
        depth, _ = dr.interpolate(vertex.reshape([-1, 4])[..., 2].unsqueeze(1).contiguous(), rast_out, tri)
        depth = depth.permute(0, 3, 1, 2)
        mask = (rast_out[..., 3] > 0).float().unsqueeze(1)
        depth = mask * depth
        image = None
        if feat is not None:
            image, _ = dr.interpolate(feat, rast_out, tri)
            image = image.permute(0, 3, 1, 2)
            image = mask * image
        return mask, depth, image


def authors_renderer():
    focal, center = 1015.0, 112.0  # D3D:models/facerecon_model.py:31-35,99-102
    fov = 2 * np.arctan(center / focal) * 180 / np.pi
    return AuthorsMeshRenderer(rasterize_fov=fov, znear=5.0, zfar=15.0, rasterize_size=int(2 * center))


def head(batch, seed=0, distance=10.0):
    """A bumpy sphere of radius ~1 in Deep3D's camera frame (z = distance in front)."""
    mesh = trimesh.creation.icosphere(subdivisions=3)
    g = torch.Generator().manual_seed(seed)
    base = torch.tensor(mesh.vertices, dtype=torch.float32)
    verts = base[None] * (1 + 0.1 * torch.rand(batch, base.shape[0], 1, generator=g))
    verts = verts + torch.randn(batch, 1, 3, generator=g) * torch.tensor([0.2, 0.2, 0.5])
    verts[..., 2] += distance
    return verts, torch.tensor(mesh.faces, dtype=torch.int64)


def test_matches_authors_pixel_for_pixel():
    verts, faces = head(3)
    feat = torch.rand(3, verts.shape[1], 3, generator=torch.Generator().manual_seed(1))
    mask, depth, image = Deep3DRenderer()(verts, faces, feat)
    a_mask, a_depth, a_image = authors_renderer()(verts.clone(), faces, feat)
    assert mask.shape == (3, 1, 224, 224) and image.shape == (3, 3, 224, 224)
    assert torch.equal(mask, a_mask)
    assert 2000 < mask[0].sum() < 224 * 224  # the face covers part of the image
    torch.testing.assert_close(image, a_image, rtol=0, atol=1e-6)
    # depth: identical for the first image; the authors' [B*N, 1] attribute is broadcast
    # by nvdiffrast, so their later images use the first mesh's z (documented bug)
    torch.testing.assert_close(depth[:1], a_depth[:1], rtol=0, atol=1e-6)
    for b in range(3):
        single = authors_renderer()(verts[b:b + 1].clone(), faces)[1]
        torch.testing.assert_close(depth[b:b + 1], single, rtol=0, atol=1e-6)
    inside = mask[0, 0] > 0
    assert ((depth[0, 0][inside] > 8) & (depth[0, 0][inside] < 11)).all()  # camera distance, not NDC


def test_near_far_clipping_and_orientation():
    # a flat quad from z = 4 (before near 5) to z = 16 (beyond far 15), tilted in y
    v = torch.tensor([[[-0.5, -1.0, 4.0], [0.5, -1.0, 4.0], [0.5, 1.0, 16.0], [-0.5, 1.0, 16.0]]])
    tri = torch.tensor([[0, 1, 2], [0, 2, 3]])
    mask, _, _ = Deep3DRenderer()(v, tri)
    a_mask, _, _ = authors_renderer()(v.clone(), tri)
    assert torch.equal(mask, a_mask)
    assert 0 < mask.sum() < 224 * 224
    # a small triangle up in +y (camera frame, y up) lands in the top rows, +x on the right
    v = torch.tensor([[[0.3, 0.5, 10.0], [0.4, 0.5, 10.0], [0.35, 0.6, 10.0]]])
    mask = Deep3DRenderer()(v, torch.tensor([[0, 1, 2]])).mask[0, 0]
    rows, cols = torch.nonzero(mask, as_tuple=True)
    assert rows.float().mean() < 112 and cols.float().mean() > 112


def test_half_pixel_offset_to_landmark_projection():
    """A vertex projected to (u, v) by Deep3D's landmark formula shows up at image pixel
    column u - 0.5 and row 2c - 0.5 - v, not at (u, 2c - 1 - v)."""
    renderer = Deep3DRenderer()
    z = 10.0
    # a quad over u in [101.1, 101.9], v in [150.1, 150.9]: it holds no integer (u, v), so with
    # pixel centres at the landmark grid it would cover nothing; Deep3D's raster puts the
    # centre of column j at u = j + 0.5 and of row i at v = 223.5 - i: exactly one pixel
    u0, u1, v0, v1 = 101.1, 101.9, 150.1, 150.9
    to_xy = lambda p: (p - 112.0) * z / 1015.0  # noqa: E731  (inverse of u = 1015 x / z + 112)
    v = torch.tensor([[[to_xy(u0), to_xy(v0), z], [to_xy(u1), to_xy(v0), z], [to_xy(u1), to_xy(v1), z],
                       [to_xy(u0), to_xy(v1), z]]], dtype=torch.float64)
    mask = renderer(v, torch.tensor([[0, 1, 2], [0, 2, 3]])).mask[0, 0]
    rows, cols = torch.nonzero(mask, as_tuple=True)
    assert cols.tolist() == [101] and rows.tolist() == [73]  # u = 101 + 0.5, v = 223.5 - 73


def test_gradients_and_float64():
    verts, faces = head(1)
    verts = verts.double().requires_grad_()
    feat = torch.rand(1, verts.shape[1], 3, dtype=torch.float64, requires_grad=True)
    out = Deep3DRenderer()(verts, faces, feat)
    assert out.image.dtype == torch.float64
    (out.image.sum() + out.depth.sum()).backward()
    assert feat.grad.abs().sum() > 0 and verts.grad.abs().sum() > 0


def test_bad_input():
    r = Deep3DRenderer()
    with pytest.raises(ValueError, match="vertex"):
        r(torch.zeros(2, 3), torch.tensor([[0, 1, 2]]))
    with pytest.raises(TypeError, match="tri"):
        r(torch.zeros(1, 3, 3), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="feat"):
        r(torch.zeros(1, 3, 3), torch.tensor([[0, 1, 2]]), torch.zeros(1, 4, 3))
    with pytest.raises(ValueError, match="near"):
        Deep3DRenderer(near=20.0)
