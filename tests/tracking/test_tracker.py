"""The schedule: pyramid, the per-level optimiser loop with best-loss keeping and the camera stage against
transcriptions of MT:tracker.py / MT:util.py, batched = sequential, the initialisation's visits."""
import numpy as np
import pytest
import torch
from dataclasses import replace

from facegeom.tracking import energies
from facegeom.tracking.tracker import (COLOR_LRS, Config, FrameData, Tracker, gaussian_blur, gaussian_pyramid,
                                       round_up_to_odd)

from . import _authors
from .conftest import random_state
from .test_energies import _frame

dt = torch.float64


def test_round_up_to_odd_and_default_iterations():
    for f in (0, 1, 2, 39.5, 40, 70, 160, 320):
        assert round_up_to_odd(f) == _authors.round_up_to_odd(f)
    levels = Config().pyr_levels
    assert [round_up_to_odd(n) for _, n in levels] == [161, 41, 41, 71]
    assert [round_up_to_odd(2 * n) for _, n in levels] == [321, 81, 81, 141]


@pytest.mark.parametrize("size", [(64, 64), (48, 80)])
def test_pyramid_equals_transcription(size):
    image = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0), dtype=dt)
    levels = Config().pyr_levels
    ours = gaussian_pyramid(levels, image, 7, 9.0)
    pyramid_size = np.array(size)
    theirs = _authors.get_gaussian_pyramid([(pyramid_size * s, _authors.round_up_to_odd(n)) for s, n in levels],
                                           image, 7, 9.0)  # MT:tracker.py:641
    assert len(ours) == len(theirs) == 4
    for level, (img, iters, lsize, image_size) in zip(ours, theirs):
        assert level.iterations == iters and list(level.size) == lsize
        assert tuple(level.image_size) == tuple(image_size)
        assert torch.allclose(level.image, img, atol=1e-12)
    assert torch.allclose(gaussian_blur(image, 3, 2.0), _authors.gaussian_blur(image, [3, 3], [2.0, 2.0]), atol=1e-12)


def _authors_optimize_color(tracker, frame, pyramid, lrs, is_initializing):
    """MT:tracker.py:429-545 with facegeom's per-iteration energies (tested separately): a new Adam per level
    over nn.Parameter clones with per-group lrs, raster reset, and the best pre-step loss's post-step values."""
    params_now = {k: v.clone() for k, v in tracker.params.items()}
    h = frame.image.shape[2]
    targets = frame.parse()
    for k, level in enumerate(pyramid):
        params = [{'params': [torch.nn.Parameter(params_now[name].clone())], 'lr': lr, 'name': [name]}
                  for name, lr in lrs.items()]  # clone_params_* (MT:tracker.py:325-366)
        optimizer = torch.optim.Adam(params)
        values = dict(params_now)
        for group in optimizer.param_groups:
            values[group['name'][0]] = group['params'][0]  # get_param (MT:tracker.py:319-323)
        scale = level.image_size[0] / h
        flipped = torch.flip(level.image, [2, 3])
        iris = {"target_left": targets["left_iris"] * scale, "target_right": targets["right_iris"] * scale,
                "mask_left": targets["mask_left_iris"] * scale, "mask_right": targets["mask_right_iris"] * scale}
        best_loss = np.inf
        for p in range(level.iterations):
            if p % tracker.config.raster_update == 0:
                tracker.renderer.reset()
            losses = tracker.energies(values, targets, targets["lmk"] * scale, targets["mp"] * scale, iris, level,
                                      k > 0 or is_initializing, flipped, torch.ones(1, 2, dtype=dt))
            all_loss = 0.
            for key in losses.keys():
                all_loss = all_loss + losses[key].sum()
            optimizer.zero_grad()
            all_loss.backward()
            optimizer.step()
            loss_color = all_loss.item()
            if loss_color < best_loss:
                best_loss = loss_color
                for group in optimizer.param_groups:  # update (MT:tracker.py:314-317)
                    params_now[group['name'][0]] = group['params'][0].clone().detach()
    return params_now


