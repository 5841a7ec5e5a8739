"""The one progress bar of every long command (training, prediction): on stderr, so that
stdout stays clean for results; shown on a terminal even with NO_COLOR (just without colour)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def progress_bar(console: Console, disable: bool, status: bool = False) -> Progress:
    """A bar with a description, count, elapsed and remaining time, and with ``status`` a
    free text column (a task's ``status`` field: loss, images/s)."""
    columns: list[ProgressColumn] = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    if status:
        columns.append(TextColumn("{task.fields[status]}"))
    return Progress(
        *columns,
        console=console,
        disable=disable,
        redirect_stdout=False,
        redirect_stderr=False,
    )
