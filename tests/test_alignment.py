"""The training-free shape match (``sketchshot.alignment``) and its use by ``evaluate --runs
--shape-weight``."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from sketchshot.alignment import fused, shape_distances
from sketchshot.data.glyphs import make_glyphs


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
