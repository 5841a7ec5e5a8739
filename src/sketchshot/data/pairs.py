"""Labelled pairs for pairwise ranking: a CSV with the header ``image_a,image_b,label`` and
optional ``group``, ``agreement`` and ``reviewers`` columns (others are ignored), its filters
(``min_agreement``, ``min_reviewers``), the split by group, and the images it names.

Image paths are relative to the CSV's folder (absolute ones are taken as they are). A label
is a number in [0, 1]: 1 when a was preferred over b, 0 when b was, or the share of reviewers
who preferred a. The splits are drawn over groups, so that no group has pairs in two splits:
the ``group`` column's values, or without one the sets of pairs connected by shared images, so
that no image is in two splits either."""

from __future__ import annotations

import csv
import hashlib
import math
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from sketchshot.config import SPLITS, DataConfig
from sketchshot.data.folder import NAMED, decode_sketch, read_image_bytes, unreadable_error
from sketchshot.data.splits import split_classes
from sketchshot.errors import ConfigError, DataError, DataWarning, UnreadableImage

COLUMNS = ("image_a", "image_b", "label")
OPTIONAL = ("group", "agreement", "reviewers")
READERS = 4  # decoding threads; PIL releases the GIL while it decodes


@dataclass(frozen=True)
class PairTable:
    """The pairs of a CSV after its filters. ``images``: each image file once (resolved),
    ``names``: each as the CSV first wrote it; ``a`` and ``b`` [P] index them. ``labels`` [P]
    float32 in [0, 1] (None without a label column, which only predict reads), ``groups``
    [P] each pair's group, ``lines`` [P] its line in the CSV. ``grouped_by`` says where the
    groups came from; ``dropped`` counts the pairs each filter left out."""

    origin: str
    images: tuple[Path, ...]
    names: tuple[str, ...]
    a: np.ndarray
    b: np.ndarray
    labels: np.ndarray | None
    groups: tuple[str, ...]
    lines: np.ndarray
    grouped_by: str
    dropped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.a.shape[0])

    def images_of(self, index: np.ndarray) -> np.ndarray:
        """The sorted indices of the images that the pairs at ``index`` name."""
        return np.unique(np.concatenate([self.a[index], self.b[index]]))


@dataclass(frozen=True)
class PairSplit:
    """One split of a ``PairTable`` as a training run reports it: where it came from, the
    pairs (indices into the table) and the number of images they name. No classes."""

    origin: str
    pairs: np.ndarray
    n_images: int
    class_names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return self.n_images


