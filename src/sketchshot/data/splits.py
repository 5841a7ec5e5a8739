"""Train/val/test splits. Few-shot splits are class-disjoint (explicit globs, top-level
groups, or seeded fractions of the classes); image-level splits share the classes: a source
laid out as ``train/ valid/ test/`` folders of the same classes, or a seeded per-class draw
of each class's images (``split_by="images"``)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from sketchshot.config import SPLITS, DataConfig, Split
from sketchshot.data.dataset import SketchDataset, filter_classes, match_classes
from sketchshot.data.folder import require_labels
from sketchshot.errors import ConfigError, DataError

# top-level folder names of a source that comes split by images, and the split each is
SPLIT_FOLDERS = {"train": "train", "training": "train", "val": "val", "valid": "val",
                 "validation": "val", "test": "test", "testing": "test"}  # fmt: skip


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


def subsample(dataset: SketchDataset, cfg: DataConfig) -> SketchDataset:
    """``cfg.subsample`` of ``dataset``'s groups (the first part of ``group/class`` names) or,
    without groups, of its classes, drawn with the split seed; at least one group, or two
    classes."""
    if cfg.subsample >= 1:
        return dataset
    names = dataset.class_names
    folders = cfg.source != "builtin" and presplit(cfg.source)  # train/cup: the class is cup
    classes = [n.partition("/")[2] if folders else n for n in names]
    grouped = all("/" in c for c in classes)
    unit = [c.split("/", 1)[0] if grouped else c for c in classes]
    units = sorted(set(unit))
    rng = np.random.default_rng([cfg.split_seed, 0x5AB5])
    keep = max(1 if grouped else 2, round(cfg.subsample * len(units)))
    chosen = {units[i] for i in rng.permutation(len(units))[:keep]}
    return dataset.select([n for n, u in zip(names, unit, strict=True) if u in chosen])


def take_split(dataset: SketchDataset, cfg: DataConfig, split: Split) -> SketchDataset:
    if split == "all":
        return merged(dataset) if cfg.source != "builtin" and presplit(cfg.source) else dataset
    if splits_images(cfg):
        part = split_images(dataset, cfg)[split]
        if part is None:
            raise DataError(f"the {split} split of {dataset.origin} has no images")
        return part
    if split != "train":  # unlabelled data has no classes to hold out
        require_labels(dataset, f"the {split} split")
    names = split_classes(dataset.class_names, cfg)[split]
    if not names:
        raise DataError(f"the {split} split of {dataset.origin} has no classes")
    return dataset.select(names)


def presplit(source: str | Path) -> frozenset[str]:
    """The splits (of ``SPLITS``) whose folders the folder or zip ``source`` holds when it is
    laid out as ``train/``, ``valid/`` (or ``val/``) and ``test/`` folders of class folders,
    with a ``train`` among them; empty (false) when it is not."""
    source = Path(source)
    try:
        if source.is_dir():
            tops = {p.name.lower() for p in source.iterdir() if p.is_dir()}
            tops -= {n for n in tops if n.startswith(".") or n == "__macosx"}
        elif zipfile.is_zipfile(source):
            with zipfile.ZipFile(source) as archive:
                names = [n for n in archive.namelist() if "/" in n.strip("/")]
            tops = {n.split("/", 1)[0].lower() for n in names}
            tops -= {n for n in tops if n.startswith(".") or n == "__macosx"}
            if len(tops) == 1:  # one wrapping folder (archive.zip/archive/train/...)
                inner = {n.split("/", 2)[1].lower() for n in names if n.count("/") >= 2}
                tops = inner if inner <= set(SPLIT_FOLDERS) else tops
        else:
            return frozenset()
    except OSError:
        return frozenset()
    if not tops or not tops <= set(SPLIT_FOLDERS):
        return frozenset()
    found = frozenset(SPLIT_FOLDERS[t] for t in tops)
    return found if "train" in found else frozenset()


def splits_images(cfg: DataConfig) -> bool:
    """Whether ``cfg``'s splits share classes: ``split_by="images"`` or a presplit source."""
    return cfg.split_by == "images" or (cfg.source != "builtin" and bool(presplit(cfg.source)))


