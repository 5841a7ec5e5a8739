"""Data: the built-in glyphs, image folders and archives, vector sketches (Omniglot strokes,
QuickDraw, SVG), class splits, episodes and views."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np
import torch

from sketchshot.card import Preprocessing
from sketchshot.config import DataConfig, Split
from sketchshot.data.dataset import SketchDataset, filter_classes
from sketchshot.data.folder import framed_square, load_image_folder, require_labels
from sketchshot.data.glyphs import make_glyphs
from sketchshot.data.splits import (
    split_classes,
    split_images,
    splits_images,
    subsample,
    take_split,
)
from sketchshot.data.vector.source import load_vector_source, source_kind
from sketchshot.errors import ConfigError, DataError

__all__ = ["SketchDataset", "load_dataset", "load_source", "load_splits", "load_support"]


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
    like ``load_dataset``'s; None for a split without classes or images (train must have
    some)."""
    dataset = _decoded(cfg, image_size)
    train = take_split(dataset, cfg, "train")  # the usual errors when train is empty
    out: dict[str, SketchDataset | None] = {
        "train": filter_classes(train, cfg.classes, cfg.exclude_classes)
    }
    if splits_images(cfg):
        parts = split_images(dataset, cfg)
    else:
        names = split_classes(dataset.class_names, cfg)
        parts = {s: dataset.select(names[s]) if names[s] else None for s in ("val", "test")}
    for split in ("val", "test"):
        try:
            part = parts[split]
            out[split] = filter_classes(part, cfg.classes, cfg.exclude_classes) if part else None
        except DataError:  # filtered down to nothing: only train needs classes
            out[split] = None
    return out


def _decoded(cfg: DataConfig, image_size: int) -> SketchDataset:
    if cfg.source == "builtin":
        b = cfg.builtin
        glyphs = _glyphs(b.n_classes, b.n_drawers, image_size, b.seed)
        return subsample(_fitted(glyphs) if cfg.fit == "ink" else glyphs, cfg)
    return subsample(load_source(cfg.source, image_size, cfg), cfg)


def _fitted(dataset: SketchDataset) -> SketchDataset:
    """``dataset`` with each image cropped to its drawing (``fit="ink"``) at the same size."""
    size = dataset.images.shape[-1]
    images = np.stack([framed_square(im, size, "ink") for im in dataset.images[:, 0].numpy()])
    return dataclasses.replace(dataset, images=torch.from_numpy(images).unsqueeze(1))


def load_support(source: str | Path, preprocessing: Preprocessing) -> SketchDataset:
    """Labelled support images (or drawings) of any source, as a model's ``preprocessing``
    decodes them: what enroll, predict --support and the API's enroll read."""
    cfg = DataConfig(source=str(source), invert=preprocessing.invert, fit=preprocessing.fit)
    dataset = load_source(str(source), preprocessing.image_size, cfg)
    return require_labels(dataset, "a support folder")


def load_source(source: str, image_size: int, cfg: DataConfig) -> SketchDataset:
    """Any sketch source at ``image_size``: image folders and archives as they are, vector
    sources (picked by ``source_kind``) rendered once with ``cfg``'s line width, at most
    ``cfg.max_per_class`` drawings of each class, QuickDraw's filters applied, bad records as
    ``cfg.on_error`` says."""
    kind = source_kind(source)
    if kind == "images" and (cfg.recognized != "any" or cfg.countries):
        raise ConfigError("--recognized and --countries filter QuickDraw .ndjson files only")
    if kind == "images":
        return load_image_folder(source, image_size, cfg.invert, cfg.fit)
    return load_vector_source(source, kind, image_size, cfg)
