"""What is in a sketch source before training on it: classes and their counts, image sizes or
strokes per drawing, what the readers refuse and why, exact duplicates across classes, and the
files its reader skips.

Images (a folder or .zip of class folders) go through the decoder training uses, and vector
sources (Omniglot strokes, QuickDraw, SVG) through their readers, so what the report calls
unreadable is what training would refuse."""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from sketchshot.data.folder import (
    IMAGE_SUFFIXES,
    UNLABELLED,
    archive_entries,
    class_of,
    decode_sketch,
    read_image_bytes,
    read_member,
)
from sketchshot.data.vector.bad_records import BadRecords
from sketchshot.data.vector.drawing import Drawing
from sketchshot.data.vector.files import suffixes_in
from sketchshot.data.vector.source import (
    QUICKDRAW_SUFFIXES,
    SourceKind,
    read_vector_source,
    source_kind,
)
from sketchshot.errors import DataError, UnreadableImage

# The side images are decoded at to find blank ones: small enough to be quick, the size the
# encoders see most.
CHECK_SIZE = 28
# The files the reader of each kind reads; the other files of a source are listed as unsupported.
READ_SUFFIXES: dict[SourceKind, set[str]] = {
    "images": IMAGE_SUFFIXES,
    "omniglot_strokes": {".txt"},
    "quickdraw": set(QUICKDRAW_SUFFIXES),
    "svg": {".svg"},
}
UNSAFE = "unsafe zip path (absolute or with '..'): never read"


@dataclass(frozen=True)
class Spread:
    """The smallest, median and largest of a count over the drawings of a source."""

    min: int
    median: float
    max: int

    @classmethod
    def of(cls, values: list[int]) -> Spread | None:
        return cls(min(values), float(np.median(values)), max(values)) if values else None


@dataclass(frozen=True)
class Inspection:
    """The report of ``inspect_source``. Paths are relative to ``source``; a vector record's
    path may end in ``:line`` or ``[index]``."""

    source: str
    kind: SourceKind
    labelled: bool
    counts: dict[str, int]  # class -> readable images, or usable drawings
    sizes: dict[str, int]  # "WxH" -> images (and QuickDraw bitmaps)
    strokes: Spread | None = None  # strokes per drawing, for stroke drawings
    points: Spread | None = None  # points per drawing, for stroke drawings
    unreadable: dict[str, str] = field(default_factory=dict)  # path -> the reader's reason
    duplicates: list[list[str]] = field(default_factory=list)  # same content in several classes
    unsupported: list[str] = field(default_factory=list)  # files the source's reader skips

    @property
    def n_images(self) -> int:
        """Readable images, or usable drawings (each one image once rendered)."""
        return sum(self.counts.values())

    @property
    def imbalance(self) -> float | None:
        """Largest over smallest class count; None without classes or with an empty one."""
        values = list(self.counts.values())
        return max(values) / min(values) if values and min(values) > 0 else None


def inspect_source(
    source: str | Path, max_per_class: int | None = None, trust_pickle: bool = False
) -> Inspection:
    """Read every image or drawing of ``source`` once (at most ``max_per_class`` drawings of
    each class of a vector source; image folders are read whole) with the reader training
    uses, keeping what it refuses with its reasons. ``trust_pickle`` lets sketch-rnn ``.npz``
    files be unpickled, as ``--trust-npz`` does for training."""
    source = Path(source)
    kind = _kind(source)
    if kind == "images":
        return _inspect_images(source)
    return _inspect_drawings(source, kind, max_per_class, trust_pickle)


def _kind(source: Path) -> SourceKind:
    """``source_kind``, except that a folder or zip with images in it is inspected as images
    whatever else it holds: the other files are listed as unsupported, to be moved out."""
    try:
        if suffixes_in(source) & IMAGE_SUFFIXES:
            return "images"
    except (zipfile.BadZipFile, OSError):
        pass  # neither a folder nor a zip: source_kind says what it is, or what is wrong
    return source_kind(source)


def _hidden(path: PurePosixPath) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in path.parts)


