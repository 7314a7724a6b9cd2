"""``facegeom track``: the tracker over an actor folder or video, or over a rendered synthetic sequence.

The loop is the authors' ``Tracker.run`` (``MT:tracker.py:708-715``): initialise on the keyframes, then track
every frame from 0, each warm-started from the previous one, saving the checkpoint, mesh and overlay of each
frame (``MT:tracker.py:549-634``), then a video. The report adds what the authors' code does not measure:
seconds per tracked frame (initialisation reported separately), landmark error in pixels, photometric error
and, for ``--synthetic``, the per-frame vertex error against the known truth (view space, millimetres).
"""
from __future__ import annotations

import json
import os
import time
from typing import Dict, Optional

import numpy as np
import torch

from facegeom.tracking.io import (ActorFolder, overlay, save_canonical, save_depth, save_frame, write_actor_folder,
                                 write_video)
from facegeom.tracking.model import MEDIAPIPE_LANDMARK_IDS, TrackerFLAME
from facegeom.tracking.tracker import Config, FrameData, Tracker, round_up_to_odd

#: ``--synthetic`` convergence: the mean face-region vertex error (mm, FLAME frame) and the mean 68-landmark
#: error (pixels of a 128-pixel frame, scaled with the frame size) must be below these, and the landmark and
#: head-rotation errors below the initial guess's. (The vertex error is not required to beat the neutral
#: expression: on the synthetic head the photometric levels pull the expression, see docs/tracking.md.)
SYNTHETIC_MAX_VERTEX_MM = 6.0
SYNTHETIC_MAX_LANDMARK_PX_AT_128 = 1.5


