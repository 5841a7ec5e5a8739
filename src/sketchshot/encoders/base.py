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


def last_stage(encoder: nn.Module) -> list[nn.Module]:
    """The modules of ``encoder``'s last stage, what ``--freeze partial`` leaves to train:
    below wrappers with one child that has parameters, the last child that has them (conv4's
    last block, a ResNet's ``layer4``), and where that is a single layer after the stages (a
    projection, a norm), those layers with the last stage before them (sketch_cnn's last block
    and projection; swin_t's last stage and norm)."""
    module = encoder
    while len(children := _with_parameters(module)) == 1:
        module = children[0]
    stage: list[nn.Module] = []
    for child in reversed(_with_parameters(module)):
        if _with_parameters(child):  # a container of layers: a stage, or the stages
            inner = _with_parameters(child)
            return [inner[-1] if stage else child, *stage]
        stage.insert(0, child)
    return stage


def _with_parameters(module: nn.Module) -> list[nn.Module]:
    return [c for c in module.children() if any(True for _ in c.parameters())]