def _open_zip(source: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise DataError(f"{source} is neither a folder nor a readable zip archive: {exc}") from None


def _files(source: Path) -> list[PurePosixPath]:
    """The visible files of a folder or zip (not hidden, not ``__MACOSX``), sorted; none for
    a single QuickDraw file."""
    if source.is_dir():
        names = [p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file()]
    elif source.suffix.lower() in QUICKDRAW_SUFFIXES:
        names = []
    else:
        with _open_zip(source) as archive:
            names = [n for n in archive.namelist() if not n.endswith("/")]
    return sorted(p for p in map(PurePosixPath, names) if not _hidden(p))


def _skipped(files: list[PurePosixPath], kind: SourceKind) -> list[str]:
    return [str(f) for f in files if f.suffix.lower() not in READ_SUFFIXES[kind]]


def _across_classes(found: dict[str, list[tuple[str, str]]]) -> list[list[str]]:
    """The paths of each content (by hash) found in more than one class."""
    return sorted(
        [path for _, path in same] for same in found.values() if len({c for c, _ in same}) > 1
    )


def _inspect_images(source: Path) -> Inspection:
    files = _files(source)
    if source.is_dir():
        images = [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES]
        return _decode_images(
            source, images, lambda e, name: read_image_bytes(source / str(e), name), files
        )
    with _open_zip(source) as archive:
        members, unsafe = archive_entries(archive)
        found = _decode_images(
            source,
            sorted(members),
            lambda e, name: read_member(archive, members[e], name),
            files,
            in_archive=True,
        )
    return replace(found, unreadable=dict.fromkeys(unsafe, UNSAFE) | found.unreadable)


def _decode_images(
    source: Path,
    images: list[PurePosixPath],
    read: Callable[[PurePosixPath, str], bytes],
    files: list[PurePosixPath],
    in_archive: bool = False,
) -> Inspection:
    """Decode each of ``images`` (its bytes from ``read(entry, name)``) at ``CHECK_SIZE``, count
    the readable ones by class and size, and hash their bytes (sha256) to find duplicates."""
    labelled = all(len(f.parts) > 1 for f in images)
    classes = class_of(images, in_archive) if labelled else [UNLABELLED] * len(images)
    counts: Counter[str] = Counter(dict.fromkeys(classes, 0))
    sizes: Counter[str] = Counter()
    unreadable: dict[str, str] = {}
    by_hash: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for entry, cls in zip(images, classes, strict=True):
        name = f"{source}:{entry}" if in_archive else str(source / str(entry))
        try:
            data = read(entry, name)
            by_hash[hashlib.sha256(data).hexdigest()].append((cls, str(entry)))
            decode_sketch(data, CHECK_SIZE, "auto", name)
            with Image.open(io.BytesIO(data)) as im:
                sizes[f"{im.width}x{im.height}"] += 1
        except UnreadableImage as exc:
            unreadable[str(entry)] = exc.reason
            continue
        except OSError as exc:
            unreadable[str(entry)] = exc.strerror or str(exc)
            continue
        counts[cls] += 1
    return Inspection(
        source=str(source),
        kind="images",
        labelled=labelled,
        counts=dict(sorted(counts.items())),
        sizes=dict(sizes.most_common()),
        unreadable=unreadable,
        duplicates=_across_classes(by_hash),
        unsupported=_skipped(files, "images"),
    )


def _inspect_drawings(
    source: Path, kind: SourceKind, max_per_class: int | None, trust_pickle: bool
) -> Inspection:
    """Read a vector source with bad records skipped (and kept, with their reasons), count
    strokes and points per drawing (a QuickDraw bitmap: its size), and hash each drawing's
    arrays to find duplicates."""
    files = _files(source)
    bad = BadRecords("skip")
    counts: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    strokes: list[int] = []
    points: list[int] = []
    by_hash: dict[str, list[tuple[str, str]]] = defaultdict(list)
    prefix = _record_prefix(source)
    for sketch in read_vector_source(source, kind, bad, max_per_class, trust_pickle):
        counts[sketch.class_name] += 1
        if isinstance(sketch.drawing, np.ndarray):  # a QuickDraw bitmap, uint8 [H, W]
            height, width = sketch.drawing.shape
            sizes[f"{width}x{height}"] += 1
        else:
            strokes.append(len(sketch.drawing))
            points.append(sum(len(s) for s in sketch.drawing))
        where = sketch.source.removeprefix(prefix)
        by_hash[_drawing_hash(sketch.drawing)].append((sketch.class_name, where))
    return Inspection(
        source=str(source),
        kind=kind,
        labelled=True,  # every vector reader names a class for each record
        counts=dict(sorted(counts.items())),
        sizes=dict(sizes.most_common()),
        strokes=Spread.of(strokes),
        points=Spread.of(points),
        unreadable={b.where.removeprefix(prefix): b.reason for b in bad.skipped},
        duplicates=_across_classes(by_hash),
        unsupported=_skipped(files, kind),
    )


def _record_prefix(source: Path) -> str:
    """What readers write before a record's path in ``source``: the folder, the archive
    (``archive:entry``), or a single QuickDraw file's folder (leaving ``cat.ndjson:3``)."""
    if source.is_dir():
        return f"{source}{os.sep}"
    if source.suffix.lower() in QUICKDRAW_SUFFIXES:
        return f"{source.parent}{os.sep}"
    return f"{source}:"


def _drawing_hash(drawing: Drawing | np.ndarray) -> str:
    """sha256 of a drawing's arrays and their shapes (the same points split into other strokes
    are another drawing)."""
    digest = hashlib.sha256()
    for part in [drawing] if isinstance(drawing, np.ndarray) else drawing:
        digest.update(f"{part.dtype}{part.shape}".encode())
        digest.update(part.tobytes())
    return digest.hexdigest()
