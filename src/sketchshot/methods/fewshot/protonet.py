"""Prototypical Networks (Snell et al. 2017): classify a query by its squared Euclidean
distance to each class's mean support embedding."""

from __future__ import annotations

import torch

from sketchshot.methods.base import METHODS, prototypes
from sketchshot.methods.fewshot.base import FewShotMethod


@METHODS.register("protonet")
class ProtoNet(FewShotMethod):
    def score(
        self, support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor, n_way: int
    ) -> torch.Tensor:
        """Logits [Q, n_way] = -||query - prototype||^2 for support [S, D], query [Q, D]."""
        protos = prototypes(support, support_labels, n_way)
        return -torch.cdist(query, protos).pow(2)
