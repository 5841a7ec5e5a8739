"""Image folders ``ROOT/<class>/*.png`` (class paths may nest, as Omniglot's
``<alphabet>/<character>/``), read from a directory or straight from a ``.zip`` archive, and
the decoding of one image file into a sketch."""

from __future__ import annotations

import io
import os
import re
import threading
import warnings
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from sketchshot.data.dataset import SketchDataset
from sketchshot.errors import DataError, DataWarning, UnreadableImage

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
# The most bytes read for one image file or zip entry. Scans of drawings are a few MB; the cap
# keeps a bad file (a 200 MB zip entry, a pipe that never ends) from being read into memory
# whole before it is refused.
MAX_IMAGE_BYTES = 64 * 2**20
NAMED = 10  # unreadable images (or skipped entries) named in one message; the rest are counted
_WIDE_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}  # values not in 0..255
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_OPENING = threading.Lock()  # warning filters are process-wide: one Image.open at a time


# The one class of an unlabelled source (images at its top level). '<' and '>' cannot name a
# folder on Windows, so no class folder is mistaken for it.
UNLABELLED = "<unlabelled>"


def is_unlabelled(dataset: SketchDataset) -> bool:
    return dataset.class_names == (UNLABELLED,)


def require_labels(dataset: SketchDataset, what: str) -> SketchDataset:
    """``dataset``, or a ``DataError`` saying that ``what`` needs class folders when it is
    unlabelled."""
    if is_unlabelled(dataset):
        loose = next((s for s in dataset.sources if "/" not in s), dataset.sources[0])
        raise DataError(
            f"{what} needs labels (ROOT/<class>/*.png): {Path(dataset.origin) / loose} is not "
            f"inside a class folder, so {dataset.origin} is read as unlabelled, which only "
            "pretrain takes"
        )
    return dataset


def _over_limit(n_bytes: int | None) -> str:
    limit = f"the {MAX_IMAGE_BYTES // 2**20} MB limit for one image"
    return f"over {limit}" if n_bytes is None else f"{n_bytes / 2**20:.0f} MB is over {limit}"


def _read_capped(f: io.BufferedIOBase, name: str) -> bytes:
    """All of ``f``, read a MB at a time (``read(n)`` would allocate n bytes up front), or
    ``UnreadableImage`` once it passes ``MAX_IMAGE_BYTES``."""
    data = bytearray()
    while chunk := f.read(2**20):
        data += chunk
        if len(data) > MAX_IMAGE_BYTES:
            raise UnreadableImage(name, _over_limit(None))
    return bytes(data)


def read_image_bytes(path: str | Path, name: str) -> bytes:
    """The bytes of one image file, at most ``MAX_IMAGE_BYTES``: ``OSError`` when it cannot be
    opened, ``UnreadableImage`` when it is larger."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_IMAGE_BYTES:  # refused before reading anything
            raise UnreadableImage(name, _over_limit(size))
        return _read_capped(f, name)  # a pipe or a device has no size: capped as it is read


def read_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, name: str) -> bytes:
    """The bytes of one zip entry, at most ``MAX_IMAGE_BYTES``, its CRC checked;
    ``UnreadableImage`` saying why when it cannot be read."""
    if member.flag_bits & 0x1:
        raise UnreadableImage(name, "encrypted (password-protected zip entries are not supported)")
    if member.file_size > MAX_IMAGE_BYTES:  # the declared size, refused before reading
        raise UnreadableImage(name, _over_limit(member.file_size))
    try:
        with archive.open(member) as f:
            return _read_capped(f, name)  # a header that lies cannot make it read more
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError,
            OSError, ValueError) as exc:  # fmt: skip
        raise UnreadableImage(name, f"damaged zip entry ({exc})") from None


def _open(data: bytes, name: str) -> Image.Image:
    """``data`` opened (header read), refused over ``Image.MAX_IMAGE_PIXELS`` pixels."""
    limit = Image.MAX_IMAGE_PIXELS
    bomb = f"over Pillow's limit of {limit:,} pixels (a possible decompression bomb)"
    try:
        with _OPENING, warnings.catch_warnings():
            # Pillow only warns between the limit and twice it: refused below instead
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise UnreadableImage(name, bomb) from None
    except UnidentifiedImageError:
        raise UnreadableImage(name, "not an image, or in a format Pillow cannot read") from None
    except Exception as exc:  # Pillow raises many types for a malformed header
        raise UnreadableImage(name, exc) from None
    if limit is not None and im.width * im.height > limit:
        im.close()
        raise UnreadableImage(name, f"{im.width}x{im.height} pixels is {bomb}")
    return im


def _pixels(im: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Grey values of ``im`` (uint8, or its own wider type in a wide mode) and its alpha
    (uint8 [H, W]), or None when it has no transparency."""
    if im.mode in _WIDE_MODES:
        return np.asarray(im), None
    if im.mode in _ALPHA_MODES or "transparency" in im.info:
        grey_alpha = np.asarray(im.convert("RGBA").convert("LA"))
        return grey_alpha[..., 0], grey_alpha[..., 1]
    return np.asarray(im.convert("L")), None


