"""``sketchshot sweep``: one training command over a grid or list of settings, each run in its
own folder and evaluated once trained, into a results table."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sketchshot.cli.app import command
from sketchshot.cli.options import OUTPUT, RUN, Flag, Given, Json, Quiet, Verbose
from sketchshot.cli.render import emit, stderr_console
from sketchshot.sweep import SweepOptions

FLAGS = (
    Flag(
        "--config",
        "config",
        RUN,
        note=": command, out, config, data, [base], [grid], [[runs]], [evaluate]; see "
        "examples/sweep.toml",
    ),
    Flag("--out", "out", OUTPUT),
    Flag("--device", "device", RUN),
    Flag("--dry-run", "dry_run", RUN),
)


@command(SweepOptions(), FLAGS)
def sweep(
    given: Given,
    as_json: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Train and evaluate one run per setting of a sweep file, into a results table.

    The sweep file names a command (pretrain or finetune), settings of every run ([base]), a
    grid of values (one run per combination) and/or a list of runs ([[runs]]), and how each run
    is evaluated ([evaluate]: kNN 1-shot, 5-shot and k=5 by default after pretrain, episodes
    after finetune). Every run's config is checked before any trains. Each run gets its own
    folder NNN-<settings> under the sweep folder; results.md and results.csv there are
    rewritten after each run. Run again, the sweep skips finished runs and resumes an
    interrupted one (Ctrl-C saves its progress as training does)."""
    options = given.model(SweepOptions)
    from sketchshot import sweep as sweeps

    plan = sweeps.plan_sweep(options)
    if options.dry_run:
        states = sweeps.check_folders(plan)
        rows = [
            {"index": r.index, "run": r.label, "folder": str(r.folder), "state": states[r.index],
             "settings": r.settings}
            for r in plan.runs
        ]  # fmt: skip
        emit(as_json, {"sweep": str(plan.out), "runs": rows}, lambda c: print_plan(c, plan, states))
        return
    result = sweeps.run_sweep(plan, quiet=quiet, console=stderr_console())
    emit(as_json, result.as_dict(), lambda c: print_results(c, result))


def print_plan(c: Console, plan: Any, states: dict[int, str]) -> None:
    from sketchshot.sweep_results import setting_of, short_keys, value_text

    short = short_keys(plan.swept)
    table = Table("#", "folder", "state", *(short[k] for k in plan.swept))
    for r in plan.runs:  # each setting as the run's config resolves it, as results.md shows it
        cells = [value_text(setting_of(r.config, k)) for k in plan.swept]
        table.add_row(str(r.index), escape(r.folder.name), states[r.index], *map(escape, cells))
    c.print(f"{plan.command} sweep of {len(plan.runs)} runs in {escape(str(plan.out))}")
    c.print(table, soft_wrap=False)


def print_results(c: Console, result: Any) -> None:
    from sketchshot.sweep_results import table_rows

    protocol = result.plan.evaluation.settings.protocol
    heading, cells = table_rows(result.plan, result.rows, protocol)
    table = Table(*map(escape, heading))
    for row in cells:
        table.add_row(*(f"[bold]{escape(x[2:-2])}[/]" if x.startswith("**") else escape(x)
                        for x in row))  # fmt: skip
    c.print(table, soft_wrap=False)
    c.print(
        f"{result.trained} trained, {result.skipped} already done; results in "
        f"{escape(str(result.results_md))} and {escape(str(result.results_csv))}"
    )
