"""Conv-4 (Vinyals et al. 2016; Snell et al. 2017): 4 x [3x3 conv 64, BN, ReLU, 2x2 max-pool]."""

from __future__ import annotations

import torch
from torch import nn

from sketchshot.encoders.base import ENCODERS, Encoder


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


@ENCODERS.register("conv4")
class Conv4(Encoder):
    """[B, 1, 28, 28] -> [B, 64] at the default size (the flattened 64 x 1 x 1 map); other
    sizes give ``64 * (S // 16) ** 2`` features."""

    default_image_size = 28

    def __init__(self, width: int = 64, image_size: int = 28) -> None:
        super().__init__()
        self.blocks = nn.Sequential(
            conv_block(1, width),
            conv_block(width, width),
            conv_block(width, width),
            conv_block(width, width),
        )
        side = image_size
        for _ in range(4):
            side //= 2
        self.embedding_dim = width * max(side, 1) ** 2

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x).flatten(1)
