"""facegeom.ops.rasterize_next_layer (depth peeling, nvdiffrast's DepthPeeler): the
compiled peel pass equals the reference's, layer after layer, on random triangle
soups; layers are the per-pixel depth order; gradients, opcheck, errors."""
import pytest
import torch

import facegeom.ops as fo
from facegeom import _native
from facegeom.ops import reference
from tests.conftest import cuda, requires_native
from tests.ops.test_rasterize import random_scene


def peel_all(rasterize_layer, pos, tri, resolution, layers, **kwargs):
    out = [fo.rasterize(pos, tri, resolution, **kwargs)[0]]
    for _ in range(layers - 1):
        out.append(rasterize_layer(pos, tri, resolution, out[-1], **kwargs)[0])
    return out


def reference_layer(pos, tri, resolution, previous, ranges=None):
    return reference.rasterize(pos, tri, resolution, ranges, False, peel=previous)


@requires_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kernel_peel_matches_reference(dtype):
    pos, tri = random_scene(2, 30, 40, seed=3, dtype=dtype)
    got = peel_all(fo.rasterize_next_layer, pos, tri, (12, 16), 5)
    want = peel_all(lambda *a: reference_layer(*a), pos, tri, (12, 16), 5)
    assert (got[1][..., 3] > 0).sum() > 20 and (got[2][..., 3] > 0).sum() > 0
    for a, b in zip(got, want):
        assert torch.equal(a[..., 3], b[..., 3])
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # Each layer lies strictly behind the previous one; emptied pixels stay empty.
    for front, back in zip(got, got[1:]):
        drawn = back[..., 3] > 0
        assert bool((front[..., 3][drawn] > 0).all())
        assert bool((back[..., 2][drawn].float() > front[..., 2][drawn].float()).all())


@requires_native
def test_layers_are_the_depth_order_per_pixel():
    pos, tri = random_scene(1, 24, 12, seed=5)
    resolution = (10, 10)
    layers = peel_all(fo.rasterize_next_layer, pos, tri, resolution, 13)
    ids = torch.stack([layer[0, ..., 3] for layer in layers])  # [L, H, W]
    # Brute force: each triangle alone, sorted by depth at each pixel.
    alone = [fo.rasterize(pos, tri[i:i + 1], resolution)[0][0] for i in range(tri.shape[0])]
    depth = torch.stack([torch.where(a[..., 3] > 0, a[..., 2].float().double(), torch.tensor(float("inf"),
                        dtype=torch.float64)) for a in alone])
    order = depth.argsort(dim=0, stable=True)
    sorted_depth = depth.gather(0, order)
    tied = torch.zeros_like(sorted_depth[0], dtype=torch.bool)  # pixels with equal depths so far
    checked = []
    for k in range(tri.shape[0]):
        if k:
            tied |= sorted_depth[k].isfinite() & (sorted_depth[k] == sorted_depth[k - 1])
        expected = torch.where(sorted_depth[k].isfinite(), order[k] + 1.0, 0.0)
        assert torch.equal(ids[k].double()[~tied], expected[~tied]), k
        checked.append(int(((ids[k] > 0) & ~tied).sum()))
    assert checked[1] > 10 and checked[2] > 0, checked
    assert bool((ids[-1] == 0).all())


@requires_native
def test_peel_gradients_and_range_mode():
    pos, tri = random_scene(1, 20, 16, seed=7)
    first, _ = fo.rasterize(pos, tri, (12, 12))
    leaf = pos.clone().requires_grad_(True)
    rast, rast_db = fo.rasterize_next_layer(leaf, tri, (12, 12), first, grad_db=True)
    (got,) = torch.autograd.grad(rast[..., :3].sum() + rast_db.sum(), leaf)
    leaf_r = pos.clone().requires_grad_(True)
    rast_r, db_r = reference.rasterize(leaf_r, tri, (12, 12), None, True, peel=first)
    (want,) = torch.autograd.grad(rast_r[..., :3].sum() + db_r.sum(), leaf_r)
    torch.testing.assert_close(got, want, atol=1e-8, rtol=1e-6)
    assert torch.count_nonzero(got) > 0
    ranges = torch.tensor([[0, 16], [4, 8]], dtype=torch.int32)
    first_r, _ = fo.rasterize(pos[0], tri, (12, 12), ranges=ranges)
    second_r, _ = fo.rasterize_next_layer(pos[0], tri, (12, 12), first_r, ranges=ranges)
    torch.testing.assert_close(second_r[:1], fo.rasterize_next_layer(pos, tri, (12, 12), first)[0])
    assert torch.equal(second_r[..., 3], reference_layer(pos[0], tri, (12, 12), first_r, ranges)[0][..., 3])


@requires_native
def test_opcheck():
    pos, tri = random_scene(2, 12, 16, seed=9)
    first, _ = fo.rasterize(pos, tri, (8, 10))
    torch.library.opcheck(torch.ops.facegeom.rasterize_next_layer,
                          (pos.clone().requires_grad_(True), tri, 8, 10, None, True, first))


''' + open('/tmp/tx/moved.py').read().replace("def test_rasterize_next_layer_checks_and_range_mode():", "def test_checks_and_a_two_triangle_range_scene():") + '''
@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_cpu(dtype):
    pos, tri = random_scene(2, 60, 120, seed=11, dtype=dtype)
    cpu = peel_all(fo.rasterize_next_layer, pos, tri, (24, 32), 4)
    gpu = peel_all(fo.rasterize_next_layer, pos.cuda(), tri.cuda(), (24, 32), 4)
    for a, b in zip(gpu, cpu):
        assert torch.equal(a[..., 3].cpu(), b[..., 3])
        torch.testing.assert_close(a.cpu(), b, atol=1e-5, rtol=1e-5)


@requires_native
@pytest.mark.parametrize("bad", [-3.0, float("nan"), 7.0])
def test_previous_and_arguments_are_checked_as_rasterize_checks_them(bad):
    pos = torch.tensor([[[-1.0, -1, 0, 1], [1, -1, 0, 1], [-1, 1, 0, 1]]])
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    first, _ = fo.rasterize(pos, tri, (4, 4))
    broken = first.clone()
    broken[0, 0, 0, 3] = bad
    with pytest.raises(IndexError, match=r"previous\[\.\.\., 3\]"):
        fo.rasterize_next_layer(pos, tri, (4, 4), broken)
    with pytest.raises(TypeError, match="grad_db"):
        fo.rasterize_next_layer(pos, tri, (4, 4), first, grad_db="no")
    with pytest.raises(IndexError, match="ranges"):
        fo.rasterize_next_layer(pos[0], tri, (4, 4), first, ranges=torch.tensor([[0, 5]], dtype=torch.int32))
