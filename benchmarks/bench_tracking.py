"""Seconds per tracked frame of ``facegeom.tracking`` (the metrical tracker, PIPELINES.md §7) on a rendered
sequence of the synthetic head; the initialisation (camera stage, colour pass, keyframes) is timed separately.

    OMP_NUM_THREADS=1 python benchmarks/bench_tracking.py --image-size 512 --frames 3 --preset faithful

``--schedule '[[1.0, 100], [0.5, 40], [1.0, 40]]'`` (repeatable) also tracks the same frames from the same
initialisation with other pyramids, to choose a faster schedule by measurement.

The authors' schedule does 314 Adam iterations per frame (161 landmark-only at full size, then 41 / 41 / 71
photometric at 1/4, 1/2 and full size; PIPELINES.md §7.8); users report 17.6-36 s per frame on a GPU
(Zielon/metrical-tracker issues 8 and 14). Prints one JSON object: wall and CPU (process) seconds per frame,
milliseconds per iteration for each pyramid level, the initialisation's seconds, and the tracking errors
against the known truth (face-region vertex error in mm, head-rotation error in degrees, landmark error in
pixels). CPU time is the figure to compare on a shared machine (wall time includes waiting for the CPU).
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from collections import defaultdict
from dataclasses import replace

import numpy as np
import torch

from facegeom.tracking.run import _landmark_error_px, _truth_errors
from facegeom.tracking.synthetic import FOCAL_NDC, render_sequence, synthetic_tracker_model
from facegeom.tracking.tracker import Config, FrameData, Tracker


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--preset", default="faithful", choices=("faithful", "fast", "tiny"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda: the sequence is rendered on the CPU, then "
                        "the model and the frames move to this device (scripts/gpu-check.sh runs it on a GPU)")
    parser.add_argument("--batch", action="store_true", help="also track all frames as one batch "
                        "(Tracker.track_batch) from the same initialisation and report frames per second")
    parser.add_argument("--schedule", action="append", default=[], metavar="JSON",
                        help="also track the same frames from the same initialisation with these pyr_levels, "
                             "e.g. '[[1.0, 100], [0.5, 40], [1.0, 40]]' (repeatable)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    # The tracker's initial focal length focal_pixels / H is meant for 512-pixel crops: start it at the synthetic
    # camera's lens (the authors' 5000 / 512 in NDC) at any frame size, as `facegeom track --synthetic` does.
    config = replace(Config.preset(args.preset), focal_pixels=FOCAL_NDC * args.image_size)
    if args.frames < max(config.keyframes) + 1:
        parser.error(f"--frames must be at least {max(config.keyframes) + 1} (the keyframes {config.keyframes})")
    model = synthetic_tracker_model(dtype=torch.float32)
    sequence = render_sequence(model, args.frames, args.image_size)
    if args.device != "cpu":
        device = torch.device(args.device)
        model = model.to(device)
        sequence = replace(sequence, images=sequence.images.to(device), landmarks=sequence.landmarks.to(device),
                           landmarks_dense=sequence.landmarks_dense.to(device), identity=sequence.identity.to(device),
                           truth={k: v.to(device) for k, v in sequence.truth.items()})

    def frame(i):
        return FrameData(sequence.images[i:i + 1], sequence.landmarks[i:i + 1], sequence.landmarks_dense[i:i + 1])

    stamps = defaultdict(list)

    def progress(stage, level, iteration, terms):
        stamps[(stage, level)].append(time.perf_counter())

    tracker = Tracker(model, config, progress=progress)
    wall, cpu = time.perf_counter(), time.process_time()
    tracker.initialize([frame(k) for k in config.keyframes], sequence.identity)
    init = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
    start = {name: value.clone() for name, value in tracker.params.items()}
    size = (args.image_size, args.image_size)

    def track(levels_config):
        """Track every frame from the initialisation's values with ``levels_config``; timing and errors."""
        tracker.params = {name: value.clone() for name, value in start.items()}
        tracker.config = replace(config, pyr_levels=tuple(tuple(level) for level in levels_config))
        stamps.clear()
        per_frame, errors = [], []
        for i in range(args.frames):
            wall, cpu = time.perf_counter(), time.process_time()
            tracker.track_frame(frame(i))
            per_frame.append((time.perf_counter() - wall, time.process_time() - cpu))
            with torch.no_grad():
                p = tracker.params
                camera = tracker.camera()
                out = model(p["shape"], p["exp"], p["jaw"], p["eyes"], camera.R, p["eyelids"])
                entry = _truth_errors(out.vertices, camera.R, sequence.truth, i, model.render_mask)
                entry["landmark_px"] = _landmark_error_px(camera.screen(out.landmarks68, size)[0],
                                                          sequence.landmarks[i])
            errors.append(entry)
        levels = {}
        for (stage, level), times in sorted(stamps.items()):
            steps = np.diff(times)
            if len(steps):
                levels[f"level {level}"] = {"ms_per_iteration_median": float(np.median(steps) * 1000),
                                            "iterations_per_frame": len(times) // args.frames}
        return {
            "pyr_levels": [list(level) for level in levels_config],
            "iterations_per_frame": sum(v["iterations_per_frame"] for v in levels.values()),
            "seconds_per_frame_wall": float(np.mean([w for w, _ in per_frame])),
            "seconds_per_frame_cpu": float(np.mean([c for _, c in per_frame])),
            "levels": levels,
            "vertex_mm": float(np.mean([e["vertex_mm"] for e in errors])),
            "rotation_deg": float(np.mean([e["rotation_deg"] for e in errors])),
            "landmark_px": float(np.mean([e["landmark_px"] for e in errors])),
        }

    def batched():
        tracker.params = {name: value.clone() for name, value in start.items()}
        tracker.config = config
        frames = FrameData(sequence.images, sequence.landmarks, sequence.landmarks_dense)
        wall, cpu = time.perf_counter(), time.process_time()
        tracker.track_batch(frames)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        return {"frames": args.frames, "frames_per_second_wall": args.frames / wall,
                "frames_per_second_cpu": args.frames / cpu}

    report = {
        "image_size": args.image_size, "preset": args.preset, "device": args.device, "frames": args.frames, "threads": args.threads,
        **track(config.pyr_levels), "initialization": init,
        "schedules": [track(json.loads(text)) for text in args.schedule],
        "batched": batched() if args.batch else None,
        "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
        "load_average": list(__import__("os").getloadavg()),
    }
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
