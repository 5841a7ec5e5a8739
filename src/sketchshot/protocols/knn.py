"""k-nearest-neighbour read-out of frozen encoder features (cosine similarity, majority
vote; Wu et al. 2018), the standard probe of a self-supervised representation.

It reads ``method.encoder``'s output only: never an SSL projection head nor a few-shot head.
Three settings over every evaluated class at once, each repeated over seeded draws:

- ``labelled fraction, k=5``: per draw, a ``labelled_fraction`` of each class's images is the
  labelled set, the rest are queries (held-out classes have no train set of their own, so the
  "full train set" kNN labels a seeded share of the evaluated images instead; the linear probe
  uses the same splits);
- ``1-shot, k=1`` and ``5-shot, k=3``: per draw, 1 or 5 images of each class are labelled,
  every other image is a query.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from sketchshot.protocols.labelled import check_class_sizes, draw_rng, labelled_split
from sketchshot.protocols.report import Figure, ProtocolReport, confusion_matrix

SHOT_SETTINGS = ((1, 1), (5, 3))  # (labelled images per class, k)
FULL_K = 5
FRACTION_TAG = 0x70726F62  # shared with the linear probe: the same draws, the same splits
TIE_BREAK = 1e-3  # less than one vote: only breaks ties, towards the more similar neighbours


@torch.no_grad()
def knn_predict(
    labelled: torch.Tensor,
    labelled_labels: torch.Tensor,
    queries: torch.Tensor,
    k: int,
    n_classes: int,
    chunk: int = 4096,
) -> torch.Tensor:
    """Class [Q] of each query [Q, D] by majority vote of its ``k`` most cosine-similar
    labelled embeddings [L, D] (labels [L]); a tie goes to the class whose tied neighbours
    are the more similar in sum."""
    reference = F.normalize(labelled, dim=-1)
    k = min(k, reference.shape[0])
    out = []
    for start in range(0, queries.shape[0], chunk):
        sims = F.normalize(queries[start : start + chunk], dim=-1) @ reference.T
        top = sims.topk(k, dim=1)
        weight = 1 + TIE_BREAK * top.values / k
        votes = torch.zeros(sims.shape[0], n_classes, device=sims.device, dtype=weight.dtype)
        out.append(votes.scatter_add_(1, labelled_labels[top.indices], weight).argmax(1))
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def _draws(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    n_classes: int,
    k: int,
    draws: int,
    seed: int,
    tag: int,
    n_shot: int | None = None,
    fraction: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy of each draw [draws] and the confusion [C, C] summed over the draws."""
    accuracies = np.empty(draws)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    device = embeddings.device
    for d in range(draws):
        lab, qry = labelled_split(labels, draw_rng(seed, d, tag), n_shot, fraction)
        lab_t, qry_t = torch.from_numpy(lab).to(device), torch.from_numpy(qry).to(device)
        predicted = knn_predict(
            embeddings[lab_t], labels.to(device)[lab_t], embeddings[qry_t], k, n_classes
        ).cpu()
        truth = labels.cpu()[torch.from_numpy(qry)]
        accuracies[d] = (predicted == truth).double().mean().item()
        confusion += confusion_matrix(truth.numpy(), predicted.numpy(), n_classes)
    return accuracies, confusion


def knn_protocol(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    class_names: tuple[str, ...],
    draws: int,
    labelled_fraction: float,
    seed: int,
) -> ProtocolReport:
    """The three kNN figures; the headline (and the confusion) is the labelled-fraction k=5."""
    check_class_sizes(labels, class_names, max(s for s, _ in SHOT_SETTINGS) + 1, "kNN 5-shot")
    n_classes = len(class_names)
    full, confusion = _draws(
        embeddings, labels, n_classes, FULL_K, draws, seed, FRACTION_TAG,
        fraction=labelled_fraction,
    )  # fmt: skip
    figures = [Figure.of(f"kNN {labelled_fraction:.0%} labelled, k={FULL_K}", full)]
    for n_shot, k in SHOT_SETTINGS:
        acc, _ = _draws(embeddings, labels, n_classes, k, draws, seed, n_shot, n_shot=n_shot)
        figures.append(Figure.of(f"kNN {n_shot}-shot, k={k}", acc))
    return ProtocolReport(figures, class_names, confusion)