@pytest.mark.parametrize("initializing", [False, True])
def test_level_loop_equals_transcription(model64, initializing):
    size = (20, 20)
    state = random_state(model64, seed=31)
    frame = _frame(model64, state, size, seed=32)
    config = replace(Config(), pyr_levels=((1.0, 6), (0.5, 4), (1.0, 9)), raster_update=3)
    start = {k: v + 0.01 for k, v in state.items()}
    lrs = {"exp": 0.025, "eyes": 0.001, "eyelids": 0.001, "R": 0.2, "t": 0.003, "sh": 0.001, "jaw": 0.001}
    pyramid = gaussian_pyramid(config.pyr_levels, frame.image, 7, 9.0)

    def fresh():
        tracker = Tracker(model64, config)
        tracker.params = {k: v.clone() for k, v in start.items()}
        tracker.mica_shape = state["shape"].clone()
        return tracker

    ours = fresh()
    ours.optimize_color(frame, pyramid, lrs, initializing)
    theirs = _authors_optimize_color(fresh(), frame, pyramid, lrs, initializing)
    assert ours.global_step == sum(level.iterations for level in pyramid)
    for name in start:
        assert torch.allclose(ours.params[name], theirs[name], rtol=1e-9, atol=1e-12), name
    moved = [name for name in lrs if not torch.equal(ours.params[name], start[name])]
    assert "exp" in moved and "R" in moved
    assert torch.equal(ours.params["shape"], start["shape"])  # not in the groups: untouched


def test_camera_stage_equals_transcription(model64):
    size = (20, 20)
    state = random_state(model64, seed=33)
    frame = _frame(model64, state, size, seed=34)
    config = replace(Config(), camera_steps=12, camera_step_size=5)
    tracker = Tracker(model64, config)
    tracker.create_parameters(state["shape"][0], size[0])
    start = {k: v.clone() for k, v in tracker.params.items()}
    tracker.optimize_camera(frame)

    # MT:tracker.py:376-427
    t, R, fl, pp = (torch.nn.Parameter(start[k].clone()) for k in ("t", "R", "focal_length", "principal_point"))
    optimizer = torch.optim.Adam([{'params': [t, R, fl, pp], 'lr': 0.05}])
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.1)
    targets = frame.parse()
    h, w = size
    for _ in range(12):
        Rm = _authors.rotation_6d_to_matrix(R)
        _, lmk68, lmkMP, _ = _authors.flame_forward(model64.flame, start["shape"], torch.inverse(Rm), start["jaw"],
                                                    start["eyes"], start["exp"], None, None, None, model64.mp_faces,
                                                    model64.mp_bary)
        points68 = _authors.transform_points_screen(lmk68, Rm, t, fl, pp, (h, w))
        pointsMP = _authors.transform_points_screen(lmkMP, Rm, t, fl, pp, (h, w))
        losses = {'pp_reg': torch.sum(pp ** 2),
                  'lmk68': _authors.lmk_loss(points68, targets["lmk"], [h, w], targets["lmk_mask"]) * 7000,
                  'lmkMP': _authors.lmk_loss(pointsMP, targets["mp"], [h, w], targets["mp_mask"]) * 7000}
        all_loss = sum(losses.values())
        optimizer.zero_grad()
        all_loss.backward()
        optimizer.step()
        scheduler.step()
    for name, value in (("t", t), ("R", R), ("focal_length", fl), ("principal_point", pp)):
        assert torch.allclose(tracker.params[name], value.detach(), rtol=1e-9, atol=1e-12), name


def test_batched_frames_follow_their_sequential_trajectories(model64):
    """Two frames optimised together (leading B) end where each ends alone (per-frame energies, per-frame
    best-loss keeping, element-wise Adam)."""
    size = (20, 20)
    config = replace(Config(), pyr_levels=((1.0, 5), (1.0, 5)))
    states = [random_state(model64, seed=40 + k) for k in range(2)]
    frames = [_frame(model64, s, size, seed=50 + k) for k, s in enumerate(states)]
    lrs = {"exp": 0.025, "R": 0.2, "t": 0.003, "sh": 0.001}

    def run(batch_states, frame):
        tracker = Tracker(model64, config)
        tracker.params = {k: torch.cat([s[k] for s in batch_states]) for k in batch_states[0]}
        tracker.mica_shape = tracker.params["shape"].clone()
        tracker.optimize_color(frame, tracker.pyramid(frame, False), lrs, False)
        return tracker.params

    together = run(states, FrameData(torch.cat([f.image for f in frames]), torch.cat([f.landmarks for f in frames]),
                                     torch.cat([f.landmarks_dense for f in frames])))
    for k in range(2):
        alone = run([states[k]], frames[k])
        for name in lrs:
            assert torch.allclose(together[name][k:k + 1], alone[name], rtol=1e-7, atol=1e-10), (k, name)


