"""Does a frozen, randomly initialised ArcFace carry identity? (issue 13: why MICA's synthetic
runs with the authors' frozen stem stay at the mean-shape error.)

Builds the tiny MICA model (random weights, ``eval()``), extracts for every synthetic image
(``MICAMethod.dataset``: identities x 2 images) the layer3 output and the L2-normalised 512-d
feature, fits ridge regressions (dual form) from each to the identities' shape codes on the
training identities, and reports the mean per-vertex error (mm) on held-out identities
against the mean shape's. The release starts from Glint360K ArcFace weights instead.

    OMP_NUM_THREADS=1 python -m benchmarks.mica_probe --identities 160
"""
from __future__ import annotations

import argparse
import dataclasses
import json

import torch

from facegeom.pipelines import mica as M


def features(model, dataset):
    net = model.arcface
    layer3, feature, codes = [], [], []
    for i in range(len(dataset)):
        item = dataset[i]
        x = item["arcface"]
        with torch.no_grad():
            h = net.layer3(net.layer2(net.layer1(net.prelu(net.bn1(net.conv1(x))))))
            layer3.append(h.flatten(1))
            feature.append(torch.nn.functional.normalize(M.arcface_features(net, x)))
        codes.append(item["shape"].expand(x.shape[0], -1))
    return torch.cat(layer3).double(), torch.cat(feature).double(), torch.cat(codes).double()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identities", type=int, default=160)
    parser.add_argument("--val-identities", type=int, default=16)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    method = M.MICAMethod()
    config = dataclasses.replace(M.MICAConfig.tiny(), num_identities=args.identities,
                                 val_identities=args.val_identities)
    torch.manual_seed(0)
    model = method.build_model(config).eval()
    train = features(model, method.dataset(config, "synthetic", "train", 0))
    val = features(model, method.dataset(config, "synthetic", "val", 0))

    def error(codes, truth):
        with torch.no_grad():
            return float(M.vertex_error_mm(model.flame(shape=codes.float()).vertices,
                                           model.flame(shape=truth.float()).vertices))

    result = {"mean_shape_mm": error(torch.zeros_like(val[2]), val[2]), "ridge": []}
    for name, a, b in (("layer3", train[0], val[0]), ("feature512", train[1], val[1])):
        mu, target_mu = a.mean(0), train[2].mean(0)
        a0, b0 = a - mu, b - mu
        gram = a0 @ a0.T
        for lam in (1e-2, 1e-1, 1.0, 10.0):
            ridge = gram + lam * torch.eye(len(gram), dtype=gram.dtype)
            weights = a0.T @ torch.linalg.solve(ridge, train[2] - target_mu)
            result["ridge"].append({"features": name, "lambda": lam,
                                    "heldout_mm": error(b0 @ weights + target_mu, val[2]),
                                    "train_mm": error(a0 @ weights + target_mu, train[2])})
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
