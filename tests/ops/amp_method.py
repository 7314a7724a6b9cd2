"""A training method whose step runs facegeom ops on the network's output, for the
AMP test of tests/ops/test_policies.py (``tests.ops.amp_method:OpsLandmarks``): under
``TrainConfig(amp=True)`` on the CPU the network's output is bfloat16, and the ops
must upcast it (docs/ops.md "Autocast")."""
import torch

from facegeom import ops
from facegeom.train import LandmarksMethod

# A fan of triangles over the 68 predicted landmarks (vertex 0 shared).
FAN = torch.tensor([[0, k, k + 1] for k in range(1, 67)], dtype=torch.int32)


class OpsLandmarks(LandmarksMethod):
    name = "ops_landmarks"
    seen_dtypes: set = set()  # dtypes of the network output the ops received (for the test)

    def training_step(self, model, batch, optimizers):
        loss = self._loss(model, batch)
        pred = model(batch["image"]).reshape(batch["image"].shape[0], 68, 2)  # bf16 under CPU autocast
        OpsLandmarks.seen_dtypes.add(pred.dtype)
        pos = torch.cat([pred, torch.full_like(pred[..., :1], 0.5), torch.ones_like(pred[..., :1])], -1)
        rast, _ = ops.rasterize(pos, FAN, (16, 16))
        colour, _ = ops.interpolate(pred, rast, FAN)
        soft = ops.antialias(colour, rast, pos, FAN)
        rot = ops.rodrigues(pred[:, :3, 0])  # [B, 3, 3]
        extra = soft.square().mean() + (rot - torch.eye(3)).square().mean()
        return {"total": loss + 1e-3 * extra, "ops": extra}
