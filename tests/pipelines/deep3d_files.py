"""A small BFM_model_front.mat in the exact official layout (keys, shapes, 1-based indices,
point_buf padded with F + 1, tri_mask2 indexing the frontmask2_idx subset) for the Deep3D tests."""
import numpy as np
import scipy.io
import trimesh


def write_deep3d_bfm(path, seed=0, subdivisions=2):
    """A face-sized (about 1.6 x 2 x 1 units, like the real model's decimetres) bumpy
    ellipsoid with random bases; returns the dict that was saved."""
    r = np.random.default_rng(seed)
    mesh = trimesh.creation.icosphere(subdivisions=subdivisions)
    verts = np.asarray(mesh.vertices) * [0.8, 1.0, 0.5]
    faces = np.asarray(mesh.faces)
    n, f = len(verts), len(faces)
    point_buf = np.full((n, 8), f + 1)  # official padding: F + 1 (1-based)
    # the first 8 faces (ascending) around each vertex, vectorised (O(F log F), not O(V F))
    vertex, face = faces.reshape(-1), np.repeat(np.arange(f), 3)
    order = np.lexsort((face, vertex))
    vertex, face = vertex[order], face[order]
    rank = np.arange(len(vertex)) - np.searchsorted(vertex, vertex)
    keep = rank < 8
    point_buf[vertex[keep], rank[keep]] = face[keep] + 1
    front = np.nonzero(verts[:, 2] > -0.1)[0]  # "front" vertex subset, not arange
    remap = -np.ones(n, dtype=np.int64)
    remap[front] = np.arange(len(front))
    front_faces = remap[faces[(remap[faces] >= 0).all(1)]]
    front_vertices = verts[:, 2] > 0.2
    keypoints = r.choice(np.nonzero(front_vertices)[0], 68)
    content = {
        "meanshape": (verts + [0.05, -0.1, 0.02]).reshape(1, -1).astype(np.float32),
        "idBase": (r.standard_normal((3 * n, 80)) * 3e-3).astype(np.float32),
        "exBase": (r.standard_normal((3 * n, 64)) * 3e-3).astype(np.float32),
        "meantex": r.uniform(80, 200, (1, 3 * n)).astype(np.float32),
        "texBase": (r.standard_normal((3 * n, 80)) * 2).astype(np.float32),
        "tri": (faces + 1).astype(np.float64),
        "point_buf": point_buf.astype(np.float64),
        "keypoints": (keypoints + 1).astype(np.float64)[None],
        "frontmask2_idx": (front + 1).astype(np.float64)[:, None],
        "tri_mask2": (front_faces + 1).astype(np.float64),
        "skinmask": (r.random((1, n)) > 0.5).astype(np.float64),
    }
    scipy.io.savemat(path, content)
    return content
