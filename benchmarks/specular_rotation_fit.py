"""Is the specular smoke runs' head-rotation bias in the data or in the optimisation? Fits the
decoder's coefficients directly to 8 held-out images (Adam, lr 0.02, 600 steps, the method's
losses; frontal data, landmarks only: ``pose_scale=0 w_photo=0 w_uniform=0`` on top of
``RUN_R``, the benchmark's specular defaults when this was measured) three ways and prints the
validation metrics of each:

1. from zero, everything free (what ``converge_specular_tdasl.py --fit`` does);
2. shape / expression / albedo fixed at the truth, rotation fixed at the truth (0), the rest free;
3. as 2 with the rotation free.

If 2 reaches a lower landmark loss than 1, the data and the decoder agree at the true pose and
the rotation found by 1 is where the losses' descent from the mean face has got to, trading
rotation for shape::

    PYTHONPATH=. python benchmarks/specular_rotation_fit.py [KEY=VALUE ...]  # ~45 s on 2 threads

(extra ``KEY=VALUE`` arguments are Config overrides, e.g. ``rigid_free=False``).

Figures: docs/specular.md ("Longer runs, and an albedo that can be seen").
"""
from __future__ import annotations

import sys

import numpy as np
import torch


# run R's --set values (docs/specular.md; the benchmark's specular defaults until run H); the
# synthetic head's rigid_free is Config's default (True): --set rigid_free=False for the figures
# measured before it
RUN_R = ["lr=3e-4", "num_samples=8000", "val_samples=32", "pose_scale=0.25", "shape_components=3", "shape_std=4",
         "expression_components=3", "expression_std=2", "albedo_components=3", "mouth_start=500"]


def main() -> None:
    from facegeom import train
    from facegeom.cli import _method_config
    from facegeom.pipelines import specular as S

    config = _method_config(train.get_method("specular"), True,
                            RUN_R + ["pose_scale=0", "w_photo=0", "w_uniform=0"] + sys.argv[1:])
    method = S.SpecularMethod()
    dataset = method.dataset(config, "synthetic", "val", 0)
    batch = torch.utils.data.default_collate([dataset[i] for i in range(8)])
    sizes = config.sizes
    start = dict(zip(sizes, np.cumsum([0] + list(sizes.values()))[:-1].tolist()))

    class Fixed(S.SpecularModel):  # the "network" answers the fitted coefficients
        def forward(self, x):
            return self.fitted

    def fit(from_truth: bool, rotation_free: bool, steps: int = 600) -> dict:
        model = Fixed(config)
        params = torch.zeros(8, sum(sizes.values()))
        free = torch.ones_like(params)
        if from_truth:
            for group, key in (("shape", "shape"), ("expression", "expression"), ("albedo", "texture")):
                count = min(batch["params"][key].shape[1], sizes[group])
                params[:, start[group]:start[group] + count] = batch["params"][key][:, :count]
            free[:, :start["angle"]] = 0.0
        if not rotation_free:
            free[:, start["angle"]:start["angle"] + 3] = 0.0
        model.fitted = params.requires_grad_(True)
        face_model, renderer, _ = model.aux(torch.device("cpu"))
        skin = face_model.masks.get("skin")
        optimizer = torch.optim.Adam([model.fitted], lr=0.02)
        for _ in range(steps):
            optimizer.zero_grad()
            S.losses(S.decode(model.fitted, face_model, config, renderer), batch, config, None, None,
                     skin)["total"].backward()
            model.fitted.grad *= free
            optimizer.step()
        with torch.no_grad():
            metrics = method.validation_step(model, batch)
        return {k: round(float(metrics[k]), 4) for k in ("lmk", "rot_deg", "shape_mm", "exp_err")}

    for name, args in (("1 from zero, all free", (False, True)), ("2 truth, rotation fixed", (True, False)),
                       ("3 truth, rotation free", (True, True))):
        print(name, fit(*args))


if __name__ == "__main__":
    import os

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    torch.set_num_threads(2)
    main()
