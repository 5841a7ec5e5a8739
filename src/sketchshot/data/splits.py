"""Class-disjoint train/val/test splits: explicit globs, top-level groups, or seeded fractions."""

from __future__ import annotations

import numpy as np

from sketchshot.config import DataConfig, Split
from sketchshot.data.dataset import SketchDataset, match_classes
from sketchshot.data.folder import require_labels
from sketchshot.errors import DataError


def split_classes(class_names: tuple[str, ...], cfg: DataConfig) -> dict[str, list[str]]:
    """Assign every class to exactly one of train/val/test."""
    names = list(class_names)
    explicit = {"train": cfg.train_classes, "val": cfg.val_classes, "test": cfg.test_classes}
    if any(explicit.values()):
        out: dict[str, list[str]] = {}
        taken: dict[str, str] = {}
        for part, patterns in explicit.items():
            out[part] = match_classes(names, patterns) if patterns else []
            if patterns and not out[part]:
                raise DataError(f"--{part}-classes {list(patterns)} matches no class")
            for name in out[part]:
                if name in taken:
                    raise DataError(f"class {name!r} is in both the {taken[name]} and {part} split")
                taken[name] = part
        if not cfg.train_classes:  # train takes every class not named for val or test
            out["train"] = [n for n in names if n not in taken]
        return out
    order = np.random.default_rng(cfg.split_seed).permutation(len(names))
    n_train = int(round(cfg.split_fractions[0] * len(names)))
    n_val = int(round(cfg.split_fractions[1] * len(names)))
    shuffled = [names[i] for i in order]
    return {
        "train": sorted(shuffled[:n_train]),
        "val": sorted(shuffled[n_train : n_train + n_val]),
        "test": sorted(shuffled[n_train + n_val :]),
    }


def take_split(dataset: SketchDataset, cfg: DataConfig, split: Split) -> SketchDataset:
    if split == "all":
        return dataset
    if split != "train":  # unlabelled data has no classes to hold out
        require_labels(dataset, f"the {split} split")
    names = split_classes(dataset.class_names, cfg)[split]
    if not names:
        raise DataError(f"the {split} split of {dataset.origin} has no classes")
    return dataset.select(names)
