"""Fit a morphable head to an image by analysis-by-synthesis, with the public API.

The loop of ``facegeom demo`` (facegeom/demo.py), written out: render a target
from random ground truth with the built-in synthetic head, then recover shape,
expression, pose, camera and light from the image and its 68 landmarks with Adam
through the differentiable renderer (landmarks first, then photometric).

    python examples/fit_face.py --iterations 200 --out fit_out

Writes ``fit_out/target.png``, ``fit_out/fit.png`` and prints the errors.
"""
import argparse
import json
import math
import os

import torch

import facegeom
from facegeom.cameras import WeakPerspective
from facegeom.render import MeshRenderer


def decode(head, p, image_size):
    """Parameters -> (vertices [1, V, 3], landmark pixels [1, 68, 2], camera)."""
    out = head(shape=p["shape"], expression=p["expression"], pose=p["rotation"], jaw=p["jaw"])
    camera = WeakPerspective(torch.cat([p["log_scale"].exp()[:, None], p["translation"]], 1), image_size)
    return out.vertices, camera.project(out.landmarks2d)[..., :2], camera


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="fit_out")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)

    head = facegeom.models.synthetic_head(seed=0, n_shape=20, n_exp=10)
    albedo = head.albedo(torch.zeros(1, head.n_tex)).clamp(0, 1)
    renderer = MeshRenderer(head.faces, image_size=args.image_size)
    template = head(shape=torch.zeros(1, 20), expression=torch.zeros(1, 10)).vertices[0]
    centre = (template.min(0).values + template.max(0).values) / 2
    size = float(template[:, 1].max() - template[:, 1].min())

    def parameters(truth):
        sh = torch.zeros(1, 9, 3)
        sh[:, 0] = 0.8  # Deep3DFaceRecon's ambient initial light
        p = {"shape": torch.zeros(1, 20), "expression": torch.zeros(1, 10), "rotation": torch.zeros(1, 3),
             "jaw": torch.zeros(1, 3), "log_scale": torch.full((1,), math.log(1.4 / size)),
             "translation": -centre[None, :2].clone(), "sh": sh}
        if truth:
            p["shape"], p["expression"] = torch.randn(1, 20), torch.randn(1, 10)
            p["rotation"] = torch.randn(1, 3) * torch.tensor([0.1, 0.2, 0.05])
            p["sh"] = p["sh"] + 0.1 * torch.randn(1, 9, 1)
        return p

    with torch.no_grad():
        truth = parameters(truth=True)
        vertices, target_pixels, camera = decode(head, truth, args.image_size)
        target = renderer(vertices, albedo, truth["sh"], camera=camera).image

    params = {name: value.requires_grad_() for name, value in parameters(truth=False).items()}
    rates = {"shape": 0.1, "expression": 0.1, "rotation": 0.02, "jaw": 0.005, "log_scale": 0.01,
             "translation": 0.005, "sh": 0.01}
    optimizer = torch.optim.Adam([{"params": [params[n]], "lr": lr} for n, lr in rates.items()])
    landmark_only = args.iterations // 3
    losses = []
    for step in range(args.iterations):
        vertices, pixels, camera = decode(head, params, args.image_size)
        loss = (pixels - target_pixels).square().sum(-1).mean() / args.image_size  # landmark energy
        loss = loss + 1e-3 * (params["shape"].square().sum() + params["expression"].square().sum())  # priors
        if step >= landmark_only:  # photometric energy through the rasterizer and SH shading
            image = renderer(vertices, albedo, params["sh"], camera=camera).image
            loss = loss + 10 * (image - target).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())

    with torch.no_grad():
        vertices, pixels, camera = decode(head, params, args.image_size)
        fit = renderer(vertices, albedo, params["sh"], camera=camera).image
        initial = parameters(truth=False)
        v0, p0, c0 = decode(head, initial, args.image_size)
        start = renderer(v0, albedo, initial["sh"], camera=c0).image
    report = {
        "iterations": args.iterations,
        "initial_photometric_rmse": float((start - target).square().mean().sqrt()),
        "photometric_rmse": float((fit - target).square().mean().sqrt()),
        "initial_landmark_error_px": float((p0 - target_pixels).norm(dim=-1).mean()),
        "landmark_error_px": float((pixels - target_pixels).norm(dim=-1).mean()),
        "initial_loss": losses[0],
        "final_loss": losses[-1],
    }
    os.makedirs(args.out, exist_ok=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for name, image in (("target", target), ("fit", fit)):
        plt.imsave(os.path.join(args.out, f"{name}.png"), image[0].clamp(0, 1).numpy())
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
