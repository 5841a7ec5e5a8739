"""Linear probe: multinomial logistic regression on frozen encoder features, the standard
read-out of a self-supervised representation (Zhang et al. 2016; Chen et al. 2020).

Per seeded draw, a ``labelled_fraction`` of each evaluated class's images trains the probe
(the same splits as the kNN read-out's) and the rest are scored; repeated over ``draws``.
Features are L2-normalised, then standardised with the labelled images' mean and standard
deviation: unit vectors of ReLU features sit close together, and without standardising, any
weight decay keeps the probe near chance."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sketchshot.protocols.knn import FRACTION_TAG
from sketchshot.protocols.labelled import check_class_sizes, score_draws
from sketchshot.protocols.report import Figure, ProtocolReport

MAX_ITERATIONS = 500


def fit_logistic_regression(
    features: torch.Tensor, labels: torch.Tensor, n_classes: int, weight_decay: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights [D, C] and bias [C] minimising cross-entropy + ``weight_decay`` / 2 * |W|^2 over
    features [N, D] with labels [N], by full-batch L-BFGS from zero (deterministic)."""
    weights = torch.zeros(features.shape[1], n_classes, device=features.device)
    bias = torch.zeros(n_classes, device=features.device)
    weights.requires_grad_(True)
    bias.requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [weights, bias], lr=1, max_iter=MAX_ITERATIONS, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(features @ weights + bias, labels)
        loss = loss + weight_decay / 2 * weights.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return weights.detach(), bias.detach()


def linear_probe_protocol(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    class_names: tuple[str, ...],
    draws: int,
    labelled_fraction: float,
    weight_decay: float,
    seed: int,
) -> ProtocolReport:
    """Probe accuracy on the queries of each draw, an ``n_classes``-way read-out: mean, 95% CI
    and the summed confusion."""
    check_class_sizes(labels, class_names, 2, "the linear probe")
    n_classes = len(class_names)
    normalised = F.normalize(embeddings.float(), dim=-1)
    labels_d = labels.to(normalised.device)

    def probe(lab: torch.Tensor, qry: torch.Tensor) -> torch.Tensor:
        seen = normalised[lab]
        features = (normalised - seen.mean(0)) / seen.std(0).clamp(min=1e-6)
        weights, bias = fit_logistic_regression(
            features[lab], labels_d[lab], n_classes, weight_decay
        )
        return (features[qry] @ weights + bias).argmax(1)

    accuracies, confusion = score_draws(
        probe, labels, n_classes, draws, seed, FRACTION_TAG, None, labelled_fraction,
        normalised.device,
    )  # fmt: skip
    figure = Figure.of(n_classes, f"linear probe, {labelled_fraction:.0%} labelled", accuracies)
    return ProtocolReport([figure], class_names, confusion)
