"""Numeric truths of the losses and scores, checked against implementations written from the
formulas in the papers."""

from __future__ import annotations

import math

import pytest
import torch

from sketchshot.encoders import create_encoder
from sketchshot.methods import create_method, prototypes
from sketchshot.methods.ssl.simclr import nt_xent_loss


def naive_nt_xent(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> float:
    """Chen et al. 2020, eq. 1, averaged over all 2B anchors, with plain loops."""
    z = torch.cat([z1, z2]).double()
    z = [v / v.norm() for v in z]
    n = len(z)
    b = n // 2
    total = 0.0
    for i in range(n):
        partner = i + b if i < b else i - b
        numerator = math.exp(float(z[i] @ z[partner]) / tau)
        denominator = sum(math.exp(float(z[i] @ z[k]) / tau) for k in range(n) if k != i)
        total += -math.log(numerator / denominator)
    return total / n


@pytest.mark.parametrize(("batch", "dim", "tau"), [(2, 3, 0.5), (5, 8, 0.1), (7, 4, 1.0)])
def test_nt_xent_equals_naive_loops(batch, dim, tau):
    g = torch.Generator().manual_seed(batch * 100 + dim)
    z1 = torch.randn(batch, dim, generator=g, dtype=torch.float64)
    z2 = torch.randn(batch, dim, generator=g, dtype=torch.float64)
    got = nt_xent_loss(z1, z2, tau)
    assert got.ndim == 0
    assert got.item() == pytest.approx(naive_nt_xent(z1, z2, tau), rel=1e-10)


def test_nt_xent_float32_matches_float64():
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(2, 16, 32, generator=g)
    expected = naive_nt_xent(z1, z2, 0.5)
    assert nt_xent_loss(z1, z2, 0.5).item() == pytest.approx(expected, rel=1e-5)


def test_nt_xent_is_symmetric_and_scale_invariant():
    g = torch.Generator().manual_seed(4)
    z1, z2 = torch.randn(2, 6, 10, generator=g, dtype=torch.float64)
    a = nt_xent_loss(z1, z2, 0.3)
    assert nt_xent_loss(z2, z1, 0.3).item() == pytest.approx(a.item(), rel=1e-12)
    assert nt_xent_loss(3 * z1, 0.5 * z2, 0.3).item() == pytest.approx(a.item(), rel=1e-12)
    # and it does depend on which vectors are paired
    assert abs(nt_xent_loss(z1, z2.flip(0), 0.3).item() - a.item()) > 1e-3


@pytest.mark.parametrize(("batch", "tau"), [(2, 0.5), (4, 0.1), (8, 1.0)])
def test_nt_xent_identical_orthogonal_views_analytic(batch, tau):
    # 2B vectors: each pair identical, different pairs orthogonal. Every anchor sees its
    # partner at cosine 1 and the 2B - 2 others at cosine 0.
    z = torch.eye(batch, batch + 3, dtype=torch.float64)
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + (2 * batch - 2) * math.exp(0)))
    assert nt_xent_loss(z, z.clone(), tau).item() == pytest.approx(expected, rel=1e-12)


def test_nt_xent_lower_for_matching_views_than_for_random_ones():
    g = torch.Generator().manual_seed(5)
    z1 = torch.randn(16, 32, generator=g)
    close = z1 + 0.05 * torch.randn(16, 32, generator=g)
    unrelated = torch.randn(16, 32, generator=g)
    assert nt_xent_loss(z1, close, 0.5) < nt_xent_loss(z1, unrelated, 0.5) - 0.5


def hand_prototypes(support: torch.Tensor, labels: torch.Tensor, n_way: int) -> torch.Tensor:
    rows = []
    for c in range(n_way):
        members = [support[i] for i in range(len(labels)) if int(labels[i]) == c]
        rows.append(sum(members) / len(members))
    return torch.stack(rows)


def test_prototypes_are_class_means_in_any_label_order():
    g = torch.Generator().manual_seed(6)
    support = torch.randn(9, 5, generator=g, dtype=torch.float64)
    labels = torch.tensor([2, 0, 1, 1, 2, 0, 2, 1, 0])
    protos = prototypes(support, labels, 3)
    assert protos.shape == (3, 5)
    torch.testing.assert_close(protos, hand_prototypes(support, labels, 3), rtol=0, atol=1e-12)
    # unequal class sizes are averaged, not summed
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2])
    torch.testing.assert_close(
        prototypes(support, labels, 3), hand_prototypes(support, labels, 3), rtol=0, atol=1e-12
    )


def test_protonet_score_is_negative_squared_distance_to_class_means():
    method = create_method("protonet", create_encoder("conv4"))
    g = torch.Generator().manual_seed(7)
    n_way, dim = 4, 6
    support = torch.randn(n_way * 3, dim, generator=g, dtype=torch.float64)
    labels = torch.tensor([3, 1, 0, 2, 0, 1, 2, 3, 3, 0, 1, 2])
    query = torch.randn(5, dim, generator=g, dtype=torch.float64)
    logits = method.score(support, labels, query, n_way)
    means = hand_prototypes(support, labels, n_way)
    expected = torch.tensor(
        [[-sum((q[d] - m[d]) ** 2 for d in range(dim)) for m in means] for q in query],
        dtype=torch.float64,
    )
    assert logits.shape == (5, n_way)
    torch.testing.assert_close(logits, expected, rtol=1e-9, atol=1e-9)


def test_protonet_picks_the_nearest_class_mean():
    method = create_method("protonet", create_encoder("conv4"))
    support = torch.tensor([[0.0, 0.0], [0.0, 2.0], [10.0, 0.0], [10.0, 2.0]])
    labels = torch.tensor([0, 0, 1, 1])
    query = torch.tensor([[1.0, 1.0], [9.0, 1.0], [4.9, 1.0], [5.1, 1.0]])
    assert method.score(support, labels, query, 2).argmax(1).tolist() == [0, 1, 0, 1]


def test_default_score_is_a_positive_multiple_of_cosine_to_prototypes():
    # SimCLR (and any method that does not override score) compares by cosine similarity
    method = create_method("simclr", create_encoder("conv4"))
    g = torch.Generator().manual_seed(8)
    support = torch.randn(6, 4, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    query = torch.randn(3, 4, generator=g, dtype=torch.float64)
    logits = method.score(support, labels, query, 3)
    means = hand_prototypes(support, labels, 3)
    cosine = torch.tensor(
        [[float(q @ m / (q.norm() * m.norm())) for m in means] for q in query],
        dtype=torch.float64,
    )
    ratio = logits / cosine
    assert ratio.min() > 0
    torch.testing.assert_close(ratio, torch.full_like(ratio, ratio[0, 0].item()))
    # cosine ignores length: scaling a query does not change its scores
    torch.testing.assert_close(method.score(support, labels, 5 * query, 3), logits)
