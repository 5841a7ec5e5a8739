"""torchvision ResNets with a 1-channel stem and no classifier (He et al. 2016)."""

from __future__ import annotations

import torch
from torch import nn
from torchvision import models

from sketchshot.encoders.base import ENCODERS, Encoder


class ResNetEncoder(Encoder):
    """[B, 1, S, S] -> [B, 512] (resnet18); weights are random, no download is made."""

    default_image_size = 64

    def __init__(self, arch: str, image_size: int = 64) -> None:
        super().__init__()
        net = getattr(models, arch)(weights=None)
        net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.embedding_dim = net.fc.in_features
        net.fc = nn.Identity()
        self.net = net

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@ENCODERS.register("resnet18")
def resnet18(image_size: int = 64) -> ResNetEncoder:
    return ResNetEncoder("resnet18", image_size)
