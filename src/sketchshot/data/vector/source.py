"""Which kind of sketch source a path is, and a vector source read into a ``SketchDataset``:
every drawing rendered once, at load, by the one renderer."""

from __future__ import annotations

import zipfile
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from sketchshot.config import DataConfig
from sketchshot.data.dataset import SketchDataset
from sketchshot.data.folder import IMAGE_SUFFIXES
from sketchshot.data.vector.bad_records import BadRecords
from sketchshot.data.vector.drawing import Sketch
from sketchshot.data.vector.files import suffixes_in
from sketchshot.data.vector.omniglot import read_omniglot_strokes
from sketchshot.data.vector.quickdraw import read_bitmaps, read_ndjson, read_stroke3
from sketchshot.data.vector.render import render
from sketchshot.data.vector.svg import read_svg_folder
from sketchshot.errors import ConfigError, DataError

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
    source: Path,
    bad: BadRecords,
    max_per_class: int | None,
    trust_pickle: bool,
    recognized: bool | None,
    countries: Collection[str],
) -> Iterator[Sketch]:
    files = [source] if source.is_file() else sorted(
        p for p in source.rglob("*")
        if p.suffix.lower() in QUICKDRAW_SUFFIXES and not p.name.startswith(".")
    )  # fmt: skip
    taken: dict[str, int] = {}  # across files: two files may name one class
    for path in files:
        suffix = path.suffix.lower()
        if suffix != ".ndjson" and (recognized is not None or countries):
            raise ConfigError(
                f"--recognized and --countries filter .ndjson files; {path} has no such fields"
            )
        if suffix == ".ndjson":
            sketches = read_ndjson(path, bad, max_per_class, recognized, countries)
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
    recognized: bool | None = None,
    countries: Collection[str] = (),
) -> Iterator[Sketch]:
    """The sketches of a vector source of ``kind``, lazily; ``recognized`` and ``countries``
    filter QuickDraw's ``.ndjson`` records (``read_ndjson``) and are refused elsewhere."""
    source = Path(source)
    if (recognized is not None or countries) and kind != "quickdraw":
        raise ConfigError("--recognized and --countries filter QuickDraw .ndjson files only")
    if kind == "omniglot_strokes":
        return read_omniglot_strokes(source, bad, max_per_class)
    if kind == "svg":
        return read_svg_folder(source, bad, max_per_class)
    if kind == "quickdraw":
        return _quickdraw(source, bad, max_per_class, trust_pickle, recognized, countries)
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
    source: str | Path, kind: SourceKind, image_size: int, cfg: DataConfig | None = None
) -> SketchDataset:
    """Every drawing of a vector source rendered once at ``image_size`` into a
    ``SketchDataset``, uint8 [N, 1, S, S], keeping the drawings for views on the strokes.
    ``cfg`` gives the line width (a fraction of the side), ``max_per_class``, the QuickDraw
    filters, and what a bad record does: raise a ``BadRecord`` or, with ``on_error="skip"``,
    be left out with one ``DataWarning`` saying how many and why."""
    cfg = cfg or DataConfig(source=str(source))
    bad = BadRecords(cfg.on_error)
    recognized = {"any": None, "yes": True, "no": False}[cfg.recognized]
    sketches = read_vector_source(
        source, kind, bad, cfg.max_per_class, cfg.trust_npz, recognized, cfg.countries
    )
    images, classes, sources, drawings = [], [], [], []
    for sketch in sketches:
        images.append(_raster(sketch, image_size, cfg.line_width))
        classes.append(sketch.class_name)
        sources.append(sketch.source)
        drawings.append(sketch.drawing)
    bad.warn(source)
    if not images:
        skipped = f" ({bad.count} bad records skipped)" if bad.count else ""
        raise DataError(f"no drawings found in {source}{skipped}")
    strokes = not any(isinstance(d, np.ndarray) for d in drawings)  # .npy files are bitmaps
    return SketchDataset.of(
        images, classes, sources, str(source), drawings if strokes else None, cfg.line_width
    )
