"""Pictures of an evaluation, drawn with Pillow: one episode as a grid, and a confusion matrix
with class names. Sketches are shown dark on white, as people draw them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from sketchshot.checkpoint import atomic_write

THUMB = 64  # side of a drawing in the grid
PAD = 4
CAPTION = 14  # height of the text line under a drawing
CELL_W = THUMB + 2 * PAD
CELL_H = THUMB + CAPTION + 2 * PAD
HEADING = 18  # height of a section heading ("support", "queries")
LABEL_W = 160  # room for class names beside and above the confusion matrix
RIGHT, WRONG, INK = (30, 140, 60), (210, 30, 30), (20, 20, 20)


def _font(size: int = 11) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def fit_text(
    draw: ImageDraw.ImageDraw, text: str, width: float, font, keep_end: bool = True
) -> str:
    """``text`` shortened with '...' to fit ``width`` pixels, keeping its end (where class
    paths such as ``Sanskrit/character32`` differ: the last part alone when it fits) or its
    start."""
    if draw.textlength(text, font=font) <= width:
        return text
    if keep_end and "/" in text.rstrip("/"):
        last = text.rstrip("/").rsplit("/", 1)[1]
        if draw.textlength(last, font=font) <= width:
            return last
    while text and draw.textlength(f"...{text}" if keep_end else f"{text}...", font=font) > width:
        text = text[1:] if keep_end else text[:-1]
    return f"...{text}" if keep_end else f"{text}..."


def _thumbnail(image: np.ndarray) -> Image.Image:
    """A uint8 [S, S] sketch (strokes bright) as a THUMB-sided picture, dark on white."""
    return Image.fromarray(255 - image).convert("RGB").resize((THUMB, THUMB), Image.NEAREST)


def episode_grid(
    support: np.ndarray,
    query: np.ndarray,
    class_names: list[str],
    predicted: np.ndarray,
    n_shot: int,
    n_query: int,
) -> Image.Image:
    """One episode, a column per class: its ``n_shot`` support drawings (captioned with the
    class), then its ``n_query`` queries captioned with the predicted class, mistakes framed
    and captioned in red. ``support`` uint8 [n_way*n_shot, 1, S, S] and ``query``
    [n_way*n_query, 1, S, S] class-major; ``predicted`` [n_way*n_query] episode labels.

    Size: n_way * CELL_W wide, 2 * HEADING + (n_shot + n_query) * CELL_H high."""
    n_way = len(class_names)
    width, height = n_way * CELL_W, 2 * HEADING + (n_shot + n_query) * CELL_H
    picture = Image.new("RGB", (width, height), "white")
    draw, font = ImageDraw.Draw(picture), _font()
    draw.text((PAD, 3), "support", fill=INK, font=font)
    query_top = HEADING + n_shot * CELL_H
    draw.line([(0, query_top), (width, query_top)], fill=(160, 160, 160))
    heading = "queries: predicted class, red = mistake"
    heading = fit_text(draw, heading, width - 2 * PAD, font, keep_end=False)
    draw.text((PAD, query_top + 3), heading, fill=INK, font=font)

    def cell(col: int, top: int, image: np.ndarray, caption: str, colour, frame: int) -> None:
        x, y = col * CELL_W + PAD, top + PAD
        picture.paste(_thumbnail(image), (x, y))
        for i in range(frame):
            draw.rectangle([x - 1 - i, y - 1 - i, x + THUMB + i, y + THUMB + i], outline=colour)
        draw.text((x, y + THUMB + 1), fit_text(draw, caption, THUMB, font), fill=colour, font=font)

    for c in range(n_way):
        for s in range(n_shot):
            cell(c, HEADING + s * CELL_H, support[c * n_shot + s, 0], class_names[c], INK, 0)
        for q in range(n_query):
            guess = int(predicted[c * n_query + q])
            right = guess == c
            top = query_top + HEADING + q * CELL_H
            colour = RIGHT if right else WRONG
            cell(c, top, query[c * n_query + q, 0], class_names[guess], colour, 1 if right else 3)
    return picture


def confusion_cell(n_classes: int) -> int:
    """Side in pixels of one cell of the confusion matrix: the whole fits about 1200 px."""
    return max(4, min(28, 1200 // max(n_classes, 1)))


def confusion_picture(confusion: np.ndarray, class_names: tuple[str, ...]) -> Image.Image:
    """Rows are true classes, columns predicted ones; each cell is shaded by its share of the
    row (white 0 to dark blue 1) and, where there is room, shows its count. Class names run
    down the left and up the top (while a cell is at least 8 px, up to about 150 classes).

    Size: LABEL_W + C * confusion_cell(C) + PAD on each side."""
    n = len(class_names)
    side = confusion_cell(n)
    total = LABEL_W + n * side + PAD
    picture = Image.new("RGB", (total, total), "white")
    draw, font = ImageDraw.Draw(picture), _font(min(11, side))
    rows = confusion.sum(axis=1, keepdims=True)
    share = np.divide(confusion, rows, out=np.zeros(confusion.shape), where=rows > 0)
    for line, text in enumerate(("rows: true class", "columns: predicted")):
        draw.text((PAD, PAD + 14 * line), text, fill=INK, font=_font())
    for i in range(n):
        y = LABEL_W + i * side
        if side >= 8:
            name = fit_text(draw, class_names[i], LABEL_W - 2 * PAD, font)
            draw.text((LABEL_W - PAD, y + side / 2), name, fill=INK, font=font, anchor="rm")
            label = Image.new("RGB", (LABEL_W, side), "white")
            ImageDraw.Draw(label).text((PAD, side / 2), name, fill=INK, font=font, anchor="lm")
            picture.paste(label.rotate(90, expand=True), (LABEL_W + i * side, 0))
        for j in range(n):
            x, v = LABEL_W + j * side, share[i, j]
            shade = tuple(int(255 - v * (255 - c)) for c in (20, 50, 140))
            draw.rectangle([x, y, x + side - 1, y + side - 1], fill=shade, outline=(225, 225, 225))
            if side >= 20 and confusion[i, j]:
                ink = "white" if v > 0.5 else INK
                draw.text((x + side / 2, y + side / 2), str(int(confusion[i, j])), fill=ink,
                          font=font, anchor="mm")  # fmt: skip
    return picture


def save_png(picture: Image.Image, path: Path) -> None:
    """Write ``picture`` as PNG atomically (never a half-written file)."""
    atomic_write(Path(path), lambda p: picture.save(p, format="PNG"))
