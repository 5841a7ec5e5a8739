"""Shared part of the episodic few-shot methods (the easyfsl pattern)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sketchshot.data.episodes import Episode
from sketchshot.methods.base import Method, StepOutput, full_precision


class FewShotMethod(Method):
    """Trains on episodes: support and query images are encoded in one pass (one set of
    BatchNorm statistics), scored by ``score`` and trained with ``episode_loss``.

    An episode may also carry embeddings [N, D] instead of images (``--freeze-encoder``):
    then the encoder is skipped and only the method's head trains."""

    kind = "fewshot"

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of logits [Q, n_way] against labels [Q]; methods may override."""
        return F.cross_entropy(logits, labels)

    def episode_loss(
        self,
        support: torch.Tensor,
        support_labels: torch.Tensor,
        query: torch.Tensor,
        query_labels: torch.Tensor,
        n_way: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, logits [Q, n_way]) of one episode's embeddings; the default scores the
        queries and applies ``loss``."""
        logits = self.score(support, support_labels, query, n_way)
        return self.loss(logits, query_labels), logits

    def embed_episode(self, episode: Episode) -> tuple[torch.Tensor, torch.Tensor]:
        if episode.support.dim() == 2:  # cached embeddings of a frozen encoder
            return episode.support, episode.query
        n_support = episode.support.shape[0]
        embeddings = self.encoder(torch.cat([episode.support, episode.query]))
        return embeddings[:n_support], embeddings[n_support:]

    def training_step(self, episode: Episode) -> StepOutput:
        support, query = self.embed_episode(episode)
        with full_precision(support):  # scores and loss in float32 under autocast
            loss, logits = self.episode_loss(
                support.float(),
                episode.support_labels,
                query.float(),
                episode.query_labels,
                episode.n_way,
            )
        acc = (logits.argmax(1) == episode.query_labels).float().mean()
        return {"loss": loss, "metrics": {"acc": acc.detach()}}