def add_arguments(parser) -> None:
    parser.add_argument("input", nargs="?", help="actor folder (images/, kpt/, kpt_dense/, identity.npy), a folder "
                        "of frames, or a video (needs imageio); not with --synthetic")
    parser.add_argument("--out", default="track_out", help="output folder (default: track_out)")
    parser.add_argument("--assets", help="folder with generic_model.pkl, landmark_embedding.npy and optionally "
                        "mediapipe_landmark_embedding.npz, l_eyelid.npy, r_eyelid.npy, FLAME_masks.pkl, "
                        "FLAME_texture.npz + head_template_mesh.obj")
    parser.add_argument("--identity", help="MICA identity.npy (default: <input>/identity.npy)")
    parser.add_argument("--preset", default="faithful", choices=("faithful", "fast", "tiny"),
                        help="faithful: the authors' schedule (314 iterations per frame); fast: 62 iterations per "
                        "frame (see docs/benchmarks.md); tiny: a few iterations at 128 pixels (tests)")
    parser.add_argument("--synthetic", action="store_true", help="render a sequence of the synthetic head with "
                        "known parameters, track it and report the errors (exit 1 if it did not converge)")
    parser.add_argument("--frames", type=int, default=4, help="--synthetic: number of frames (default: 4)")
    parser.add_argument("--image-size", type=int, default=None, help="--synthetic: frame side (default: 512, "
                        "the authors' crops; 128 with --preset tiny)")
    parser.add_argument("--seed", type=int, default=0, help="--synthetic: sequence seed")
    parser.add_argument("--batch", type=int, default=1, help="frames optimised at once (default 1: the authors' "
                        "sequential loop; N > 1 starts each frame of a batch from the previous batch's last)")
    parser.add_argument("--detect", nargs="?", const="fan,mediapipe", default=None, metavar="fan,mediapipe",
                        help="detect the landmarks the input lacks (kpt/: FAN, kpt_dense/: MediaPipe) before tracking; "
                        "needs face_alignment / mediapipe installed (default with the flag: both)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _model_from_assets(folder: str, image_size):
    from facegeom.tracking.render import TrackerRenderer
    from facegeom.tracking.texture import FlameTexture, load_obj_uv

    model = TrackerFLAME.from_assets(folder)
    texture_path = os.path.join(folder, "FLAME_texture.npz")
    template = os.path.join(folder, "head_template_mesh.obj")
    if not (os.path.isfile(texture_path) and os.path.isfile(template)):
        raise FileNotFoundError(f"{folder}: the tracker's albedo needs FLAME_texture.npz and head_template_mesh.obj "
                                "(FLAME's texture space and the template with UVs)")
    uv, uv_faces, faces = load_obj_uv(template)
    if not np.array_equal(faces, model.faces.numpy()):
        raise ValueError(f"{template}: its faces differ from generic_model.pkl's")
    renderer = TrackerRenderer(model.faces, model.render_mask, uv, uv_faces)
    return model, FlameTexture.from_file(texture_path, image_size), renderer


def _landmark_error_px(predicted: torch.Tensor, target: torch.Tensor) -> float:
    shown = target.abs().sum(-1) > 0
    if not bool(shown.any()):
        return float("nan")
    return float((predicted - target).norm(dim=-1)[shown].mean())


def track_sequence(source: ActorFolder, out_dir: str, model: TrackerFLAME, config: Config, albedo=None,
                   renderer=None, progress: bool = True, truth: Optional[Dict[str, torch.Tensor]] = None,
                   batch: int = 1) -> dict:
    """Track every frame of ``source`` and write the outputs; returns the report (also ``report.json``).
    ``batch > 1`` optimises that many frames at once (:meth:`Tracker.track_batch`); 1 is the authors' loop."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    from tqdm.auto import tqdm

    os.makedirs(out_dir, exist_ok=True)
    if max(config.keyframes) >= len(source):
        raise ValueError(f"keyframes {config.keyframes} need at least {max(config.keyframes) + 1} frames, "
                         f"the input has {len(source)}")
    dtype = model.flame.v_template.dtype
    tracker = Tracker(model, config, albedo=albedo, renderer=renderer)

    def cast(frame: FrameData) -> FrameData:
        return FrameData(frame.image.to(dtype), frame.landmarks.to(dtype), frame.landmarks_dense.to(dtype),
                         frame.frame_ids)

    bar = tqdm(total=len(source), desc="initialising", disable=not progress, unit="frame")
    tracker.initialize([cast(source.frame(k)) for k in config.keyframes], source.identity().to(dtype))
    # The canonical mesh once the initialisation is done (MT:tracker.py:706), kept if it exists.
    save_canonical(out_dir, tracker.canonical_vertices().float().numpy(), model.faces.numpy())
    bar.set_description("tracking")
    frames = []
    for first in range(0, len(source), batch):
        chunk = [cast(source.frame(index)) for index in range(first, min(first + batch, len(source)))]
        start = time.perf_counter()
        if batch == 1:
            tracker.track_frame(chunk[0])  # the authors' sequential warm start
        else:
            tracker.track_batch(FrameData(torch.cat([f.image for f in chunk]), torch.cat([f.landmarks for f in chunk]),
                                          torch.cat([f.landmarks_dense for f in chunk])))
        seconds = (time.perf_counter() - start) / len(chunk)
        for row, frame in enumerate(chunk):
            frames.append(_frame_outputs(tracker, frame, first + row, out_dir, seconds, truth, row))
        bar.set_postfix(lmk_px=f"{frames[-1]['landmark_px']:.2f}", s=f"{seconds:.2f}")
        bar.update(len(chunk))
    bar.close()
    report = {
        "frames": frames,
        "seconds_per_frame": float(np.mean([f["seconds"] for f in frames])),
        "initialization_s": tracker.timings["initialization_s"],
        "iterations_per_frame": sum(round_up_to_odd(steps) for _, steps in config.pyr_levels),
        "landmark_px": float(np.nanmean([f["landmark_px"] for f in frames])),
        "photometric": float(np.mean([f["photometric"] for f in frames])),
        "video": write_video(out_dir),
    }
    if truth is not None:
        report["vertex_mm"] = float(np.mean([f["vertex_mm"] for f in frames]))
        report["rotation_deg"] = float(np.mean([f["rotation_deg"] for f in frames]))
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    return report


def _truth_errors(vertices: torch.Tensor, rotation: torch.Tensor, truth, index: int, region: torch.Tensor) -> dict:
    """``vertex_mm``: mean distance of the ``region`` vertices (the photometric region: face + eyeballs) in the
    FLAME frame (shape, expression, jaw, eyes, eyelids: the head pose is the camera's); ``rotation_deg``: angle between the tracked and the true camera rotations. (The
    camera distance and the focal length trade off against each other, so view-space errors mostly measure
    that ambiguity, which the tracker shares with the authors'.)"""
    from facegeom.transforms import rotation_6d_to_matrix

    vertex = (vertices[0] - truth["vertices"][index]).norm(dim=-1)[region].mean()
    relative = rotation[0].T @ rotation_6d_to_matrix(truth["R"][index])
    cosine = ((torch.diagonal(relative).sum() - 1) / 2).clamp(-1.0, 1.0)
    return {"vertex_mm": float(vertex) * 1000.0, "rotation_deg": float(torch.rad2deg(torch.arccos(cosine)))}


def _frame_outputs(tracker: Tracker, frame: FrameData, index: int, out_dir: str, seconds: float, truth,
                   row: int = 0) -> dict:
    size = tuple(frame.image.shape[-2:])
    p = {name: value[row:row + 1] for name, value in tracker.params.items()}
    with torch.no_grad():
        camera = tracker.camera(p)
        model = tracker.model
        out = model(p["shape"], p["exp"], p["jaw"], p["eyes"], camera.R,
                    p["eyelids"] if model.l_eyelid is not None else None)
        tracker.renderer.reset()
        rendering = tracker.renderer(out.vertices, camera, tracker.albedo(p["tex"]), p["sh"], size)
        tracker.renderer.reset()
        depth = tracker.renderer.render_depth(out.vertices, camera, size, model.depth_faces, model.depth_mask)
        mask = rendering.mask[0]
        photometric = float(((rendering.image[0] - frame.image[0]).abs() * mask).sum() / mask.sum().clamp(min=1) / 3)
        proj68 = camera.screen(out.landmarks68, size)[0]
        predicted = [proj68]
        if out.landmarks_mp is not None:
            predicted.append(camera.screen(out.landmarks_mp, size)[0])
        entry = {"frame": frame.frame_ids[0], "seconds": seconds,
                 "landmark_px": _landmark_error_px(proj68, frame.landmarks[0]), "photometric": photometric}
        if truth is not None:
            entry.update(_truth_errors(out.vertices, camera.R, truth, index, model.render_mask))
    targets = torch.cat([frame.landmarks[0], frame.landmarks_dense[0, list(MEDIAPIPE_LANDMARK_IDS)]])
    image = overlay(frame.image[0].float(), rendering.image[0].float(), mask.float(), targets.numpy(),
                    torch.cat(predicted).float().numpy())
    # The authors number the outputs by the frame's position, str(frame).zfill(5) (MT:tracker.py:620), whatever
    # the image files are called; the report keeps the image's name.
    checkpoint = tracker.checkpoint(size, str(index).zfill(5), row)
    save_frame(out_dir, checkpoint, out.vertices[0].float().numpy(), model.faces.numpy(), image)
    save_depth(out_dir, checkpoint["frame_id"], depth[0])  # MT:tracker.py:631-634
    return entry


def run_synthetic(out_dir: str, config: Config, num_frames: int = 4, image_size: int = 128, seed: int = 0,
                  progress: bool = True, batch: int = 1) -> dict:
    """Render ``num_frames`` of the synthetic head (:mod:`facegeom.tracking.synthetic`), write them in the
    authors' layout under ``<out_dir>/input``, track them, and report errors against the truth and against the
    initial guess (the camera stage's pose with the neutral expression); ``report['converged']`` (see
    :data:`SYNTHETIC_MAX_VERTEX_MM` for the checks)."""
    from dataclasses import replace

    from facegeom.tracking.synthetic import FOCAL_NDC, render_sequence, synthetic_tracker_model

    # The tracker starts from focal = focal_pixels / H (MT:tracker.py:293), meant for 512-pixel crops: start it
    # at the synthetic camera's lens at any frame size.
    config = replace(config, focal_pixels=FOCAL_NDC * image_size)
    model = synthetic_tracker_model(seed=0, dtype=torch.float32)
    sequence = render_sequence(model, num_frames, image_size, seed=seed)
    write_actor_folder(os.path.join(out_dir, "input"), sequence.images, sequence.landmarks, sequence.landmarks_dense,
                       sequence.identity)
    source = ActorFolder(os.path.join(out_dir, "input"))
    report = track_sequence(source, out_dir, model, config, progress=progress, truth=sequence.truth, batch=batch)
    report["initial"] = _initial_errors(model, config, source, sequence)
    limit_px = SYNTHETIC_MAX_LANDMARK_PX_AT_128 * image_size / 128.0
    checks = {
        "vertex_error_below_limit": report["vertex_mm"] < SYNTHETIC_MAX_VERTEX_MM,
        "landmark_error_below_limit": report["landmark_px"] < limit_px,
        "landmark_error_below_initial": report["landmark_px"] < report["initial"]["landmark_px"],
        "rotation_error_below_initial": report["rotation_deg"] < report["initial"]["rotation_deg"],
    }
    report["checks"] = checks
    report["converged"] = all(checks.values())
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    return report


def _initial_errors(model, config: Config, source: ActorFolder, sequence) -> dict:
    """Errors of the starting point every frame would have without tracking: the camera stage on frame 0
    (neutral expression, MICA shape), applied to every frame."""
    tracker = Tracker(model, config)
    first = source.frame(0)
    tracker.create_parameters(source.identity(), first.image.shape[-2])
    tracker.optimize_camera(first)
    vertex, rotation, landmark = [], [], []
    size = tuple(first.image.shape[-2:])
    truth = sequence.truth
    with torch.no_grad():
        camera = tracker.camera()
        p = tracker.params
        out = model(p["shape"], p["exp"], p["jaw"], p["eyes"], camera.R)
        for index in range(len(source)):
            errors = _truth_errors(out.vertices, camera.R, truth, index, model.render_mask)
            vertex.append(errors["vertex_mm"])
            rotation.append(errors["rotation_deg"])
            landmark.append(_landmark_error_px(camera.screen(out.landmarks68, size)[0], sequence.landmarks[index]))
    return {"vertex_mm": float(np.mean(vertex)), "rotation_deg": float(np.mean(rotation)),
            "landmark_px": float(np.mean(landmark))}


def run(args) -> int:
    """The ``facegeom track`` command."""
    if args.threads:
        torch.set_num_threads(args.threads)
    config = Config.preset(args.preset)
    if args.synthetic:
        if args.input:
            raise SystemExit("facegeom track: give an input or --synthetic, not both")
        size = args.image_size or (128 if args.preset == "tiny" else 512)
        report = run_synthetic(args.out, config, args.frames, size, args.seed, progress=not args.quiet,
                               batch=args.batch)
        print(json.dumps({k: v for k, v in report.items() if k != "frames"}, indent=2))
        return 0 if report["converged"] else 1
    if not args.input:
        raise SystemExit("facegeom track: an input folder or video is required (or --synthetic)")
    if not args.assets:
        raise SystemExit("facegeom track: --assets DIR with the FLAME files is required for real input")
    source = ActorFolder(args.input, identity=args.identity)
    if args.detect:
        from facegeom.tracking.detect import detect_missing

        written = detect_missing(source, [d.strip() for d in args.detect.split(",") if d.strip()])
        print(f"facegeom track: landmark files written: {written}")
    size = tuple(source.image(0).shape[-2:])
    model, albedo, renderer = _model_from_assets(args.assets, size)
    report = track_sequence(source, args.out, model, config, albedo=albedo, renderer=renderer,
                            progress=not args.quiet, batch=args.batch)
    print(json.dumps({k: v for k, v in report.items() if k != "frames"}, indent=2))
    return 0
