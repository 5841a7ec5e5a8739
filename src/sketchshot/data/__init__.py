"""Data: the built-in glyphs, image folders and archives, class splits, episodes and views."""

from __future__ import annotations

from sketchshot.config import DataConfig, Split
from sketchshot.data.dataset import SketchDataset, filter_classes
from sketchshot.data.folder import load_image_folder
from sketchshot.data.glyphs import make_glyphs
from sketchshot.data.splits import take_split

__all__ = ["SketchDataset", "load_dataset"]


def load_dataset(cfg: DataConfig, image_size: int, split: Split = "all") -> SketchDataset:
    """Decode the configured source at ``image_size``, filter classes, and take one split."""
    if cfg.source == "builtin":
        b = cfg.builtin
        dataset = make_glyphs(b.n_classes, b.n_drawers, image_size, b.seed)
    else:
        dataset = load_image_folder(cfg.source, image_size, cfg.invert)
    dataset = filter_classes(dataset, cfg.classes, cfg.exclude_classes)
    return take_split(dataset, cfg, split)
