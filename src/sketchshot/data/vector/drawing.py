"""The stroke representation every vector reader yields, and the checks that refuse a bad one.

A drawing is ``list[np.ndarray]``: one float32 [n_i, 2] array of (x, y) points per stroke, in
drawing order, y pointing down, in whatever coordinate range the source used (the renderer
scales it to fit)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

Drawing = list[np.ndarray]

# Coordinates beyond this are a corrupt record, not a drawing (QuickDraw raw files use screen
# pixels, Omniglot's a 105-pixel canvas, TU-Berlin's SVGs an 800-pixel one).
MAX_COORDINATE = 1e6


class Sketch(NamedTuple):
    """One record of a source: its class, the drawing (or, for raster sources, a uint8 [H, W]
    image with strokes bright), and where it came from (``file``, ``file:line`` or
    ``file[index]``)."""

    class_name: str
    drawing: Drawing | np.ndarray
    source: str


def as_drawing(strokes: Sequence[Sequence[Sequence[float]]] | Sequence[np.ndarray]) -> Drawing:
    """Strokes of (x, y) points as float32 [n_i, 2] arrays; ``ValueError`` when a stroke is
    not a list of pairs."""
    out = []
    for i, stroke in enumerate(strokes):
        points = np.asarray(stroke, dtype=np.float32)
        if points.ndim != 2 or points.shape[1] != 2:
            raise ValueError(f"stroke {i} is not a list of (x, y) points (shape {points.shape})")
        out.append(points)
    return out


def problem(drawing: Drawing) -> str | None:
    """Why ``drawing`` cannot be rendered (no points, NaN or infinite or huge coordinates), or
    None when it can."""
    strokes = [s for s in drawing if len(s)]
    if not strokes:
        return "empty drawing (no points)"
    for i, stroke in enumerate(drawing):
        if not np.isfinite(stroke).all():
            return f"stroke {i} has NaN or infinite coordinates"
        if len(stroke) and np.abs(stroke).max() > MAX_COORDINATE:
            return f"stroke {i} has coordinates beyond ±{MAX_COORDINATE:g}"
    return None


def bounds(drawing: Drawing) -> tuple[float, float, float, float]:
    """(x_min, y_min, x_max, y_max) over every point of a non-empty drawing."""
    points = np.concatenate([s for s in drawing if len(s)])
    (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
    return float(x0), float(y0), float(x1), float(y1)
