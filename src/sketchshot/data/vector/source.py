"""Which kind of sketch source a path is, and a vector source read into a ``SketchDataset``:
every drawing rendered once, at load, by the one renderer."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from sketchshot.data.dataset import SketchDataset
from sketchshot.data.folder import IMAGE_SUFFIXES
from sketchshot.data.vector.bad_records import BadRecords, OnError
from sketchshot.data.vector.drawing import Sketch
from sketchshot.data.vector.files import suffixes_in
from sketchshot.data.vector.omniglot import read_omniglot_strokes
from sketchshot.data.vector.quickdraw import read_bitmaps, read_ndjson, read_stroke3
from sketchshot.data.vector.render import LINE_WIDTH, render
from sketchshot.data.vector.svg import read_svg_folder
from sketchshot.errors import DataError

SourceKind = Literal["images", "omniglot_strokes", "quickdraw", "svg"]
QUICKDRAW_SUFFIXES = (".ndjson", ".npy", ".npz")


def source_kind(source: str | Path) -> SourceKind:
    """What ``source`` holds, by its files' suffixes: images (a folder or zip of class
    folders), Omniglot stroke files (``.txt``), QuickDraw files (a file or folder of
    ``.ndjson``/``.npy``/``.npz``) or SVG drawings. ``DataError`` when it mixes kinds."""
    source = Path(source)
    if not source.exists():
        raise DataError(f"data path does not exist: {source}")
    if source.is_file() and source.suffix.lower() in QUICKDRAW_SUFFIXES:
        return "quickdraw"
    if source.is_file() and not zipfile.is_zipfile(source):
        return "images"  # load_image_folder says what is wrong with it
    try:
        found = suffixes_in(source)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{source} is not a readable zip archive: {exc}") from None
    kinds: dict[SourceKind, set[str]] = {
        "images": found & IMAGE_SUFFIXES,
        "omniglot_strokes": found & {".txt"},
        "quickdraw": found & set(QUICKDRAW_SUFFIXES),
        "svg": found & {".svg"},
    }
    present = [kind for kind, suffixes in kinds.items() if suffixes]
    if len(present) > 1:
        listed = ", ".join(f"{k} ({' '.join(sorted(kinds[k]))})" for k in present)
        raise DataError(f"{source} mixes kinds of sketch files: {listed}; keep one per source")
    return present[0] if present else "images"


def _quickdraw(
    source: Path, bad: BadRecords, max_per_class: int | None, trust_pickle: bool
) -> Iterator[Sketch]:
    files = [source] if source.is_file() else sorted(
        p for p in source.rglob("*")
        if p.suffix.lower() in QUICKDRAW_SUFFIXES and not p.name.startswith(".")
    )  # fmt: skip
    taken: dict[str, int] = {}  # across files: two files may name one class
    for path in files:
        suffix = path.suffix.lower()
        if suffix == ".ndjson":
            sketches = read_ndjson(path, bad, max_per_class)
        elif suffix == ".npy":
            sketches = read_bitmaps(path, bad, max_per_class)
        else:
            sketches = read_stroke3(path, bad, max_per_class, trust_pickle)
        for sketch in sketches:
            if max_per_class is None or taken.get(sketch.class_name, 0) < max_per_class:
                taken[sketch.class_name] = taken.get(sketch.class_name, 0) + 1
                yield sketch


def read_vector_source(
    source: str | Path,
    kind: SourceKind,
    bad: BadRecords,
    max_per_class: int | None = None,
    trust_pickle: bool = False,
) -> Iterator[Sketch]:
    """The sketches of a vector source of ``kind``, lazily."""
    source = Path(source)
    if kind == "omniglot_strokes":
        return read_omniglot_strokes(source, bad, max_per_class)
    if kind == "svg":
        return read_svg_folder(source, bad, max_per_class)
    if kind == "quickdraw":
        return _quickdraw(source, bad, max_per_class, trust_pickle)
    raise ValueError(f"{kind} is not a vector source")


def _raster(sketch: Sketch, size: int, line_width: float) -> np.ndarray:
    if isinstance(sketch.drawing, np.ndarray):  # a bitmap already (QuickDraw .npy)
        image = sketch.drawing
        if image.shape[0] == size:
            return image
        resample = Image.Resampling.BOX if image.shape[0] > size else Image.Resampling.BILINEAR
        return np.asarray(Image.fromarray(image).resize((size, size), resample), dtype=np.uint8)
    return render(sketch.drawing, size, line_width)


def load_vector_source(
    source: str | Path,
    kind: SourceKind,
    image_size: int,
    line_width: float = LINE_WIDTH,
    max_per_class: int | None = None,
    on_error: OnError = "fail",
    trust_pickle: bool = False,
) -> SketchDataset:
    """Every drawing of a vector source rendered once at ``image_size`` (``line_width`` a
    fraction of it) into a ``SketchDataset``, uint8 [N, 1, S, S]. Bad records raise a
    ``BadRecord`` or, with ``on_error="skip"``, are left out with one ``DataWarning`` saying
    how many and why."""
    bad = BadRecords(on_error)
    images, classes, sources = [], [], []
    for sketch in read_vector_source(source, kind, bad, max_per_class, trust_pickle):
        images.append(_raster(sketch, image_size, line_width))
        classes.append(sketch.class_name)
        sources.append(sketch.source)
    bad.warn(source)
    if not images:
        skipped = f" ({bad.count} bad records skipped)" if bad.count else ""
        raise DataError(f"no drawings found in {source}{skipped}")
    return SketchDataset.of(images, classes, sources, str(source))
