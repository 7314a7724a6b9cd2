"""A corpus of hostile files (sparse structures, pickle bombs, XML bombs, h5 link
loops, truncated files, wrong dtypes), generated here, each loaded in a worker
subprocess (tests/hostile/runner.py): a crash or hang fails its case only.
Issue 17; the segfaults were scipy's ``toarray`` trusting a pickled matrix."""
import pickle

import numpy as np
import pytest

from tests.hostile import runner
from tests.models import model_files


def _sparse_state(indices, indptr, shape, data=None):
    indices = np.asarray(indices)
    data = np.ones(len(indices)) if data is None else data
    state = {"_shape": shape, "data": data, "indices": indices, "indptr": np.asarray(indptr), "maxprint": 50,
             "format": "csc"}
    holder = model_files.OldScipySparse(np.zeros((1, 1)))
    holder.state = state
    return holder


def _write_model(folder, name, **override):
    arrays = model_files.flame_arrays()
    content = {}
    for key, value in arrays.items():
        if key in ("shapedirs", "v_template"):
            content[key] = model_files.ChumpyVariable(value, _dirty_vars=set(), label=None)
        elif key == "J_regressor":
            content[key] = model_files.OldScipySparse(value)
        else:
            content[key] = value
    content.update(override)
    (folder / name).write_bytes(model_files.dumps(content))


