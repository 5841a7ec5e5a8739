"""Output that survives pipes: a stdout console that never wraps or cuts lines when stdout is
not a terminal (``info RUN | cat``, ``predict ... > out.txt``), strict JSON, one-line errors."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.markup import escape

from sketchshot.card import finite

# Wide enough for any table row or path; rich then sizes tables to their content.
UNBOUNDED = 100_000


def stdout_console() -> Console:
    """Results for people. Lines of text are never broken by rich (a terminal wraps them
    itself, so a path or a command copies whole); tables fit a terminal's width (print them
    with ``soft_wrap=False``). Into a pipe or a file nothing is wrapped, folded or cut at 80
    columns: hashes, paths and commands stay whole."""
    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console.width = UNBOUNDED
    return console


def stderr_console() -> Console:
    """Progress bars, notes and errors. Made per command so that ``NO_COLOR`` (rich drops the
    colours and keeps the bars) and a redirected stderr are seen as they are now."""
    return Console(stderr=True, highlight=False)


def print_error(message: str) -> None:
    stderr_console().print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)


def note(console: Console, message: str) -> None:
    console.print(f"[yellow]note:[/] {escape(message)}", soft_wrap=True)


def to_json(payload: Any) -> str:
    """Strict JSON: NaN and infinities (a CI over one episode, say) become null."""
    return json.dumps(finite(payload), default=str, allow_nan=False)


def emit(as_json: bool, payload: Any, human: Callable[[Console], None]) -> None:
    """``payload`` as one line of JSON, or ``human(console)`` on stdout; under torchrun only
    rank 0 reports."""
    if os.environ.get("RANK", "0") != "0":
        return
    if as_json:
        print(to_json(payload), flush=True)
    else:
        human(stdout_console())
