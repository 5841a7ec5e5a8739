"""Any data source ``load_dataset`` reads, written back as PNG class folders to look at."""

from __future__ import annotations

import re
from pathlib import Path

from PIL import Image

from sketchshot.config import DataConfig
from sketchshot.data.folder import UNLABELLED


def _file_stem(source: str) -> str:
    """A name for one sketch's PNG from where it came from (``a/b.png``, ``cat.ndjson:12``)."""
    stem = Path(source.replace(":", "_")).stem
    return re.sub(r"[^\w.-]", "_", stem) or "sketch"


def render_source(source: str, out: Path, image_size: int) -> dict[str, int]:
    """Decode every sketch of ``source`` at ``image_size`` and write it as
    ``out/<class>/<name>.png``, dark strokes on white; images of an unlabelled source go to
    ``out`` itself. Images written per class."""
    from sketchshot.data import load_dataset

    dataset = load_dataset(DataConfig(source=source, split_fractions=(1, 0, 0)), image_size)
    counts = dict.fromkeys(dataset.class_names, 0)
    used: set[Path] = set()
    for image, label, origin in zip(dataset.images, dataset.labels, dataset.sources, strict=True):
        name = dataset.class_names[int(label)]
        folder = Path(out) if name == UNLABELLED else Path(out) / name
        target = folder / f"{_file_stem(origin)}.png"
        n = 1
        while target in used:  # two sources with one stem: number the later ones
            target, n = folder / f"{_file_stem(origin)}-{n}.png", n + 1
        used.add(target)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(255 - image[0].numpy()).save(target)
        counts[name] += 1
    return counts
