"""Batches of images for self-supervised training, sharded across DDP ranks."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from sketchshot.errors import ConfigError


def shuffled_batches(
    n_items: int, batch_size: int, rng: np.random.Generator, rank: int = 0, world: int = 1
) -> Iterator[np.ndarray]:
    """Indices of one epoch: a seeded permutation, this rank's share of it, in full batches."""
    order = rng.permutation(n_items)[rank::world]
    for start in range(0, len(order) - batch_size + 1, batch_size):
        yield order[start : start + batch_size]


class UniqueClassBatchSampler:
    """Batches whose images all come from different classes, so that no SimCLR negative is
    secretly a positive. Each epoch visits every image at most once; classes with more
    images left are drawn more often."""

    def __init__(self, labels: torch.Tensor, batch_size: int) -> None:
        labels_np = labels.cpu().numpy()
        self.by_class = [np.flatnonzero(labels_np == c) for c in range(int(labels_np.max()) + 1)]
        self.by_class = [ix for ix in self.by_class if len(ix)]
        if batch_size > len(self.by_class):
            raise ConfigError(
                f"unique-class batches of {batch_size} need {batch_size} classes, the data has "
                f"{len(self.by_class)}; lower --batch-size"
            )
        self.batch_size = batch_size

    def batches(
        self, rng: np.random.Generator, rank: int = 0, world: int = 1
    ) -> Iterator[np.ndarray]:
        queues = [list(rng.permutation(ix)) for ix in self.by_class]
        batches = []
        while True:
            left = np.array([len(q) for q in queues], dtype=float)
            if (left > 0).sum() < self.batch_size:
                break
            classes = rng.choice(len(queues), self.batch_size, replace=False, p=left / left.sum())
            batches.append(np.array([queues[c].pop() for c in classes]))
        # every rank draws the same sequence and keeps its share, all shares the same length
        usable = len(batches) - len(batches) % world
        yield from batches[rank:usable:world]
