"""Issue 17 findings outside the kernels, in-process: cameras, NoW, sparse
structures (property-based, hypothesis profile "ci" / FACEGEOM_HYPOTHESIS=thorough)."""
import json
import pickle

import numpy as np
import pytest
import scipy.sparse
import torch

from facegeom import cameras, cli
from facegeom.eval import now
from facegeom.models import _pickle
from facegeom import testing as syn

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, strategies as st  # noqa: E402


def test_image_size_and_batch_are_validated():
    cam = torch.tensor([[8.0, 0.0, 0.0]])
    for bad in (True, False, (True, 4), (4, 4.0), 0, "224"):
        with pytest.raises(ValueError, match="image_size"):
            cameras.WeakPerspective(cam, image_size=bad)
    assert cameras.WeakPerspective(cam, image_size=np.int64(64)).image_size == (64, 64)
    for bad in (-1, 0, True, 2.0):
        with pytest.raises(ValueError, match="batch"):
            cameras.Pinhole.deep3d(batch=bad)
    assert cameras.Pinhole.deep3d(batch=2).focal.shape[0] == 2


def test_now_distances_with_huge_coordinates():
    mesh_v, faces = syn.grid_surface(6)
    lmk = syn.landmarks()
    scan, _, _ = syn.sample_surface(mesh_v, faces, 60, seed=0)
    # a prediction in units 1e155 larger: the scale (1e-155) is computed without overflow, exact result
    result = now.now_distances(scan, lmk, mesh_v * 1e155, faces, lmk * 1e155, max_iterations=5)
    assert result.alignment.scale == pytest.approx(1e-155, rel=1e-9)
    assert float(result.distances.max()) < 1e-6
    # a scan whose squared distances overflow: a failed image, never "converged"
    with pytest.raises(ValueError, match="overflow"):
        now.now_distances(scan * 1e155, lmk * 1e155, mesh_v, faces, lmk, max_iterations=5)
    # a scale float64 cannot hold (1e-300 / 1e300): refused instead of collapsing the prediction
    with pytest.raises(ValueError, match="not representable"):
        now.procrustes(lmk * 1e300, lmk * 1e-300)


def test_malformed_image_list_line_is_reported_as_missing(tmp_path):
    from tests.eval.now_dataset import make_dataset

    dataset, predictions, _ = make_dataset(tmp_path)
    listing = dataset / "imagepathsvalidation.txt"
    listing.write_text("just_a_name.jpg\n" + listing.read_text())
    out = tmp_path / "out"
    code = cli.main(["now-eval", "--predictions", str(predictions), "--dataset", str(dataset), "--out", str(out),
                     "--no-progress"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images_listed"] == 7 and summary["images_evaluated"] == 2
    assert summary["num_missing_files"] == 3
    assert any("just_a_name.jpg" in m["image"] and "malformed" in m["missing"] for m in summary["missing"])
    from facegeom.eval.now_cli import read_image_list

    with pytest.raises(ValueError, match=r"imagepathsvalidation\.txt:1"):
        read_image_list(str(listing))


@given(rows=st.integers(0, 6), cols=st.integers(0, 6), data=st.data())
def test_sparse_structures_are_either_valid_or_refused(rows, cols, data):
    """Random (often corrupt) csc structures: the checked path either rebuilds exactly
    what scipy's full format check accepts, or raises UnpicklingError; never crashes."""
    nnz = data.draw(st.integers(0, 8))
    indices = np.array(data.draw(st.lists(st.integers(-3, 8), min_size=nnz, max_size=nnz)), dtype=np.int64)
    indptr = np.array(data.draw(st.lists(st.integers(-1, nnz + 1), min_size=0, max_size=cols + 2)), dtype=np.int64)
    values = np.arange(1.0, nnz + 1)
    holder = _pickle._CscMatrix()
    holder.state = {"_shape": (rows, cols), "data": values, "indices": indices, "indptr": indptr}
    try:
        matrix = holder.to_scipy("random")
    except pickle.UnpicklingError as error:
        assert str(error).startswith("random: corrupt scipy.sparse csc matrix")
        return
    matrix.check_format(full_check=True)
    dense = matrix.toarray()
    assert dense.shape == (rows, cols)
    for col in range(cols):
        for k in range(indptr[col], indptr[col + 1]):
            assert 0 <= indices[k] < rows


@given(st.sampled_from(["c16", "M8[s]", "m8[s]", "O", "U3", "S3", "f8", "i4", "u2", "?"]))
def test_float_array_accepts_real_numbers_only(dtype):
    array = np.zeros((2, 3), dtype=dtype) if dtype != "O" else np.array([[None] * 3] * 2, dtype=object)
    if np.dtype(dtype).kind in "biuf":
        assert _pickle.float_array(array, "key", "file").dtype == np.float64
    else:
        with pytest.raises(ValueError, match="file: key must hold real numbers"):
            _pickle.float_array(array, "key", "file")
    sparse = scipy.sparse.csc_matrix(np.eye(3))
    np.testing.assert_array_equal(_pickle.float_array(sparse, "key", "file"), np.eye(3))
