"""Training curves of one or several runs, side by side, drawn with Pillow from each run's
``metrics.jsonl``: one panel per logged value (training loss, learning rate, each validation
metric), one coloured line per run, a shared legend. Nothing here imports torch (the
pictures module does, through its atomic writes: it is imported where a plot is drawn)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from PIL import Image, ImageDraw, ImageFont
from pydantic import Field, field_validator

from sketchshot.config import Frozen
from sketchshot.errors import ConfigError, DataError

METRICS_FILE = "metrics.jsonl"
# a colour-blind-aware qualitative palette (matplotlib's tab10); a run's colour by its order
PALETTE = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)  # fmt: skip
INK, GRID, FRAME = (20, 20, 20), (225, 225, 225), (120, 120, 120)
PANEL_W, PANEL_H = 380, 280
LEFT, RIGHT, TOP, BOTTOM = 62, 14, 30, 44  # room around a panel's plot area
PANELS_PER_ROW = 3
LEGEND_ROW, SWATCH = 20, 18
MARKERS_UP_TO = 60  # points of a line drawn with a dot each (a single epoch still shows)
TITLES = {
    "loss": "training loss",
    "lr": "learning rate",
    "val_acc": "validation accuracy",
    "val_macro_f1": "validation macro-F1",
    "val_loss": "validation loss",
}
TRAINING_KEYS = ("loss", "lr")  # drawn first, before the validation metrics


class PlotConfig(Frozen):
    """One ``plot`` call: which runs, which values, where the picture goes."""

    runs: tuple[Path, ...] = Field(
        (), description="run folders (or their metrics.jsonl, or sweep folders: all their runs)"
    )
    out: Path = Field(Path("curves.png"), description="the picture to write (PNG)")
    x: Literal["epoch", "step"] = Field(
        "epoch",
        description="x axis: epoch (one point per epoch, its mean loss and learning rate) or "
        "step (optimiser steps: the loss and learning rate logged every 50 steps)",
    )
    metrics: tuple[str, ...] = Field(
        (),
        description="the values to draw, one panel each, e.g. loss, lr, val_acc, pair_acc; "
        "none: loss, lr and every validation metric the runs logged",
    )
    labels: tuple[str, ...] = Field(
        (), description="legend names, one per run in order; none: the run folders' names"
    )

    @field_validator("out")
    @classmethod
    def _png(cls, value: Path) -> Path:
        if value.suffix.lower() != ".png":
            raise ValueError(f"the picture is a PNG; name it FILE.png, not {value.name}")
        return value


@dataclass(frozen=True)
class Series:
    """One run's values of one key: x (epochs or steps) and y, in order of x."""

    xs: tuple[float, ...]
    ys: tuple[float, ...]


@dataclass(frozen=True)
class PlotResult:
    out: Path
    runs: tuple[str, ...]
    labels: tuple[str, ...]
    panels: tuple[str, ...]
    x: str

    def as_dict(self) -> dict[str, object]:
        return {"out": str(self.out), "runs": list(self.runs), "labels": list(self.labels),
                "panels": list(self.panels), "x": self.x}  # fmt: skip


def run_folders(paths: Sequence[Path]) -> list[Path]:
    """The run folders to plot: each path a run folder, its ``metrics.jsonl``, or a sweep
    folder (its runs that have logged anything, in the sweep's order)."""
    from sketchshot.sweep import MANIFEST
    from sketchshot.sweep import run_folders as sweep_runs

    folders = []
    for path in map(Path, paths):
        if path.name == METRICS_FILE and path.is_file():
            folders.append(path.parent)
        elif (path / METRICS_FILE).is_file():
            folders.append(path)
        elif (path / MANIFEST).is_file():
            runs = [r for r in sweep_runs(path) if (r / METRICS_FILE).is_file()]
            if not runs:
                raise DataError(f"no run of the sweep {path} has a {METRICS_FILE} yet")
            folders += runs
        elif not path.exists():
            raise DataError(f"{path} not found")
        else:
            raise DataError(
                f"{path} has no {METRICS_FILE}: pass run folders of pretrain or finetune (or a "
                "sweep folder)"
            )
    return folders


def read_records(run: Path) -> list[dict[str, float]]:
    """The records of ``run``'s ``metrics.jsonl`` (a torn last line, from a killed run, is
    left out)."""
    path = run / METRICS_FILE
    lines = path.read_text(encoding="utf-8").splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            if number == len(lines):
                continue
            raise DataError(f"{path}: line {number} is not JSON") from None
        if isinstance(record, dict):
            records.append(record)
    return records