def test_initialisation_visits_and_groups(model64):
    """Keyframes [0, 1] -> visits [0, 0, 1]; the first with the camera stage and the colour groups (sh, tex),
    all with 2x iterations and the photometric term on every level (MT:tracker.py:683-706)."""
    size = (16, 16)
    state = random_state(model64, seed=60)
    frames = [_frame(model64, state, size, seed=61 + k) for k in range(2)]
    config = replace(Config(), pyr_levels=((1.0, 2), (0.5, 1)), camera_steps=3)
    calls = []
    tracker = Tracker(model64, config, progress=lambda stage, k, it, terms: calls.append((stage, k, "loss/pho" in terms)))
    tracker.initialize(frames, state["shape"][0])
    per_visit = round_up_to_odd(4) + round_up_to_odd(2)
    assert [c for c in calls if c[0] == "camera"] == [("camera", 0, False)] * 3
    init = [c for c in calls if c[0] == "init"]
    assert len(init) == 3 * per_visit and all(c[2] for c in init)
    assert tracker.global_step == 3 * per_visit
    assert set(COLOR_LRS) == {"sh", "tex"}
    terms = tracker.track_frame(frames[1])
    assert "loss/pho" in terms  # the last level is photometric
    checkpoint = tracker.checkpoint(size, "00001")
    assert set(checkpoint) == {"flame", "camera", "opencv", "img_size", "frame_id", "global_step"}
    assert set(checkpoint["flame"]) == {"exp", "shape", "tex", "sh", "eyes", "eyelids", "jaw"}
    assert set(checkpoint["camera"]) == {"R", "t", "fl", "pp"} and set(checkpoint["opencv"]) == {"R", "t", "K"}
    assert checkpoint["flame"]["exp"].shape == (1, model64.n_exp) and checkpoint["camera"]["R"].shape == (1, 6)


def test_config_validation_and_presets():
    assert Config.preset("faithful") == Config()
    assert Config.tiny().pyr_levels != Config().pyr_levels
    assert Config.preset("fast").pyr_levels == ((1.0, 50), (0.5, 10)) and Config.fast().camera_steps == 1000
    with pytest.raises(ValueError, match="preset"):
        Config.preset("fastest")
    with pytest.raises(ValueError, match="keyframes"):
        Config(keyframes=())
    with pytest.raises(ValueError, match="pyr_levels"):
        Config(pyr_levels=((0.0, 10),))
    with pytest.raises(ValueError, match="odd"):
        Config(kernel_size=4)


def test_frame_data_masks_missing_landmarks():
    lmk = torch.rand(1, 68, 2) * 100
    lmk[0, 5] = 0
    frame = FrameData(torch.rand(1, 3, 8, 8), lmk)
    parsed = frame.parse()
    assert parsed["lmk_mask"][0, :, 0].tolist().count(False) == 1 and not bool(parsed["mp_mask"].any())
    with pytest.raises(ValueError, match="landmarks"):
        FrameData(torch.rand(1, 3, 8, 8), torch.rand(1, 67, 2))
    assert energies.OVAL_IDS == tuple(range(17))


def test_track_batch_starts_every_frame_from_the_last_result(model64):
    size = (16, 16)
    state = random_state(model64, seed=80)
    frames = [_frame(model64, state, size, seed=81 + k) for k in range(3)]
    config = replace(Config(), pyr_levels=((1.0, 3), (1.0, 3)), camera_steps=2, keyframes=(0,))
    tracker = Tracker(model64, config)
    tracker.initialize([frames[0]], state["shape"][0])
    start = {k: v.clone() for k, v in tracker.params.items()}
    batch = FrameData(torch.cat([f.image for f in frames]), torch.cat([f.landmarks for f in frames]),
                      torch.cat([f.landmarks_dense for f in frames]))
    tracker.track_batch(batch)
    assert tracker.params["exp"].shape == (3, model64.n_exp)
    alone = Tracker(model64, config)
    alone.params = {k: v.clone() for k, v in start.items()}
    alone.mica_shape = tracker.mica_shape[:1].clone()
    alone.track_frame(frames[2])
    for name in ("exp", "R", "t", "jaw"):
        assert torch.allclose(tracker.params[name][2:3], alone.params[name], rtol=1e-7, atol=1e-10), name
    assert tracker.checkpoint(size, "00002", index=2)["flame"]["exp"].shape == (1, model64.n_exp)


