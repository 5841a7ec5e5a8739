"""``sketchshot embed``: every image of a source through a model's encoder, to a file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from sketchshot.cli.app import command
from sketchshot.cli.options import (
    DEVICE,
    MODEL,
    OUTPUT,
    RUN,
    THREADS,
    Flag,
    Given,
    Json,
    Quiet,
    Verbose,
)
from sketchshot.cli.render import emit, stderr_console
from sketchshot.config import EmbedConfig

FLAGS = (
    Flag("--out", "out", OUTPUT),
    Flag("--model", "model", MODEL),
    Flag("--batch-size", "batch_size", RUN),
    DEVICE,
    THREADS,
)
Data = Annotated[
    Path,
    typer.Argument(
        help="A folder or .zip of images (class folders or not) or a vector source: every "
        "image or drawing is embedded, decoded as the model's preprocessing says.",
        show_default=False,
    ),
]


@command(EmbedConfig(data="DATA"), FLAGS)
def embed(
    given: Given,
    data: Data,
    as_json: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Write the encoder's features of every image of DATA to --out, for use elsewhere.

    FILE.safetensors holds 'embeddings' [N, D] and 'labels' [N] with the paths and classes in
    its metadata; FILE.npy the embeddings with FILE.json beside it; FILE.csv one row per image:
    path, class, then the features. Rows follow the source's sorted order."""
    cfg = given.model(EmbedConfig, data=str(data))
    from sketchshot import engine

    r = engine.embed_source(cfg, quiet=quiet or as_json, console=stderr_console())

    def human(c: Console) -> None:
        what = f"{r.classes} classes" if r.classes else "unlabelled"
        c.print(
            f"saved {escape(str(r.out))}: {r.images} embeddings of {r.dim} features ({what}); "
            f"model {escape(r.model)}, {r.seconds:.1f} s"
        )

    emit(as_json, r.as_dict(), human)
