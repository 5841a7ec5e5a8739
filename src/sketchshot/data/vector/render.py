"""The one renderer: a vector drawing to a raster sketch, strokes bright on black."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from sketchshot.data.vector.drawing import Drawing, bounds, problem

SUPERSAMPLE = 4  # drawn at 4x the side, then box-filtered down: anti-aliased, deterministic
# Stroke width as a fraction of the image side. 0.045 (1.25 px at 28 px, 4.7 px at 105 px)
# gives Omniglot's strokes the ink of its own PNGs (92% of it; IoU 0.83 of the masks at 28 px,
# over 160 drawings) when drawn in their 105-pixel frame; see tests/test_vector.py.
LINE_WIDTH = 0.045
PADDING = 0.1  # blank margin on each side, as a fraction of the image side


def render(
    drawing: Drawing,
    size: int,
    line_width: float = LINE_WIDTH,
    padding: float = PADDING,
    frame: tuple[float, float, float, float] | None = None,
) -> np.ndarray:
    """``drawing`` (strokes of float [n, 2] (x, y), y down) -> uint8 [size, size], strokes
    bright (255) on black (0), anti-aliased.

    The drawing is scaled to fit inside ``padding * size`` margins keeping its aspect ratio,
    and centred; with ``frame`` = (x0, y0, x1, y1) that box (Omniglot's 105-pixel canvas, say)
    is fitted instead, so the drawing keeps its place in it. ``line_width`` is a fraction of
    ``size``; round caps and joins, a one-point stroke is a dot. ``ValueError`` for a drawing
    ``problem`` refuses."""
    if (why := problem(drawing)) is not None:
        raise ValueError(why)
    if not 0 <= padding < 0.5:
        raise ValueError(f"padding must be in [0, 0.5), got {padding}")
    big = size * SUPERSAMPLE
    width = max(line_width * big, 1.0)
    x0, y0, x1, y1 = frame if frame is not None else bounds(drawing)
    extent = max(x1 - x0, y1 - y0)
    room = big * (1 - 2 * padding) - (0 if frame is not None else width)
    scale = max(room, 0.0) / extent if extent > 0 else 0.0
    # centre of the box onto the centre of the canvas; pixel centres sit at +0.5
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    canvas = Image.new("L", (big, big), 0)
    pen = ImageDraw.Draw(canvas)
    radius = width / 2
    for stroke in drawing:
        if not len(stroke):
            continue
        xy = _thinned((stroke.astype(np.float64) - (cx, cy)) * scale + big / 2, radius)
        points = [tuple(p) for p in xy.tolist()]
        if len(points) > 1:
            pen.line(points, fill=255, width=round(width))
        # round caps (a dot for a single point) and round joins where the pen turns: a
        # shallow turn leaves no visible notch, and a join per pen sample costs most of the time
        for x, y in [points[0], points[-1]] + [points[i] for i in _turns(xy)]:
            pen.ellipse((x - radius, y - radius, x + radius, y + radius), fill=255)
    small = canvas.resize((size, size), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.uint8).copy()


def _thinned(xy: np.ndarray, step: float) -> np.ndarray:
    """The points of a polyline at least about ``step`` apart along it, first and last kept:
    dense pen samples (Omniglot's are under a pixel apart) cost a round joint each, and a
    chord of half the line width bends from the curve by a small fraction of a pixel."""
    if len(xy) < 3 or step <= 0:
        return xy
    along = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(xy, axis=0).T))])
    bucket = np.floor(along / step)
    keep = np.flatnonzero(np.diff(bucket, prepend=-1) > 0)
    if keep[-1] != len(xy) - 1:
        keep = np.append(keep, len(xy) - 1)
    return xy[keep]


def _turns(xy: np.ndarray, degrees: float = 20.0) -> list[int]:
    """Indices of the interior points where a polyline turns by more than ``degrees``."""
    if len(xy) < 3:
        return []
    a, b = np.diff(xy[:-1], axis=0), np.diff(xy[1:], axis=0)
    cos = (a * b).sum(1) / np.maximum(np.hypot(*a.T) * np.hypot(*b.T), 1e-12)
    return (np.flatnonzero(cos < np.cos(np.radians(degrees))) + 1).tolist()
