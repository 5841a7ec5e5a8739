"""SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual
Representations"): two views, an MLP projection head, and the NT-Xent loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sketchshot.config import SimCLRSettings
from sketchshot.distributed import gather_with_grad
from sketchshot.encoders import Encoder
from sketchshot.methods.base import METHODS, StepOutput, full_precision
from sketchshot.methods.ssl.base import SSLMethod, TwoViews, projection_head


def nt_xent_loss(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float, gather: bool = False
) -> torch.Tensor:
    """Normalised temperature-scaled cross-entropy of paired projections z1, z2 [B, P].

    Each of the 2B projections must pick out its partner among the 2B - 1 others; the result
    is the mean over all 2B of them. With ``gather`` under DDP, the others are the projections
    of every process (cross-process negatives)."""
    z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    n = z1.shape[0]
    all1, offset = gather_with_grad(z1) if gather else (z1, 0)
    all2, _ = gather_with_grad(z2) if gather else (z2, 0)
    total = all1.shape[0]
    sim = torch.cat([z1, z2]) @ torch.cat([all1, all2]).T / temperature  # [2n, 2 * total]
    own = torch.arange(n, device=z1.device) + offset
    rows = torch.arange(2 * n, device=z1.device)
    self_pair = torch.zeros_like(sim, dtype=torch.bool)
    self_pair[rows, torch.cat([own, own + total])] = True  # a view is not its own negative
    sim = sim.masked_fill(self_pair, float("-inf"))
    return F.cross_entropy(sim, torch.cat([own + total, own]))


@METHODS.register("simclr")
class SimCLR(SSLMethod):
    """two views [B, 1, S, S] -> encoder [B, D] each -> head [B, P] each -> NT-Xent."""

    Settings = SimCLRSettings

    def __init__(self, encoder: Encoder, settings: SimCLRSettings | None = None) -> None:
        super().__init__(encoder, settings)
        s = self.settings
        self.temperature, self.gather_negatives = s.temperature, s.gather_negatives
        self.head = projection_head(encoder.embedding_dim, s.hidden_dim, s.projection_dim)

    def training_step(self, views: TwoViews) -> StepOutput:
        # One view at a time, so that BatchNorm normalises each view by its own batch: on
        # Omniglot this learns faster (3 min: 87.3/70.7 against 86.2/69.3 with the two views
        # in one batch) and runs faster on the CPU.
        z1, z2 = (self.head(self.encoder(view)).float() for view in views)
        with full_precision(z1):  # the similarity matrix and its softmax in float32
            loss = nt_xent_loss(z1, z2, self.temperature, self.gather_negatives)
        with torch.no_grad(), full_precision(z1):  # how often a view's nearest is its partner
            zn = F.normalize(torch.cat([z1, z2]), dim=1)
            sim = zn @ zn.T
            sim.fill_diagonal_(-2.0)
            n = z1.shape[0]
            partner = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z1.device)
            acc = (sim.argmax(1) == partner).float().mean()
        return {"loss": loss, "metrics": {"pair_acc": acc}}
