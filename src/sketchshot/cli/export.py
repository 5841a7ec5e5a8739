"""``sketchshot export``: a saved model's encoder (and learned scoring) as ONNX or TorchScript."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from sketchshot.cli.app import command
from sketchshot.cli.options import MODEL, OUTPUT, Flag, Given, Json, Quiet, Verbose
from sketchshot.cli.render import emit, note, stderr_console
from sketchshot.config import ExportConfig

FLAGS = (
    Flag("--format", "format", MODEL),
    Flag("--out", "out", OUTPUT),
    Flag("--force", "force", OUTPUT, note=" (a folder holding export.json and its files only)"),
)
Run = Annotated[
    Path | None,
    typer.Argument(
        help=escape(
            "Run folder or model.json of the model to export. [default: the newest run under "
            "./runs]"
        ),
        show_default=False,
    ),
]


@command(ExportConfig(), FLAGS)
def export(
    given: Given,
    run: Run = None,
    as_json: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Export a saved model's encoder, and its scoring where that is a learned module, for use
    without sketchshot.

    --out gets encoder.onnx (or encoder.pt, TorchScript): images float32 [batch, 1, S, S] in
    [0, 1], strokes bright on dark, to embeddings [batch, D]; scoring.onnx for Relation,
    Siamese and MLP-attention Matching networks and a supervised model's classifier head; and
    export.json: preprocessing, inputs and outputs, the scoring rule, the source model's
    sha256 and the versions. Each file is run back and checked against the model. ONNX needs
    pip install 'sketchshot[onnx]'."""
    values = {**given.values, **({"model": run} if run is not None else {})}
    cfg = Given(values, {**given.names, "model": "RUN"}).model(ExportConfig)
    from sketchshot import engine

    r = engine.export_model(cfg)

    def human(c: Console) -> None:
        checked = ", ".join(f"{k} {v:.1e}" for k, v in r.max_abs_diff.items())
        check = f"; largest difference from the model: {checked} ({r.runtime})" if checked else ""
        c.print(
            f"saved {escape(str(r.out))}: {', '.join(r.files)} ({r.format}, "
            f"{r.embedding_dim}-dimensional embeddings){escape(check)}"
        )

    emit(as_json, r.as_dict(), human)
    for text in () if quiet else r.notes:
        note(stderr_console(), text)