def series(records: Sequence[dict], key: str, x: str) -> Series:
    """``key`` over ``x`` from a run's records. By epoch: the epoch records (the epoch's mean
    loss, learning rate and training metrics, its validation). By step: the records logged
    every 50 steps where they hold ``key`` (training values), else the epoch records (the
    validation, or a run too short to log a step). One point per x: the last one logged (a
    run resumed after a hard kill may have logged a step twice)."""
    epochs = [r for r in records if r.get("event") == "epoch_end"]
    steps = [r for r in records if "event" not in r]
    chosen = steps if x == "step" and any(key in r for r in steps) else epochs
    points: dict[float, float] = {}
    for r in chosen:
        value, at = r.get(key), r.get(x)
        if isinstance(value, int | float) and isinstance(at, int | float) and math.isfinite(value):
            points[float(at)] = float(value)
    ordered = sorted(points.items())
    return Series(tuple(p[0] for p in ordered), tuple(p[1] for p in ordered))


def panel_keys(runs: Sequence[Sequence[dict]], asked: Sequence[str]) -> list[str]:
    """The keys to draw: those asked for (each must be logged by some run), else the training
    loss, the learning rate and every validation metric, in the order first logged."""
    logged: dict[str, None] = {}
    for records in runs:
        for r in records:
            for k, v in r.items():
                if isinstance(v, int | float) and k not in ("epoch", "step", "seconds"):
                    logged.setdefault(k)
    if asked:
        missing = [k for k in asked if k not in logged]
        if missing:
            raise ConfigError(
                f"--metrics {missing[0]}: no run logged it; they logged {', '.join(logged)}"
            )
        return list(dict.fromkeys(asked))
    return [k for k in TRAINING_KEYS if k in logged] + [k for k in logged if k.startswith("val_")]


def plot_runs(cfg: PlotConfig) -> PlotResult:
    """Draw ``cfg.runs``' curves to ``cfg.out``: a panel per key, a line per run."""
    from sketchshot.pictures import save_png, short_names

    if not cfg.runs:
        raise ConfigError("plot needs at least one RUN folder")
    folders = run_folders(cfg.runs)
    if cfg.labels and len(cfg.labels) != len(folders):
        raise ConfigError(
            f"--labels gives {len(cfg.labels)} names for {len(folders)} runs; give one per run"
        )
    labels = list(cfg.labels) or short_names([f.resolve().as_posix() for f in folders])
    records = [read_records(f) for f in folders]
    keys = panel_keys(records, cfg.metrics)
    if not keys:
        raise DataError(f"nothing to plot: the runs' {METRICS_FILE} hold no values yet")
    panels = {k: [series(r, k, cfg.x) for r in records] for k in keys}
    if all(not s.xs for lines in panels.values() for s in lines):
        raise DataError(
            f"nothing to plot by {cfg.x}: the runs have not finished an epoch yet"
            + ("; try --x step" if cfg.x == "epoch" else "")
        )
    save_png(draw_panels(panels, labels, cfg.x), cfg.out)
    return PlotResult(cfg.out, tuple(map(str, folders)), tuple(labels), tuple(keys), cfg.x)


