"""What every evaluation protocol returns: its figures (mean and 95% CI over repetitions) and
a confusion matrix, from which per-class accuracy and the hardest classes are read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sketchshot.evaluation import mean_ci95


@dataclass(frozen=True)
class Figure:
    """One reported accuracy: the mean over ``repeats`` (episodes, draws or runs), the
    half-width of its 95% confidence interval, the number of classes each query is told
    among (``n_way``) and ``chance``, the expected accuracy of a uniform guess among them
    (1 / n_way). ``name`` says all of it: "106-way kNN 1-shot, k=1 (chance 0.9%)"."""

    name: str
    accuracy: float
    ci95: float
    repeats: int
    n_way: int
    chance: float

    @classmethod
    def of(cls, n_way: int, setting: str, accuracies: np.ndarray) -> Figure:
        """The figure of an ``n_way`` read-out in ``setting`` ("1-shot, 5 queries", "kNN
        1-shot, k=1") from the accuracy of each repeat [repeats]."""
        mean, ci95 = mean_ci95(np.asarray(accuracies, dtype=float))
        chance = 1 / n_way
        name = f"{n_way}-way {setting} (chance {percent(chance)})"
        return cls(name, mean, ci95, int(np.size(accuracies)), n_way, chance)

    def accuracy_text(self, repeats: str = "repeats") -> str:
        """The accuracy in words for a picture's title: "accuracy 62.31% ± 0.95% (95% CI over
        600 episodes)"."""
        if np.isnan(self.ci95):
            return f"accuracy {100 * self.accuracy:.2f}% ({self.repeats} {repeats})"
        return (
            f"accuracy {100 * self.accuracy:.2f}% ± {100 * self.ci95:.2f}% "
            f"(95% CI over {self.repeats} {repeats})"
        )


def percent(share: float) -> str:
    """``share`` as a percentage with one decimal ("0.9%"), two significant digits below
    0.1% (where one decimal would read 0.0%)."""
    return f"{100 * share:.1f}%" if share >= 0.001 else f"{100 * share:.2g}%"


@dataclass(frozen=True)
class ProtocolReport:
    """``figures[0]`` is the protocol's headline figure; ``confusion`` [C, C] (rows: true class,
    columns: predicted, over ``class_names``) counts the predictions behind it, None where
    classes are not shared across repeats (Omniglot's runs)."""

    figures: list[Figure]
    class_names: tuple[str, ...]
    confusion: np.ndarray | None
    details: dict[str, Any] = field(default_factory=dict)


def per_class_accuracy(
    confusion: np.ndarray, class_names: tuple[str, ...]
) -> dict[str, dict[str, Any]]:
    """``{class: {"correct", "total", "accuracy"}}`` for every class with at least one query."""
    correct, total = np.diag(confusion), confusion.sum(axis=1)
    return {
        name: {"correct": int(c), "total": int(t), "accuracy": float(c / t)}
        for name, c, t in zip(class_names, correct, total, strict=True)
        if t > 0
    }


def hardest_classes(per_class: dict[str, dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """The ``count`` classes of lowest accuracy (ties: fewer queries right, then by name)."""
    order = sorted(per_class.items(), key=lambda kv: (kv[1]["accuracy"], kv[1]["correct"], kv[0]))
    return [{"class": name, **figures} for name, figures in order[:count]]
