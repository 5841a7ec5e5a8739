"""N-way K-shot Q-query episodes (Vinyals et al. 2016; Snell et al. 2017)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from sketchshot.errors import DataError


@dataclass(frozen=True)
class EpisodeIndex:
    """Dataset indices of one episode. Episode labels are 0..n_way-1 in ``classes`` order;
    support is class-major: [n_way * n_shot], query likewise [n_way * n_query]."""

    classes: np.ndarray
    support: np.ndarray
    query: np.ndarray
    n_way: int
    n_shot: int
    n_query: int

    @property
    def support_labels(self) -> torch.Tensor:
        return torch.arange(self.n_way).repeat_interleave(self.n_shot)

    @property
    def query_labels(self) -> torch.Tensor:
        return torch.arange(self.n_way).repeat_interleave(self.n_query)


@dataclass(frozen=True)
class Episode:
    """Images of one episode: support [n_way*n_shot, 1, S, S], query [n_way*n_query, 1, S, S]."""

    support: torch.Tensor
    support_labels: torch.Tensor
    query: torch.Tensor
    query_labels: torch.Tensor
    n_way: int

    def __len__(self) -> int:
        return int(self.support.shape[0] + self.query.shape[0])

    def augmented(self, views: Callable[[torch.Tensor], torch.Tensor]) -> Episode:
        """The episode with ``views`` applied to its support and query images at once."""
        n = self.support.shape[0]
        images = views(torch.cat([self.support, self.query]))
        return Episode(images[:n], self.support_labels, images[n:], self.query_labels, self.n_way)

    def to(self, device: torch.device) -> Episode:
        return Episode(
            self.support.to(device, non_blocking=True),
            self.support_labels.to(device, non_blocking=True),
            self.query.to(device, non_blocking=True),
            self.query_labels.to(device, non_blocking=True),
            self.n_way,
        )


def refuse_small_classes(
    counts: Sequence[int],
    class_names: Sequence[str],
    need: int,
    what: str,
    remedy: str = "drop them with --exclude-classes",
) -> None:
    """Refuse, naming up to five of them, the classes with fewer than ``need`` images (their
    ``counts``): the one "too few images" message, of what needs them ("a 1-shot 5-query
    episode") and of what to do."""
    small = [(name, n) for name, n in zip(class_names, counts, strict=True) if n < need]
    if small:
        listed = ", ".join(f"{name!r} ({n})" for name, n in small[:5])
        more = f" and {len(small) - 5} more" if len(small) > 5 else ""
        raise DataError(
            f"{what} needs {need} images per class; {len(small)} class(es) have fewer: "
            f"{listed}{more}; {remedy}"
        )


class EpisodeSampler:
    """Draws episodes from ``labels`` with a seeded generator.

    Fails loudly, naming the classes, when a class has fewer than ``n_shot + n_query`` items or
    there are fewer than ``n_way`` classes."""

    def __init__(
        self,
        labels: torch.Tensor,
        n_way: int,
        n_shot: int,
        n_query: int,
        class_names: tuple[str, ...] | None = None,
    ) -> None:
        labels_np = labels.cpu().numpy()
        n_classes = int(labels_np.max()) + 1 if labels_np.size else 0
        names = class_names or tuple(str(i) for i in range(n_classes))
        self.by_class = [np.flatnonzero(labels_np == c) for c in range(n_classes)]
        refuse_small_classes(
            [len(ix) for ix in self.by_class],
            names[:n_classes],
            n_shot + n_query,
            f"a {n_shot}-shot {n_query}-query episode",
            "lower --shots/--queries or drop them with --exclude-classes",
        )
        if n_classes < n_way:
            raise DataError(f"{n_way}-way episodes need {n_way} classes, the data has {n_classes}")
        self.n_way, self.n_shot, self.n_query = n_way, n_shot, n_query

    def sample(self, rng: np.random.Generator) -> EpisodeIndex:
        classes = rng.choice(len(self.by_class), self.n_way, replace=False)
        support, query = [], []
        for c in classes:
            pick = rng.choice(self.by_class[c], self.n_shot + self.n_query, replace=False)
            support.append(pick[: self.n_shot])
            query.append(pick[self.n_shot :])
        return EpisodeIndex(
            classes,
            np.concatenate(support),
            np.concatenate(query),
            self.n_way,
            self.n_shot,
            self.n_query,
        )

    def episodes(self, count: int, rng: np.random.Generator) -> Iterator[EpisodeIndex]:
        for _ in range(count):
            yield self.sample(rng)
