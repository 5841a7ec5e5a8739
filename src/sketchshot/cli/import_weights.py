"""``sketchshot import-weights``: convert a ResNet checkpoint from outside (a SimCLR
repository's, or torchvision's) once into a run folder, which ``finetune --init``,
``evaluate``, ``enroll``, ``predict`` and ``info`` take like a pretrain run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.markup import escape

from sketchshot.cli.app import command
from sketchshot.cli.options import DATA, MODEL, OUTPUT, Flag, Given, Json, Quiet, Verbose, option
from sketchshot.cli.render import emit, note, stderr_console
from sketchshot.config import ENCODER_NAMES, Config

# the encoders whose keys are torchvision's ResNet keys (importing.importable(), without torch)
RESNETS = tuple(name for name in ENCODER_NAMES if name.startswith("resnet"))
# the config's data.image_size, the same option as pretrain's and finetune's
IMAGE_SIZE = Flag("--image-size", "data.image_size", DATA)
NAMES = {
    "source": "FILE",
    "encoder": "--encoder",
    "out": "--out",
    "prefix": "--prefix",
    "image_size": "--image-size",
    "trust_pickle": "--trust-pickle",
}

Source = Annotated[
    Path,
    typer.Argument(
        help="The checkpoint: a state dict (.pth, .pt, .tar, .ckpt or .safetensors), or a dict "
        "holding one under 'state_dict', 'model' or 'backbone'.",
        metavar="FILE",
        show_default=False,
    ),
]
Encoder = Annotated[
    Literal[RESNETS],  # type: ignore[valid-type]
    typer.Option(
        "--encoder",
        help="The ResNet the checkpoint's backbone is (torchvision's key names).",
        show_default=False,
        rich_help_panel=MODEL,
    ),
]
Prefix = Annotated[
    str | None,
    option(
        "--prefix",
        help="the backbone's key prefix, e.g. 'backbone.' or 'module.encoder.'; '' for "
        "torchvision's own keys",
        default="detected",
        panel=MODEL,
    ),
]
TrustPickle = Annotated[
    bool,
    option(
        "--trust-pickle",
        help="read a checkpoint that holds pickled Python objects besides tensors (unpickling "
        "can run code: only for files from a source you trust)",
        default="off",
        panel=MODEL,
    ),
]
Out = Annotated[
    Path | None,
    option(
        "--out", help="run folder to write", default="runs/import-<encoder>-<time>", panel=OUTPUT
    ),
]


@command(Config(), (IMAGE_SIZE,), name="import-weights")
def import_weights(
    given: Given,
    source: Source,
    encoder: Encoder,
    prefix: Prefix = None,
    trust_pickle: TrustPickle = False,
    out: Out = None,
    as_json: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Convert a ResNet checkpoint (a SimCLR repository's, or torchvision's) once into a run
    folder that finetune --init, evaluate, enroll and predict take like a pretrain run.

    The backbone's keys are found under their prefix (backbone., encoder., module., or none),
    the RGB stem is summed into one channel, and the model is recorded as SimCLR: a two-layer
    projection head under fc. is kept, anything else there is left out. The card names the
    file and its sha256. Nothing is written when the backbone does not fit --encoder."""
    values = {
        "source": source,
        "encoder": encoder,
        "out": out,
        "prefix": prefix,
        "image_size": given.values.get(IMAGE_SIZE.key),
        "trust_pickle": trust_pickle,
    }
    from sketchshot import importing

    options = Given({k: v for k, v in values.items() if v is not None}, NAMES)
    r = importing.import_weights(options.model(importing.ImportConfig))

    def human(c: Console) -> None:
        c.print(
            f"saved {escape(str(r.run_dir / 'model.safetensors'))}: {r.encoder} at "
            f"{r.image_size}px as {r.method} (projection head {r.head}) from "
            f"{escape(r.source)}, sha256 {r.source_sha256}"
        )
        c.print(f"next: sketchshot finetune --init {escape(str(r.run_dir))}")

    emit(as_json, r.as_dict(), human)
    for text in () if quiet else r.notes:
        note(stderr_console(), text)
