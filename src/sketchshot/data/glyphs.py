"""The built-in dataset: procedurally generated glyphs redrawn by simulated drawers.

Each class is a random glyph of one to four pen strokes (lines, polylines, arcs, Bezier curves).
Each drawer redraws it with a smooth random deformation of the strokes, an affine jitter of
position, scale, rotation and shear, and a stroke width of their own, so that a class is
recognisable across drawers but no two drawings are the same: the few-shot structure of
Omniglot, generated deterministically from a seed and rendered at any size. No file ships.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

from sketchshot.data.dataset import SketchDataset

SUPERSAMPLE = 4
POINTS_PER_STROKE = 32


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


def glyph_strokes(seed: int, class_index: int) -> list[np.ndarray]:
    """The class template: a list of strokes, each [POINTS_PER_STROKE, 2] in the unit square."""
    rng = _rng(seed, class_index, 0x61797068)
    t = np.linspace(0.0, 1.0, POINTS_PER_STROKE)[:, None]
    strokes = []
    for _ in range(rng.choice([1, 2, 2, 3, 3, 4])):
        kind = rng.choice(["line", "polyline", "arc", "bezier"])
        if kind == "line":
            p0 = rng.uniform(0.15, 0.85, 2)
            direction = rng.normal(size=2)
            p1 = np.clip(
                p0 + direction / np.linalg.norm(direction) * rng.uniform(0.3, 0.6), 0.1, 0.9
            )
            pts = p0 + t * (p1 - p0)
        elif kind == "polyline":
            corners = rng.uniform(0.15, 0.85, (rng.integers(3, 5), 2))
            seg = np.linspace(0, len(corners) - 1, POINTS_PER_STROKE)
            idx = np.minimum(seg.astype(int), len(corners) - 2)
            frac = (seg - idx)[:, None]
            pts = corners[idx] * (1 - frac) + corners[idx + 1] * frac
        elif kind == "arc":
            centre = rng.uniform(0.35, 0.65, 2)
            radius = rng.uniform(0.12, 0.3)
            start = rng.uniform(0, 2 * np.pi)
            angle = start + t[:, 0] * rng.uniform(0.5, 1.8) * np.pi
            pts = centre + radius * np.stack([np.cos(angle), np.sin(angle)], axis=1)
        else:
            c = rng.uniform(0.15, 0.85, (4, 2))
            pts = (
                (1 - t) ** 3 * c[0]
                + 3 * (1 - t) ** 2 * t * c[1]
                + 3 * (1 - t) * t**2 * c[2]
                + t**3 * c[3]
            )
        strokes.append(pts)
    # centre the glyph and let its longer side span 0.7 of the box, as a drawer would
    allpts = np.concatenate(strokes)
    low, high = allpts.min(axis=0), allpts.max(axis=0)
    scale = 0.7 / max(float((high - low).max()), 0.2)
    return [(pts - (low + high) / 2) * scale + 0.5 for pts in strokes]


def drawer_version(
    strokes: list[np.ndarray], seed: int, class_index: int, drawer: int
) -> tuple[list[np.ndarray], float]:
    """One drawer's rendition of a template: deformed strokes and a relative line width."""
    rng = _rng(seed, class_index, drawer + 1)
    freqs = rng.normal(0.0, 3.0, (3, 2))
    phases = rng.uniform(0, 2 * np.pi, (3, 2))
    amps = rng.normal(0.0, 0.025, (3, 2))
    angle = np.deg2rad(rng.normal(0.0, 6.0))
    shear = rng.normal(0.0, 0.08)
    scale = rng.uniform(0.85, 1.1) * np.exp(rng.normal(0.0, 0.05, 2))
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    affine = rot @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag(scale)
    shift = rng.normal(0.0, 0.04, 2)
    out = []
    for pts in strokes:
        wobble = sum(amps[k] * np.sin(pts @ freqs[k][:, None] + phases[k]) for k in range(3))
        pts = pts + wobble + rng.normal(0.0, 0.015, 2)  # each stroke lands a little off
        keep = slice(rng.integers(0, 3), POINTS_PER_STROKE - rng.integers(0, 3))
        out.append((pts[keep] - 0.5) @ affine.T + 0.5 + shift)
    return out, float(rng.uniform(0.035, 0.075))


def render_strokes(strokes: list[np.ndarray], size: int, width: float) -> np.ndarray:
    """Rasterise unit-square strokes to uint8 [size, size], white lines on black, antialiased
    by drawing at ``SUPERSAMPLE`` times the size and box-filtering down."""
    big = size * SUPERSAMPLE
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    px = max(1, int(round(width * big)))
    for pts in strokes:
        xy = [tuple(p) for p in (pts * big).tolist()]
        draw.line(xy, fill=255, width=px, joint="curve")
        for x, y in (xy[0], xy[-1]):  # round pen caps
            draw.ellipse((x - px / 2, y - px / 2, x + px / 2, y + px / 2), fill=255)
    return np.asarray(canvas.resize((size, size), Image.Resampling.BOX), dtype=np.uint8)


def make_glyphs(n_classes: int, n_drawers: int, image_size: int, seed: int = 0) -> SketchDataset:
    """``n_classes`` glyphs x ``n_drawers`` drawings, rendered at ``image_size``."""
    images, labels, sources = [], [], []
    for c in range(n_classes):
        template = glyph_strokes(seed, c)
        for d in range(n_drawers):
            strokes, width = drawer_version(template, seed, c, d)
            images.append(render_strokes(strokes, image_size, width))
            labels.append(c)
            sources.append(f"builtin:glyph-{c:03d}/drawer-{d:02d}")
    return SketchDataset(
        images=torch.from_numpy(np.stack(images)).unsqueeze(1),
        labels=torch.tensor(labels, dtype=torch.long),
        class_names=tuple(f"glyph-{c:03d}" for c in range(n_classes)),
        sources=tuple(sources),
        origin=f"builtin glyphs (seed {seed}, {n_classes} classes x {n_drawers} drawers)",
    )
