"""The training-free shape match and the alignment of drawings (``sketchshot.alignment``), used
by ``evaluate --shape-weight`` and ``--align``."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from sketchshot.alignment import (
    Matching,
    Meeting,
    affine_fits,
    aligned,
    fused,
    inverted,
    laid_over,
    matched,
    refined,
    shape_distances,
)
from sketchshot.data.glyphs import make_glyphs
from sketchshot.encoders import create_encoder
from sketchshot.methods.fewshot.protonet import ProtoNet


def warped(images: torch.Tensor, angle: float, scale: float, shift: float) -> torch.Tensor:
    """uint8 images under one affine map (rotation in degrees, zoom, shift in half-sides)."""
    a = math.radians(angle)
    theta = torch.tensor([[math.cos(a) / scale, -math.sin(a) / scale, shift],
                          [math.sin(a) / scale, math.cos(a) / scale, -shift]])  # fmt: skip
    grid = F.affine_grid(theta.expand(len(images), 2, 3), list(images.shape), align_corners=False)
    out = F.grid_sample(images.float(), grid, align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8)


def test_a_drawing_moved_turned_and_resized_matches_itself_not_the_others():
    glyphs = make_glyphs(12, 1, 48).images  # 12 different shapes, one drawing each
    moved = warped(glyphs, angle=10, scale=0.85, shift=0.1)
    d = shape_distances(moved, glyphs)
    assert d.shape == (12, 12)
    assert torch.equal(d.argmin(1), torch.arange(12))  # each finds itself
    same, other = d.diagonal(), d[~torch.eye(12, dtype=torch.bool)].view(12, 11)
    assert float(same.max()) < 0.6 * float(other.min(1).values.median())
    itself = shape_distances(glyphs[:3], glyphs[:3])
    assert float(itself.diagonal().max()) < 0.25 * float(
        itself[~torch.eye(3, dtype=torch.bool)].min()
    )


def test_shape_match_classifies_other_drawers_one_shot_well_above_chance():
    data = make_glyphs(20, 2, 32)  # drawer 0 to learn from, drawer 1 to classify
    first, second = data.images[0::2], data.images[1::2]
    accuracy = float((shape_distances(second, first).argmin(1) == torch.arange(20)).float().mean())
    assert accuracy >= 0.6  # chance: 0.05


def test_fused_weights_the_shape_match_against_the_scores():
    scores = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    distances = torch.tensor([[5.0, 0.0, 9.0], [1.0, 8.0, 0.0]])
    assert torch.equal(fused(scores, distances, 0.0).argmax(1), scores.argmax(1))
    assert torch.equal(fused(scores, distances, 10.0).argmax(1), distances.argmin(1))
    both = fused(scores, distances, 1.0)
    assert both.shape == scores.shape and torch.isfinite(both).all()


def test_the_fitted_maps_lay_a_moved_drawing_back_over_its_original():
    glyphs = make_glyphs(6, 1, 48).images
    moved = warped(glyphs, angle=12, scale=0.8, shift=0.15)
    distances, maps = affine_fits(moved, glyphs)
    assert maps.shape == (6, 6, 2, 3)
    torch.testing.assert_close(distances, shape_distances(moved, glyphs))
    back = laid_over(moved, maps[range(6), range(6)])

    def mismatch(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a.float() - b.float()).abs().mean())

    assert mismatch(back, glyphs) < 0.5 * mismatch(moved, glyphs)
    there = laid_over(glyphs, inverted(maps[range(6), range(6)]))
    assert mismatch(there, moved) < 0.5 * mismatch(glyphs, moved)
    both = inverted(inverted(maps))
    torch.testing.assert_close(both, maps, atol=1e-4, rtol=1e-4)


def pixels(images: torch.Tensor) -> torch.Tensor:
    """A stand-in embedding that sees where the ink is: 8x8 average pooling, flattened."""
    return F.adaptive_avg_pool2d(images.float() / 255, 8).flatten(1)


def test_aligned_scores_find_moved_drawings_that_raw_pixels_miss():
    glyphs = make_glyphs(12, 1, 48).images
    moved = warped(glyphs, angle=15, scale=0.75, shift=0.2)
    method = ProtoNet(create_encoder("conv4"))  # its score only: -squared distance
    labels = torch.arange(12)
    query, support = (moved, pixels(moved)), (glyphs, pixels(glyphs))
    scores = method.score(support[1], labels, query[1], 12)
    raw = float((scores.argmax(1) == labels).float().mean())
    maps = affine_fits(moved, glyphs)[1]
    joined = aligned(Meeting(method, pixels, query, support, labels, 12), scores, maps, "affine")
    assert joined.shape == (12, 12)
    assert float((joined.argmax(1) == labels).float().mean()) >= max(0.8, raw + 0.3)
    # the three scores' mean: the model's own scores are a third of it
    laid = (3 * joined - scores)[range(12), range(12)]
    assert (laid > 2 * scores[range(12), range(12)]).all()  # aligned: nearer than raw


def test_matching_with_several_shots_takes_each_class_s_nearest_drawing():
    data = make_glyphs(3, 3, 32)  # classes 0..2, three drawers each, class-major
    support, query = data.images[[0, 1, 3, 4, 6, 7]], data.images[[2, 5, 8]]
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    method = ProtoNet(create_encoder("conv4"))
    scores = method.score(pixels(support), labels, pixels(query), 3)
    meeting = Meeting(method, pixels, (query, pixels(query)), (support, pixels(support)),
                      labels, 3)  # fmt: skip
    assert matched(Matching(), meeting, scores) is scores
    shaped = matched(Matching(shape_weight=1.0), meeting, scores)
    nearest = shape_distances(query, support).view(3, 3, 2).min(-1).values
    torch.testing.assert_close(shaped, fused(scores, nearest, 1.0))
    both = matched(Matching(True, 0.5), meeting, scores)
    assert both.shape == (3, 3) and torch.isfinite(both).all()
    assert Matching(True, 0.5).describe() == ", aligned (elastic), shape match x0.5"
    assert Matching(True, warp="affine").describe() == ", aligned (affine)"


def bent(images: torch.Tensor, amount: float) -> torch.Tensor:
    """uint8 images under a smooth non-affine warp: each row shifted sideways by a sine of its
    height, each column up or down by a sine of its place (``amount``: in half-sides)."""
    n, _, size, _ = images.shape
    axis = torch.linspace(-1, 1, size)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    grid = torch.stack(
        [x + amount * torch.sin(math.pi * y), y + amount * torch.sin(math.pi * x)], -1
    )
    out = F.grid_sample(images.float(), grid.expand(n, size, size, 2), align_corners=True)
    return out.round().clamp(0, 255).to(torch.uint8)


def test_the_elastic_refinement_bends_strokes_back_where_no_affine_map_can():
    glyphs = make_glyphs(8, 1, 32).images
    curved = bent(glyphs, 0.08)
    maps = affine_fits(curved, glyphs)[1][range(8), range(8)]
    affine, elastic = laid_over(curved, maps), refined(curved, glyphs, maps)
    assert elastic.shape == glyphs.shape and elastic.dtype == torch.uint8

    def overlap(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # cosine of the ink, per image
        a, b = a.float().flatten(1), b.float().flatten(1)
        return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))

    left_affine, left_elastic = 1 - overlap(affine, glyphs), 1 - overlap(elastic, glyphs)
    assert (left_elastic < left_affine).all()  # every drawing nearer its original
    assert float(left_elastic.mean()) < 0.6 * float(left_affine.mean())  # 0.03 against 0.07
    # a drawing refined onto itself stays (nearly) itself
    same = refined(glyphs, glyphs, torch.eye(2, 3).expand(8, 2, 3))
    assert float(overlap(same, glyphs).min()) > 0.97
