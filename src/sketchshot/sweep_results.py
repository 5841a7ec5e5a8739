"""The results table of a sweep: one row per run with its swept settings (as its config
resolved them), each read-out of its evaluation as "mean ± 95% CI" and its training time, as
``results.md`` (for people; the best of each column in bold) and ``results.csv`` (for
programs: fractions, full keys). Rewritten after each run, so that partial results show."""

from __future__ import annotations

import csv
import io
import itertools
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sketchshot.config import Config
    from sketchshot.sweep import PlannedRun, States, SweepPlan

RESULTS_MD, RESULTS_CSV = "results.md", "results.csv"
# what the table shows for a run without figures, by its state
UNDONE = {"new": "pending", "resume": "interrupted", "evaluate": "not evaluated",
          "failed": "diverged"}  # fmt: skip


def short_keys(keys: Iterable[str]) -> dict[str, str]:
    """Each dotted key by its fewest last parts that tell it from the others:
    ``pretrain.simclr.temperature`` -> ``temperature``."""
    keys = list(keys)
    parts = [k.split(".") for k in keys]
    out = {}
    for key, p in zip(keys, parts, strict=True):
        for n in range(1, len(p) + 1):
            tail = p[-n:]
            if sum(q[-n:] == tail for q in parts) == 1 or n == len(p):
                out[key] = ".".join(tail)
                break
    return out


def value_text(value: Any) -> str:
    """A setting's value as a table cell and a folder name show it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "+".join(value_text(v) for v in value) or "none"
    if value is None:
        return "none"
    if isinstance(value, str) and "/" in value:
        return Path(value).name
    return str(value)  # floats as Python writes them back: 1.0, 0.0001, 1e-05


def setting_of(config: Config, key: str) -> Any:
    """The value of dotted ``key`` in a resolved config (``pretrain.simclr.temperature``), or
    None where this run's config has no such key (another method's setting)."""
    node: Any = config.model_dump(mode="json")
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


@dataclass
class RunRow:
    """One row of the results table."""

    run: PlannedRun
    state: States
    figures: list[dict[str, Any]] = field(default_factory=list)  # EvalResult's figures
    train_seconds: float | None = None
    epochs: int | None = None
    note: str = ""  # why it failed

    def as_dict(self, swept: tuple[str, ...]) -> dict[str, Any]:
        return {
            "run": self.run.label,
            "folder": str(self.run.folder),
            "state": self.state,
            "settings": {k: setting_of(self.run.config, k) for k in swept},
            "figures": [
                {k: f[k] for k in ("name", "accuracy", "ci95", "repeats", "n_way", "chance")}
                for f in self.figures
            ],
            "train_seconds": self.train_seconds,
            "epochs": self.epochs,
            "note": self.note,
        }


# ---------------------------------------------------------------- the results table


def figure_label(name: str) -> str:
    """A figure's setting without its way count and chance, as a column heading:
    "106-way kNN 1-shot, k=1 (chance 0.9%)" -> "kNN 1-shot, k=1"."""
    found = re.fullmatch(r"\d+-way (.*) \(chance [^)]*\)", name)
    return found.group(1) if found else name


def ordered(figures: list[dict[str, Any]], protocol: str) -> list[dict[str, Any]]:
    """kNN's figures as the engineering-symbol table orders them: 1-shot, 5-shot, then the
    k=5 read-out (the protocol's headline, first in its report)."""
    return figures[1:] + figures[:1] if protocol == "knn" else figures


def columns(rows: list[RunRow], protocol: str) -> list[str]:
    """The metric columns: every figure label of the evaluated runs, in their order."""
    labels: dict[str, None] = {}
    for row in rows:
        for f in ordered(row.figures, protocol):
            labels.setdefault(figure_label(f["name"]))
    return list(labels)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = round(seconds)
    return f"{seconds // 60}m {seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def table_rows(
    plan: SweepPlan, rows: list[RunRow], protocol: str
) -> tuple[list[str], list[list[str]]]:
    """The markdown table's heading and cells: run, settings, metrics as "mean ± CI%" (the
    best of each column in bold), train time."""
    short = short_keys(plan.swept)
    metrics = columns(rows, protocol)
    best = {}
    for label in metrics:
        values = [
            f["accuracy"] for r in rows for f in r.figures if figure_label(f["name"]) == label
        ]
        if len(values) > 1:
            best[label] = max(values)
    heading = ["run", *(short[k] for k in plan.swept), *metrics, "train time"]
    cells = []
    for row in rows:
        by_label = {figure_label(f["name"]): f for f in row.figures}
        shown = []
        for i, label in enumerate(metrics):
            f = by_label.get(label)
            if f is None:  # the first cell of a run without figures says why
                shown.append(UNDONE.get(row.state, "") if i == 0 and not row.figures else "")
                continue
            ci = f.get("ci95")
            text = f"{100 * f['accuracy']:.1f}" + (
                f" ± {100 * ci:.1f}%" if ci is not None and math.isfinite(ci) else "%"
            )
            shown.append(f"**{text}**" if best.get(label) == f["accuracy"] else text)
        settings = [value_text(setting_of(row.run.config, k)) for k in plan.swept]
        cells.append([row.run.label, *settings, *shown, duration(row.train_seconds)])
    return heading, cells


