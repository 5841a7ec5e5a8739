"""BYOL (Grill et al. 2020, "Bootstrap Your Own Latent"): an online encoder, projector and
predictor regress an exponential moving average (EMA) target's projection of the other view."""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from sketchshot.config import BYOLSettings
from sketchshot.encoders import Encoder
from sketchshot.methods.base import METHODS, StepOutput, full_precision
from sketchshot.methods.ssl.base import SSLMethod, TwoViews, projection_head


def byol_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Normalised MSE, ``2 - 2 cos(p, z)``, averaged over the batch; p, z [B, P]."""
    return (2 - 2 * F.cosine_similarity(prediction, target.detach(), dim=-1)).mean()


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """``target = m * target + (1 - m) * online`` for every parameter; buffers are copied."""
    for t, o in zip(target.parameters(), online.parameters(), strict=True):
        t.mul_(momentum).add_(o.detach(), alpha=1 - momentum)
    for t, o in zip(target.buffers(), online.buffers(), strict=True):
        t.copy_(o)


def cosine_momentum(base: float, progress: float) -> float:
    """BYOL's schedule: from ``base`` at the start to 1.0 at the end of training."""
    return 1 - (1 - base) * (math.cos(math.pi * min(max(progress, 0.0), 1.0)) + 1) / 2


@METHODS.register("byol")
class BYOL(SSLMethod):
    """two views [B, 1, S, S]; loss = (L(p1, z2') + L(p2, z1')) / 2 where p is the
    online prediction and z' the target projection."""

    Settings = BYOLSettings

    def __init__(self, encoder: Encoder, settings: BYOLSettings | None = None) -> None:
        super().__init__(encoder, settings)
        s = self.settings
        self.ema_decay, self.ema_cosine = s.ema_decay, s.ema_cosine
        self.projector = projection_head(encoder.embedding_dim, s.hidden_dim, s.projection_dim)
        self.predictor = projection_head(s.projection_dim, s.hidden_dim, s.projection_dim)
        self.target_encoder = copy.deepcopy(encoder).requires_grad_(False)
        self.target_projector = copy.deepcopy(self.projector).requires_grad_(False)

    def training_step(self, views: TwoViews) -> StepOutput:
        # both views in one batch: per-view batches (as SimCLR uses) measured worse for BYOL
        both = torch.cat(tuple(views))
        p1, p2 = self.predictor(self.projector(self.encoder(both))).chunk(2)
        with torch.no_grad():
            z1, z2 = self.target_projector(self.target_encoder(both)).chunk(2)
        with full_precision(p1):  # cosine similarities near 1: float32
            p1, p2, z1, z2 = (t.float() for t in (p1, p2, z1, z2))
            loss = (byol_loss(p1, z2) + byol_loss(p2, z1)) / 2
        return {"loss": loss, "metrics": {}}

    def after_step(self, progress: float) -> None:
        m = cosine_momentum(self.ema_decay, progress) if self.ema_cosine else self.ema_decay
        ema_update(self.target_encoder, self.encoder, m)
        ema_update(self.target_projector, self.projector, m)
