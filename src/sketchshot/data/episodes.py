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


def class_groups(class_names: Sequence[str]) -> np.ndarray:
    """The top-level group of each class, as indices: ``Greek/alpha`` and ``Greek/beta@rot90``
    share the group ``Greek``; a class name without a ``/`` is a group of its own."""
    tops = [name.split("/", 1)[0] if "/" in name else name for name in class_names]
    lookup = {top: i for i, top in enumerate(dict.fromkeys(tops))}
    return np.asarray([lookup[top] for top in tops], dtype=np.int64)


class EpisodeSampler:
    """Draws episodes from ``labels`` with a seeded generator.

    With ``within_groups`` p > 0, that share of the episodes takes all its classes from one
    top-level group (an alphabet: similar characters, the hard negatives of Omniglot's
    one-shot runs). Such a group is drawn in proportion to its classes among the groups that
    have at least ``n_way``; with p = 1 and none, or with no group of ``n_way`` classes at all,
    it fails.

    Fails loudly, naming the classes, when a class has fewer than ``n_shot + n_query`` items or
    there are fewer than ``n_way`` classes."""

    def __init__(
        self,
        labels: torch.Tensor,
        n_way: int,
        n_shot: int,
        n_query: int,
        class_names: tuple[str, ...] | None = None,
        within_groups: float = 0.0,
    ) -> None:
        labels_np = labels.cpu().numpy()
        n_classes = int(labels_np.max()) + 1 if labels_np.size else 0
        names = class_names or tuple(str(i) for i in range(n_classes))
        self.names = names[:n_classes]
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
        self.within_groups = within_groups
        self.group_classes: list[np.ndarray] = []
        if within_groups > 0:
            groups = class_groups(names[:n_classes])
            members = [np.flatnonzero(groups == g) for g in range(int(groups.max()) + 1)]
            self.group_classes = [m for m in members if m.size >= n_way]
            if not self.group_classes:
                largest = max(m.size for m in members)
                raise DataError(
                    f"{n_way}-way episodes within one group need a group of {n_way} classes; "
                    f"the largest has {largest} (groups are the top-level folders)"
                )
            self.group_weights = np.asarray([m.size for m in self.group_classes], dtype=float)
            self.group_weights /= self.group_weights.sum()

    @property
    def left_out_groups(self) -> int:
        """Groups too small for a ``n_way``-way episode of their own (never drawn within)."""
        if not self.group_classes:
            return 0
        return len(set(class_groups(self.names).tolist())) - len(self.group_classes)

    def sample(self, rng: np.random.Generator) -> EpisodeIndex:
        pool: int | np.ndarray = len(self.by_class)
        p = self.within_groups
        if p >= 1 or (p > 0 and rng.random() < p):
            pool = self.group_classes[rng.choice(len(self.group_classes), p=self.group_weights)]
        classes = rng.choice(pool, self.n_way, replace=False)
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
