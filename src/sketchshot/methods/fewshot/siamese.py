"""Siamese verification (Koch et al. 2015): a pair head scores "same class?" from the
absolute difference of two embeddings; a query takes the class of its best-scoring support."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sketchshot.config import SiameseSettings
from sketchshot.encoders import Encoder
from sketchshot.methods.base import METHODS, PairScoring, Scoring
from sketchshot.methods.fewshot.base import FewShotMethod


@METHODS.register("siamese")
class SiameseNetworks(FewShotMethod):
    """Trained with binary cross-entropy on every (query, support) pair of an episode, the
    positives weighted up to balance the negatives (n_way - 1 of them per positive)."""

    Settings = SiameseSettings

    def __init__(self, encoder: Encoder, settings: SiameseSettings | None = None) -> None:
        super().__init__(encoder, settings)
        d, hidden_dim = encoder.embedding_dim, self.settings.hidden_dim
        self.pair_head = nn.Sequential(
            nn.Linear(d, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, 1)
        )

    def pair_logits(self, support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """Same-class logits [Q, S] of every query against every support embedding."""
        return same_class_logits(self.pair_head, query, support)

    def scoring(self) -> Scoring:
        return Scoring(
            "the scoring module gives same-class logits of each query embedding against each "
            "support embedding; a class's logit is the largest over its support embeddings; "
            "probabilities: their softmax",
            module=PairScoring(same_class_logits, self.pair_head),
            inputs=("query", "support"),
            output="pair_logits",
        )

    def score(
        self, support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor, n_way: int
    ) -> torch.Tensor:
        """Per class, the best pair logit [Q, n_way] over that class's support images."""
        return best_per_class(self.pair_logits(support, query), support_labels, n_way)

    def episode_loss(
        self,
        support: torch.Tensor,
        support_labels: torch.Tensor,
        query: torch.Tensor,
        query_labels: torch.Tensor,
        n_way: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = self.pair_logits(support, query)
        same = (query_labels[:, None] == support_labels[None]).to(pairs.dtype)
        n_pos = same.sum().clamp(min=1)
        pos_weight = (same.numel() - n_pos) / n_pos  # balance positives and negatives
        loss = F.binary_cross_entropy_with_logits(pairs, same, pos_weight=pos_weight)
        return loss, best_per_class(pairs.detach(), support_labels, n_way)


def best_per_class(pairs: torch.Tensor, support_labels: torch.Tensor, n_way: int) -> torch.Tensor:
    """[Q, S] pair logits -> [Q, n_way]: each class's best logit over its support images."""
    mask = F.one_hot(support_labels, n_way).T.bool()  # [n_way, S]
    return pairs[:, None, :].masked_fill(~mask[None], float("-inf")).amax(dim=-1)


def same_class_logits(
    pair_head: nn.Module, query: torch.Tensor, support: torch.Tensor
) -> torch.Tensor:
    """Same-class logits [Q, S] of query embeddings [Q, D] against support embeddings [S, D],
    by ``pair_head`` over each pair's absolute difference."""
    return pair_head((query[:, None] - support[None]).abs()).squeeze(-1)
