"""Data: the built-in glyphs, image folders and archives, class splits, episodes and views."""

from __future__ import annotations

import functools

from sketchshot.config import DataConfig, Split
from sketchshot.data.dataset import SketchDataset, filter_classes
from sketchshot.data.folder import load_image_folder
from sketchshot.data.glyphs import make_glyphs
from sketchshot.data.splits import take_split

__all__ = ["SketchDataset", "load_dataset"]


@functools.lru_cache(maxsize=4)
def _glyphs(n_classes: int, n_drawers: int, image_size: int, seed: int) -> SketchDataset:
    return make_glyphs(n_classes, n_drawers, image_size, seed)  # generated once per process


def load_dataset(cfg: DataConfig, image_size: int, split: Split = "all") -> SketchDataset:
    """Decode the configured source at ``image_size``, take one split, filter its classes.

    Splits are drawn over every class of the source, before ``classes``/``exclude_classes``,
    so that filtering differently (in evaluate, say) never moves a class to another split."""
    if cfg.source == "builtin":
        b = cfg.builtin
        dataset = _glyphs(b.n_classes, b.n_drawers, image_size, b.seed)
    else:
        dataset = load_image_folder(cfg.source, image_size, cfg.invert)
    dataset = take_split(dataset, cfg, split)
    return filter_classes(dataset, cfg.classes, cfg.exclude_classes)
