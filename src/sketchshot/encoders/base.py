"""Encoder base class and registry."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from sketchshot.card import PIXEL_MEAN, PIXEL_STD
from sketchshot.registry import Registry

ENCODERS: Registry[Encoder] = Registry("encoder")


class Encoder(nn.Module):
    """Maps sketches [B, 1, S, S] in [0, 1] (bright strokes) to embeddings [B, embedding_dim].

    Subclasses implement ``features`` on normalised input and set ``embedding_dim``;
    ``default_image_size`` is the side they are designed for."""

    default_image_size: ClassVar[int] = 28
    embedding_dim: int

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features((x - PIXEL_MEAN) / PIXEL_STD)


def create_encoder(name: str, **kwargs: object) -> Encoder:
    return ENCODERS.create(name, **kwargs)
