"""Seeded per-class labelled/query splits of the evaluated images, shared by the kNN and
linear-probe read-outs (the same seed and draw give both the same split), and the loop that
scores a read-out over its draws."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from sketchshot.data.episodes import refuse_small_classes
from sketchshot.errors import DataError
from sketchshot.protocols.metrics import confusion_matrix

# Classes [Q] of the queries from dataset indices (labelled [L], queries [Q]) on the device
ReadOut = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def draw_rng(seed: int, draw: int, tag: int) -> np.random.Generator:
    """The generator of one draw: ``tag`` keeps the settings' draws independent."""
    return np.random.default_rng([seed, draw, tag])


def labelled_split(
    labels: torch.Tensor,
    rng: np.random.Generator,
    n_shot: int | None = None,
    fraction: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Dataset indices (labelled [L], queries [Q]) of one draw: of every class, ``n_shot``
    random images (or a ``fraction`` of them, at least one) are labelled, the rest are
    queries; at least one query per class is kept."""
    labels_np = labels.cpu().numpy()
    labelled, queries = [], []
    for c in range(int(labels_np.max()) + 1 if labels_np.size else 0):
        members = rng.permutation(np.flatnonzero(labels_np == c))
        if n_shot is not None:
            take = n_shot
        else:
            assert fraction is not None
            take = min(len(members) - 1, max(1, round(fraction * len(members))))
        labelled.append(members[:take])
        queries.append(members[take:])
    return np.concatenate(labelled), np.concatenate(queries)


def score_draws(
    read_out: ReadOut,
    labels: torch.Tensor,
    n_classes: int,
    draws: int,
    seed: int,
    tag: int,
    n_shot: int | None = None,
    fraction: float | None = None,
    device: torch.device | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy of each draw [draws] of ``read_out`` on its queries, and the confusion [C, C]
    summed over the draws; each draw labels ``n_shot`` images (or a ``fraction``) per class."""
    accuracies = np.empty(draws)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    truth_all = labels.cpu().numpy()
    for d in range(draws):
        lab, qry = labelled_split(labels, draw_rng(seed, d, tag), n_shot, fraction)
        lab_t, qry_t = torch.from_numpy(lab).to(device), torch.from_numpy(qry).to(device)
        predicted, truth = read_out(lab_t, qry_t).cpu().numpy(), truth_all[qry]
        accuracies[d] = float((predicted == truth).mean())
        confusion += confusion_matrix(truth, predicted, n_classes)
    return accuracies, confusion


def check_class_sizes(
    labels: torch.Tensor, class_names: tuple[str, ...], need: int, what: str
) -> None:
    """Refuse, naming them, classes with fewer than ``need`` images, and a single class."""
    counts = torch.bincount(labels, minlength=len(class_names)).tolist()
    refuse_small_classes(counts, class_names, need, what)
    if len(class_names) < 2:
        raise DataError(f"{what} needs at least 2 classes, the data has {len(class_names)}")
