"""Prototypical Networks (Snell et al. 2017): classify a query by its distance to each class's
mean support embedding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sketchshot.config import ProtoNetSettings
from sketchshot.encoders import Encoder
from sketchshot.methods.base import METHODS, Scoring, prototypes
from sketchshot.methods.fewshot.base import FewShotMethod


@METHODS.register("protonet")
class ProtoNet(FewShotMethod):
    """distance="euclidean": logits are negative squared Euclidean distances, as in the paper;
    distance="cosine": cosine similarity times a learnable scale (initially 10)."""

    Settings = ProtoNetSettings

    def __init__(self, encoder: Encoder, settings: ProtoNetSettings | None = None) -> None:
        super().__init__(encoder, settings)
        self.distance = self.settings.distance
        self.log_scale = nn.Parameter(torch.tensor(2.3)) if self.distance == "cosine" else None

    def scoring(self) -> Scoring:
        if self.log_scale is None:
            return Scoring(
                "logits: negative squared Euclidean distance of each query embedding to each "
                "class mean of the support embeddings; probabilities: their softmax"
            )
        return Scoring(
            "logits: cosine similarity of each query embedding to each class mean of the "
            "support embeddings, times scale; probabilities: their softmax",
            {"scale": float(self.log_scale.detach().exp())},
        )

    def score(
        self, support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor, n_way: int
    ) -> torch.Tensor:
        """Logits [Q, n_way] for support [S, D] with labels [S] and query [Q, D]."""
        protos = prototypes(support, support_labels, n_way)
        if self.log_scale is None:
            return -torch.cdist(query, protos).pow(2)
        cos = F.normalize(query, dim=-1) @ F.normalize(protos, dim=-1).T
        return cos * self.log_scale.exp()
