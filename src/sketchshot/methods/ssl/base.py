"""Shared part of the self-supervised methods: two sketch views of every image."""

from __future__ import annotations

import torch

from sketchshot.data.views import SketchAugment
from sketchshot.encoders import Encoder
from sketchshot.methods.base import Method


class SSLMethod(Method):
    """Trains on batches of unlabelled images [B, 1, S, S]; evaluation reads the encoder's
    (backbone) features with cosine prototypes, before any projection head."""

    kind = "ssl"

    def __init__(self, encoder: Encoder, augment_strength: float = 1.0) -> None:
        super().__init__(encoder)
        self.augment = SketchAugment(augment_strength)

    def two_views(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.augment(images), self.augment(images)
