"""Views of a drawing made on its strokes, before rendering: the motor noise with which
Omniglot's authors' generative model draws new exemplars of a character (Lake et al. 2015),
plus stroke dropout, partial drawings and line-width change. The affine and the rest of the
image views come after, on the rendered batch (``SketchAugment``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sketchshot.config import ViewConfig
from sketchshot.data.vector.drawing import Drawing, bounds
from sketchshot.data.vector.render import render

CONTROL_POINTS = 4  # smooth noise: offsets at 4 points along a stroke, linear in between


@dataclass(frozen=True)
class StrokeViews:
    """``jitter``: standard deviation of each stroke's displacement and of the smooth noise
    along it, as a fraction of the drawing's size; ``drop``: probability of leaving out each
    stroke (one always stays); ``partial``: probability of drawing only the first k strokes
    (k at least half of them); ``width``: the line width scaled by up to 1 ± ``width``."""

    jitter: float = 0.0
    drop: float = 0.0
    partial: float = 0.0
    width: float = 0.0

    @classmethod
    def from_config(cls, views: ViewConfig) -> StrokeViews:
        s = views.strength
        return cls(
            jitter=views.stroke_jitter * s,
            drop=min(views.stroke_drop * s, 0.9),
            partial=min(views.partial_p * s, 1.0),
            width=min(views.line_width_jitter * s, 0.9),
        )

    @property
    def active(self) -> bool:
        return any((self.jitter, self.drop, self.partial, self.width))

    def strokes(self, drawing: Drawing, rng: np.random.Generator) -> Drawing:
        """A new drawing: some strokes kept, each moved and bent by smooth random noise."""
        strokes = [s for s in drawing if len(s)]
        if self.partial and len(strokes) > 1 and rng.random() < self.partial:
            strokes = strokes[: int(rng.integers((len(strokes) + 1) // 2, len(strokes)))]
        if self.drop and len(strokes) > 1:
            keep = rng.random(len(strokes)) >= self.drop
            keep[rng.integers(len(strokes))] = True
            strokes = [s for s, k in zip(strokes, keep, strict=True) if k]
        if not self.jitter:
            return strokes
        x0, y0, x1, y1 = bounds(strokes)
        sigma = self.jitter * max(x1 - x0, y1 - y0, 1e-6)
        out = []
        for stroke in strokes:
            control = rng.normal(0.0, sigma, (CONTROL_POINTS, 2)) + rng.normal(0.0, sigma, 2)
            at = np.linspace(0.0, 1.0, len(stroke))
            knots = np.linspace(0.0, 1.0, CONTROL_POINTS)
            noise = np.stack([np.interp(at, knots, control[:, i]) for i in (0, 1)], axis=1)
            out.append((stroke + noise).astype(np.float32))
        return out

    def render(
        self, drawing: Drawing, size: int, line_width: float, rng: np.random.Generator
    ) -> np.ndarray:
        """One random view of ``drawing``, rendered: uint8 [size, size]."""
        if self.width:
            line_width *= 1 + (rng.random() * 2 - 1) * self.width
        return render(self.strokes(drawing, rng), size, line_width)
