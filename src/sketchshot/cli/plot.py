"""``sketchshot plot``: loss, learning-rate and validation curves of runs, side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from sketchshot.cli.app import command
from sketchshot.cli.options import OUTPUT, Flag, Given, Json, Quiet, Verbose
from sketchshot.cli.render import emit
from sketchshot.plots import PlotConfig

PLOT = "Plot"
FLAGS = (
    Flag("--x", "x", PLOT),
    Flag("--metrics", "metrics", PLOT),
    Flag("--labels", "labels", PLOT),
    Flag("--out", "out", OUTPUT),
)
Runs = Annotated[
    list[Path] | None,
    typer.Argument(
        help="Run folders of pretrain or finetune (their metrics.jsonl), or sweep folders: "
        "every run of the sweep. One line per run in every panel.",
        show_default=False,
    ),
]


@command(PlotConfig(), FLAGS)
def plot(
    given: Given,
    runs: Runs = None,
    as_json: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Draw the training curves of one or several runs side by side into a PNG.

    One panel per value of each run's metrics.jsonl (training loss, learning rate, each
    validation metric such as val_acc), one coloured line per run, over epochs or steps: a
    linear probe on a frozen pretrained encoder against the same encoder trained from
    scratch, say, or every run of a sweep."""
    cfg = given.model(PlotConfig, runs=tuple(runs or ()) or None)
    from sketchshot.plots import plot_runs

    r = plot_runs(cfg)
    emit(
        as_json,
        r.as_dict(),
        lambda c: c.print(
            f"saved {escape(str(r.out))}: {', '.join(r.panels)} of {len(r.runs)} run(s) by {r.x}"
        ),
    )