def build_corpus(folder):
    """Write the hostile files into ``folder``; return the cases."""
    cases = []

    def case(name, code, expected, pattern):
        cases.append((name, code, expected, pattern))

    # --- pickle bombs ------------------------------------------------------------------
    nested = []
    for _ in range(64):
        nested = [nested, nested]  # 64 levels, each referencing the previous one twice
    (folder / "dag64.pkl").write_bytes(pickle.dumps(nested, protocol=2))
    loop = []
    loop.append(loop)
    (folder / "selfref.pkl").write_bytes(pickle.dumps(loop, protocol=2))
    loop_dict = {}
    loop_dict["x"] = [loop_dict]
    (folder / "selfref_dict.pkl").write_bytes(pickle.dumps(loop_dict, protocol=2))
    (folder / "deep_list.pkl").write_bytes(b"\x80\x02" + b"(" * 100_000 + b"l" * 100_000 + b".")
    # a 1,000,000-deep tuple as a dict key: CPython hashes it recursively in C (a segfault)
    (folder / "deep_tuple_key.pkl").write_bytes(b"\x80\x02}" + b")" + b"\x85" * 1_000_000 + b"K\x01s.")
    (folder / "truncated.pkl").write_bytes(pickle.dumps({"a": np.arange(100.0)}, protocol=2)[:-40])
    for stem in ("dag64", "selfref", "selfref_dict", "deep_list", "deep_tuple_key"):
        pattern = {"dag64": "expands to more than", "selfref": "holds a reference cycle", "selfref_dict": "holds a reference cycle",
                   "deep_list": "nests deeper", "deep_tuple_key": "nests deeper"}[stem]
        case(f"FLAME {stem}", f"FLAME.from_file(folder + '/{stem}.pkl')", ["UnpicklingError"],
             rf"{stem}\.pkl: refusing the pickle: it {pattern}")
    case("masks dag64", "load_flame_masks(folder + '/dag64.pkl')", ["UnpicklingError"], "expands")
    case("3ddfa selfref", "BFM.from_3ddfa(folder + '/selfref.pkl')", ["UnpicklingError"], "cycle")
    case("embedding deep_list", "FLAME.from_file(folder + '/good.pkl', n_exp=20).load_landmark_embedding("
         "folder + '/deep_list.pkl')", ["UnpicklingError"], "nests deeper")
    case("truncated pickle", "FLAME.from_file(folder + '/truncated.pkl')", ["UnpicklingError"], r"truncated\.pkl")

    # --- sparse structures ---------------------------------------------------------------
    _write_model(folder, "good.pkl")
    V = len(model_files.flame_arrays()["v_template"])
    sparse = {  # J_regressor [5, V] stored csc: indptr has V + 1 entries, indices are rows in [0, 5)
        "row_1e8": (_sparse_state([0, 100_000_000], [0, 1, 2] + [2] * (V - 2), (5, V)), "indices must lie"),
        "row_2e9": (_sparse_state(np.array([0, 2_000_000_000], np.int64), [0, 1, 2] + [2] * (V - 2), (5, V)),
                    "indices must lie"),
        "row_negative": (_sparse_state([0, -3], [0, 1, 2] + [2] * (V - 2), (5, V)), "indices must lie"),
        "indptr_oversized": (_sparse_state([0, 1], [0, 1, 2] + [2] * (V - 3) + [1 << 40], (5, V)), "indptr ends at"),
        "indptr_decreasing": (_sparse_state([0, 1], [0, 2, 1] + [2] * (V - 2), (5, V)), "never decrease"),
        "indptr_short": (_sparse_state([0, 1], [0, 1, 2], (5, V)), "indptr has 3 entries"),
        "indices_float": (_sparse_state(np.array([0.0, 1.0]), [0, 1, 2] + [2] * (V - 2), (5, V)), "integer"),
        "data_short": (_sparse_state([0, 1], [0, 1, 2] + [2] * (V - 2), (5, V), data=np.ones(1)), "data hold"),
        "shape_negative": (_sparse_state([0, 1], [0, 1, 2] + [2] * (V - 2), (-5, V)), "out of range"),
    }
    for name, (matrix, pattern) in sparse.items():
        _write_model(folder, f"sparse_{name}.pkl", J_regressor=matrix)
        case(f"J_regressor {name}", f"FLAME.from_file(folder + '/sparse_{name}.pkl', n_exp=20)",
             ["UnpicklingError"], rf"sparse_{name}\.pkl: corrupt scipy\.sparse csc matrix: .*{pattern}")
    huge = _sparse_state(np.zeros(0, np.int64), np.zeros(10**6 + 1, np.int64), (10**6, 10**6))
    _write_model(folder, "sparse_huge.pkl", J_regressor=huge)
    case("J_regressor too large to densify", "FLAME.from_file(folder + '/sparse_huge.pkl', n_exp=20)",
         ["ValueError"], r"sparse_huge\.pkl: J_regressor is a sparse matrix .* too large")

    # --- wrong dtypes where floats are expected -------------------------------------------
    v_template = model_files.flame_arrays()["v_template"]
    for name, value, word in (("complex", v_template * (1 + 1j), "complex"),
                              ("datetime", np.zeros(v_template.shape, "datetime64[s]"), "datetime"),
                              ("object", np.array([[None] * 3] * len(v_template), dtype=object), "Python objects")):
        _write_model(folder, f"v_template_{name}.pkl", v_template=value)
        case(f"v_template {name}", f"FLAME.from_file(folder + '/v_template_{name}.pkl', n_exp=20)",
             ["ValueError"], rf"v_template_{name}\.pkl: v_template must hold real numbers, got {word}")

    # --- directories and .npy ------------------------------------------------------------
    (folder / "model_dir").mkdir()
    case("directory as model path", "FLAME.from_file(folder + '/model_dir')", ["IsADirectoryError", "ValueError"],
         r"model_dir: is a directory")
    case("directory as .mat", "BFM.from_deep3d(folder + '/model_dir')", ["IsADirectoryError", "ValueError"],
         r"model_dir: is a directory")
    (folder / "short.npy").write_bytes(b"\x93NUMPY")
    (folder / "deep_header.npy").write_bytes(b"\x93NUMPY\x01\x00" + (20000).to_bytes(2, "little") + b"(" * 20000)
    for stem in ("short", "deep_header"):
        case(f"embedding {stem}.npy", f"FLAME.from_file(folder + '/good.pkl', n_exp=20).load_landmark_embedding("
             f"folder + '/{stem}.npy')", ["UnpicklingError"], rf"{stem}\.npy: corrupt \.npy header")
    np.save(folder / "lmk_complex.npy", np.ones((7, 3)) * 1j)
    np.save(folder / "lmk_datetime.npy", np.zeros((7, 3), "datetime64[s]"))
    (folder / "lmk_truncated.npy").write_bytes((folder / "lmk_complex.npy").read_bytes()[:100])
    for stem in ("lmk_complex", "lmk_datetime", "lmk_truncated"):
        case(f"read_landmarks {stem}", f"io.read_landmarks(folder + '/{stem}.npy')", ["ValueError"],
             rf"{stem}\.npy: ")

    # --- h5 -------------------------------------------------------------------------------
    import h5py

    with h5py.File(folder / "loop.h5", "w") as f:
        group = f.create_group("shape/model")
        group["mean"] = h5py.SoftLink("/shape/model/pcaBasis")
        group["pcaBasis"] = h5py.SoftLink("/shape/model/mean")
        group["pcaVariance"] = np.ones(2)
    with h5py.File(folder / "group.h5", "w") as f:
        f.create_group("shape/model/mean")
    (folder / "truncated.h5").write_bytes((folder / "loop.h5").read_bytes()[:300])
    case("h5 soft-link loop", "BFM.from_basel2017(folder + '/loop.h5')", ["ValueError"],
         r"loop\.h5: cannot open shape/model/mean")
    case("h5 group for a dataset", "BFM.from_basel2017(folder + '/group.h5')", ["ValueError"],
         r"group\.h5: shape/model/mean must be a dataset")
    case("h5 truncated", "BFM.from_basel2017(folder + '/truncated.h5')", ["ValueError"], r"truncated\.h5")
    (folder / "truncated.mat").write_bytes(b"MATLAB 5.0 MAT-file" + b"\x00" * 100)
    case(".mat truncated", "BFM.from_deep3d(folder + '/truncated.mat')", ["ValueError"], r"truncated\.mat")

    # --- meshes and XML -------------------------------------------------------------------
    (folder / "overflow.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 99999999999999999999999\n")
    case(".obj face index beyond int64", "io.read_mesh(folder + '/overflow.obj')", ["ValueError"],
         r"overflow\.obj:4: face index out of range")
    (folder / "truncated.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 1000\n"
                                           b"property float x\nproperty float y\nproperty float z\nend_header\n"
                                           + b"\x00" * 100)
    case(".ply truncated", "io.read_mesh(folder + '/truncated.ply')", ["ValueError"], r"truncated\.ply")
    laughs = "".join(f'<!ENTITY l{i} "{"&l%d;" % (i - 1) * 10}">' for i in range(1, 10))
    (folder / "laughs.pp").write_text(f'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY l0 "lol">{laughs}]>'
                                      '<PickedPoints><point x="&l9;" y="0" z="0"/></PickedPoints>')
    (folder / "external.pp").write_text('<?xml version="1.0"?><!DOCTYPE p [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
                                        '<PickedPoints><point x="&e;" y="0" z="0"/></PickedPoints>')
    (folder / "deep.pp").write_text("<a>" * 100_000 + "</a>" * 100_000)
    (folder / "truncated.pp").write_text('<?xml version="1.0"?><PickedPoints><point x="1" y="2"')
    for stem, pattern in (("laughs", "entity declarations"), ("external", "entity declarations"),
                          ("deep", "deep\\.pp"), ("truncated", "truncated\\.pp")):
        case(f".pp {stem}", f"io.read_pp(folder + '/{stem}.pp')", ["ValueError"], pattern)
    return cases


def test_hostile_loader_corpus(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    cases = build_corpus(folder)
    assert len({c[0] for c in cases}) == len(cases)
    outcomes = runner.run_cases(cases, folder, tmp_path)
    bad = runner.failures(cases, outcomes)
    assert not bad, "\n".join(bad)


def test_the_runner_reports_a_crash_and_goes_on(tmp_path):
    """The harness itself: a segfaulting case is reported, the next case still runs."""
    cases = [("segfault", "import ctypes; ctypes.string_at(0)", ["ValueError"], ""),
             ("after", "raise ValueError('fine')", ["ValueError"], "fine")]
    outcomes = runner.run_cases(cases, tmp_path, tmp_path)
    assert "crashed" in outcomes["segfault"] and outcomes["after"]["raised"][0] == "ValueError"
    assert len(runner.failures(cases, outcomes)) == 1
