"""The classifier protocol: a supervised model's own head on every evaluated image of the
classes it was trained on (data split by images). Top-1 (95% CI over the images), top-5,
macro-F1, per-class precision and recall, and the confusion matrix."""

from __future__ import annotations

import torch

from sketchshot.errors import ConfigError
from sketchshot.methods import Method
from sketchshot.protocols.metrics import confusion_matrix, macro_f1, precision_recall_f1
from sketchshot.protocols.report import Figure, ProtocolReport

TOP_K = 5


@torch.no_grad()
def classify_protocol(
    method: Method,
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    class_names: tuple[str, ...],
    model_classes: tuple[str, ...],
) -> ProtocolReport:
    """Score ``method.logits`` on ``embeddings`` [N, D] of images labelled [N] among
    ``class_names``, which must all be classes of the model (``model_classes``, its head's
    order). Macro-F1 averages over the evaluated classes that have images."""
    logits_of = getattr(method, "logits", None)
    if logits_of is None:
        raise ConfigError(
            "--protocol classifier needs a model with a classification head "
            "(finetune --method supervised); use episodes or knn for this one"
        )
    unknown = [c for c in class_names if c not in model_classes]
    if unknown:
        raise ConfigError(
            f"the model was not trained on {len(unknown)} of these classes ({unknown[0]!r}, "
            "...): the classifier protocol evaluates the classes it was trained on "
            "(--split-by images)"
        )
    index = torch.tensor([model_classes.index(c) for c in class_names], dtype=torch.long)
    truth = index[labels.cpu()].numpy()
    logits = logits_of(embeddings).float().cpu()
    k = min(TOP_K, logits.shape[1])
    top = logits.topk(k, dim=1).indices.numpy()
    correct = (top[:, 0] == truth).astype(float)
    in_top = (top == truth[:, None]).any(axis=1).astype(float)
    n = len(model_classes)
    confusion = confusion_matrix(truth, top[:, 0], n)
    precision, recall, f1 = precision_recall_f1(confusion)
    present = confusion.sum(axis=1) > 0
    figures = [
        Figure.of(n, "classifier top-1", correct),
        Figure.of(n, f"classifier top-{k}", in_top),
    ]
    per_class = {
        name: {"precision": float(precision[i]), "recall": float(recall[i]),
               "f1": float(f1[i]), "support": int(confusion[i].sum())}
        for i, name in enumerate(model_classes) if present[i]
    }  # fmt: skip
    details = {"macro_f1": macro_f1(truth, top[:, 0], n), "per_class": per_class,
               "images": len(truth)}  # fmt: skip
    return ProtocolReport(figures, model_classes, confusion, details)
