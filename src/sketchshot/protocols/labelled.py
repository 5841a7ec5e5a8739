"""Seeded per-class labelled/query splits of the evaluated images, shared by the kNN and
linear-probe read-outs (the same seed and draw give both the same split)."""

from __future__ import annotations

import numpy as np
import torch

from sketchshot.errors import DataError


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


def check_class_sizes(
    labels: torch.Tensor, class_names: tuple[str, ...], need: int, what: str
) -> None:
    """Refuse, naming them, classes with fewer than ``need`` images."""
    counts = torch.bincount(labels, minlength=len(class_names)).tolist()
    small = [(name, n) for name, n in zip(class_names, counts, strict=True) if n < need]
    if small:
        listed = ", ".join(f"{name!r} ({n})" for name, n in small[:5])
        more = f" and {len(small) - 5} more" if len(small) > 5 else ""
        raise DataError(
            f"{what} needs {need} images per class; {len(small)} class(es) have fewer: "
            f"{listed}{more}; drop them with --exclude-classes"
        )
    if len(class_names) < 2:
        raise DataError(f"{what} needs at least 2 classes, the data has {len(class_names)}")
