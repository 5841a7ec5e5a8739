"""Relation Networks (Sung et al. 2018): a learned relation module scores each
(query, class prototype) pair in [0, 1], trained with MSE against one-hot targets."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sketchshot.config import RelationSettings
from sketchshot.encoders import Encoder
from sketchshot.methods.base import METHODS, PairScoring, Scoring, prototypes
from sketchshot.methods.fewshot.base import FewShotMethod


@METHODS.register("relation")
class RelationNetworks(FewShotMethod):
    """The relation module is an MLP over the concatenated [query; prototype] embeddings
    (the encoders here end in vectors, not feature maps), ending in a sigmoid."""

    Settings = RelationSettings

    def __init__(self, encoder: Encoder, settings: RelationSettings | None = None) -> None:
        super().__init__(encoder, settings)
        d, hidden_dim = encoder.embedding_dim, self.settings.hidden_dim
        self.relation = nn.Sequential(
            nn.Linear(2 * d, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim // 2), nn.ReLU(),
            nn.Linear(hidden_dim // 2, 1),
        )  # fmt: skip

    def scoring(self) -> Scoring:
        return Scoring(
            "the scoring module gives relation scores in [0, 1] of each query embedding to each "
            "prototype, the class means of the support embeddings; probabilities: the scores "
            "divided by their sum",
            module=PairScoring(relation_scores, self.relation),
            inputs=("query", "prototypes"),
            output="relation",
        )

    def score(
        self, support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor, n_way: int
    ) -> torch.Tensor:
        """Relation scores [Q, n_way] in [0, 1] of query [Q, D] against class prototypes."""
        return relation_scores(self.relation, query, prototypes(support, support_labels, n_way))

    def probabilities(self, scores: torch.Tensor) -> torch.Tensor:
        """Relation scores are independent sigmoids: normalise them to sum to one."""
        return scores / scores.sum(dim=-1, keepdim=True).clamp(min=1e-8)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """MSE of relation scores against one-hot targets, as in the paper."""
        return F.mse_loss(logits, F.one_hot(labels, logits.shape[1]).to(logits.dtype))


def relation_scores(
    relation: nn.Module, query: torch.Tensor, prototypes: torch.Tensor
) -> torch.Tensor:
    """Relation scores [Q, C] in [0, 1] of query embeddings [Q, D] against prototypes [C, D]
    by ``relation`` over each concatenated [query; prototype] pair."""
    q, c = query.shape[0], prototypes.shape[0]
    pairs = torch.cat([query[:, None].expand(q, c, -1), prototypes[None].expand(q, c, -1)], -1)
    return torch.sigmoid(relation(pairs.flatten(0, 1))).view(q, c)
