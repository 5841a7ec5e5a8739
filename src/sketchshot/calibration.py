"""Reject thresholds for out-of-set sketches, calibrated on a class bank's own embeddings.

Each episode holds one class of the bank out as the "unknown": up to ``UNKNOWN_PER_EPISODE`` of
its embeddings are scored against the bank without that class. One embedding of each of up to
``KNOWN_PER_EPISODE`` other classes is held out of the support and scored against the whole
bank, as a new drawing of a known class would be. The statistic is ``nearest_class_similarity``
(what ``predict`` reports as ``similarity``): the cosine similarity of a drawing's features to
the nearest class mean.

The threshold is the lowest that rejects at most a target share of the known queries (5% by
default): a user knows what it costs on their own classes, and a weak model cannot drive it to
rejecting most inputs. The share of unknown queries it lets through is measured and stored
beside it."""

from __future__ import annotations

import numpy as np
import torch

from sketchshot.bank import ClassBank, RejectThreshold, nearest_class_similarity
from sketchshot.errors import DataError

MAX_EPISODES = 200  # each class is the unknown once, up to this many classes
KNOWN_PER_EPISODE = 20
UNKNOWN_PER_EPISODE = 5
DEFAULT_FALSE_REJECT = 0.05


def pick_threshold(
    known: np.ndarray, unknown: np.ndarray, false_reject: float
) -> tuple[float, float, float]:
    """(threshold, false-reject rate, false-accept rate): the highest threshold (a query is
    accepted when its statistic >= threshold) that rejects at most ``false_reject`` of the
    ``known`` values; the rates are measured on ``known`` and ``unknown``."""
    if known.size == 0 or unknown.size == 0:
        raise ValueError("need both known and unknown scores")
    ranked = np.sort(known.astype(np.float64))
    allowed = min(int(np.floor(false_reject * ranked.size + 1e-9)), ranked.size - 1)
    threshold = float(ranked[allowed])
    return threshold, float(np.mean(known < threshold)), float(np.mean(unknown >= threshold))


@torch.no_grad()
def open_set_scores(
    embeddings: torch.Tensor, labels: torch.Tensor, n_classes: int, seed: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Similarities of known and of unknown queries over leave-one-class-out episodes
    drawn from embeddings [N, D] with labels [N]; returns (known, unknown, episodes)."""
    counts = torch.bincount(labels.cpu(), minlength=n_classes)
    several = (counts >= 2).nonzero().flatten().tolist()
    if n_classes < 3 or len(several) < 2:
        raise DataError(
            "calibrating a reject threshold needs at least 3 classes, 2 of them with 2 or more "
            f"images (one is held out as a query); the bank has {n_classes} class(es), "
            f"{len(several)} with 2 or more"
        )
    rng = np.random.default_rng([seed, 0x72656A])
    members = [(labels == c).nonzero().flatten() for c in range(n_classes)]
    known: list[np.ndarray] = []
    unknown: list[np.ndarray] = []
    episodes = rng.permutation(n_classes)[:MAX_EPISODES]
    for held_class in episodes.tolist():
        pool = [c for c in several if c != held_class]
        chosen = rng.choice(pool, size=min(KNOWN_PER_EPISODE, len(pool)), replace=False)
        held = torch.stack([members[c][int(rng.integers(counts[c]))] for c in chosen.tolist()])
        outsiders = members[held_class]
        outsiders = outsiders[torch.from_numpy(rng.permutation(len(outsiders)))]
        rest = labels != held_class
        without_held = torch.ones_like(rest)
        without_held[held] = False
        sims = nearest_class_similarity(
            embeddings[without_held], labels[without_held], n_classes, embeddings[held]
        )
        known.append(sims.float().cpu().numpy())
        sims = nearest_class_similarity(
            embeddings[rest],
            labels[rest] - (labels[rest] > held_class).long(),
            n_classes - 1,
            embeddings[outsiders[:UNKNOWN_PER_EPISODE]],
        )
        unknown.append(sims.float().cpu().numpy())
    return np.concatenate(known), np.concatenate(unknown), len(episodes)


def calibrate(
    bank: ClassBank,
    device: torch.device,
    false_reject: float = DEFAULT_FALSE_REJECT,
    seed: int = 0,
) -> RejectThreshold:
    """The reject threshold of ``bank`` (see the module docstring)."""
    known, unknown, episodes = open_set_scores(
        bank.embeddings.to(device), bank.labels.to(device), len(bank.class_names), seed
    )
    value, measured_false_reject, false_accept = pick_threshold(known, unknown, false_reject)
    return RejectThreshold(
        value=value,
        target_false_reject=false_reject,
        episodes=episodes,
        known_queries=int(known.size),
        unknown_queries=int(unknown.size),
        false_reject=round(measured_false_reject, 4),
        false_accept=round(false_accept, 4),
        seed=seed,
    )
