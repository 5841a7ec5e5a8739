"""Shared part of the episodic few-shot methods (the easyfsl pattern)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sketchshot.data.episodes import Episode
from sketchshot.data.views import SketchAugment
from sketchshot.encoders import Encoder
from sketchshot.methods.base import Method, StepOutput


class FewShotMethod(Method):
    """Trains on episodes: support and query images are encoded in one pass (one set of
    BatchNorm statistics), scored by ``score`` and trained with ``loss``."""

    kind = "fewshot"

    def __init__(self, encoder: Encoder, augment_strength: float = 0.0) -> None:
        super().__init__(encoder)
        self.augment = SketchAugment(augment_strength, thickness_p=0.0, erase_p=0.0)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of logits [Q, n_way] against labels [Q]; methods may override."""
        return F.cross_entropy(logits, labels)

    def training_step(self, episode: Episode) -> StepOutput:
        n_support = episode.support.shape[0]
        images = self.augment(torch.cat([episode.support, episode.query]))
        embeddings = self.encoder(images)
        support, query = embeddings[:n_support], embeddings[n_support:]
        logits = self.score(support, episode.support_labels, query, episode.n_way)
        loss = self.loss(logits, episode.query_labels)
        acc = (logits.argmax(1) == episode.query_labels).float().mean()
        return {"loss": loss, "metrics": {"acc": acc.detach()}}
