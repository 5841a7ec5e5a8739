"""Pictures of an evaluation, drawn with Pillow: one episode as a grid, and a confusion matrix
with class names and a colour scale, each under a title that names the read-out and its
accuracy. Sketches are shown dark on white, as people draw them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from sketchshot.checkpoint import atomic_write

THUMB = 64  # side of a drawing in the grid
PAD = 4
CAPTION = 14  # height of the text line under a drawing
MAX_CAPTION_W = 200  # a grid column widens up to this for a long class name
CELL_H = THUMB + CAPTION + 2 * PAD
HEADING = 18  # height of a section heading ("support", "queries")
TITLE_LINE = 16  # height of a line of the title above a picture
MIN_WIDTH = 320  # a picture is at least this wide, so that its title reads in a few lines
LABEL_W = 160  # least room for class names beside and above the confusion matrix
MAX_LABEL_W = 260
BAR_W, BAR_GAP = 14, 12  # the confusion matrix's colour bar, and the gap before it
SCALE_W = BAR_GAP + BAR_W + 40  # the colour bar with its tick labels
RIGHT, WRONG, INK = (30, 140, 60), (210, 30, 30), (20, 20, 20)
FULL_SHADE = (20, 50, 140)  # the colour of a share of 1 (white is 0)


def _font(size: int = 11) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def short_names(names: Sequence[str]) -> list[str]:
    """Class paths cut to their last ``k`` parts, ``k`` the fewest that tell all ``names``
    apart: Sanskrit's and katakana's ``character05`` stay ``Sanskrit/character05`` and
    ``Japanese_(katakana)/character05`` (and every other class keeps its alphabet too, so
    that the names read alike); classes that differ in their last part show just that."""
    parts = [name.rstrip("/").split("/") for name in names]
    for k in range(1, max((len(p) for p in parts), default=0)):
        shown = ["/".join(p[-k:]) for p in parts]
        if len(set(shown)) == len(shown):
            return shown
    return list(names)


def fit_text(
    draw: ImageDraw.ImageDraw, text: str, width: float, font, keep_end: bool = True
) -> str:
    """``text`` shortened with '...' to fit ``width`` pixels. With ``keep_end``, a class path
    keeps its last part whole and the start of what comes before it
    (``Japanese_(k.../character05``: the parts that tell classes apart), any other text its
    end; without, its start."""

    def fits(candidate: str) -> bool:
        return draw.textlength(candidate, font=font) <= width

    if fits(text):
        return text
    if keep_end and "/" in text.rstrip("/"):
        head, last = text.rstrip("/").rsplit("/", 1)
        while head and not fits(f"{head}.../{last}"):
            head = head[:-1]
        if head:
            return f"{head}.../{last}"
    while text and not fits(f"...{text}" if keep_end else f"{text}..."):
        text = text[1:] if keep_end else text[:-1]
    return f"...{text}" if keep_end else f"{text}..."


def wrap(draw: ImageDraw.ImageDraw, text: str, width: float, font) -> list[str]:
    """``text`` broken into lines of at most ``width`` pixels at spaces (a word longer than a
    line is shortened to fit)."""
    lines: list[str] = []
    for word in text.split():
        joined = f"{lines[-1]} {word}" if lines else word
        if lines and draw.textlength(joined, font=font) <= width:
            lines[-1] = joined
        else:
            lines.append(fit_text(draw, word, width, font, keep_end=False))
    return lines


def _titled(title: Sequence[str], width: int, body_height: int) -> tuple[Image.Image, int]:
    """A white picture ``width`` wide with ``title`` (each entry a paragraph, wrapped) drawn
    at its top, the first paragraph in bold ink; returns it and the height of the title."""
    probe, font = ImageDraw.Draw(Image.new("RGB", (1, 1))), _font(12)
    paragraphs = [wrap(probe, text, width - 2 * PAD, font) for text in title]
    height = PAD + TITLE_LINE * sum(len(p) for p in paragraphs) + PAD if title else 0
    picture = Image.new("RGB", (width, height + body_height), "white")
    draw, y = ImageDraw.Draw(picture), PAD
    for number, lines in enumerate(paragraphs):
        for line in lines:
            draw.text((PAD, y), line, fill=INK if number == 0 else (70, 70, 70), font=font)
            y += TITLE_LINE
    return picture, height


def _thumbnail(image: np.ndarray) -> Image.Image:
    """A uint8 [S, S] sketch (strokes bright) as a THUMB-sided picture, dark on white."""
    return Image.fromarray(255 - image).convert("RGB").resize((THUMB, THUMB), Image.NEAREST)


def grid_cell_width(class_names: Sequence[str]) -> int:
    """Width of a grid column: a drawing, or the longest caption up to MAX_CAPTION_W."""
    draw, font = ImageDraw.Draw(Image.new("RGB", (1, 1))), _font()
    widest = max((draw.textlength(n, font=font) for n in class_names), default=0)
    return int(max(THUMB, min(MAX_CAPTION_W, widest))) + 2 * PAD


def episode_grid(
    support: np.ndarray,
    query: np.ndarray,
    class_names: list[str],
    predicted: np.ndarray,
    n_shot: int,
    n_query: int,
    title: Sequence[str] = (),
) -> Image.Image:
    """One episode under its ``title`` (paragraphs: what was read out, the accuracy), a column
    per class: its ``n_shot`` support drawings captioned with the class, then its ``n_query``
    queries captioned with the predicted class, mistakes framed and captioned in red. Classes
    show as the shortest path suffixes that tell them apart. ``support`` uint8
    [n_way*n_shot, 1, S, S] and ``query`` [n_way*n_query, 1, S, S] class-major; ``predicted``
    [n_way*n_query] episode labels.

    Size: max(MIN_WIDTH, n_way * grid_cell_width) wide, the title's height +
    2 * HEADING + (n_shot + n_query) * CELL_H high."""
    names = short_names(class_names)
    n_way, cell_w = len(names), grid_cell_width(names)
    width = max(MIN_WIDTH, n_way * cell_w)
    picture, top = _titled(title, width, 2 * HEADING + (n_shot + n_query) * CELL_H)
    draw, font = ImageDraw.Draw(picture), _font()
    draw.text((PAD, top + 3), "support", fill=INK, font=font)
    query_top = top + HEADING + n_shot * CELL_H
    draw.line([(0, query_top), (width, query_top)], fill=(160, 160, 160))
    heading = "queries: predicted class, red = mistake"
    heading = fit_text(draw, heading, width - 2 * PAD, font, keep_end=False)
    draw.text((PAD, query_top + 3), heading, fill=INK, font=font)

    def cell(col: int, y: int, image: np.ndarray, caption: str, colour, frame: int) -> None:
        x, centre = col * cell_w + (cell_w - THUMB) // 2, col * cell_w + cell_w / 2
        picture.paste(_thumbnail(image), (x, y + PAD))
        for i in range(frame):
            box = [x - 1 - i, y + PAD - 1 - i, x + THUMB + i, y + PAD + THUMB + i]
            draw.rectangle(box, outline=colour)
        caption = fit_text(draw, caption, cell_w - 2 * PAD, font)
        draw.text((centre, y + PAD + THUMB + 1), caption, fill=colour, font=font, anchor="ma")

    for c in range(n_way):
        for s in range(n_shot):
            cell(c, top + HEADING + s * CELL_H, support[c * n_shot + s, 0], names[c], INK, 0)
        for q in range(n_query):
            guess = int(predicted[c * n_query + q])
            right = guess == c
            y = query_top + HEADING + q * CELL_H
            colour = RIGHT if right else WRONG
            cell(c, y, query[c * n_query + q, 0], names[guess], colour, 1 if right else 3)
    return picture


def confusion_cell(n_classes: int) -> int:
    """Side in pixels of one cell of the confusion matrix: the whole fits about 1200 px."""
    return max(4, min(28, 1200 // max(n_classes, 1)))


def _shade(share: float) -> tuple[int, int, int]:
    """The colour of a share of a row: white at 0 to FULL_SHADE at 1."""
    return tuple(int(255 - share * (255 - c)) for c in FULL_SHADE)  # type: ignore[return-value]


def confusion_picture(
    confusion: np.ndarray, class_names: Sequence[str], title: Sequence[str] = ()
) -> Image.Image:
    """The confusion matrix under its ``title``: rows are true classes, columns predicted
    ones; each cell is shaded by its share of the row (the colour bar on the right: white 0%
    to dark blue 100%) and, where there is room, shows its count. Class names, the shortest
    path suffixes that tell them apart, run down the left and up the top (while a cell is at
    least 8 px, up to about 150 classes).

    Size: label_w + C * confusion_cell(C) + SCALE_W + PAD wide (label_w from LABEL_W up to
    MAX_LABEL_W, to fit the names), the title's height + label_w + C * confusion_cell(C) +
    PAD high."""
    names = short_names(class_names)
    n = len(names)
    side = confusion_cell(n)
    font = _font(min(11, side))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    widest = max((probe.textlength(name, font=font) for name in names), default=0)
    label_w = int(max(LABEL_W, min(MAX_LABEL_W, widest + 2 * PAD))) if side >= 8 else LABEL_W
    matrix = n * side
    bar_h = max(matrix, 100)
    picture, top = _titled(
        title, label_w + matrix + SCALE_W + PAD, label_w + max(matrix, bar_h) + PAD
    )
    draw = ImageDraw.Draw(picture)
    rows = confusion.sum(axis=1, keepdims=True)
    share = np.divide(confusion, rows, out=np.zeros(confusion.shape), where=rows > 0)
    for line, text in enumerate(("rows: true class", "columns: predicted")):
        draw.text((PAD, top + PAD + 14 * line), text, fill=INK, font=_font())
    origin = top + label_w  # the matrix's top edge
    for i in range(n):
        y = origin + i * side
        if side >= 8:
            name = fit_text(draw, names[i], label_w - 2 * PAD, font)
            draw.text((label_w - PAD, y + side / 2), name, fill=INK, font=font, anchor="rm")
            label = Image.new("RGB", (label_w, side), "white")
            ImageDraw.Draw(label).text((PAD, side / 2), name, fill=INK, font=font, anchor="lm")
            picture.paste(label.rotate(90, expand=True), (label_w + i * side, top))
        for j in range(n):
            x, v = label_w + j * side, share[i, j]
            draw.rectangle([x, y, x + side - 1, y + side - 1], fill=_shade(v),
                           outline=(225, 225, 225))  # fmt: skip
            if side >= 20 and confusion[i, j]:
                ink = "white" if v > 0.5 else INK
                draw.text((x + side / 2, y + side / 2), str(int(confusion[i, j])), fill=ink,
                          font=font, anchor="mm")  # fmt: skip
    _colour_bar(draw, label_w + matrix + BAR_GAP, origin, bar_h)
    return picture


def _colour_bar(draw: ImageDraw.ImageDraw, x: int, y: int, height: int) -> None:
    """The scale of the cells' shading, ``height`` px from 100% (top) to 0% (bottom), with
    its caption above it."""
    for row in range(height):
        draw.line([(x, y + row), (x + BAR_W - 1, y + row)], fill=_shade(1 - row / (height - 1)))
    draw.rectangle([x, y, x + BAR_W - 1, y + height - 1], outline=(160, 160, 160))
    font = _font(10)
    for share, anchor in ((1.0, "lt"), (0.5, "lm"), (0.0, "lb")):  # labels within the bar
        tick = y + round((1 - share) * (height - 1))
        draw.line([(x + BAR_W, tick), (x + BAR_W + 3, tick)], fill=INK)
        draw.text((x + BAR_W + 5, tick), f"{share:.0%}", fill=INK, font=font, anchor=anchor)
    for line, text in enumerate(("share", "of the", "row")):
        draw.text((x, y - 8 - 12 * (2 - line)), text, fill=INK, font=font, anchor="ls")


def save_png(picture: Image.Image, path: Path) -> None:
    """Write ``picture`` as PNG atomically (never a half-written file)."""
    atomic_write(Path(path), lambda p: picture.save(p, format="PNG"))
