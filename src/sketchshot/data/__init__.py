"""Data: the built-in glyphs, image folders and archives, class splits, episodes and views."""

from __future__ import annotations

import functools

from sketchshot.config import DataConfig, Split
from sketchshot.data.dataset import SketchDataset, filter_classes
from sketchshot.data.folder import load_image_folder
from sketchshot.data.glyphs import make_glyphs
from sketchshot.data.splits import split_classes, take_split
from sketchshot.errors import DataError

__all__ = ["SketchDataset", "load_dataset", "load_splits"]


@functools.lru_cache(maxsize=4)
def _glyphs(n_classes: int, n_drawers: int, image_size: int, seed: int) -> SketchDataset:
    return make_glyphs(n_classes, n_drawers, image_size, seed)  # generated once per process


def load_dataset(cfg: DataConfig, image_size: int, split: Split = "all") -> SketchDataset:
    """Decode the configured source at ``image_size``, take one split, filter its classes.

    Splits are drawn over every class of the source, before ``classes``/``exclude_classes``,
    so that filtering differently (in evaluate, say) never moves a class to another split."""
    dataset = take_split(_decoded(cfg, image_size), cfg, split)
    return filter_classes(dataset, cfg.classes, cfg.exclude_classes)


def load_splits(cfg: DataConfig, image_size: int) -> dict[str, SketchDataset | None]:
    """The train, val and test splits of the configured data, decoded once, each filtered
    like ``load_dataset``'s; None for a split without classes (train must have some)."""
    dataset = _decoded(cfg, image_size)
    names = split_classes(dataset.class_names, cfg)
    train = take_split(dataset, cfg, "train")  # the usual errors when train has no classes
    out: dict[str, SketchDataset | None] = {
        "train": filter_classes(train, cfg.classes, cfg.exclude_classes)
    }
    for split in ("val", "test"):
        try:
            part = dataset.select(names[split]) if names[split] else None
            out[split] = filter_classes(part, cfg.classes, cfg.exclude_classes) if part else None
        except DataError:  # filtered down to nothing: only train needs classes
            out[split] = None
    return out


def _decoded(cfg: DataConfig, image_size: int) -> SketchDataset:
    if cfg.source == "builtin":
        b = cfg.builtin
        return _glyphs(b.n_classes, b.n_drawers, image_size, b.seed)
    return load_image_folder(cfg.source, image_size, cfg.invert)
