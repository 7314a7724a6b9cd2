"""Readers on files written in the benchmarks' official formats."""
import numpy as np
import pytest
import trimesh

from facegeom.eval import io
from facegeom.testing import PICKED_POINTS as PP_TEMPLATE

LANDMARKS = np.array(
    [[-45.25, 30.5, 10.0], [-15.0, 30.0, 12.5], [15.0, 30.0, 12.0], [45.0, 30.0, 10.0],
     [0.0, -10.0, 40.125], [-25.0, -40.0, 15.0], [25.0, -40.0, 15.0]]
)


def write_pp(path, points):
    rows = "\n".join(
        f' <point x="{float(x)!r}" y="{float(y)!r}" z="{float(z)!r}" active="1" name="{i + 1}"/>' for i, (x, y, z) in enumerate(points)
    )
    path.write_text(PP_TEMPLATE.format(points=rows))


def test_pp_matches_the_official_line_reader(tmp_path):
    path = tmp_path / "scan_picked_points.pp"
    write_pp(path, LANDMARKS)
    got = io.read_pp(path)
    np.testing.assert_array_equal(got, LANDMARKS)
    # the official load_pp parses lines 8..14 of exactly this layout
    lines = path.read_text().splitlines()
    official = [[float(field.split("=")[1].strip('"')) for field in line.split()[1:4]] for line in lines[8:15]]
    np.testing.assert_array_equal(got, np.array(official))
    np.testing.assert_array_equal(io.read_landmarks(path, expected=7), LANDMARKS)


def test_pp_errors(tmp_path):
    bad = tmp_path / "bad.pp"
    bad.write_text("<PickedPoints><point x='1' y='2'/></PickedPoints>")
    with pytest.raises(ValueError, match="x, y and z"):
        io.read_pp(bad)
    empty = tmp_path / "empty.pp"
    empty.write_text("<PickedPoints></PickedPoints>")
    with pytest.raises(ValueError, match="no <point>"):
        io.read_pp(empty)
    broken = tmp_path / "broken.pp"
    broken.write_text("<PickedPoints><point")
    with pytest.raises(ValueError, match="picked-points"):
        io.read_pp(broken)
    with pytest.raises(FileNotFoundError):
        io.read_pp(tmp_path / "missing.pp")
    six = tmp_path / "six.pp"
    write_pp(six, LANDMARKS[:6])
    with pytest.raises(ValueError, match="expected 7 landmarks, got 6"):
        io.read_landmarks(six, expected=7)


