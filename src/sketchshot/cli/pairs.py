"""``evaluate`` and ``predict`` of a pairwise model, on labelled pairs (``--pairs CSV``): the
commands hand over here, build the config, call the engine and render its result."""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sketchshot.cli.options import Given
from sketchshot.cli.render import emit, print_error, stderr_console, stdout_console, to_json
from sketchshot.config import Config, PredictConfig
from sketchshot.errors import UsageError

# the evaluate options a pairwise model reads
PAIR_KEYS = ("data.pairs", "data.min_agreement", "data.min_reviewers", "evaluate.split", "seed",
             "device", "threads")  # fmt: skip
CSV_HEADER = ("image_a", "image_b", "p_a", "preferred", "label", "error")


def evaluate_pairs(
    given: Given,
    base: Config,
    config: Path | None,
    outputs: dict[str, Any],
    model: Path | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Evaluate a pairwise model (``base``: its config) on pairs: by default the test split of
    the pairs it was trained on; a new --pairs starts from default data settings (all of its
    pairs). ``outputs``: evaluate's picture and episode files, which do not apply."""
    from sketchshot import engine

    unused = [given.names.get(k, k) for k in given.values if k not in PAIR_KEYS]
    unused += [f"--{name.replace('_', '-')}" for name, v in outputs.items() if v is not None]
    if unused:
        raise UsageError(
            f"{', '.join(unused)} {'does' if len(unused) == 1 else 'do'} not apply to a "
            "pairwise model: it is evaluated on labelled pairs (--pairs, --split, "
            "--min-agreement, --min-reviewers)"
        )
    new = given.values.get("data.pairs")
    if new is not None and not engine.same_pairs(new, base.data.pairs):
        base = base.model_copy(update={"data": Config().data})
    cfg = given.config(config, base)
    r = engine.evaluate_pairs(cfg, model, quiet=quiet, console=stderr_console())
    emit(as_json, r.as_dict(), lambda c: print_pair_evaluation(c, r))


def percent(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.2f}%"


def print_pair_evaluation(c: Console, r: Any) -> None:
    """Accuracy with its 95% CI, log-loss and counts of a ``PairEvalResult``."""
    c.print(
        f"{escape(r.model)}: {escape(r.pairs)} ({r.split} split, {r.n_pairs} pairs of "
        f"{r.n_images} images, {r.n_groups} groups)"
    )
    table = Table("read-out", "accuracy", "95% CI", "log-loss", "pairs")
    ci = "" if math.isnan(r.ci95) else f"± {100 * r.ci95:.2f}%"
    ties = f" ({r.n_pairs - r.decided} ties left out)" if r.decided < r.n_pairs else ""
    table.add_row("P(a preferred over b)", percent(r.accuracy), ci, f"{r.log_loss:.4f}",
                  f"{r.decided}{ties}")  # fmt: skip
    c.print(table, soft_wrap=False)
    c.print(f"chance: {100 * r.chance:.0f}% accuracy, log-loss {math.log(2):.4f}")


def predict_pairs(cfg: PredictConfig, as_json: bool, as_csv: bool) -> None:
    """P(a preferred over b) of each pair: a table, JSON lines or CSV on stdout; exit code 1
    when a pair's image could not be read."""
    from sketchshot import engine

    run = engine.predict_pairs(cfg, console=stderr_console())
    if as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(CSV_HEADER)
        for r in run.rows:
            row = r.as_dict()
            writer.writerow(["" if row[k] is None else row[k] for k in CSV_HEADER])
    elif as_json:
        for r in run.rows:
            print(to_json(r.as_dict()), flush=True)
    else:
        table = Table("image a", "image b", "P(a > b)", "preferred", "label")
        for r in run.rows:
            if r.error:
                table.add_row(escape(r.image_a), escape(r.image_b), "[red]error[/]",
                              escape(r.error), "")  # fmt: skip
                continue
            label = "" if r.label is None else f"{r.label:g}"
            table.add_row(escape(r.image_a), escape(r.image_b), f"{r.p_a:.3f}", r.preferred,
                          label)  # fmt: skip
        console = stdout_console()
        console.print(table, soft_wrap=False)
        console.print(escape(f"{len(run.rows)} pairs of {run.pairs} scored by {run.model}"))
    sys.stdout.flush()
    failed = sum(r.error is not None for r in run.rows)
    if failed:
        print_error(f"{failed} of {len(run.rows)} pair(s) could not be scored")
        raise typer.Exit(1)
