"""A 4-block sketch CNN (64-128-256-512, BN, ReLU, adaptive average pooling, projection), the
encoder of the two-stage sketch few-shot pipelines our users come from."""

from __future__ import annotations

import torch
from torch import nn

from sketchshot.encoders.base import ENCODERS, Encoder
from sketchshot.encoders.conv4 import conv_block


@ENCODERS.register("sketch_cnn")
class SketchCNN(Encoder):
    """[B, 1, S, S] -> [B, embedding_dim]; any S >= 16 (pooling is adaptive)."""

    default_image_size = 64

    def __init__(self, embedding_dim: int = 256, image_size: int = 64) -> None:
        super().__init__()
        widths = (64, 128, 256, 512)
        pairs = zip((1, *widths[:-1]), widths, strict=True)
        self.blocks = nn.Sequential(*(conv_block(c_in, c_out) for c_in, c_out in pairs))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.projection = nn.Linear(widths[-1], embedding_dim)
        self.embedding_dim = embedding_dim
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.pool(self.blocks(x)).flatten(1))