def test_obj_polygons_slashes_and_negative_indices(tmp_path):
    path = tmp_path / "mesh.obj"
    path.write_text(
        "# exported\nmtllib x.mtl\n"
        "v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nvt 0 0\nvn 0 0 1\n"
        "f 1/1/1 2/1/1 3/1/1 4/1/1\n"  # quad -> two triangles
        "v 2 0 0\nf -1 -4 -3\n"  # negative indices count back from the vertices read so far
    )
    vertices, faces = io.read_mesh(path)
    np.testing.assert_array_equal(vertices, [[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [2, 0, 0]])
    np.testing.assert_array_equal(faces, [[0, 1, 2], [0, 2, 3], [4, 1, 2]])
    assert vertices.dtype == np.float64 and faces.dtype == np.int64


@pytest.mark.parametrize("encoding", ["ascii", "binary_little_endian"])
def test_ply_keeps_vertex_order(tmp_path, encoding):
    rng = np.random.default_rng(0)
    vertices = rng.normal(size=(30, 3)).astype(np.float32).astype(np.float64)  # binary PLY stores float32
    faces = rng.integers(0, 30, (40, 3))
    path = tmp_path / "mesh.ply"
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    path.write_bytes(trimesh.exchange.ply.export_ply(mesh, encoding=encoding.split("_")[0]))
    got_v, got_f = io.read_mesh(path)
    np.testing.assert_allclose(got_v, vertices, rtol=1e-6 if encoding == "ascii" else 0)
    np.testing.assert_array_equal(got_f, faces)


def test_mesh_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        io.read_mesh(tmp_path / "nothing.obj")
    nan = tmp_path / "nan.obj"
    nan.write_text("v 0 0 0\nv nan 0 0\nv 0 1 0\nf 1 2 3\n")
    with pytest.raises(ValueError, match="1 vertices have NaN"):
        io.read_mesh(nan)
    out_of_range = tmp_path / "range.obj"
    out_of_range.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 4\n")
    with pytest.raises(ValueError, match=r"face indices must lie in \[0, 2\]"):
        io.read_mesh(out_of_range)
    short = tmp_path / "short.obj"
    short.write_text("v 0 0\n")
    with pytest.raises(ValueError, match="3 coordinates"):
        io.read_mesh(short)
    empty = tmp_path / "empty.obj"
    empty.write_text("# nothing\n")
    with pytest.raises(ValueError, match="no vertices"):
        io.read_mesh(empty)
    other = tmp_path / "mesh.stl"
    other.write_text("solid")
    with pytest.raises(ValueError, match="unsupported mesh format"):
        io.read_mesh(other)


def test_landmark_formats(tmp_path):
    np.save(tmp_path / "a.npy", LANDMARKS[None].astype(np.float32))  # (1, 7, 3) as many methods save
    np.testing.assert_allclose(io.read_landmarks(tmp_path / "a.npy", expected=7), LANDMARKS, rtol=1e-6)
    np.save(tmp_path / "b.npy", LANDMARKS)
    np.testing.assert_array_equal(io.read_landmarks(tmp_path / "b.npy"), LANDMARKS)
    (tmp_path / "c.txt").write_text("\n".join(" ".join(repr(float(v)) for v in row) for row in LANDMARKS) + "\n\n")
    np.testing.assert_array_equal(io.read_landmarks(tmp_path / "c.txt", expected=7), LANDMARKS)
    # Stirling / FG2018 annotation: "index x y z"
    (tmp_path / "F1001_N.lnd").write_text("".join(f"{i + 1} {float(x)!r} {float(y)!r} {float(z)!r}\n" for i, (x, y, z) in enumerate(LANDMARKS)))
    np.testing.assert_array_equal(io.read_landmarks(tmp_path / "F1001_N.lnd", expected=7), LANDMARKS)


def test_landmark_errors(tmp_path):
    np.save(tmp_path / "wide.npy", np.zeros((7, 2)))
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        io.read_landmarks(tmp_path / "wide.npy")
    np.save(tmp_path / "nan.npy", np.full((7, 3), np.nan))
    with pytest.raises(ValueError, match="NaN"):
        io.read_landmarks(tmp_path / "nan.npy")
    (tmp_path / "bad.txt").write_text("1 2 3\n4 five 6\n")
    with pytest.raises(ValueError, match=":2: non-numeric"):
        io.read_landmarks(tmp_path / "bad.txt")
    (tmp_path / "four.txt").write_text("1 2 3 4\n")
    with pytest.raises(ValueError, match="expected 'x y z'"):
        io.read_landmarks(tmp_path / "four.txt")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ValueError, match="unsupported landmark format"):
        io.read_landmarks(tmp_path / "x.json")
    with pytest.raises(FileNotFoundError):
        io.read_landmarks(tmp_path / "missing.npy")


def test_obj_fast_path_and_line_path_agree(tmp_path):
    rng = np.random.default_rng(4)
    vertices = rng.normal(size=(50, 3))
    faces = rng.integers(0, 50, (80, 3))
    plain = "".join(f"v {x!r} {y!r} {z!r}\r\n" for x, y, z in vertices.tolist())  # CRLF, as Windows tools write
    plain += "vt 0.5 0.5\r\nvn 0 0 1\r\n"
    plain += "".join(f"f {a + 1}/1/1 {b + 1}/1/1 {c + 1}/1/1\r\n" for a, b, c in faces.tolist())
    (tmp_path / "fast.obj").write_text(plain)
    got_v, got_f = io.read_mesh(tmp_path / "fast.obj")
    np.testing.assert_array_equal(got_v, vertices)
    np.testing.assert_array_equal(got_f, faces)
    line_v, line_f = io._read_obj_by_line(str(tmp_path / "fast.obj"))
    np.testing.assert_array_equal(line_v, got_v)
    np.testing.assert_array_equal(line_f, got_f)
    # per-vertex colours (x y z r g b) leave the fast path; the coordinates are still x y z
    coloured = "".join(f"v {x!r} {y!r} {z!r} 0.5 0.5 0.5\n" for x, y, z in vertices.tolist()) + "f 1 2 3\n"
    (tmp_path / "coloured.obj").write_text(coloured)
    col_v, col_f = io.read_mesh(tmp_path / "coloured.obj")
    np.testing.assert_array_equal(col_v, vertices)
    np.testing.assert_array_equal(col_f, [[0, 1, 2]])
