"""Pairwise ranking: a Siamese network (one encoder, shared weights, embeds both images of a
pair; Bromley et al. 1993) and an MLP head on the two embeddings give the logit of "a is
preferred over b", trained with the pairwise binary cross-entropy of RankNet (Burges et al.
2005) against a label in [0, 1] (0/1, or the share of reviewers who preferred a).

The head is antisymmetric by construction, ``logit(a, b) = h([e_a, e_b]) - h([e_b, e_a])``, so
``P(a > b) = 1 - P(b > a)`` exactly (in eval mode; dropout draws two masks in training)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sketchshot.config import PairwiseSettings
from sketchshot.encoders import Encoder
from sketchshot.encoders.base import last_stage
from sketchshot.encoders.feature_sets import FeatureStack
from sketchshot.methods.base import METHODS, Method, StepOutput, full_precision


@dataclass(frozen=True)
class PairBatch:
    """The two sides of B pairs, images [B, 1, S, S] in [0, 1] each (or their features [B, D]
    from the feature cache), and ``targets`` [B] in [0, 1]: P(a preferred over b). Its length
    is the number of images (or feature rows), 2B, as the loop counts them."""

    a: torch.Tensor
    b: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return 2 * int(self.targets.shape[0])

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter((self.a, self.b, self.targets))

    def to(self, device: torch.device) -> PairBatch:
        return PairBatch(*(t.to(device, non_blocking=True) for t in self))


def pairwise_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """RankNet's loss: the mean binary cross-entropy of logits [B] against targets [B] in
    [0, 1], ``-t log sigmoid(l) - (1 - t) log sigmoid(-l)``; the log-loss of the pairs."""
    return F.binary_cross_entropy_with_logits(logits.float(), targets.float())


def pair_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> tuple[int, int]:
    """(right, decided): of the pairs whose target is not a tie (0.5), how many the logits
    [B] order as the targets [B] do (a logit of 0 counts as a preference for b)."""
    decided = targets != 0.5
    right = ((logits > 0) == (targets > 0.5)) & decided
    return int(right.sum()), int(decided.sum())


def freeze(encoder: Encoder, how: str) -> None:
    """``none``: leave every parameter of ``encoder`` to train; ``full``: none; ``partial``: only
    those of its last stage (``last_stage``)."""
    if how == "none":
        return
    encoder.requires_grad_(False)
    if how == "partial":
        for module in last_stage(encoder):
            module.requires_grad_(True)


@METHODS.register("pairwise")
class PairwiseRanker(Method):
    """Pairs of images [B, 1, S, S] -> ``encoder`` (a ``FeatureStack`` of the settings'
    feature sets over the sketch encoder given) [2B, D] -> BatchNorm (one for both sides) ->
    head on [e_a, e_b] [B, 2D] and [e_b, e_a] -> logits [B] (their difference). Trained on
    ``PairBatch``es; with cached features [B, D] the encoder is skipped."""

    kind = "pairwise"
    Settings = PairwiseSettings

    def __init__(self, encoder: Encoder, settings: PairwiseSettings | None = None) -> None:
        super().__init__(encoder, settings)
        s = self.settings
        self.encoder = FeatureStack(s.features, encoder)
        if self.encoder.sketch is not None:
            freeze(self.encoder.sketch, s.freeze)
        d = self.encoder.embedding_dim
        self.norm = nn.BatchNorm1d(d)
        # no output bias: it would cancel in the difference that makes the logits antisymmetric
        self.head = nn.Sequential(
            nn.Linear(2 * d, s.hidden_dim),
            nn.ReLU(),
            nn.Dropout(s.dropout),
            nn.Linear(s.hidden_dim, 1, bias=False),
        )

    def embeddings(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised embeddings [B, D] of each side: one encoder pass over the 2B images (or
        features [B, D] as they are) and one BatchNorm over both sides, so that both are
        normalised alike."""
        x = torch.cat([a, b])
        e = self.norm(x if x.dim() == 2 else self.encoder(x))
        return e[: a.shape[0]], e[a.shape[0] :]

    def pair_logits(self, e_a: torch.Tensor, e_b: torch.Tensor) -> torch.Tensor:
        """Logits [B] of "a preferred over b" from normalised embeddings [B, D] of each side;
        ``pair_logits(e_b, e_a) == -pair_logits(e_a, e_b)``."""
        ab = self.head(torch.cat([e_a, e_b], dim=1))
        ba = self.head(torch.cat([e_b, e_a], dim=1))
        return (ab - ba).squeeze(1)

    def logits(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Logits [B] of "a preferred over b" for images [B, 1, S, S] or features [B, D]."""
        return self.pair_logits(*self.embeddings(a, b))

    def training_step(self, batch: PairBatch) -> StepOutput:
        a, b, targets = batch
        e_a, e_b = self.embeddings(a, b)
        with full_precision(e_a):  # a difference of two head outputs: float32 under autocast
            logits = self.pair_logits(e_a.float(), e_b.float())
        right, decided = pair_accuracy(logits.detach(), targets)
        acc = torch.tensor(right / max(decided, 1))
        return {"loss": pairwise_loss(logits, targets), "metrics": {"acc": acc}}

    def train(self, mode: bool = True) -> PairwiseRanker:
        """Training mode, but for the frozen parts of the encoder: their BatchNorm statistics
        stay as they are (a frozen ImageNet ResNet-50, a fully or partly frozen encoder)."""
        super().train(mode)
        if mode:
            for module in self.encoder.modules():
                own = list(module.parameters(recurse=False))
                if own and not any(p.requires_grad for p in own):
                    module.eval()
        return self
