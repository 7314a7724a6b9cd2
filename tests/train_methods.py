"""Methods used by tests/test_train.py (importable by torchrun workers as
``tests.train_methods:Alternating``)."""
from dataclasses import dataclass

import torch
from torch import nn

from facegeom.train import LandmarkRegressor, LandmarksMethod


@dataclass(frozen=True)
class AlternatingConfig:
    image_size: int = 32
    width: int = 4
    num_samples: int = 64
    val_samples: int = 8
    images_per_identity: int = 4

    @classmethod
    def tiny(cls):
        return cls()


class _Pair(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.regressor = LandmarkRegressor(width)
        self.critic = nn.Sequential(nn.Linear(136, 8), nn.Tanh(), nn.Linear(8, 1))


class Alternating(LandmarksMethod):
    """Manual optimisation with two optimisers (a 2DASL-like SGD regressor and an
    Adam critic); both losses are computed before either step, so accumulation
    is equivalent to one big batch."""

    name = "alternating"
    Config = AlternatingConfig
    manual_optimization = True

    def build_model(self, config):
        return _Pair(config.width)

    def optimizers(self, model, config):
        return {"regressor": torch.optim.SGD(model.regressor.parameters(), lr=0.05, momentum=0.9),
                "critic": torch.optim.Adam(model.critic.parameters(), lr=1e-3)}

    def training_step(self, model, batch, optimizers):
        image = batch["image"]
        size = image.new_tensor([image.shape[-1], image.shape[-2]])
        target = ((batch["landmarks"] + 0.5) / size * 2 - 1).flatten(1)
        pred = model.regressor(image).flatten(1)
        critic_loss = (nn.functional.softplus(-model.critic(target)) +
                       nn.functional.softplus(model.critic(pred.detach()))).mean()
        regressor_loss = nn.functional.mse_loss(pred, target) + 0.01 * nn.functional.softplus(
            -model.critic(pred)).mean()
        optimizers["critic"].backward(critic_loss)
        optimizers["regressor"].backward(regressor_loss)  # reaches the regressor's parameters only
        optimizers["critic"].step()
        optimizers["regressor"].step()
        return {"critic": critic_loss, "regressor": regressor_loss}

    def validation_step(self, model, batch):
        return {"loss": self._loss(model.regressor, batch)}