def results_markdown(plan: SweepPlan, rows: list[RunRow], evaluated_on: Mapping[str, Any]) -> str:
    e = plan.evaluation.settings
    heading, cells = table_rows(plan, rows, e.protocol)
    done = sum(r.state == "done" for r in rows)
    lines = [f"# {plan.title}", ""]
    where = ""
    if evaluated_on:
        split = f"{evaluated_on['split']} split, " if evaluated_on.get("split") else ""
        where = (f" on {evaluated_on['data']} ({split}{evaluated_on['n_classes']} classes, "
                 f"{evaluated_on['n_images']} images)")  # fmt: skip
    lines.append(
        f"`sketchshot sweep --config {plan.file}`: {plan.command}, {done} of {len(rows)} runs "
        f"done; each evaluated by protocol {e.protocol}{where}. Accuracy ± the half-width of "
        "its 95% confidence interval; the best of each column in bold."
    )
    aligns = ["---"] * (1 + len(plan.swept)) + ["---:"] * (len(heading) - 1 - len(plan.swept))
    lines += ["", "| " + " | ".join(heading) + " |", "| " + " | ".join(aligns) + " |"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    described: dict[str, dict[str, Any]] = {}
    for row in rows:
        for f in ordered(row.figures, e.protocol):
            described.setdefault(figure_label(f["name"]), f)
    if described:
        lines += ["", "Read-outs:", ""]
        lines += [f"- {label}: {f['name']}, over {f['repeats']} repeats"
                  for label, f in described.items()]  # fmt: skip
    notes = [f"- {r.run.label}: {r.note}" for r in rows if r.note]
    if notes:
        lines += ["", "Failed runs:", "", *notes]
    return "\n".join(lines) + "\n"


def results_csv(plan: SweepPlan, rows: list[RunRow]) -> str:
    """One row per run: its name, folder, state, the swept settings by their full keys, each
    read-out's accuracy and CI (fractions), the training epochs and seconds."""
    metrics = columns(rows, plan.evaluation.settings.protocol)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["run", "folder", "state", *plan.swept,
                     *itertools.chain.from_iterable((m, f"{m} ci95") for m in metrics),
                     "epochs", "train_seconds"])  # fmt: skip
    for row in rows:
        by_label = {figure_label(f["name"]): f for f in row.figures}
        figures = []
        for m in metrics:
            f = by_label.get(m)
            ci = f.get("ci95") if f else None
            figures += [f"{f['accuracy']:.6g}" if f else "", f"{ci:.6g}" if ci is not None else ""]
        settings = [_csv_value(setting_of(row.run.config, k)) for k in plan.swept]
        seconds = f"{row.train_seconds:g}" if row.train_seconds is not None else ""
        writer.writerow([row.run.label, row.run.folder.name, row.state, *settings, *figures,
                         row.epochs if row.epochs is not None else "", seconds])  # fmt: skip
    return out.getvalue()


def _csv_value(value: Any) -> str:
    if isinstance(value, list | tuple):
        return " ".join(_csv_value(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def write_results(plan: SweepPlan, rows: list[RunRow], evaluated_on: Mapping[str, Any]) -> None:
    from sketchshot.checkpoint import atomic_write

    md, table = results_markdown(plan, rows, evaluated_on), results_csv(plan, rows)
    atomic_write(plan.out / RESULTS_MD, lambda p: p.write_text(md, encoding="utf-8"))
    atomic_write(plan.out / RESULTS_CSV, lambda p: p.write_text(table, encoding="utf-8"))
