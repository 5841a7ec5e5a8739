"""``sketchshot predict``: label sketches against a class bank or a support folder, as a table,
JSON lines or CSV, row by row as they are labelled."""

from __future__ import annotations

import csv
import sys
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from sketchshot.cli.app import command
from sketchshot.cli.options import (
    DEVICE,
    MODEL,
    OUTPUT,
    RUN,
    THREADS,
    Flag,
    Given,
    Quiet,
    Verbose,
    option,
)
from sketchshot.cli.pairs import predict_pairs
from sketchshot.cli.render import print_error, stderr_console, stdout_console, to_json
from sketchshot.config import PredictConfig
from sketchshot.errors import ConfigError

LABELS = "Labels"
FLAGS = (
    Flag("--bank", "bank", MODEL, note=" (BANK, BANK.json or BANK.safetensors)"),
    Flag("--support", "support", MODEL, note=", encoded on each call (enroll it once instead)"),
    Flag("--model", "model", MODEL),
    Flag("--pairs", "pairs", MODEL, note=" (instead of images, --bank and --support)"),
    Flag("--top-k", "top_k", LABELS),
    Flag(
        "--reject-below",
        "reject_below",
        LABELS,
        note="; unset: the bank's calibrated threshold, if any; -1 turns it off",
    ),
    Flag("--batch-size", "batch_size", RUN),
    DEVICE,
    THREADS,
)
Images = Annotated[
    list[str] | None,
    typer.Argument(
        help="Image files, folders (searched recursively), glob patterns (quoted ones are "
        "expanded here; ** recurses), or - to read paths from stdin, one a line.",
        show_default=False,
    ),
]
JsonLines = Annotated[
    bool,
    option(
        "--json",
        help="one JSON object per image on stdout (JSON lines), as labelled",
        default="off",
        panel=OUTPUT,
    ),
]
Csv = Annotated[
    bool,
    option(
        "--csv",
        help="CSV on stdout, a row per image: path, label, confidence, similarity, "
        "then top1, score1 ... topK, scoreK, and error",
        default="off",
        panel=OUTPUT,
    ),
]


def csv_header(top_k: int) -> list[str]:
    ranks = [[f"top{i}", f"score{i}"] for i in range(1, top_k + 1)]
    return ["path", "label", "confidence", "similarity", *(c for pair in ranks for c in pair),
            "error"]  # fmt: skip


def csv_row(row: Any, top_k: int) -> list[Any]:
    ranked = [x for pair in row.scores.items() for x in pair]
    ranked += [""] * (2 * top_k - len(ranked))
    confidence = "" if row.confidence is None else f"{row.confidence:.6f}"
    similarity = "" if row.similarity is None else f"{row.similarity:.4f}"
    return [row.path, row.label or "", confidence, similarity, *ranked, row.error or ""]


def table_row(r: Any) -> list[str]:
    if r.error:
        return [escape(r.path), "[red]error[/]", "", "", escape(r.error)]
    label = escape(r.label or "")
    if r.label != r.best_class:
        label += f" [dim](best {escape(r.best_class or '')})[/]"
    scores = escape(", ".join(f"{c} {v:.2f}" for c, v in r.scores.items()))
    return [escape(r.path), label, f"{r.confidence:.3f}", f"{r.similarity:.3f}", scores]


@command(PredictConfig(), FLAGS)
def predict(
    given: Given,
    images: Images = None,
    as_json: JsonLines = False,
    as_csv: Csv = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Label sketches against a class bank (--bank) or a support folder (--support).

    The best class and its probability, the top-k scores, the similarity to the nearest class,
    and 'unknown' when that is below a reject threshold. An unreadable image gets a row with
    its error; the exit code is then 1.

    With --pairs CSV, a pairwise model (--model) gives P(a preferred over b) of each pair."""
    if as_json and as_csv:
        raise ConfigError("choose one of --json and --csv")
    inputs = tuple(images or ())
    if "-" in inputs and sys.stdin.isatty():
        raise ConfigError("- reads image paths from stdin, but stdin is a terminal")
    cfg = given.model(PredictConfig, inputs=inputs)
    if cfg.pairs is not None:
        return predict_pairs(cfg, as_json, as_csv)
    from sketchshot import engine

    streaming = as_json or as_csv
    # a bar on a terminal that also shows the streamed rows would be torn by them
    bar = not quiet and not (streaming and sys.stdout.isatty())
    run = engine.predict(cfg, quiet=not bar, console=stderr_console(), stdin=sys.stdin)
    k = min(cfg.top_k, len(run.class_names))
    writer = csv.writer(sys.stdout, lineterminator="\n") if as_csv else None
    if writer is not None:
        writer.writerow(csv_header(k))
    table = Table("image", "class", "confidence", "similarity", "top scores")
    total = failed = 0
    for r in run.rows:
        total += 1
        failed += r.error is not None
        if writer is not None:
            writer.writerow(csv_row(r, k))
        elif as_json:
            print(to_json(r.as_dict()), flush=True)
        else:
            table.add_row(*table_row(r))
    sys.stdout.flush()
    if not streaming:
        threshold = (
            f"; unknown below similarity {run.threshold:.3f} ({run.threshold_from})"
            if run.threshold is not None
            else ""
        )
        console = stdout_console()
        # the caption goes on a line of its own, so that it is not wrapped to the table's width
        console.print(table, soft_wrap=False)
        console.print(escape(f"{len(run.class_names)} classes from {run.classes_from}{threshold}"))
    if failed:
        print_error(f"{failed} of {total} image(s) could not be read")
        raise typer.Exit(1)
