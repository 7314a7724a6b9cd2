import numpy as np
import pytest


def smooth_image(h, w, seed=0):
    """A smooth RGB uint8 image (sums of low-frequency waves) plus mild noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    chans = []
    for c in range(3):
        a, b, p = rng.uniform(0.02, 0.08, 3)
        chans.append(127 + 90 * np.sin(a * x + p) * np.cos(b * y + c))
    img = np.stack(chans, -1) + rng.normal(0, 3, (h, w, 3))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def face_landmarks68(cx, cy, size, seed=0):
    """A plausible 68-point layout (iBUG order) centred at (cx, cy), y down."""
    rng = np.random.default_rng(seed)
    t = np.linspace(-1.2, 1.2, 17)
    jaw = np.stack([np.sin(t) * 0.5, 0.1 + np.cos(t) * 0.45 - 0.1], 1)
    brow_l = np.stack([np.linspace(-0.4, -0.08, 5), np.full(5, -0.28)], 1)
    brow_r = np.stack([np.linspace(0.08, 0.4, 5), np.full(5, -0.28)], 1)
    nose_bridge = np.stack([np.zeros(4), np.linspace(-0.2, 0.05, 4)], 1)
    nose_base = np.stack([np.linspace(-0.1, 0.1, 5), np.full(5, 0.1)], 1)
    ang = np.linspace(0, 2 * np.pi, 7)[:-1]
    eye_l = np.stack([-0.22 + 0.09 * np.cos(ang + np.pi), -0.15 + 0.04 * np.sin(ang)], 1)
    eye_r = np.stack([0.22 + 0.09 * np.cos(ang + np.pi), -0.15 + 0.04 * np.sin(ang)], 1)
    a12 = np.linspace(0, 2 * np.pi, 13)[:-1]
    mouth_o = np.stack([0.18 * np.cos(a12 + np.pi), 0.3 + 0.07 * np.sin(a12)], 1)
    a8 = np.linspace(0, 2 * np.pi, 9)[:-1]
    mouth_i = np.stack([0.12 * np.cos(a8 + np.pi), 0.3 + 0.03 * np.sin(a8)], 1)
    pts = np.concatenate([jaw, brow_l, brow_r, nose_bridge, nose_base, eye_l, eye_r, mouth_o, mouth_i])
    assert pts.shape == (68, 2)
    return pts * size + np.array([cx, cy]) + rng.normal(0, 0.01 * size, (68, 2))


@pytest.fixture
def cv2_or_skip():
    return pytest.importorskip("cv2")
