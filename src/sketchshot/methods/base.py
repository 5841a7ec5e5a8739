"""The base every method subclasses, and the method registry.

A method wraps an encoder, owns its loss, and exposes ``training_step(batch)`` to the one
training loop (``sketchshot.training.fit``) and ``score(...)`` to episode evaluation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypedDict

import torch
import torch.nn.functional as F
from torch import nn

from sketchshot.config import MethodSettings
from sketchshot.encoders import Encoder
from sketchshot.registry import Registry

METHODS: Registry[Method] = Registry("method")

COSINE_TEMPERATURE = 0.1


class StepOutput(TypedDict):
    """What ``training_step`` returns to the loop."""

    loss: torch.Tensor  # scalar, to minimise
    metrics: dict[str, torch.Tensor]  # scalars to log (accuracy of the step, ...)


@dataclass(frozen=True)
class Scoring:
    """How a method scores query embeddings against support embeddings, as ``export`` writes it
    down: the rule in words and the learned scalars it uses, and, where the scoring is learned,
    the module that does it on embeddings alone: ``module(*inputs)``, each input [N_i, D] with
    N_i free, returns ``output``."""

    rule: str
    parameters: dict[str, float] = field(default_factory=dict)
    module: nn.Module | None = None
    inputs: tuple[str, ...] = ()
    output: str = ""


class PairScoring(nn.Module):
    """``score(head, query, support)`` as a module of (query [Q, D], support [S, D]) around a
    learned ``head``: a method's pairwise scoring on embeddings alone, for export."""

    def __init__(
        self,
        score: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor],
        head: nn.Module,
    ) -> None:
        super().__init__()
        self.score = score
        self.head = head

    def forward(self, query: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        return self.score(self.head, query, support)


class Method(nn.Module):
    """An encoder plus what a method adds to it (heads, target networks). Its typed settings
    (``Settings``, in sketchshot.config) hold its defaults; views are the data side's."""

    kind: ClassVar[Literal["ssl", "fewshot", "supervised", "pairwise"]]
    Settings: ClassVar[type[MethodSettings]]

    def __init__(self, encoder: Encoder, settings: MethodSettings | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.settings = settings if settings is not None else self.Settings()

    def training_step(self, batch: Any) -> StepOutput:
        raise NotImplementedError

    def forward(self, batch: Any) -> StepOutput:
        """The training step, so that a DistributedDataParallel wrapper syncs gradients."""
        return self.training_step(batch)

    def parameter_groups(self, head_lr_scale: float = 1.0) -> list[dict[str, Any]]:
        """Optimiser groups: the encoder's trainable parameters, then the method's own (its
        head), whose learning rate is scaled by ``head_lr_scale``."""
        encoder = [p for p in self.encoder.parameters() if p.requires_grad]
        mine = {id(p) for p in self.encoder.parameters()}
        head = [p for p in self.parameters() if p.requires_grad and id(p) not in mine]
        groups = [{"params": encoder, "lr_scale": 1.0}, {"params": head, "lr_scale": head_lr_scale}]
        return [g for g in groups if g["params"]]

    def probabilities(self, scores: torch.Tensor) -> torch.Tensor:
        """Class probabilities [Q, n_way] from ``score``'s output (a softmax of logits)."""
        return scores.softmax(dim=-1)

    def after_step(self, progress: float) -> None:
        """Called after each optimiser step with training progress in [0, 1] (EMA updates)."""

    def inference_model(self) -> Method:
        """The model that validation scores and that a saved ``model.safetensors`` holds: the
        method itself, or the average of its weights where it keeps one (EMA)."""
        return self

    def scoring(self) -> Scoring:
        """What ``score`` does, for a model exported without its Python code."""
        return Scoring(
            f"logits: cosine similarity of each query embedding to each class mean of the "
            f"support embeddings, divided by {COSINE_TEMPERATURE}; probabilities: their softmax"
        )

    def score(
        self, support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor, n_way: int
    ) -> torch.Tensor:
        """Logits [Q, n_way] of query embeddings [Q, D] given support embeddings [S, D] and
        their labels [S] in 0..n_way-1. The default is cosine similarity to class prototypes,
        divided by ``COSINE_TEMPERATURE`` so that a softmax gives usable confidences."""
        protos = F.normalize(prototypes(support, support_labels, n_way), dim=-1)
        return F.normalize(query, dim=-1) @ protos.T / COSINE_TEMPERATURE


def full_precision(x: torch.Tensor) -> torch.autocast:
    """Autocast off on ``x``'s device: what a method computes inside, on ``.float()`` inputs,
    is float32 under the loop's bf16 or fp16 autocast. Losses and scores need it (bf16 keeps 8
    bits of mantissa: a similarity matrix or a difference of two logits would lose most of
    theirs); the encoder, where the compute is, runs in the low precision."""
    return torch.autocast(x.device.type, enabled=False)


def prototypes(support: torch.Tensor, labels: torch.Tensor, n_way: int) -> torch.Tensor:
    """Class means [n_way, D] of support embeddings [S, D] with labels [S] in 0..n_way-1."""
    onehot = F.one_hot(labels, n_way).to(support.dtype)  # [S, n_way]; a matmul, not a scatter
    return (onehot.T @ support) / onehot.sum(0).clamp(min=1)[:, None]


def create_method(
    name: str, encoder: Encoder, settings: MethodSettings | None = None, **args: Any
) -> Method:
    """Method ``name`` over ``encoder`` with its typed settings, or settings made from
    ``args`` (a pydantic ValidationError, a ValueError, names a bad one)."""
    cls = METHODS.get(name)
    if settings is None:
        settings = cls.Settings(**args)
    elif args:
        settings = cls.Settings(**{**settings.arguments(), **args})
    if not isinstance(settings, cls.Settings):
        raise TypeError(f"{name} takes {cls.Settings.__name__}, not {type(settings).__name__}")
    return cls(encoder, settings)