def split_images(dataset: SketchDataset, cfg: DataConfig) -> dict[str, SketchDataset | None]:
    """Train, val and test splits of the same classes (None for an empty split): from a
    presplit source's folders, else each class's images drawn into the three with
    ``split_fractions`` and ``split_seed`` (stratified: every class in every split that has a
    fraction, at least one image each)."""
    if any((cfg.train_classes, cfg.val_classes, cfg.test_classes)):
        raise ConfigError(
            "--train-classes, --val-classes and --test-classes split the classes; with "
            "--split-by images each class's images are split (use --classes to choose classes)"
        )
    require_labels(dataset, "an image-level split")
    if cfg.source != "builtin" and presplit(cfg.source):
        return _from_folders(dataset)
    rng = np.random.default_rng(cfg.split_seed)
    wanted = [s for s, f in zip(SPLITS, cfg.split_fractions, strict=True) if f > 0]
    assign = np.zeros(len(dataset), dtype=np.int64)  # index into SPLITS
    counts = dataset.counts().tolist()
    kept = set(filter_classes(dataset, cfg.classes, cfg.exclude_classes).class_names)
    for c, name in enumerate(dataset.class_names):
        members = rng.permutation(np.flatnonzero(dataset.labels.numpy() == c))
        if len(members) < len(wanted):
            if cfg.small_classes == "fail" and name in kept:
                raise DataError(
                    f"class {name!r} has {counts[c]} image{'s' * (counts[c] != 1)}, too few for "
                    f"the {len(wanted)} splits ({', '.join(wanted)}); --small-classes train "
                    "keeps such classes in train only"
                )
            continue  # all in train
        sizes = [max(1, round(f * len(members))) if f > 0 else 0 for f in cfg.split_fractions]
        sizes[0] = len(members) - sizes[1] - sizes[2]
        while sizes[0] < 1:  # a tiny class: shrink the largest held-out share
            sizes[1 if sizes[1] >= sizes[2] else 2] -= 1
            sizes[0] += 1
        assign[members[sizes[0] : sizes[0] + sizes[1]]] = 1
        assign[members[sizes[0] + sizes[1] :]] = 2
    parts = {s: np.flatnonzero(assign == i) for i, s in enumerate(SPLITS)}
    return {s: _part(dataset, ix) for s, ix in parts.items()}


def _part(dataset: SketchDataset, index: np.ndarray) -> SketchDataset | None:
    return dataset.subset(torch.from_numpy(index)) if len(index) else None


def merged(dataset: SketchDataset) -> SketchDataset:
    """A presplit source's images as one dataset: ``train/cup`` and ``test/cup`` are ``cup``."""
    return _merge(dataset)[0]


def _from_folders(dataset: SketchDataset) -> dict[str, SketchDataset | None]:
    """A presplit source's splits: ``train/cup`` is class ``cup`` of the train split."""
    merged_set, tag = _merge(dataset)
    return {s: _part(merged_set, np.flatnonzero(tag == i)) for i, s in enumerate(SPLITS)}


def _merge(dataset: SketchDataset) -> tuple[SketchDataset, np.ndarray]:
    """The merged dataset and each image's split (an index into ``SPLITS``)."""
    split_of, names = [], []
    for name in dataset.class_names:
        top, _, rest = name.partition("/")
        if not rest:
            raise DataError(f"{dataset.origin}/{name}: images in a split folder, not in a class")
        split_of.append(SPLIT_FOLDERS[top.lower()])
        names.append(rest)
    classes = tuple(sorted(set(names)))
    lookup = torch.tensor([classes.index(n) for n in names], dtype=torch.long)
    out = SketchDataset(
        dataset.images, lookup[dataset.labels], classes, dataset.sources, dataset.origin,
        dataset.drawings, dataset.line_width,
    )  # fmt: skip
    tag = np.array([SPLITS.index(split_of[i]) for i in dataset.labels.tolist()])
    return out, tag
