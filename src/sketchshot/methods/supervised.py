"""Supervised classification: a linear head over the train classes on any encoder, trained on
labelled batches with cross-entropy, focal or combined losses on soft targets (label
smoothing, mixup, cutmix), and optionally an exponential moving average (EMA) of the weights."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sketchshot.config import SupervisedSettings
from sketchshot.encoders import Encoder
from sketchshot.methods.base import METHODS, Method, Scoring, StepOutput, full_precision
from sketchshot.methods.ssl.byol import ema_update
from sketchshot.protocols.metrics import macro_f1

EMA_WARMUP = 10  # the average's decay at update t is min(ema_decay, t / (t + EMA_WARMUP))


@dataclass(frozen=True)
class LabelledBatch:
    """Images [B, 1, S, S] (or embeddings [B, D] of a frozen encoder) and labels [B];
    unpacks as ``images, labels``."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter((self.images, self.labels))

    def to(self, device: torch.device) -> LabelledBatch:
        return LabelledBatch(
            self.images.to(device, non_blocking=True), self.labels.to(device, non_blocking=True)
        )


def soft_targets(labels: torch.Tensor, n_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """One-hot targets [B, n_classes] of labels [B], with ``smoothing`` of each spread evenly
    over the classes (label smoothing, Szegedy et al. 2016)."""
    return F.one_hot(labels, n_classes).float() * (1 - smoothing) + smoothing / n_classes


def focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    gamma: float,
    alpha: float | None = None,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Focal loss (Lin et al. 2017) of logits [B, C] against soft targets [B, C]: the batch
    mean of ``-alpha * sum_c w_c t_c (1 - p_c) ** gamma * log p_c``. With gamma 0 and no
    alpha it is ``F.cross_entropy(logits, targets, weight=w)``."""
    log_p = logits.log_softmax(dim=-1)
    terms = -targets * (1 - log_p.exp()).pow(gamma) * log_p
    if weight is not None:
        terms = terms * weight
    loss = terms.sum(dim=-1).mean()
    return loss if alpha is None else alpha * loss


def inverse_frequency_weights(counts: torch.Tensor) -> torch.Tensor:
    """Class weights [C] proportional to 1 / count of each class [C], normalised to mean 1."""
    weights = 1.0 / counts.float().clamp(min=1)
    return weights / weights.mean()


def mixup(
    images: torch.Tensor, targets: torch.Tensor, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup (Zhang et al. 2018): each image [B, ...] and target [B, C] blended with the
    batch's reverse (a shuffled batch: a random partner), ``lam * x + (1 - lam) * partner``."""
    return (
        lam * images + (1 - lam) * images.flip(0),
        lam * targets + (1 - lam) * targets.flip(0),
    )


def cutmix_box(h: int, w: int, lam: float) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of a box of about ``1 - lam`` of an h x w image, centred
    uniformly at random and clipped to the image (Yun et al. 2019)."""
    side = math.sqrt(1 - lam)
    cut_h, cut_w = int(h * side), int(w * side)
    cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
    top, left = max(cy - cut_h // 2, 0), max(cx - cut_w // 2, 0)
    return top, min(cy - cut_h // 2 + cut_h, h), left, min(cx - cut_w // 2 + cut_w, w)


def cutmix(
    images: torch.Tensor, targets: torch.Tensor, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """CutMix (Yun et al. 2019): a box of about ``1 - lam`` of the area pasted into each image
    [B, 1, S, S] from its partner in the batch's reverse; the targets [B, C] mixed by the
    share of the area each image keeps."""
    if images.dim() != 4:
        raise ValueError("cutmix pastes boxes of images [B, 1, S, S], not embeddings")
    h, w = images.shape[-2:]
    top, bottom, left, right = cutmix_box(h, w, lam)
    mixed = images.clone()
    mixed[..., top:bottom, left:right] = images.flip(0)[..., top:bottom, left:right]
    kept = 1 - (bottom - top) * (right - left) / (h * w)
    return mixed, kept * targets + (1 - kept) * targets.flip(0)


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Accuracy, macro-F1 (``macro_f1``: as ``evaluate --protocol classifier`` reports it) and
    cross-entropy of logits [N, C] against labels [N]."""
    predicted = logits.argmax(1)
    return {
        "acc": float((predicted == labels).float().mean()),
        "macro_f1": macro_f1(labels.cpu().numpy(), predicted.cpu().numpy(), logits.shape[1]),
        "loss": float(F.cross_entropy(logits.float(), labels)),
    }


@METHODS.register("supervised")
class Supervised(Method):
    """images [B, 1, S, S] -> encoder [B, D] -> linear head [B, n_classes], trained on
    ``LabelledBatch``es. ``class_weights`` [n_classes] weigh the loss per class (the engine
    passes them for ``class_weights="auto"``; they are not saved). With ``ema_decay``, the
    ``average`` (a Supervised without one) follows the weights after every step.

    Few-shot evaluation, kNN, enroll and predict read the encoder's features like any other
    method's (``score``: cosine prototypes); ``logits`` puts the head on them."""

    kind = "supervised"
    Settings = SupervisedSettings

    def __init__(
        self,
        encoder: Encoder,
        settings: SupervisedSettings | None = None,
        class_weights: torch.Tensor | None = None,
    ) -> None:
        super().__init__(encoder, settings)
        s = self.settings
        if s.n_classes is None:
            raise ValueError("a supervised method needs n_classes, the classes of its head")
        if class_weights is not None and class_weights.shape != (s.n_classes,):
            raise ValueError(f"class_weights must be [{s.n_classes}], not {class_weights.shape}")
        self.head = nn.Linear(encoder.embedding_dim, s.n_classes)
        self.register_buffer("class_weights", class_weights, persistent=False)
        self.average: Supervised | None = None
        if s.ema_decay is not None:
            average = Supervised(copy.deepcopy(encoder), s.model_copy(update={"ema_decay": None}))
            average.head.load_state_dict(self.head.state_dict())
            self.average = average.requires_grad_(False)
            self.register_buffer("average_updates", torch.zeros((), dtype=torch.long))
            self.register_load_state_dict_pre_hook(_average_from_weights)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """Class logits [B, n_classes] of encoder features [B, D]."""
        return self.head(features)

    def scoring(self) -> Scoring:
        few_shot = super().scoring()
        return Scoring(
            "the scoring module is the classifier head: logits [B, n_classes] of the train "
            f"classes (class_names) from embeddings; few-shot classes: {few_shot.rule}",
            module=self.head,
            inputs=("embeddings",),
            output="logits",
        )

    def training_step(self, batch: LabelledBatch) -> StepOutput:
        images, labels = batch
        s = self.settings
        targets = soft_targets(labels, self.head.out_features, s.label_smoothing)
        images, targets = self.mixed(images, targets)
        features = images if images.dim() == 2 else self.encoder(images)
        with full_precision(features):  # the head and the loss in float32 under autocast
            logits = self.logits(features.float())
            loss = self.loss(logits, targets)
        acc = (logits.argmax(1) == targets.argmax(1)).float().mean()  # the larger mixed part
        return {"loss": loss, "metrics": {"acc": acc.detach()}}

    def mixed(
        self, images: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch after mixup or cutmix, with probability ``mix_p``; cutmix with probability
        ``switch_p`` when both are on. One lambda ~ Beta(alpha, alpha) per batch."""
        s = self.settings
        if (s.mixup_alpha == 0 and s.cutmix_alpha == 0) or float(torch.rand(())) >= s.mix_p:
            return images, targets
        cut = s.cutmix_alpha > 0 and (s.mixup_alpha == 0 or float(torch.rand(())) < s.switch_p)
        alpha = torch.tensor(s.cutmix_alpha if cut else s.mixup_alpha)
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        return cutmix(images, targets, lam) if cut else mixup(images, targets, lam)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The settings' loss of logits [B, C] against soft targets [B, C]."""
        s, weight = self.settings, self.class_weights
        if s.loss == "ce":
            return F.cross_entropy(logits, targets, weight=weight)
        focal = focal_loss(logits, targets, s.focal_gamma, s.focal_alpha, weight)
        if s.loss == "focal":
            return focal
        ce = F.cross_entropy(logits, targets, weight=weight)
        return s.focal_weight * focal + (1 - s.focal_weight) * ce

    def after_step(self, progress: float) -> None:
        """Move the average towards the weights: ``average = m * average + (1 - m) * weights``
        with ``m = min(ema_decay, t / (t + EMA_WARMUP))`` at the t-th update (from 0), so that
        it starts at the first step's weights and a short run is not averaged with its start."""
        if self.average is None:
            return
        t = int(self.average_updates)
        m = min(self.settings.ema_decay, t / (t + EMA_WARMUP))
        ema_update(self.average.encoder, self.encoder, m)
        ema_update(self.average.head, self.head, m)
        self.average_updates.add_(1)

    def inference_model(self) -> Method:
        return self.average if self.average is not None else self


def _average_from_weights(module: Supervised, state: dict[str, Any], prefix: str, *_: Any) -> None:
    """Load pre-hook: a saved model holds the average as the network's own weights, with no
    ``average.*`` (``inference_model``); loading one starts the average from them. A full
    state (``checkpoints/last``, which keeps both) loads as it is, strictly."""
    own = f"{prefix}average."
    if module.average is None or any(k.startswith(own) for k in state):
        return
    for key in module.average.state_dict():
        if prefix + key in state:
            state[own + key] = state[prefix + key]
    state.setdefault(f"{prefix}average_updates", torch.zeros((), dtype=torch.long))