def _scaled(values: np.ndarray) -> np.ndarray:
    """Grey values of a wide mode as uint8: 16-bit ones over 0..65535. 32-bit integers and
    floats have no fixed range: over 0..1 (floats), 0..255 or 0..65535, the first they fit in,
    else over their own min..max."""
    if values.dtype.kind == "u":
        return (values // 257).astype(np.uint8)
    v = np.nan_to_num(values.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(v.min()), float(v.max())
    tops = (1.0, 255.0, 65535.0) if values.dtype.kind == "f" else (255.0, 65535.0)
    top = next((t for t in tops if lo >= 0 and hi <= t), None)
    low, span = (0.0, top) if top is not None else (lo, hi - lo)
    if span == 0:
        return np.zeros(v.shape, dtype=np.uint8)
    return np.clip(np.rint((v - low) * (255.0 / span)), 0, 255).astype(np.uint8)


def _composited(grey: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``grey`` over the page that shows its strokes: black when its visible pixels are light
    on average (white strokes on a transparent page), else white (dark strokes on it)."""
    if alpha.min() == 255:
        return grey
    a = alpha.astype(np.uint32)
    mean = float((grey * a).sum(dtype=np.uint64)) / float(a.sum(dtype=np.uint64))
    page = 0 if mean > 127.5 else 255
    return ((grey * a + page * (255 - a) + 127) // 255).astype(np.uint8)


def decode_sketch(
    data: bytes,
    size: int,
    invert: Literal["auto", "yes", "no"],
    name: str,
    fit: Literal["page", "ink"] = "page",
) -> np.ndarray:
    """Bytes of one image -> uint8 [size, size], strokes bright on dark.

    16-bit and float images are scaled to 0..255 by their bit depth, and transparent ones
    composited onto the page that makes their strokes visible. With ``invert="auto"`` an image
    whose mean is above mid-grey (a white page) is inverted. ``fit="page"`` keeps the whole
    page, padded with its background to a square (shapes keep their aspect ratio);
    ``fit="ink"`` crops it to the drawing's bounding box first, with an ``INK_MARGIN`` border
    (as vector drawings are rendered), so that where on the page and how large someone drew
    no longer matters. An image that decodes blank (at most ``FAINT`` grey levels apart) is
    refused: ``UnreadableImage``."""
    im = _open(data, name)
    try:
        with im:
            im.load()
            values, alpha = _pixels(im)
    except Exception as exc:  # Pillow raises many types for a malformed or truncated file
        raise UnreadableImage(name, exc) from None
    gray = values if values.dtype == np.uint8 else _scaled(values)
    if alpha is not None:
        if not alpha.any():
            raise UnreadableImage(name, "it is fully transparent: nothing to label")
        gray = _composited(gray, alpha)
    if gray.size == 0 or _faint(gray):
        low, high = (int(gray.min()), int(gray.max())) if gray.size else (0, 0)
        where = f"every pixel decodes to {low}" if low == high else f"pixels only {low}..{high}"
        raise UnreadableImage(name, f"it is blank ({where}): nothing to label")
    if invert == "yes" or (invert == "auto" and gray.mean() > 127.5):
        gray = 255 - gray
    framed = framed_square(gray, size, fit)
    if _faint(framed):  # only resizing can make it so: the page was checked above
        reason = f"it is blank at {size} px: its strokes are too thin or faint"
        raise UnreadableImage(name, reason)
    return framed


def framed_square(gray: np.ndarray, size: int, fit: Literal["page", "ink"]) -> np.ndarray:
    """A bright-on-dark image framed as ``fit`` says (the whole page padded square, or cropped
    to its ink: ``fit_to_ink``), resized to [size, size] (box filter down, bilinear up)."""
    gray = fit_to_ink(gray) if fit == "ink" else _squared(gray)
    if gray.shape[0] == size:
        return gray
    resample = Image.Resampling.BOX if gray.shape[0] > size else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(gray).resize((size, size), resample), dtype=np.uint8)


# fit="ink": the blank border around the drawing's bounding box, a fraction of its longer side
# on each side (close to the border vector drawings are rendered with, render.PADDING)
INK_MARGIN = 0.1


def _squared(gray: np.ndarray, margin: int = 0) -> np.ndarray:
    """``gray`` centred on a dark square canvas of its longer side plus ``margin`` each side."""
    h, w = gray.shape
    side = max(h, w) + 2 * margin
    if side == h == w:
        return gray
    canvas = np.zeros((side, side), dtype=np.uint8)
    canvas[(side - h) // 2 : (side - h) // 2 + h, (side - w) // 2 : (side - w) // 2 + w] = gray
    return canvas


def fit_to_ink(gray: np.ndarray) -> np.ndarray:
    """A square uint8 image (bright strokes on dark) cropped to the bounding box of its ink
    (pixels a quarter of the way, and more than ``FAINT`` levels, from the page's level to the
    brightest), centred with an ``INK_MARGIN`` border; any side length (the caller resizes)."""
    page = int(np.median(gray))
    ink = gray > page + max(FAINT, (int(gray.max()) - page) // 4)
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    if rows.size == 0:
        return _squared(gray)
    box = gray[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return _squared(box, int(round(INK_MARGIN * max(box.shape))))


# At most this many grey levels between the darkest and the lightest pixel is a blank page (a
# scanner's or JPEG's noise), not a drawing anyone could see.
FAINT = 8


def _faint(gray: np.ndarray) -> bool:
    return int(gray.max()) - int(gray.min()) <= FAINT


def _is_image(path: PurePosixPath) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not any(
        p.startswith(".") or p == "__MACOSX" for p in path.parts
    )


def _unsafe(name: str) -> bool:
    """A zip entry named outside the archive: absolute, on a drive, or with a ``..`` part."""
    return (
        name.startswith(("/", "\\"))
        or re.match(r"[A-Za-z]:", name) is not None
        or ".." in re.split(r"[/\\]", name)
    )


def _listed(names: list[str]) -> str:
    more = f" and {len(names) - NAMED} more" if len(names) > NAMED else ""
    return ", ".join(names[:NAMED]) + more


def archive_entries(
    archive: zipfile.ZipFile,
) -> tuple[dict[PurePosixPath, zipfile.ZipInfo], list[str]]:
    """The image entries of ``archive`` by path, and the names of image entries skipped for
    an unsafe path."""
    members: dict[PurePosixPath, zipfile.ZipInfo] = {}
    unsafe: list[str] = []
    for info in archive.infolist():
        if info.is_dir():
            continue
        if _unsafe(info.filename):
            if PurePosixPath(info.filename).suffix.lower() in IMAGE_SUFFIXES:
                unsafe.append(info.filename)
        elif _is_image(path := PurePosixPath(info.filename)):
            members[path] = info
    return members, unsafe


def class_of(entries: list[PurePosixPath], in_archive: bool = False) -> list[str]:
    """Class name of each entry: its folder path below the root. In an archive whose entries
    all sit in one top-level folder (``images_background_small1/``), that folder is the root."""
    parents = [e.parent.parts for e in entries]
    skip = int(
        in_archive and all(len(p) > 1 for p in parents) and len({p[0] for p in parents}) == 1
    )
    return ["/".join(p[skip:]) for p in parents]


def unreadable_error(failed: list[UnreadableImage], total: int, source: object) -> DataError:
    """One error naming every unreadable image of ``source`` (the first ``NAMED``, then a
    count), on one line."""
    if len(failed) == 1:
        return failed[0]
    named = "; ".join(f"{e.name} ({e.reason})" for e in failed[:NAMED])
    more = f"; and {len(failed) - NAMED} more" if len(failed) > NAMED else ""
    return DataError(f"cannot read {len(failed)} of {total} images in {source}: {named}{more}")


def load_image_folder(
    source: str | Path,
    image_size: int,
    invert: Literal["auto", "yes", "no"] = "auto",
    fit: Literal["page", "ink"] = "page",
) -> SketchDataset:
    """Decode every image under ``source`` (folder or .zip) once, into memory (``invert``,
    ``fit``: as ``decode_sketch``).

    A source with any image outside a class folder (at its top level) is unlabelled: every
    image under it, at any depth, falls in the one class ``UNLABELLED`` (see ``require_labels``).

    Every unreadable image is named in one ``DataError``. Zip entries with unsafe paths
    (absolute, or with ``..``) are skipped with a ``DataWarning``."""
    source = Path(source)
    if not source.exists():
        raise DataError(f"data path does not exist: {source}")
    archive, members, skipped = None, None, []
    if source.is_dir():
        found = (PurePosixPath(p.relative_to(source).as_posix()) for p in source.rglob("*"))
        entries = sorted(e for e in found if _is_image(e) and (source / str(e)).is_file())
    elif zipfile.is_zipfile(source):
        try:
            archive = zipfile.ZipFile(source)
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise DataError(f"{source} is not a readable zip archive: {exc}") from None
        members, skipped = archive_entries(archive)
        entries = sorted(members)
    else:
        raise DataError(f"{source} is neither a folder nor a .zip archive")
    try:
        if skipped:
            note = (
                f"{source}: skipped {len(skipped)} zip entries with unsafe paths (absolute or "
                f"with '..'): {_listed(skipped)}"
            )
            if not entries:
                raise DataError(f"no images found in {source}; {note}")
            warnings.warn(note, DataWarning, stacklevel=2)
        if not entries:
            raise DataError(f"no images found in {source} (expected ROOT/<class>/*.png)")
        loose = [e for e in entries if len(e.parts) < 2]

        def read(entry: PurePosixPath) -> np.ndarray | UnreadableImage:
            name = f"{source}:{entry}" if members is not None else str(source / str(entry))
            try:
                if members is not None:
                    data = read_member(archive, members[entry], name)
                else:
                    try:
                        data = read_image_bytes(source / str(entry), name)
                    except OSError as exc:
                        raise UnreadableImage(name, exc.strerror or exc) from None
                return decode_sketch(data, image_size, invert, name, fit)
            except UnreadableImage as exc:
                return exc

        if archive is not None:  # ZipFile reads are not thread-safe: decode in order
            results = [read(e) for e in entries]
        else:
            with ThreadPoolExecutor(max_workers=4) as pool:
                results = list(pool.map(read, entries))
    finally:
        if archive is not None:
            archive.close()
    failed = [r for r in results if isinstance(r, UnreadableImage)]
    if failed:
        raise unreadable_error(failed, len(entries), source) from None
    # an image outside every class folder makes the whole source unlabelled: one class
    classes = [UNLABELLED] * len(entries) if loose else class_of(entries, archive is not None)
    return SketchDataset.of(results, classes, [str(e) for e in entries], str(source))
