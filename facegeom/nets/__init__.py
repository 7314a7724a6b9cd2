"""Networks in the authors' weight layouts (PIPELINES.md §1.6, §2.2, §2.8, §4.2, §4.6, §6.6):
``state_dict()`` keys and shapes equal the released checkpoints, so they load unchanged.

- :mod:`facegeom.nets.resnet`: torchvision-named ResNet-18/50 (Deep3D backbone, 2DASL
  4-channel variant, ImageNet weights).
- :mod:`facegeom.nets.iresnet`: ArcFace IResNet-50/100 (insightface, Deep3D, MICA).
"""
from facegeom.nets.iresnet import IBasicBlock, IResNet, iresnet50, iresnet100
from facegeom.nets.resnet import (BasicBlock, Bottleneck, ResNet, resnet18, resnet50, resnet50_2dasl,
                                  resnet50_deep3d)

__all__ = ["BasicBlock", "Bottleneck", "IBasicBlock", "IResNet", "ResNet", "iresnet50", "iresnet100",
           "resnet18", "resnet50", "resnet50_2dasl", "resnet50_deep3d"]