# ---------------------------------------------------------------- drawing


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round values (1, 2, 2.5 or 5 times a power of ten apart) that cover
    ``low`` to ``high``."""
    span = high - low
    raw = span / max(1, count - 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        if value >= low - step * 1e-9:
            ticks.append(round(value, 12))
        value += step
    return ticks


def tick_text(value: float, step: float) -> str:
    """A tick label with the digits the tick spacing needs (0.25, 0.001, 1e-05, 250)."""
    if value == 0:
        return "0"
    if abs(value) < 1e-3 or abs(value) >= 1e5:
        return f"{value:.2g}"
    decimals = next(d for d in range(12) if abs(round(step, d) - step) <= 1e-6 * step)
    return f"{value:.{decimals}f}"


def _range(values: list[float], pad: float) -> tuple[float, float]:
    low, high = min(values), max(values)
    if high - low < 1e-12:
        wide = abs(low) * 0.1 or 1.0
        return low - wide, high + wide
    margin = (high - low) * pad
    return low - margin, high + margin


def draw_panel(
    picture: Image.Image, left: int, top: int, title: str, lines: Sequence[Series], x: str
) -> None:
    """One panel at (``left``, ``top``): title, frame, grid, ticks, one line per run."""
    from sketchshot.pictures import fit_text

    draw = ImageDraw.Draw(picture)
    x0, y0 = left + LEFT, top + TOP
    x1, y1 = left + PANEL_W - RIGHT, top + PANEL_H - BOTTOM
    font, small = _font(13), _font(11)
    draw.text((left + PANEL_W / 2, top + 8), fit_text(draw, title, PANEL_W - 8, font, False),
              fill=INK, font=font, anchor="mt")  # fmt: skip
    xs = [v for s in lines for v in s.xs]
    ys = [v for s in lines for v in s.ys]
    if not xs:
        draw.rectangle([x0, y0, x1, y1], outline=FRAME)
        draw.text(((x0 + x1) / 2, (y0 + y1) / 2), "not logged", fill=FRAME, font=small,
                  anchor="mm")  # fmt: skip
        return
    xlow, xhigh = _range(xs, 0.03) if len(set(xs)) > 1 else (xs[0] - 1, xs[0] + 1)
    ylow, yhigh = _range(ys, 0.06)

    def at(px: float, py: float) -> tuple[float, float]:
        return (
            x0 + (px - xlow) / (xhigh - xlow) * (x1 - x0),
            y1 - (py - ylow) / (yhigh - ylow) * (y1 - y0),
        )

    for axis, (low, high) in (("x", (xlow, xhigh)), ("y", (ylow, yhigh))):
        ticks = nice_ticks(low, high, 6 if axis == "x" else 5)
        if axis == "x" and x == "epoch":
            ticks = [t for t in ticks if float(t).is_integer()] or ticks
        step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
        for t in ticks:
            if axis == "x":
                px = at(t, ylow)[0]
                draw.line([(px, y0), (px, y1)], fill=GRID)
                draw.line([(px, y1), (px, y1 + 4)], fill=INK)
                draw.text((px, y1 + 6), tick_text(t, step), fill=INK, font=small, anchor="mt")
            else:
                py = at(xlow, t)[1]
                draw.line([(x0, py), (x1, py)], fill=GRID)
                draw.line([(x0 - 4, py), (x0, py)], fill=INK)
                draw.text((x0 - 6, py), tick_text(t, step), fill=INK, font=small, anchor="rm")
    draw.rectangle([x0, y0, x1, y1], outline=FRAME)
    draw.text(((x0 + x1) / 2, y1 + 24), x, fill=INK, font=small, anchor="mt")
    for colour, s in zip(_colours(len(lines)), lines, strict=True):
        points = [at(px, py) for px, py in zip(s.xs, s.ys, strict=True)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2, joint="curve")
        if len(points) <= MARKERS_UP_TO:
            for px, py in points:
                draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=colour)


def _colours(n: int) -> list[tuple[int, int, int]]:
    return [PALETTE[i % len(PALETTE)] for i in range(n)]


def draw_panels(panels: dict[str, list[Series]], labels: Sequence[str], x: str) -> Image.Image:
    """The whole picture: panels in rows of PANELS_PER_ROW, then the legend (a swatch and a
    name per run, wrapped to the picture's width)."""
    from sketchshot.pictures import fit_text

    columns = min(PANELS_PER_ROW, len(panels))
    rows = math.ceil(len(panels) / columns)
    width = columns * PANEL_W
    probe, font = ImageDraw.Draw(Image.new("RGB", (1, 1))), _font(12)
    entries = [(c, fit_text(probe, label, width - 40, font)) for c, label in
               zip(_colours(len(labels)), labels, strict=True)]  # fmt: skip
    legend, line, used = [], [], 8
    for colour, text in entries:
        size = SWATCH + 6 + probe.textlength(text, font=font) + 18
        if line and used + size > width - 8:
            legend.append(line)
            line, used = [], 8
        line.append((colour, text))
        used += size
    legend.append(line)
    picture = Image.new("RGB", (width, rows * PANEL_H + len(legend) * LEGEND_ROW + 12), "white")
    for i, (key, lines) in enumerate(panels.items()):
        top, left = (i // columns) * PANEL_H, (i % columns) * PANEL_W
        draw_panel(picture, left, top, TITLES.get(key, key), lines, x)
    draw = ImageDraw.Draw(picture)
    y = rows * PANEL_H + 6
    for entries_of_line in legend:
        px = 8
        for colour, text in entries_of_line:
            mid = y + LEGEND_ROW / 2
            draw.line([(px, mid), (px + SWATCH, mid)], fill=colour, width=3)
            draw.text((px + SWATCH + 6, mid), text, fill=INK, font=font, anchor="lm")
            px += SWATCH + 6 + probe.textlength(text, font=font) + 18
        y += LEGEND_ROW
    return picture
