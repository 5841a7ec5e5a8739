"""Image folders ``ROOT/<class>/*.png`` (class paths may nest, as Omniglot's
``<alphabet>/<character>/``), read from a directory or straight from a ``.zip`` archive."""

from __future__ import annotations

import io
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from sketchshot.data.dataset import SketchDataset
from sketchshot.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def decode_sketch(
    data: bytes, size: int, invert: Literal["auto", "yes", "no"], name: str
) -> np.ndarray:
    """Bytes of one image -> uint8 [size, size], strokes bright on dark.

    Non-square images are padded with their background to a square first, so shapes keep
    their aspect ratio. With ``invert="auto"`` an image whose mean is above mid-grey (a
    white page) is inverted."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.mode in ("RGBA", "LA") or "transparency" in im.info:
                page = Image.new("RGBA", im.size, (255, 255, 255, 255))
                page.alpha_composite(im.convert("RGBA"))
                im = page
            gray = np.asarray(im.convert("L"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot read image {name}: {exc}") from None
    if invert == "yes" or (invert == "auto" and gray.mean() > 127.5):
        gray = 255 - gray
    h, w = gray.shape
    if h != w:
        side = max(h, w)
        canvas = np.zeros((side, side), dtype=np.uint8)
        canvas[(side - h) // 2 : (side - h) // 2 + h, (side - w) // 2 : (side - w) // 2 + w] = gray
        gray = canvas
    if gray.shape[0] != size:
        resample = Image.Resampling.BOX if gray.shape[0] > size else Image.Resampling.BILINEAR
        gray = np.asarray(Image.fromarray(gray).resize((size, size), resample), dtype=np.uint8)
    return gray


def _is_image(path: PurePosixPath) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not any(
        p.startswith(".") or p == "__MACOSX" for p in path.parts
    )


def _list_entries(source: Path) -> tuple[list[PurePosixPath], zipfile.ZipFile | None]:
    if not source.exists():
        raise DataError(f"data path does not exist: {source}")
    if source.is_dir():
        files = sorted(
            PurePosixPath(p.relative_to(source).as_posix())
            for p in source.rglob("*")
            if p.is_file()
        )
        return [f for f in files if _is_image(f)], None
    if zipfile.is_zipfile(source):
        archive = zipfile.ZipFile(source)
        names = sorted(PurePosixPath(n) for n in archive.namelist() if not n.endswith("/"))
        return [n for n in names if _is_image(n)], archive
    raise DataError(f"{source} is neither a folder nor a .zip archive")


def class_of(entries: list[PurePosixPath], in_archive: bool = False) -> list[str]:
    """Class name of each entry: its folder path below the root. In an archive whose entries
    all sit in one top-level folder (``images_background_small1/``), that folder is the root."""
    parents = [e.parent.parts for e in entries]
    skip = int(
        in_archive and all(len(p) > 1 for p in parents) and len({p[0] for p in parents}) == 1
    )
    return ["/".join(p[skip:]) for p in parents]


def load_image_folder(
    source: str | Path, image_size: int, invert: Literal["auto", "yes", "no"] = "auto"
) -> SketchDataset:
    """Decode every image under ``source`` (folder or .zip) once, into memory."""
    source = Path(source)
    entries, archive = _list_entries(source)
    if not entries:
        raise DataError(f"no images found in {source} (expected ROOT/<class>/*.png)")
    loose = [e for e in entries if len(e.parts) < 2]
    if loose:
        raise DataError(
            f"{source / str(loose[0])} is not inside a class folder (expected ROOT/<class>/*.png)"
        )
    classes = class_of(entries, in_archive=archive is not None)

    def read(entry: PurePosixPath) -> np.ndarray:
        name = f"{source}:{entry}" if archive else str(source / str(entry))
        data = archive.read(str(entry)) if archive else (source / str(entry)).read_bytes()
        return decode_sketch(data, image_size, invert, name)

    try:
        if archive is not None:  # ZipFile reads are not thread-safe: decode in order
            arrays = [read(e) for e in entries]
        else:
            with ThreadPoolExecutor(max_workers=4) as pool:
                arrays = list(pool.map(read, entries))
    finally:
        if archive is not None:
            archive.close()
    class_names = tuple(sorted(set(classes)))
    lookup = {c: i for i, c in enumerate(class_names)}
    return SketchDataset(
        images=torch.from_numpy(np.stack(arrays)).unsqueeze(1),
        labels=torch.tensor([lookup[c] for c in classes], dtype=torch.long),
        class_names=class_names,
        sources=tuple(str(e) for e in entries),
        origin=str(source),
    )
