"""The in-memory dataset every command works on: decoded once, kept as small uint8 tensors
(and, for vector sources, the drawings, for views made on the strokes)."""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from sketchshot.data.vector.drawing import Drawing
from sketchshot.data.vector.render import LINE_WIDTH
from sketchshot.data.vector.stroke_views import StrokeViews
from sketchshot.errors import DataError


@dataclass(frozen=True)
class SketchDataset:
    """Sketches as ``images`` uint8 [N, 1, S, S] (strokes bright), ``labels`` int64 [N]
    indexing ``class_names``, and ``sources`` naming where each image came from. A vector
    source keeps its ``drawings`` too (the strokes each image was rendered from, at
    ``line_width``), so that views can work on the strokes (``rendered``)."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]
    sources: tuple[str, ...]
    origin: str
    drawings: tuple[Drawing, ...] | None = None
    line_width: float = LINE_WIDTH

    def __len__(self) -> int:
        return int(self.labels.numel())

    @classmethod
    def of(
        cls,
        images: Sequence[np.ndarray],
        classes: Sequence[str],
        sources: Sequence[str],
        origin: str,
        drawings: Sequence[Drawing] | None = None,
        line_width: float = LINE_WIDTH,
    ) -> SketchDataset:
        """A dataset of uint8 [S, S] ``images`` with their class names (sorted into labels),
        and the ``drawings`` they were rendered from, if any."""
        class_names = tuple(sorted(set(classes)))
        lookup = {c: i for i, c in enumerate(class_names)}
        return cls(
            images=torch.from_numpy(np.stack(images)).unsqueeze(1),
            labels=torch.tensor([lookup[c] for c in classes], dtype=torch.long),
            class_names=class_names,
            sources=tuple(sources),
            origin=origin,
            drawings=None if drawings is None else tuple(drawings),
            line_width=line_width,
        )

    def subset(self, index: torch.Tensor, labels: torch.Tensor | None = None) -> SketchDataset:
        """The items at ``index`` (in that order), with new ``labels`` if given."""
        keep = index.tolist()
        return dataclasses.replace(
            self,
            images=self.images[index],
            labels=self.labels[index] if labels is None else labels,
            sources=tuple(self.sources[i] for i in keep),
            drawings=None if self.drawings is None else tuple(self.drawings[i] for i in keep),
        )

    def rendered(
        self, index: np.ndarray, views: StrokeViews, rng: np.random.Generator
    ) -> torch.Tensor:
        """A fresh view of each drawing at ``index``, made on its strokes and rendered: uint8
        [n, 1, S, S]. ``ValueError`` for a raster source, which has no strokes."""
        if self.drawings is None:
            raise ValueError(f"{self.origin} has no strokes to make views of")
        size = self.image_size
        images = [views.render(self.drawings[i], size, self.line_width, rng) for i in index]
        return torch.from_numpy(np.stack(images)).unsqueeze(1)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    def counts(self) -> torch.Tensor:
        return torch.bincount(self.labels, minlength=len(self.class_names))

    def floats(self, index: torch.Tensor | slice | None = None) -> torch.Tensor:
        """Images as float32 in [0, 1], [n, 1, S, S]."""
        images = self.images if index is None else self.images[index]
        return images.float().div_(255.0)

    def select(self, names: Sequence[str]) -> SketchDataset:
        """The images of ``names`` (in that order), relabelled 0..len(names)-1."""
        lookup = {name: i for i, name in enumerate(self.class_names)}
        old = torch.tensor([lookup[n] for n in names], dtype=torch.long)
        remap = torch.full((len(self.class_names),), -1, dtype=torch.long)
        remap[old] = torch.arange(len(names))
        new_labels = remap[self.labels]
        keep = (new_labels >= 0).nonzero().flatten()
        return dataclasses.replace(self.subset(keep, new_labels[keep]), class_names=tuple(names))

    def nonempty(self) -> SketchDataset:
        """The dataset without its classes that have no images (an image-level split keeps
        every class name in every split; episodes and probes need images of each)."""
        counts = self.counts().tolist()
        if all(counts):
            return self
        return self.select([n for n, c in zip(self.class_names, counts, strict=True) if c])

    def first_per_class(self, k: int) -> SketchDataset:
        """At most the first ``k`` images of each class, in their order."""
        per_class = [self.labels.eq(c).nonzero()[:k, 0] for c in range(len(self.class_names))]
        keep = sorted(torch.cat(per_class).tolist())
        return self.subset(torch.tensor(keep, dtype=torch.long))


def match_classes(names: Sequence[str], patterns: Sequence[str]) -> list[str]:
    """Class names matching any glob. A pattern also matches a whole top-level group: ``Greek``
    selects ``Greek/character01`` and the rest of that alphabet."""
    out = []
    for name in names:
        group = name.split("/", 1)[0]
        if any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(group, p) for p in patterns):
            out.append(name)
    return out


def filter_classes(
    dataset: SketchDataset, include: Sequence[str], exclude: Sequence[str]
) -> SketchDataset:
    names = list(dataset.class_names)
    if include:
        names = match_classes(names, include)
        if not names:
            raise DataError(f"no class of {dataset.origin} matches --classes {list(include)}")
    if exclude:
        dropped = set(match_classes(names, exclude))
        names = [n for n in names if n not in dropped]
        if not names:
            raise DataError(f"--exclude-classes {list(exclude)} removes every class")
    return dataset if len(names) == len(dataset.class_names) else dataset.select(names)


def with_rotations(dataset: SketchDataset) -> SketchDataset:
    """Each class also rotated by 90, 180 and 270 degrees as three new classes (x4 classes),
    the standard augmentation for character data (Santoro et al. 2016; Snell et al. 2017)."""
    turns = [
        (f"@rot{90 * r}", partial(torch.rot90, k=r, dims=(2, 3)), partial(rotated, quarters=r))
        for r in (1, 2, 3)
    ]
    return _with_copies(dataset, turns, "rotations")


def with_mirrors(dataset: SketchDataset) -> SketchDataset:
    """Each class also mirrored left-right as a new class (x2 classes): a mirrored character is
    another symbol, as a turned one is (with ``with_rotations`` after it: the 8 symmetries of
    the square, x8 classes)."""
    flip = partial(torch.flip, dims=(3,))
    return _with_copies(dataset, [("@mirror", flip, mirrored)], "mirrors")


Copy = tuple[str, Callable[[torch.Tensor], torch.Tensor], Callable[[Drawing], Drawing]]


def _with_copies(dataset: SketchDataset, copies: Sequence[Copy], what: str) -> SketchDataset:
    """``dataset`` followed by one copy of all its images per ``(suffix, image transform,
    drawing transform)`` of ``copies``, each copy's classes new ones named ``class + suffix``."""
    k, names = len(dataset.class_names), dataset.class_names
    drawings = None
    if dataset.drawings is not None:
        drawings = dataset.drawings + tuple(
            draw(d) for _, _, draw in copies for d in dataset.drawings
        )
    return dataclasses.replace(
        dataset,
        images=torch.cat([dataset.images] + [move(dataset.images) for _, move, _ in copies]),
        labels=torch.cat([dataset.labels + i * k for i in range(len(copies) + 1)]),
        class_names=names + tuple(f"{n}{suffix}" for suffix, _, _ in copies for n in names),
        sources=dataset.sources * (len(copies) + 1),
        origin=f"{dataset.origin} (+ {what})",
        drawings=drawings,
    )


def mirrored(drawing: Drawing) -> Drawing:
    """``drawing`` flipped left-right, as ``torch.flip(image, dims=(3,))`` flips its image."""
    return [s * np.asarray([-1, 1], dtype=np.float32) for s in drawing]


def rotated(drawing: Drawing, quarters: int) -> Drawing:
    """``drawing`` turned as ``torch.rot90(image, quarters, dims=(2, 3))`` turns its image
    (counter-clockwise on the screen, y pointing down)."""
    turn = [(1, 1), (1, -1), (-1, -1), (-1, 1)][quarters % 4]  # (x, y) -> signs of (y, x)
    if quarters % 2 == 0:
        return [s * np.float32(turn[0]) for s in drawing]
    return [s[:, ::-1] * np.asarray(turn, dtype=np.float32) for s in drawing]
