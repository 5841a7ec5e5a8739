"""The ``sketchshot`` Typer app and ``command``, which registers a command with its generated
options and turns domain errors into one red line and an exit code."""

from __future__ import annotations

import functools
import inspect
import traceback
import warnings
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.markup import escape

from sketchshot import __version__
from sketchshot.cli.options import Flag, collect
from sketchshot.cli.render import note, print_error, stderr_console
from sketchshot.errors import DataWarning, SketchshotError

app = typer.Typer(
    name="sketchshot",
    help="Few-shot recognition of hand-drawn sketches: self-supervised pretraining, episodic "
    "fine-tuning, evaluation and prediction. Run 'sketchshot demo' for a tour on built-in data.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)

# command name -> (the default instance its options' keys start from, those options)
OPTION_TABLES: dict[str, tuple[BaseModel, tuple[Flag, ...]]] = {}


def _version(value: bool) -> None:
    if value:
        print(f"sketchshot {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    pass


def _data_notes(show: Callable[..., None]) -> Callable[..., None]:
    """A ``warnings.showwarning`` that prints a ``DataWarning`` (skipped zip entries, say) as
    one 'note:' line on stderr and hands any other warning to ``show``."""

    def showwarning(message: Warning | str, category: type[Warning], *args: Any, **kw: Any):
        if issubclass(category, DataWarning):
            note(stderr_console(), str(message))
        else:
            show(message, category, *args, **kw)

    return showwarning


def command(
    root: BaseModel | None = None,
    flags: Sequence[Flag] = (),
    name: str | None = None,
    doc: str | None = None,
    on: typer.Typer | None = None,
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register the decorated function as the command ``name`` (by default the function's
    name) with the help ``doc`` (its docstring). ``flags`` become options before the
    function's own parameters and reach it as ``given`` (a ``Given``) with the values the
    user gave for keys under ``root``; its ``verbose`` parameter, when true, adds the
    traceback to a domain error's one-line message. ``on`` is a sub-app (``data``) to register
    on instead of the root app."""

    def register(body: Callable[..., None]) -> Callable[..., None]:
        own = inspect.signature(body, eval_str=True).parameters
        generated = [flag.parameter(root) for flag in flags] if root is not None else []
        keyword = inspect.Parameter.KEYWORD_ONLY
        params = [*generated, *(p.replace(kind=keyword) for n, p in own.items() if n != "given")]

        @functools.wraps(body)
        def run(**values: Any) -> None:
            if "given" in own:
                values["given"] = collect(flags, values)
            for flag in flags:
                values.pop(flag.name)
            try:
                with warnings.catch_warnings():
                    warnings.showwarning = _data_notes(warnings.showwarning)
                    body(**values)
            except SketchshotError as exc:
                if values.get("verbose"):
                    traceback.print_exc()
                print_error(str(exc))
                raise typer.Exit(exc.exit_code) from None
            except KeyboardInterrupt:
                print_error("interrupted")
                raise typer.Exit(130) from None

        run.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in params}
        called = name or body.__name__.replace("_", "-")
        if root is not None:
            OPTION_TABLES[called] = (root, tuple(flags))
        paragraphs = inspect.cleandoc(doc or body.__doc__ or "").split("\n\n")
        help = escape("\n\n".join(" ".join(p.split()) for p in paragraphs))
        (on or app).command(called, help=help)(run)
        return body

    return register
