"""``facegeom now-eval``: the NoW benchmark over a dataset folder.

Reads the layout the official ``now_evaluation`` code reads:

    DATASET/imagepathsvalidation.txt           <subject>/<challenge>/<image>.jpg per line
    DATASET/scans/<subject>/*.obj              one scan per subject (mm)
    DATASET/scans_lmks_onlypp/<subject>/*.pp   its 7 landmarks (MeshLab picked points)
    PREDICTIONS/<subject>/<challenge>/<stem>.obj|.ply   the reconstruction
    PREDICTIONS/<subject>/<challenge>/<stem>.npy|.txt   its 7 landmarks

and writes to OUT (default PREDICTIONS/results):

    distances/<subject>/<challenge>/<stem>.npy    per-image distances (mm), float64
    <method>_computed_distances[_<challenge>].npy  the official file: a pickled dict
        {'computed_distances': [arrays], 'num_missing_files': n}, readable by the
        official cumulative_errors.py
    summary.json, summary.txt                      median / mean / std per challenge and
        overall, missing predictions, failed images with their error
    cumulative_error.png                           cumulative error curves

A missing prediction is counted and listed (as the official tool does), and so
is a malformed line of the image list; an image that fails (unreadable file,
NaN vertices, coordinates float64 cannot align, ...) is listed with its error
and the run goes on.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from typing import Dict, List, Optional

CHALLENGES = ("multiview_neutral", "multiview_expressions", "multiview_occlusions", "selfie")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--predictions", required=True, help="folder with <subject>/<challenge>/<stem>.obj|.ply + .npy|.txt")
    parser.add_argument("--dataset", required=True, help="NoW folder with scans/, scans_lmks_onlypp/ and the image list")
    parser.add_argument("--metrical", action="store_true", help="metrical protocol (MICA): no scale is estimated")
    parser.add_argument("--unit", choices=("m", "cm", "mm"), default="m",
                        help="unit of the predictions, for --metrical (default: m)")
    parser.add_argument("--out", default=None, help="output folder (default: PREDICTIONS/results)")
    parser.add_argument("--challenge", choices=CHALLENGES, default=None, help="evaluate one challenge only")
    parser.add_argument("--image-list", default=None,
                        help="image list (default: DATASET/imagepathsvalidation.txt)")
    parser.add_argument("--method", default="facegeom", help="name used in output file names and the plot")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--no-progress", dest="quiet", action="store_true", help=argparse.SUPPRESS)  # deprecated alias


def _first(pattern: str) -> Optional[str]:
    matches = sorted(glob.glob(pattern))
    return matches[0] if matches else None


def _existing(*paths: str) -> Optional[str]:
    return next((p for p in paths if os.path.isfile(p)), None)


def read_image_list(path: str, malformed: Optional[list] = None) -> List[tuple]:
    """(subject, challenge, stem) for each non-empty line ``.../<subject>/<challenge>/<image>``.

    A line without the three parts raises ``ValueError`` naming the file and line,
    unless ``malformed`` is a list: then ``(line number, text)`` is appended to it and
    the line is skipped (``now-eval`` reports it like a missing image and goes on).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image list not found: {path}")
    entries = []
    with open(path, errors="replace") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            parts = [p for p in line.replace("\\", "/").split("/") if p]
            if len(parts) < 3 or not os.path.splitext(parts[-1])[0]:
                if malformed is None:
                    raise ValueError(f"{path}:{number}: expected '<subject>/<challenge>/<image>', got {line!r}")
                malformed.append((number, line))
                continue
            entries.append((parts[-3], parts[-2], os.path.splitext(parts[-1])[0]))
    return entries


