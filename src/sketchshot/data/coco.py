"""COCO detection annotations to class folders: each annotated box cut out of its image, with
padding, as ``OUT/<category>/<image stem>_<annotation id>.png`` (how symbols on engineering
drawings become a few-shot dataset)."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from sketchshot.errors import DataError


@dataclass(frozen=True)
class CropResult:
    """What ``crop_coco`` wrote: crops per class, and the boxes it left out and why."""

    out: str
    counts: dict[str, int]
    too_small: int = 0
    skipped: list[str] = field(default_factory=list)  # one "file: annotation N: why" each

    @property
    def written(self) -> int:
        return sum(self.counts.values())


def _folder_name(category: str) -> str:
    """A category name as one folder name: path separators and control characters replaced."""
    return re.sub(r"[/\\\x00-\x1f]", "_", category).strip() or "_"


def padded_box(bbox: list[float], pad: float, width: int, height: int) -> tuple[int, int, int, int]:
    """COCO ``[x, y, w, h]`` grown by ``pad`` times its width (height) on each side, clipped to
    the image: (left, top, right, bottom) in whole pixels."""
    x, y, w, h = bbox
    left, top = max(0.0, x - pad * w), max(0.0, y - pad * h)
    right, bottom = min(float(width), x + w + pad * w), min(float(height), y + h + pad * h)
    return int(left), int(top), int(-(-right // 1)), int(-(-bottom // 1))


def _box_problem(bbox: Any, width: int, height: int) -> str | None:
    if not (isinstance(bbox, list) and len(bbox) == 4):
        return f"bbox {bbox!r} is not [x, y, w, h]"
    if not all(isinstance(v, int | float) and v == v for v in bbox):
        return f"bbox {bbox!r} has a value that is not a number"
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        return f"bbox {bbox!r} is empty (width and height must be positive)"
    if x < 0 or y < 0 or x + w > width or y + h > height:
        return f"bbox {bbox!r} lies outside the {width}x{height} image"
    return None


def crop_coco(
    annotations: Path,
    images: Path,
    out: Path,
    pad: float = 0.1,
    min_size: int = 0,
    on_error: Literal["skip", "fail"] = "fail",
) -> CropResult:
    """Cut every box of ``annotations`` (a COCO detection JSON) out of its image under
    ``images`` into ``out``. A box whose width or height is under ``min_size`` pixels is
    counted as too small. A bad box (outside its image, empty) or a missing image is a
    ``DataError`` naming the file and annotation id, or with ``on_error="skip"`` is listed in
    ``skipped``; nothing is dropped silently."""
    try:
        coco = json.loads(Path(annotations).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read COCO annotations {annotations}: {exc}") from None
    if not isinstance(coco, dict) or not {"images", "annotations", "categories"} <= coco.keys():
        raise DataError(f"{annotations} is not COCO: it needs images, annotations, categories")
    files = {im["id"]: im for im in coco["images"]}
    categories = {c["id"]: _folder_name(str(c["name"])) for c in coco["categories"]}
    by_image: dict[Any, list[dict[str, Any]]] = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann.get("image_id"), []).append(ann)
    counts: Counter[str] = Counter({name: 0 for name in categories.values()})
    skipped: list[str] = []
    too_small = 0

    def refuse(where: str, why: str) -> None:
        if on_error == "fail":
            raise DataError(f"{where}: {why} (--on-error skip leaves it out)")
        skipped.append(f"{where}: {why}")

    for image_id, anns in sorted(by_image.items(), key=lambda kv: str(kv[0])):
        if image_id not in files:
            for ann in anns:
                refuse(f"{annotations}: annotation {ann.get('id')}", f"no image {image_id!r}")
            continue
        path = Path(images) / files[image_id]["file_name"]
        try:
            im = Image.open(path)
            im.load()
        except Exception as exc:  # Pillow raises many types for a missing or broken file
            for ann in anns:
                refuse(f"{path}: annotation {ann.get('id')}", f"cannot read the image ({exc})")
            continue
        with im:
            for ann in sorted(anns, key=lambda a: str(a.get("id"))):
                where = f"{path}: annotation {ann.get('id')}"
                if ann.get("category_id") not in categories:
                    refuse(where, f"unknown category_id {ann.get('category_id')!r}")
                    continue
                problem = _box_problem(ann.get("bbox"), im.width, im.height)
                if problem:
                    refuse(where, problem)
                    continue
                if min(ann["bbox"][2], ann["bbox"][3]) < min_size:
                    too_small += 1
                    continue
                name = categories[ann["category_id"]]
                target = Path(out) / name / f"{path.stem}_{ann['id']}.png"
                target.parent.mkdir(parents=True, exist_ok=True)
                im.crop(padded_box(ann["bbox"], pad, im.width, im.height)).save(target)
                counts[name] += 1
    return CropResult(str(out), dict(sorted(counts.items())), too_small, skipped)
