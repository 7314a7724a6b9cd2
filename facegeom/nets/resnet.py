"""ResNet with torchvision's module names, so torchvision checkpoints (ImageNet
weights such as ``resnet50-0676ba61.pth``), Deep3DFaceRecon's ``net_recon.backbone.*``
and 2DASL's ``res_state_dict`` load with ``load_state_dict(strict=True)`` unchanged.

Layout (torchvision ``torchvision/models/resnet.py``; copied by the authors into
``D3D:models/networks.py:264-373,418-427`` and ``2DASL:test_codes/resnet_xgtu_4chls.py:96-153``;
PIPELINES.md §2.2, §2.8, §4.2, §4.6)::

    conv1 (k7 s2 p3, no bias) -> bn1 -> relu -> maxpool (k3 s2 p1)
    -> layer1..layer4 -> avgpool -> [flatten -> fc]

``Bottleneck`` is ResNet v1.5: the stride sits in the 3x3 ``conv2`` (torchvision, Deep3D
PyTorch, 2DASL). Deep3D's TF original used v1 (stride in ``conv1``): not provided.

torchvision itself is not a dependency (its PyPI wheels only import beside a matching
CUDA build of torch); where it is importable the tests check equal outputs.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Type, Union

import torch
from torch import nn

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "resnet18", "resnet50", "resnet50_2dasl", "resnet50_deep3d"]


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """torchvision ``BasicBlock`` (ResNet-18/34): ``conv1 (3x3, stride) -> bn1 -> relu ->
    conv2 (3x3) -> bn2``, plus the (optionally downsampled) input, then relu."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision ``Bottleneck`` (v1.5): ``conv1 1x1 -> bn1 -> relu -> conv2 3x3 (stride)
    -> bn2 -> relu -> conv3 1x1 (x4 channels) -> bn3``, plus the input, then relu."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None):
        super().__init__()
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """torchvision-layout ResNet.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: blocks per stage, e.g. ``[3, 4, 6, 3]`` for ResNet-50.
        num_classes: size of the final ``fc`` (``Linear(512 * expansion, num_classes)``);
            ``None`` builds no ``fc`` (Deep3D's backbone, ``use_last_fc=False``), and
            :meth:`forward` then returns the pooled map ``[B, C, 1, 1]`` unflattened, as
            Deep3D's, whose 1x1-conv heads read it (``D3D:models/networks.py:97-104,360-365``).
        in_channels: input channels of ``conv1`` (3; 2DASL: 4, RGB + landmark map).
        layer4_stride: stride of ``layer4`` (2; 2DASL: 1, ``resnet_xgtu_4chls.py``).
        avgpool: ``"adaptive"`` (``AdaptiveAvgPool2d((1, 1))``, torchvision / Deep3D) or an
            ``nn.Module`` (2DASL: ``nn.AvgPool2d(7, stride=2)``).
        zero_init_residual: zero the last BN weight of every block (torchvision option).

    Init as torchvision and both authors' copies: convs ``kaiming_normal_(mode="fan_out",
    nonlinearity="relu")`` (= 2DASL's ``N(0, sqrt(2 / (k*k*C_out)))``), BN weight 1 and bias
    0, ``fc`` PyTorch's default ``Linear`` init.

    Input ``[B, in_channels, H, W]`` float; output ``[B, num_classes]`` or ``[B, C, 1, 1]``
    (``C = 512 * expansion``; for a fixed-size ``avgpool`` the spatial size depends on H, W).
    """

    def __init__(self, block: Type[Union[BasicBlock, Bottleneck]], layers: Sequence[int],
                 num_classes: Optional[int] = 1000, in_channels: int = 3, layer4_stride: int = 2,
                 avgpool: Union[str, nn.Module] = "adaptive", zero_init_residual: bool = False):
        super().__init__()
        if block not in (BasicBlock, Bottleneck):
            raise TypeError(f"block must be BasicBlock or Bottleneck, got {block!r}")
        if len(layers) != 4 or not all(isinstance(n, int) and n > 0 for n in layers):
            raise ValueError(f"layers must be 4 positive ints, got {layers!r}")
        if not (isinstance(in_channels, int) and in_channels > 0):
            raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
        if layer4_stride not in (1, 2):
            raise ValueError(f"layer4_stride must be 1 or 2, got {layer4_stride!r}")
        if num_classes is not None and not (isinstance(num_classes, int) and num_classes > 0):
            raise ValueError(f"num_classes must be a positive int or None, got {num_classes!r}")
        self.inplanes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=layer4_stride)
        if isinstance(avgpool, str):
            if avgpool != "adaptive":
                raise ValueError(f"avgpool must be 'adaptive' or an nn.Module, got {avgpool!r}")
            avgpool = nn.AdaptiveAvgPool2d((1, 1))
        elif not isinstance(avgpool, nn.Module):
            raise TypeError(f"avgpool must be 'adaptive' or an nn.Module, got {type(avgpool).__name__}")
        self.avgpool = avgpool
        self.num_features = 512 * block.expansion
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes is not None else None

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.constant_(m.bn3.weight, 0)
                elif isinstance(m, BasicBlock):
                    nn.init.constant_(m.bn2.weight, 0)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(_conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers: List[nn.Module] = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The ``layer4`` output ``[B, 512 * expansion, h, w]`` (before ``avgpool``)."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4 or x.shape[1] != self.conv1.in_channels:
            raise ValueError(f"x must have shape [B, {self.conv1.in_channels}, H, W], got {list(x.shape)}")
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.feature_map(x))
        if self.fc is None:
            return x
        return self.fc(torch.flatten(x, 1))


def resnet18(num_classes: Optional[int] = 1000, **kwargs) -> ResNet:
    """torchvision ``resnet18`` layout (``[2, 2, 2, 2]`` basic blocks, 512 features).
    Deep3D accepts it as ``net_recon=resnet18`` (``D3D:models/networks.py:380-391``)."""
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes, **kwargs)


def resnet50(num_classes: Optional[int] = 1000, **kwargs) -> ResNet:
    """torchvision ``resnet50`` layout (``[3, 4, 6, 3]`` bottlenecks, 2048 features).
    Keyword arguments as :class:`ResNet` (``in_channels``, ``layer4_stride``, ``avgpool``)."""
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes=num_classes, **kwargs)


def resnet50_deep3d() -> ResNet:
    """Deep3DFaceRecon's R-Net backbone: ResNet-50 with no ``fc``, ``AdaptiveAvgPool2d``,
    output ``[B, 2048, 1, 1]`` (``D3D:models/networks.py:69-104``; PIPELINES.md §2.2).
    Its 318 state-dict entries are ``epoch_20.pth['net_recon']``'s ``backbone.*`` (§2.8)."""
    return resnet50(num_classes=None)


def resnet50_2dasl(num_classes: int = 62) -> ResNet:
    """2DASL's regressor: ResNet-50 with a 4-channel ``conv1`` (RGB + landmark map),
    ``layer4`` stride 1, ``AvgPool2d(7, stride=2)`` and ``fc`` 2048 -> 62
    (``2DASL:test_codes/resnet_xgtu_4chls.py:96-153``; PIPELINES.md §4.2). At 120 x 120
    the layer4 map is 8 x 8 and the pool gives 1 x 1. The authors' file stores it under
    ``res_state_dict`` with a ``module.`` prefix (§4.6): strip it before loading."""
    return resnet50(num_classes=num_classes, in_channels=4, layer4_stride=1,
                    avgpool=nn.AvgPool2d(7, stride=2))