def test_canonical_mesh_equals_save_canonical(model64):
    """MT:tracker.py:227-236: the tracked shape, jaw opened 12 degrees (scipy's rotvec), no expression."""
    state = random_state(model64, seed=41)
    tracker = Tracker(model64, Config())
    tracker.create_parameters(state["shape"][0], 20)
    tracker.params.update({k: state[k] for k in ("R", "t", "exp", "jaw", "eyes", "eyelids")})
    ours = tracker.canonical_vertices()
    theirs = _authors.save_canonical_vertices(model64.flame, state["shape"], _authors.rotation_6d_to_matrix(state["R"]))
    assert ours.shape == (model64.flame.num_vertices, 3)
    assert torch.allclose(ours, theirs[0], atol=1e-12)
    # The jaw is open: the canonical mesh differs from the same shape with the jaw closed.
    closed = tracker.model(state["shape"], torch.zeros_like(state["exp"]), torch.tensor([[1.0, 0, 0, 0, 1, 0]], dtype=dt),
                           torch.tensor([[1.0, 0, 0, 0, 1, 0] * 2], dtype=dt), tracker.camera().R).vertices[0]
    assert (ours - closed).norm(dim=-1).max() > 1e-3


def test_group_adam_equals_torch_adam_with_skipped_groups():
    """GroupAdam == torch.optim.Adam with one group per tensor, also when some groups get no gradient (skipped:
    value, moments and step count untouched), which the demo's stages use."""
    from facegeom.tracking.tracker import GroupAdam

    g = torch.Generator().manual_seed(0)
    values = {"a": torch.randn(2, 3, generator=g, dtype=dt), "b": torch.randn(2, 2, 2, generator=g, dtype=dt),
              "c": torch.randn(2, 1, generator=g, dtype=dt)}
    lrs = {"a": 0.1, "b": 0.01, "c": 0.5}
    ours = GroupAdam(values, lrs)
    live = {k: torch.nn.Parameter(v.clone()) for k, v in values.items()}
    reference = torch.optim.Adam([{"params": [live[k]], "lr": lr} for k, lr in lrs.items()])
    schedule = [None, None, ["a"], ["a", "c"], ["b"], None, ["c"], ["a", "b", "c"], None]
    for k, active in enumerate(schedule):
        for optimizer_values, opt in ((ours.values(), ours), (live, reference)):
            opt.zero_grad()
            loss = sum(((v - 0.3 * (k + 1)) ** 2 * (1 + i)).sum() + v.sin().sum()
                       for i, v in enumerate(optimizer_values.values()))
            loss.backward()
        for name, p in live.items():
            if active is not None and name not in active:
                p.grad = None
        ours.step(active)
        reference.step()
        for name in values:
            assert torch.allclose(ours.values(detached=True)[name], live[name].detach(), rtol=0, atol=1e-14), (k, name)
    assert ours.group_steps == {"a": 7, "b": 6, "c": 7}
    with pytest.raises(KeyError, match="unknown groups"):
        ours.step(["d"])


def test_group_adam_with_stages_is_torch_adam_to_the_bit():
    """The demo's use (float32, a subset of groups from the first step): the same rounding as torch's
    single-tensor Adam, so the demo's numbers did not move when it switched optimisers."""
    from facegeom.tracking.tracker import GroupAdam

    g = torch.Generator().manual_seed(1)
    values = {"a": torch.randn(1, 4, generator=g), "b": torch.randn(1, generator=g), "c": torch.randn(1, 3, 2, generator=g)}
    lrs = {"a": 0.02, "b": 0.01, "c": 0.1}
    ours = GroupAdam(values, lrs)
    live = {k: torch.nn.Parameter(v.clone()) for k, v in values.items()}
    reference = torch.optim.Adam([{"params": [live[k]], "lr": lr} for k, lr in lrs.items()])
    for k in range(30):
        active = ("a", "b") if k < 10 else ("a", "b", "c")
        for current, opt in ((ours.values(), ours), (live, reference)):
            opt.zero_grad()
            sum((v.cos() * (i + 1) + v ** 2).sum() for i, v in enumerate(current.values())).backward()
        for name, p in live.items():
            if name not in active:
                p.grad = None
        ours.step(active)
        reference.step()
    assert all(torch.equal(ours.values(detached=True)[n], live[n].detach()) for n in values)
