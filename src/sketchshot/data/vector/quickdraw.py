"""QuickDraw's files (Ha & Eck 2017, "A Neural Representation of Sketch Drawings"): ``.ndjson``
drawings (raw and simplified), the 28x28 ``.npy`` bitmaps and sketch-rnn's ``.npz`` stroke-3
arrays. A class file holds ~100,000 drawings: each reader stops at ``max_per_class`` and never
loads a whole file to sample from it."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Collection, Iterator
from pathlib import Path

import numpy as np

from sketchshot.data.vector.bad_records import BadRecords
from sketchshot.data.vector.drawing import Drawing, Sketch, as_drawing
from sketchshot.errors import DataError

BITMAP_SIDE = 28  # QuickDraw's numpy_bitmap files: N x 784 uint8, strokes bright on black
NPZ_SPLITS = ("train", "valid", "test")  # read in this order until max_per_class


def _full(taken: dict[str, int], name: str, max_per_class: int | None) -> bool:
    return max_per_class is not None and taken.get(name, 0) >= max_per_class


def read_ndjson(
    path: str | Path,
    bad: BadRecords | None = None,
    max_per_class: int | None = None,
    recognized: bool | None = None,
    countries: Collection[str] = (),
) -> Iterator[Sketch]:
    """The drawings of a QuickDraw ``.ndjson`` file, read line by line: ``word`` is the class,
    ``drawing`` a list of ``[[x...], [y...]]`` strokes (raw files add ``[t...]``, ignored).
    ``recognized`` keeps only drawings the game did (True) or did not (False) recognise;
    ``countries`` keeps only those ``countrycode``s. A file is read until every class seen in
    it has ``max_per_class`` drawings (QuickDraw files hold one class each)."""
    bad = bad or BadRecords()
    path = Path(path)
    taken: dict[str, int] = {}
    try:
        f = open(path, encoding="utf-8")  # noqa: SIM115 -- closed below; a generator's with
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    with f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
                word, strokes = record["word"], record["drawing"]
                if not isinstance(word, str) or not word:
                    raise ValueError("'word' is not a class name")
                drawing = _ndjson_drawing(strokes)
            except json.JSONDecodeError as exc:
                bad.report(where, f"malformed JSON ({exc.msg})")
                continue
            except (KeyError, TypeError, ValueError) as exc:
                reason = f"no {exc} field" if isinstance(exc, KeyError) else str(exc)
                bad.report(where, reason)
                continue
            if recognized is not None and bool(record.get("recognized")) != recognized:
                continue
            if countries and record.get("countrycode") not in countries:
                continue
            if _full(taken, word, max_per_class):
                continue
            if not bad.usable(where, drawing):
                continue
            taken[word] = taken.get(word, 0) + 1
            yield Sketch(word, drawing, where)
            if all(_full(taken, w, max_per_class) for w in taken):
                break  # the rest of the file is never read


def _ndjson_drawing(strokes: object) -> Drawing:
    if not isinstance(strokes, list):
        raise ValueError("'drawing' is not a list of strokes")
    pairs = []
    for i, stroke in enumerate(strokes):
        if not isinstance(stroke, list) or len(stroke) not in (2, 3):
            raise ValueError(f"stroke {i} is not [[x...], [y...]] (or with [t...])")
        xs, ys = stroke[0], stroke[1]
        if not isinstance(xs, list) or not isinstance(ys, list) or len(xs) != len(ys):
            raise ValueError(f"stroke {i}: x and y lists differ in length")
        pairs.append(np.asarray([xs, ys], dtype=np.float32).T.reshape(-1, 2))
    return as_drawing(pairs)


def read_bitmaps(
    path: str | Path, bad: BadRecords | None = None, max_per_class: int | None = None
) -> Iterator[Sketch]:
    """The first ``max_per_class`` images of a QuickDraw ``numpy_bitmap`` file (N x 784 uint8,
    class = file stem), memory-mapped: rasters, uint8 [28, 28], strokes bright. A truncated or
    misshapen file goes to ``bad`` whole."""
    bad = bad or BadRecords()
    path = Path(path)
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        bad.report(str(path), f"not a readable .npy array (truncated?): {exc}")
        return
    if array.ndim != 2 or array.shape[1] != BITMAP_SIDE**2 or array.dtype != np.uint8:
        bad.report(str(path), f"expected N x 784 uint8 bitmaps, got {array.shape} {array.dtype}")
        return
    n = len(array) if max_per_class is None else min(len(array), max_per_class)
    for i in range(n):
        image = np.array(array[i], dtype=np.uint8).reshape(BITMAP_SIDE, BITMAP_SIDE)
        if not image.any():
            bad.report(f"{path}[{i}]", "empty drawing (blank bitmap)")
            continue
        yield Sketch(path.stem, image, f"{path}[{i}]")


def read_stroke3(
    path: str | Path,
    bad: BadRecords | None = None,
    max_per_class: int | None = None,
    trust_pickle: bool = False,
) -> Iterator[Sketch]:
    """The drawings of a sketch-rnn ``.npz`` file (class = file stem): arrays ``train``,
    ``valid``, ``test`` of [n, 3] (dx, dy, pen lifted after this point), read in that order.

    These files store object arrays, which numpy can only load by unpickling, and unpickling
    can run code: without ``trust_pickle`` such a file is refused with a ``DataError`` that
    says so. Use it only for files from a source you trust (QuickDraw's own bucket)."""
    bad = bad or BadRecords()
    path = Path(path)
    try:
        archive = np.load(path, allow_pickle=trust_pickle, encoding="latin1")
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        bad.report(str(path), f"not a readable .npz archive: {exc}")
        return
    with archive:
        splits = [s for s in NPZ_SPLITS if s in archive.files]
        if not splits:
            bad.report(str(path), f"no {'/'.join(NPZ_SPLITS)} arrays (has {archive.files})")
            return
        taken = 0
        for split in splits:
            try:
                sketches = archive[split]
            except ValueError as exc:
                if "allow_pickle" not in str(exc):
                    bad.report(f"{path}[{split}]", str(exc))
                    continue
                raise DataError(
                    f"{path} holds pickled object arrays (sketch-rnn's format) and unpickling "
                    "can run code: pass --trust-npz only if you trust where the file came from"
                ) from None
            for i, sketch in enumerate(sketches):
                if max_per_class is not None and taken >= max_per_class:
                    return
                where = f"{path}[{split}][{i}]"
                try:
                    drawing = stroke3_to_drawing(np.asarray(sketch, dtype=np.float32))
                except ValueError as exc:
                    bad.report(where, str(exc))
                    continue
                if not bad.usable(where, drawing):
                    continue
                taken += 1
                yield Sketch(path.stem, drawing, where)


def stroke3_to_drawing(stroke3: np.ndarray) -> Drawing:
    """sketch-rnn's stroke-3, float [n, 3] (dx, dy, pen lifted after this point), as strokes of
    absolute points, starting at (0, 0)."""
    if stroke3.ndim != 2 or stroke3.shape[1] != 3:
        raise ValueError(f"expected [n, 3] (dx, dy, pen) rows, got shape {stroke3.shape}")
    points = np.cumsum(stroke3[:, :2], axis=0, dtype=np.float64).astype(np.float32)
    ends = np.flatnonzero(stroke3[:, 2] > 0.5) + 1
    return [s for s in np.split(points, ends) if len(s)]
