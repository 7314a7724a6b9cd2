"""NoW evaluation end to end on synthetic data (no download, no licence needed).

Builds a tiny dataset in the NoW layout from the built-in synthetic head (one
subject: its scan in millimetres with the 7 picked landmarks, and an image list
over the four challenges), writes "predictions" that a reconstruction method
would produce (the head with a perturbed identity, rotated, in metres, with
their 7 landmarks), and runs the NoW protocol on them, exactly as
``facegeom now-eval --predictions PRED --dataset NOW`` does (facegeom/eval/now_cli.py).

    python examples/now_eval_synthetic.py --out now_out

Writes ``now_out/now`` (dataset), ``now_out/pred`` (predictions) and
``now_out/results`` (summary.txt, summary.json, cumulative_error.png, per-image distances).
"""
import argparse
import os

import numpy as np
import torch
import trimesh

import facegeom
from facegeom.eval.now import NOW_LANDMARKS_68
from facegeom.eval.now_cli import CHALLENGES, evaluate_dataset, format_summary
from facegeom.testing import write_picked_points


def rotation(axis_angle):
    return facegeom.ops.rodrigues(torch.as_tensor(axis_angle, dtype=torch.float64)[None])[0].numpy()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="now_out")
    parser.add_argument("--images-per-challenge", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)

    head = facegeom.models.synthetic_head(seed=0, n_shape=20, n_exp=10, dtype=torch.float64)
    faces = head.faces.numpy()

    def decode(shape, expression):
        out = head(shape=torch.as_tensor(shape)[None], expression=torch.as_tensor(expression)[None])
        return out.vertices[0].numpy(), out.landmarks2d[0, list(NOW_LANDMARKS_68)].numpy()

    identity = rng.standard_normal(20)
    dataset, predictions = os.path.join(args.out, "now"), os.path.join(args.out, "pred")
    subject = "SYNTH_000001"
    # The scan: the subject's neutral face, in millimetres, with its 7 landmarks.
    scan, scan_landmarks = decode(identity, np.zeros(10))
    os.makedirs(os.path.join(dataset, "scans", subject), exist_ok=True)
    os.makedirs(os.path.join(dataset, "scans_lmks_onlypp", subject), exist_ok=True)
    trimesh.Trimesh(1000 * scan, faces, process=False).export(
        os.path.join(dataset, "scans", subject, "natural_head_rotation.000001.obj"))
    write_picked_points(os.path.join(dataset, "scans_lmks_onlypp", subject,
                                     "natural_head_rotation.000001_picked_points.pp"), 1000 * scan_landmarks)

    lines = []
    for c, challenge in enumerate(CHALLENGES):
        for i in range(args.images_per_challenge):
            stem = f"IMG_{c}{i:03d}"
            lines.append(f"{subject}/{challenge}/{stem}.jpg")
            # A reconstruction: identity off by a little (more for harder challenges), some
            # expression, any head pose, in metres; NoW aligns it rigidly and estimates the scale.
            noise = 0.2 * (1 + c) * rng.standard_normal(20)
            vertices, landmarks = decode(identity + noise, 0.3 * rng.standard_normal(10))
            R = rotation(rng.normal(0, 0.3, 3))
            folder = os.path.join(predictions, subject, challenge)
            os.makedirs(folder, exist_ok=True)
            trimesh.Trimesh(vertices @ R.T, faces, process=False).export(os.path.join(folder, stem + ".obj"))
            np.save(os.path.join(folder, stem + ".npy"), landmarks @ R.T)
    with open(os.path.join(dataset, "imagepathsvalidation.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")

    summary = evaluate_dataset(predictions, dataset, out=os.path.join(args.out, "results"), progress=False)
    print(format_summary(summary))
    return summary


if __name__ == "__main__":
    main()