def evaluate_dataset(
    predictions: str,
    dataset: str,
    out: Optional[str] = None,
    metrical: bool = False,
    unit: str = "m",
    challenge: Optional[str] = None,
    image_list: Optional[str] = None,
    method: str = "facegeom",
    progress: bool = True,
) -> Dict:
    """Run the NoW protocol over every listed image; write the outputs described in
    the module docstring and return the summary dictionary (also in summary.json)."""
    import numpy as np
    from tqdm import tqdm

    from facegeom.eval import io
    from facegeom.eval.now import now_distances, summarize, unit_factor

    if not os.path.isdir(predictions):
        raise FileNotFoundError(f"predictions folder not found: {predictions}")
    if not os.path.isdir(dataset):
        raise FileNotFoundError(f"dataset folder not found: {dataset}")
    unit_factor(unit)
    out = out or os.path.join(predictions, "results")
    list_path = image_list or os.path.join(dataset, "imagepathsvalidation.txt")
    malformed: list = []
    entries = read_image_list(list_path, malformed)
    if challenge is not None:
        entries = [e for e in entries if e[1] == challenge]
    os.makedirs(out, exist_ok=True)

    per_challenge: Dict[str, list] = {}
    failed = []
    # a malformed line names no image: counted as missing (its challenge is unknown, so always)
    missing = [{"image": f"{list_path}:{number}: {line[:200]}",
                "missing": "malformed image-list line (expected <subject>/<challenge>/<image>)"}
               for number, line in malformed]
    all_distances = []
    scan_cache: Dict[str, tuple] = {}  # one subject at a time: image lists are grouped by subject
    bar = tqdm(entries, desc="NoW", unit="image", disable=not progress, file=sys.stderr)
    for subject, chal, stem in bar:
        name = f"{subject}/{chal}/{stem}"
        folder = os.path.join(predictions, subject, chal)
        mesh_path = _existing(os.path.join(folder, stem + ".obj"), os.path.join(folder, stem + ".ply"))
        lmk_path = _existing(os.path.join(folder, stem + ".npy"), os.path.join(folder, stem + ".txt"))
        if mesh_path is None or lmk_path is None:
            missing.append({"image": name, "missing": "mesh (.obj/.ply)" if mesh_path is None else "landmarks (.npy/.txt)"})
            continue
        try:
            if subject not in scan_cache:
                scan_path = _first(os.path.join(dataset, "scans", subject, "*.obj"))
                pp_path = _first(os.path.join(dataset, "scans_lmks_onlypp", subject, "*.pp"))
                if scan_path is None or pp_path is None:
                    raise FileNotFoundError(
                        f"no scan .obj in {os.path.join(dataset, 'scans', subject)}" if scan_path is None
                        else f"no landmark .pp in {os.path.join(dataset, 'scans_lmks_onlypp', subject)}"
                    )
                scan_cache.clear()
                scan_cache[subject] = (io.read_mesh(scan_path)[0], io.read_landmarks(pp_path, expected=7))
            scan_vertices, scan_landmarks = scan_cache[subject]
            pred_vertices, pred_faces = io.read_mesh(mesh_path)
            pred_landmarks = io.read_landmarks(lmk_path, expected=7)
            result = now_distances(
                scan_vertices, scan_landmarks, pred_vertices, pred_faces, pred_landmarks, metrical=metrical, unit=unit
            )
        except Exception as error:  # one bad image is reported, never fatal
            failed.append({"image": name, "error": f"{type(error).__name__}: {error}"})
            continue
        distances = result.distances.numpy()
        target = os.path.join(out, "distances", subject, chal)
        os.makedirs(target, exist_ok=True)
        np.save(os.path.join(target, stem + ".npy"), distances)
        per_challenge.setdefault(chal, []).append(distances)
        all_distances.append(distances)
        bar.set_postfix(median=f"{np.median(distances):.3f}")

    identifier = method + ("_metrical" if metrical else "")
    official_name = f"{identifier}_computed_distances" + (f"_{challenge}" if challenge else "") + ".npy"
    np.save(
        os.path.join(out, official_name),
        {"computed_distances": all_distances, "num_missing_files": len(missing)},
        allow_pickle=True,
    )
    summary = {
        "protocol": "metrical" if metrical else "non-metrical",
        "unit": unit if metrical else None,
        "images_listed": len(entries) + len(malformed),
        "images_evaluated": len(all_distances),
        "num_missing_files": len(missing),
        "num_failed": len(failed),
        "challenges": {c: dict(summarize(d), images=len(d)) for c, d in sorted(per_challenge.items())},
        "all": dict(summarize(all_distances), images=len(all_distances)),
        "missing": missing,
        "failed": failed,
    }
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    text = format_summary(summary)
    with open(os.path.join(out, "summary.txt"), "w") as f:
        f.write(text + "\n")
    if all_distances:
        plot_cumulative_errors({**per_challenge, "all": all_distances}, os.path.join(out, "cumulative_error.png"), identifier)
    return summary


def format_summary(summary: Dict) -> str:
    """The text table of a summary dictionary (mm)."""
    lines = [
        f"NoW {summary['protocol']}" + (f" (predictions in {summary['unit']})" if summary["unit"] else ""),
        f"images listed {summary['images_listed']}, evaluated {summary['images_evaluated']}, "
        f"missing {summary['num_missing_files']}, failed {summary['num_failed']}",
        "",
        f"{'challenge':<24}{'images':>8}{'median':>10}{'mean':>10}{'std':>10}",
    ]
    rows = list(summary["challenges"].items()) + [("all", summary["all"])]
    for name, s in rows:
        lines.append(f"{name:<24}{s['images']:>8}{s['median']:>10.4f}{s['mean']:>10.4f}{s['std']:>10.4f}")
    for item in summary["missing"]:
        lines.append(f"missing: {item['image']} ({item['missing']})")
    for item in summary["failed"]:
        lines.append(f"failed: {item['image']}: {item['error']}")
    return "\n".join(lines)


def plot_cumulative_errors(curves: Dict[str, list], path: str, title: str) -> None:
    """Cumulative error curves (percentage of scan vertices with error <= x mm, 0-8 mm)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from facegeom.eval.now import cumulative_error_curve

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, distances in curves.items():
        x, y = cumulative_error_curve(distances)
        ax.plot(x, y, label=name, linewidth=2.0 if name == "all" else 1.2)
    ax.set_xlim(0, 8)
    ax.set_ylim(0, 100)
    ax.set_xlabel("Error [mm]")
    ax.set_ylabel("Percentage")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args) -> int:
    """Entry point of ``facegeom now-eval``; exit status 1 when nothing could be evaluated."""
    try:
        summary = evaluate_dataset(
            args.predictions,
            args.dataset,
            out=args.out,
            metrical=args.metrical,
            unit=args.unit,
            challenge=args.challenge,
            image_list=args.image_list,
            method=args.method,
            progress=not args.quiet,
        )
    except (FileNotFoundError, ValueError) as error:
        print(f"facegeom now-eval: {error}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    return 0 if summary["images_evaluated"] > 0 else 1
