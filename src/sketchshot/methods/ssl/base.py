"""Shared part of the self-supervised methods: two sketch views of every image."""

from __future__ import annotations

import torch
from torch import nn

from sketchshot.data.views import SketchAugment
from sketchshot.encoders import Encoder
from sketchshot.methods.base import Method


def projection_head(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """MLP head [B, in_dim] -> [B, out_dim]: Linear, BatchNorm, ReLU, Linear."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim, bias=False),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, out_dim),
    )


class SSLMethod(Method):
    """Trains on batches of unlabelled images [B, 1, S, S]; evaluation reads the encoder's
    (backbone) features with cosine prototypes, before any projection head."""

    kind = "ssl"

    def __init__(
        self,
        encoder: Encoder,
        augment_strength: float = 1.0,
        flip: bool = False,
        crop: float = 0.6,
        thickness_p: float = 0.0,
        erase_p: float = 0.0,
    ) -> None:
        super().__init__(encoder)
        self.augment = SketchAugment(
            augment_strength, flip=flip, crop=crop, thickness_p=thickness_p, erase_p=erase_p
        )

    def two_views(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.augment(images), self.augment(images)
