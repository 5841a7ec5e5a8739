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

On data split by images (the same classes in every split) the references come from the train
split and the queries from the evaluated one (``knn_reference_protocol``), as the
engineering-symbol workflow defines it: full = every train image, k=5; 1-shot = one random
train image per class, k=1; 5-shot = five, majority of k=3; the shots over seeded draws.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from sketchshot.protocols.labelled import (
    ReadOut,
    check_class_sizes,
    draw_rng,
    labelled_split,
    score_draws,
)
from sketchshot.protocols.metrics import confusion_matrix
from sketchshot.protocols.report import Figure, ProtocolReport

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


def knn_protocol(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    class_names: tuple[str, ...],
    draws: int,
    labelled_fraction: float,
    seed: int,
) -> ProtocolReport:
    """The three kNN figures, each an ``n_classes``-way read-out (every query is told among
    every evaluated class); the headline (and the confusion) is the labelled-fraction k=5."""
    check_class_sizes(labels, class_names, max(s for s, _ in SHOT_SETTINGS) + 1, "kNN 5-shot")
    n_classes, device = len(class_names), embeddings.device
    labels_d = labels.to(device)

    def vote(k: int) -> ReadOut:
        return lambda lab, qry: knn_predict(
            embeddings[lab], labels_d[lab], embeddings[qry], k, n_classes
        )

    full, confusion = score_draws(
        vote(FULL_K), labels, n_classes, draws, seed, FRACTION_TAG, None, labelled_fraction,
        device,
    )  # fmt: skip
    figures = [Figure.of(n_classes, f"kNN {labelled_fraction:.0%} labelled, k={FULL_K}", full)]
    for n_shot, k in SHOT_SETTINGS:
        acc, _ = score_draws(vote(k), labels, n_classes, draws, seed, n_shot, n_shot, None, device)
        figures.append(Figure.of(n_classes, f"kNN {n_shot}-shot, k={k}", acc))
    return ProtocolReport(figures, class_names, confusion)


def knn_reference_protocol(
    references: torch.Tensor,
    reference_labels: torch.Tensor,
    queries: torch.Tensor,
    query_labels: torch.Tensor,
    class_names: tuple[str, ...],
    draws: int,
    seed: int,
) -> ProtocolReport:
    """kNN with train-split ``references`` [R, D] and evaluated-split ``queries`` [Q, D] of
    the same ``class_names``: the full reference set (k=5; its CI over the queries, the
    headline and the confusion), then 1-shot k=1 and 5-shot k=3 over ``draws`` seeded draws
    of the references (CI over the draws). Every query is told among every class."""
    check_class_sizes(reference_labels, class_names, 1, "kNN (train references)")
    n_classes, device = len(class_names), references.device
    fewest = int(torch.bincount(reference_labels, minlength=n_classes).min())
    truth = query_labels.cpu().numpy()
    ref_labels = reference_labels.to(device)
    predicted = knn_predict(references, ref_labels, queries, FULL_K, n_classes).cpu().numpy()
    correct = (predicted == truth).astype(float)
    n_refs = len(reference_labels)
    figures = [Figure.of(n_classes, f"kNN all {n_refs} train images, k={FULL_K}", correct)]
    notes = []
    for n_shot, k in SHOT_SETTINGS:
        if n_shot > fewest:
            notes.append(f"kNN {n_shot}-shot left out: a class has {fewest} train image(s)")
            continue
        accuracies = np.empty(draws)
        for d in range(draws):
            chosen, _ = labelled_split(reference_labels, draw_rng(seed, d, n_shot), n_shot)
            pick = torch.from_numpy(chosen).to(device)
            guess = knn_predict(references[pick], ref_labels[pick], queries, k, n_classes)
            accuracies[d] = float((guess.cpu().numpy() == truth).mean())
        figures.append(Figure.of(n_classes, f"kNN {n_shot}-shot train images, k={k}", accuracies))
    confusion = confusion_matrix(truth, predicted, n_classes)
    return ProtocolReport(figures, class_names, confusion, {"references": n_refs, "notes": notes})
