"""ArcFace IResNet (insightface ``arcface_torch/backbones/iresnet.py``), with the module
names of the released weights, so insightface's ``backbone.pth`` (Glint360K / MS1MV3
r50 and r100), Deep3DFaceRecon's recognition net and MICA's ``mica.tar['arcface']``
load with ``load_state_dict(strict=True)`` unchanged.

Layout (PIPELINES.md §1.6, §6.2, §6.6; ``MICA:models/arcface.py:33-199``)::

    conv1 (3x3 s1, 3 -> 64, no bias) -> bn1 -> prelu
    -> layer1..layer4 (IBasicBlock, stride 2 at the first block of every layer)
    -> bn2 (BN2d 512) -> flatten (512 * 7 * 7 = 25088) -> dropout -> fc (25088 -> 512)
    -> features (BN1d 512, weight fixed at 1, requires_grad False)

All BatchNorms use eps 1e-5. Input ``[B, 3, 112, 112]`` RGB in ``[-1, 1]``
(``(x - 127.5) / 127.5``, PIPELINES.md §1.1).
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
from torch import nn

__all__ = ["IBasicBlock", "IResNet", "iresnet50", "iresnet100"]


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """``bn1 -> conv1 (3x3) -> bn2 -> prelu -> conv2 (3x3, stride) -> bn3``, plus the
    (optionally downsampled) input; no activation after the sum
    (``MICA:models/arcface.py:33-66``)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-5)
        self.conv1 = _conv3x3(inplanes, planes)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
        self.prelu = nn.PReLU(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-5)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + identity


class IResNet(nn.Module):
    """ArcFace IResNet.

    Args:
        layers: IBasicBlocks per stage (r50: ``[3, 4, 14, 3]``, r100: ``[3, 13, 30, 3]``).
        dropout: dropout probability before ``fc`` (the released models: 0).
        num_features: embedding size (512).
        input_size: square input side; ``fc`` takes ``512 * (input_size / 16)**2`` inputs
            (112 -> 7 x 7 -> 25088, insightface's ``fc_scale = 7 * 7``).

    Init as insightface (``MICA:models/arcface.py:113-124``): convs ``N(0, 0.1)``, BN2d
    weight 1 and bias 0, ``features.weight`` 1 and frozen, ``fc`` and PReLU PyTorch defaults.

    Forward: ``[B, 3, input_size, input_size]`` -> ``[B, num_features]`` (not normalised;
    MICA and Deep3D apply ``F.normalize`` themselves).
    """

    def __init__(self, layers: Sequence[int], dropout: float = 0.0, num_features: int = 512,
                 input_size: int = 112):
        super().__init__()
        if len(layers) != 4 or not all(isinstance(n, int) and n > 0 for n in layers):
            raise ValueError(f"layers must be 4 positive ints, got {layers!r}")
        if not (isinstance(input_size, int) and input_size > 0 and input_size % 16 == 0):
            raise ValueError(f"input_size must be a positive multiple of 16, got {input_size!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.input_size = input_size
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1])
        self.layer3 = self._make_layer(256, layers[2])
        self.layer4 = self._make_layer(512, layers[3])
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.dropout = nn.Dropout(p=dropout, inplace=True)
        side = input_size // 16
        self.fc = nn.Linear(512 * side * side, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-5)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes: int, blocks: int) -> nn.Sequential:
        downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, kernel_size=1, stride=2, bias=False),
                                   nn.BatchNorm2d(planes, eps=1e-5))
        layers: List[nn.Module] = [IBasicBlock(self.inplanes, planes, 2, downsample)]
        self.inplanes = planes
        layers += [IBasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        size = self.input_size
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, size, size):
            raise ValueError(f"x must have shape [B, 3, {size}, {size}], got {list(x.shape)}")
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))


def iresnet50(**kwargs) -> IResNet:
    """IResNet-50 (``[3, 4, 14, 3]``): Deep3DFaceRecon's recognition net
    (``net_recog=r50``, ``D3D:models/arcface_torch/backbones/iresnet.py``)."""
    return IResNet([3, 4, 14, 3], **kwargs)


def iresnet100(**kwargs) -> IResNet:
    """IResNet-100 (``[3, 13, 30, 3]``): MICA's identity encoder (``MICA:models/arcface.py:155-160``;
    PIPELINES.md §6.2). MICA freezes ``conv1, bn1, prelu, layer1..3``; do that in the pipeline."""
    return IResNet([3, 13, 30, 3], **kwargs)
