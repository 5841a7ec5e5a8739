"""Shared part of the self-supervised methods: a projection head, and a batch of two views."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from sketchshot.methods.base import Method


def projection_head(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """MLP head [B, in_dim] -> [B, out_dim]: Linear, BatchNorm, ReLU, Linear."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim, bias=False),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, out_dim),
    )


class TwoViews(NamedTuple):
    """Two views [B, 1, S, S] of the same B images (made by the data side's views)."""

    first: torch.Tensor
    second: torch.Tensor


class SSLMethod(Method):
    """Trains on ``TwoViews`` of unlabelled images; evaluation reads the encoder's (backbone)
    features with cosine prototypes, before any projection head."""

    kind = "ssl"