def _number(text: str, column: str, line: int, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DataError(f"{where} line {line}: {column} {text.strip()!r} is not a number")
    return value


def read_pairs(
    path: str | Path,
    min_agreement: float | None = None,
    min_reviewers: int | None = None,
    labelled: bool = True,
    check_files: bool = True,
) -> PairTable:
    """The pairs of the CSV at ``path`` whose images exist, after the filters. One
    ``DataError`` per problem, naming the file and line: no such file, missing columns, a
    label that is not a number in [0, 1], a bad agreement or reviewers value, missing image
    files (all named, the first ``NAMED``; unless not ``check_files``), no pairs left. A
    filter whose column the CSV does not have is a ``ConfigError``. ``labelled=False``: the
    label column is optional (predict)."""
    path = Path(path)
    where = str(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise DataError(f"pairs file not found: {path}") from None
    except IsADirectoryError:
        raise DataError(f"{path} is a folder; --pairs takes a CSV file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read pairs file {path}: {exc}") from None
    if not rows:
        raise DataError(f"{path} is empty; expected a header image_a,image_b,label")
    header = [h.strip().lower() for h in rows[0]]
    needed = COLUMNS if labelled else COLUMNS[:2]
    missing = [c for c in needed if c not in header]
    if missing:
        raise DataError(
            f"{path}: no {', '.join(missing)} column (the header must name "
            f"{', '.join(needed)}; optional: {', '.join(OPTIONAL)}), found "
            f"{','.join(header) or 'nothing'}"
        )
    column = {name: header.index(name) for name in (*COLUMNS, *OPTIONAL) if name in header}
    for option, name, value in (
        ("--min-agreement", "agreement", min_agreement),
        ("--min-reviewers", "reviewers", min_reviewers),
    ):
        if value is not None and name not in column:
            raise ConfigError(f"{option} needs the {name} column; {path} has none")
    folder = path.parent
    index: dict[Path, int] = {}
    images: list[Path] = []
    names: list[str] = []
    a, b, labels, groups, lines = [], [], [], [], []
    dropped = {"--min-agreement": 0, "--min-reviewers": 0}
    width = max(column.values()) + 1
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue  # a blank line
        row = row + [""] * (width - len(row))
        sides = []
        for side in ("image_a", "image_b"):
            name = row[column[side]].strip()
            if not name:
                raise DataError(f"{where} line {line}: no {side}")
            file = Path(os.path.abspath(folder / name))  # one entry per file, however named
            if file not in index:
                index[file] = len(images)
                images.append(file)
                names.append(name)
            sides.append(index[file])
        if "label" in column:
            label = _number(row[column["label"]], "label", line, where)
            if not 0 <= label <= 1:
                raise DataError(
                    f"{where} line {line}: label {label:g} is outside [0, 1] (1: a preferred, "
                    "0: b preferred, or the share of reviewers who preferred a)"
                )
        else:
            label = math.nan
        if min_agreement is not None:
            agreement = _number(row[column["agreement"]], "agreement", line, where)
            if agreement < min_agreement:
                dropped["--min-agreement"] += 1
                continue
        if min_reviewers is not None:
            reviewers = _number(row[column["reviewers"]], "reviewers", line, where)
            if reviewers < min_reviewers:
                dropped["--min-reviewers"] += 1
                continue
        a.append(sides[0])
        b.append(sides[1])
        labels.append(label)
        groups.append(row[column["group"]].strip() if "group" in column else "")
        lines.append(line)
    if not a:
        filtered = sum(dropped.values())
        why = f"; the filters left out all {filtered}" if filtered else ""
        raise DataError(f"no pairs in {path}{why}")
    used = sorted(set(a) | set(b))
    missing_files = [str(images[i]) for i in used if check_files and not images[i].is_file()]
    if missing_files:
        more = f" and {len(missing_files) - NAMED} more" if len(missing_files) > NAMED else ""
        raise DataError(
            f"{len(missing_files)} image(s) named in {path} not found (paths are relative to "
            f"its folder): {', '.join(missing_files[:NAMED])}{more}"
        )
    # keep only the images that pairs left after the filters name, renumbered in order
    renumber = np.full(len(images), -1, dtype=np.int64)
    renumber[used] = np.arange(len(used))
    a_ix, b_ix = renumber[np.array(a)], renumber[np.array(b)]
    grouped_by = "its group column"
    if "group" not in column:
        groups = connected_groups(a_ix, b_ix, len(used))
        grouped_by = "pairs connected by shared images (no group column)"
    return PairTable(
        origin=where,
        images=tuple(images[i] for i in used),
        names=tuple(names[i] for i in used),
        a=a_ix,
        b=b_ix,
        labels=np.asarray(labels, dtype=np.float32) if "label" in column else None,
        groups=tuple(groups),
        lines=np.asarray(lines, dtype=np.int64),
        grouped_by=grouped_by,
        dropped={k: v for k, v in dropped.items() if v},
    )


def connected_groups(a: np.ndarray, b: np.ndarray, n_images: int) -> list[str]:
    """Each pair's group when pairs that share an image belong together: the connected
    components of the graph whose nodes are the images and whose edges are the pairs, named
    ``pairs-1``, ``pairs-2``, ... in the order of their first pair."""
    parent = list(range(n_images))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(a.tolist(), b.tolist(), strict=True):
        parent[root(i)] = root(j)
    names: dict[int, str] = {}
    return [names.setdefault(root(i), f"pairs-{len(names) + 1}") for i in a.tolist()]


def split_pairs(table: PairTable, cfg: DataConfig) -> dict[str, np.ndarray]:
    """The pair indices of train, val and test: the groups drawn into the splits as classes
    are (``split_classes``: ``split_fractions`` of the groups with ``split_seed``, or the
    group lists ``train_classes``, ``val_classes``, ``test_classes``), each pair in its
    group's split; with ``subsample`` < 1, of a seeded share of the groups only (the other
    pairs in no split). A ``DataWarning`` when images appear in two splits (a group column
    that does not keep images apart)."""
    names = tuple(sorted(set(table.groups)))
    if cfg.subsample < 1:  # a seeded share of the groups, drawn before the split
        rng = np.random.default_rng([cfg.split_seed, 0x5AB5])
        keep = max(1, round(cfg.subsample * len(names)))
        names = tuple(sorted(names[i] for i in rng.permutation(len(names))[:keep]))
    chosen = split_classes(names, cfg)
    split_of = {g: SPLITS.index(s) for s in SPLITS for g in chosen[s]}
    tags = np.array([split_of.get(g, -1) for g in table.groups])
    out = {s: np.flatnonzero(tags == i) for i, s in enumerate(SPLITS)}
    seen = [set(table.images_of(out[s]).tolist()) for s in SPLITS]
    shared = (seen[0] & seen[1]) | (seen[0] & seen[2]) | (seen[1] & seen[2])
    if shared:
        warnings.warn(
            f"{table.origin}: {len(shared)} image(s) appear in pairs of more than one split; "
            "the group column keeps groups apart, not images",
            DataWarning,
            stacklevel=2,
        )
    return out


def split_counts(table: PairTable, splits: dict[str, np.ndarray]) -> dict[str, dict[str, int]]:
    """Pairs, images and groups of each split."""
    return {
        s: {
            "pairs": int(len(ix)),
            "images": int(len(table.images_of(ix))) if len(ix) else 0,
            "groups": len({table.groups[i] for i in ix.tolist()}),
        }
        for s, ix in splits.items()
    }


def file_sha256s(paths: Sequence[Path]) -> list[str]:
    """The sha256 of each file's bytes (what the feature cache is keyed by)."""

    def digest(path: Path) -> str:
        try:
            return hashlib.sha256(read_image_bytes(path, str(path))).hexdigest()
        except OSError as exc:
            raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None

    with ThreadPoolExecutor(max_workers=READERS) as pool:
        return list(pool.map(digest, paths))


def decode_images(
    paths: Sequence[Path],
    image_size: int,
    invert: str,
    errors: dict[int, str] | None = None,
    fit: str = "page",
) -> torch.Tensor:
    """uint8 [N, 1, S, S] of the image files ``paths`` (strokes bright), decoded as a model's
    preprocessing says (``invert``, ``fit``: as ``decode_sketch``). Unreadable images are one
    ``DataError`` naming them; with ``errors`` (a dict) each one's reason is put there by its
    index instead and its image left blank."""
    size = image_size

    def read(path: Path) -> np.ndarray | UnreadableImage:
        try:
            try:
                data = read_image_bytes(path, str(path))
            except OSError as exc:
                raise UnreadableImage(str(path), exc.strerror or exc) from None
            return decode_sketch(data, size, invert, str(path), fit)  # type: ignore[arg-type]
        except UnreadableImage as exc:
            return exc

    with ThreadPoolExecutor(max_workers=READERS) as pool:
        results = list(pool.map(read, paths))
    failed = [(i, r) for i, r in enumerate(results) if isinstance(r, UnreadableImage)]
    if failed and errors is None:
        raise unreadable_error([r for _, r in failed], len(paths), "the pairs' images")
    for i, exc in failed:
        errors[i] = str(exc)  # type: ignore[index]
        results[i] = np.zeros((size, size), dtype=np.uint8)
    if not results:
        return torch.empty(0, 1, size, size, dtype=torch.uint8)
    return torch.from_numpy(np.stack(results)).unsqueeze(1)  # type: ignore[arg-type]
