"""Matching Networks (Vinyals et al. 2016): a query's class distribution is an attention-
weighted sum of the support labels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sketchshot.config import MatchingSettings
from sketchshot.encoders import Encoder
from sketchshot.methods.base import METHODS, PairScoring, Scoring
from sketchshot.methods.fewshot.base import FewShotMethod


@METHODS.register("matching")
class MatchingNetworks(FewShotMethod):
    """attention="cosine": the paper's softmax over cosine similarities (with a learnable
    inverse temperature); attention="mlp": a learned MLP scores each [query; support] pair."""

    Settings = MatchingSettings

    def __init__(self, encoder: Encoder, settings: MatchingSettings | None = None) -> None:
        super().__init__(encoder, settings)
        self.attention, hidden_dim = self.settings.attention, self.settings.hidden_dim
        # exp(2.3) ~ 10; only the cosine attention has a scale (DDP refuses unused parameters)
        self.log_scale = nn.Parameter(torch.tensor(2.3)) if self.attention == "cosine" else None
        d = encoder.embedding_dim
        self.scorer = (
            nn.Sequential(nn.Linear(2 * d, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, 1))
            if self.attention == "mlp"
            else None
        )

    def attention_logits(self, support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """Unnormalised attention [Q, S] of each query over each support embedding."""
        if self.log_scale is not None:
            cos = F.normalize(query, dim=-1) @ F.normalize(support, dim=-1).T
            return cos * self.log_scale.exp()
        return pair_attention(self.scorer, query, support)

    def scoring(self) -> Scoring:
        weights = "each class's probability is the sum of the weights of its support embeddings"
        if self.log_scale is not None:
            return Scoring(
                "attention: softmax over the support embeddings of their cosine similarity to "
                f"the query embedding, times scale; {weights}",
                {"scale": float(self.log_scale.detach().exp())},
            )
        return Scoring(
            "the scoring module gives attention logits of each query embedding over each "
            f"support embedding; attention: their softmax over the support embeddings; {weights}",
            module=PairScoring(pair_attention, self.scorer),
            inputs=("query", "support"),
            output="attention_logits",
        )

    def score(
        self, support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor, n_way: int
    ) -> torch.Tensor:
        """Log class probabilities [Q, n_way] = log(softmax(attention) @ one_hot(labels))."""
        attention = self.attention_logits(support, query).softmax(dim=-1)  # [Q, S]
        probs = attention @ F.one_hot(support_labels, n_way).to(attention.dtype)
        return probs.clamp(min=1e-8).log()


def pair_attention(scorer: nn.Module, query: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """Attention logits [Q, S] of query embeddings [Q, D] over support embeddings [S, D], by
    ``scorer`` over each concatenated [query; support] pair."""
    q, s = query.shape[0], support.shape[0]
    pairs = torch.cat([query[:, None].expand(q, s, -1), support[None].expand(q, s, -1)], -1)
    return scorer(pairs).squeeze(-1)
