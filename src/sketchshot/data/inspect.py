"""What is in an image folder before training on it: classes and their counts, image sizes,
files the decoder refuses (unreadable or blank), exact duplicates across classes, and files
that are not images."""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from PIL import Image

from sketchshot.data.folder import (
    IMAGE_SUFFIXES,
    UNLABELLED,
    class_of,
    decode_sketch,
    read_image_bytes,
)
from sketchshot.errors import DataError, UnreadableImage

# The side images are decoded at to find blank ones: small enough to be quick, the size the
# encoders see most.
CHECK_SIZE = 28


@dataclass(frozen=True)
class Inspection:
    """The report of ``inspect_folder``; paths are relative to ``source``."""

    source: str
    labelled: bool
    counts: dict[str, int]  # class -> readable images
    sizes: dict[str, int]  # "WxH" -> images
    unreadable: dict[str, str] = field(default_factory=dict)  # path -> the decoder's reason
    duplicates: list[list[str]] = field(default_factory=list)  # same bytes in several classes
    unsupported: list[str] = field(default_factory=list)  # files that are not images

    @property
    def n_images(self) -> int:
        return sum(self.counts.values())

    @property
    def imbalance(self) -> float | None:
        """Largest over smallest class count; None without classes or with an empty one."""
        values = list(self.counts.values())
        return max(values) / min(values) if values and min(values) > 0 else None


def _hidden(path: PurePosixPath) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in path.parts)


def inspect_folder(source: str | Path) -> Inspection:
    """Read every file under the folder ``source`` once: decode the images with the decoder
    training uses (so what it refuses, with its reasons, is what training would refuse), hash
    their bytes (sha256) to find duplicates across classes, and list other files."""
    source = Path(source)
    if not source.is_dir():
        raise DataError(f"data inspect needs a folder; {source} is not one")
    files = sorted(
        PurePosixPath(p.relative_to(source).as_posix()) for p in source.rglob("*") if p.is_file()
    )
    files = [f for f in files if not _hidden(f)]
    images = [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES]
    unsupported = [str(f) for f in files if f.suffix.lower() not in IMAGE_SUFFIXES]
    labelled = all(len(f.parts) > 1 for f in images)
    classes = class_of(images) if labelled else [UNLABELLED] * len(images)
    counts: Counter[str] = Counter({c: 0 for c in classes})
    sizes: Counter[str] = Counter()
    unreadable: dict[str, str] = {}
    by_hash: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for entry, cls in zip(images, classes, strict=True):
        name = str(source / str(entry))
        try:
            data = read_image_bytes(source / str(entry), name)
            by_hash[hashlib.sha256(data).hexdigest()].append((cls, str(entry)))
            decode_sketch(data, CHECK_SIZE, "auto", name)
            with Image.open(source / str(entry)) as im:
                sizes[f"{im.width}x{im.height}"] += 1
        except UnreadableImage as exc:
            unreadable[str(entry)] = exc.reason
            continue
        except OSError as exc:
            unreadable[str(entry)] = exc.strerror or str(exc)
            continue
        counts[cls] += 1
    duplicates = [
        [path for _, path in same] for same in by_hash.values() if len({cls for cls, _ in same}) > 1
    ]
    return Inspection(
        source=str(source),
        labelled=labelled,
        counts=dict(sorted(counts.items())),
        sizes=dict(sizes.most_common()),
        unreadable=unreadable,
        duplicates=sorted(duplicates),
        unsupported=unsupported,
    )
