"""``sketchshot evaluate``: episodes, kNN and linear read-outs, or Omniglot's one-shot runs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sketchshot.cli.app import command
from sketchshot.cli.options import (
    DATA,
    EVALUATION,
    MODEL,
    OUTPUT,
    RUN,
    THREADS,
    ConfigFile,
    Flag,
    Given,
    Json,
    Quiet,
    Verbose,
    option,
)
from sketchshot.cli.pairs import evaluate_pairs
from sketchshot.cli.render import emit, note, stderr_console
from sketchshot.config import Config, EvaluateConfig
from sketchshot.errors import UsageError

HARDEST = 5  # classes shown in the lowest-F1 table

MODELS = "the model's"
FLAGS = (
    Flag("--protocol", "evaluate.protocol", EVALUATION),
    Flag("--ways", "evaluate.n_way", EVALUATION),
    Flag("--shots", "evaluate.n_shot", EVALUATION),
    Flag("--queries", "evaluate.n_query", EVALUATION),
    Flag("--episodes", "evaluate.episodes", EVALUATION),
    Flag("--split", "evaluate.split", EVALUATION),
    Flag("--episodes-in", "evaluate.episodes_in", EVALUATION, note=" (from --episodes-out)"),
    Flag("--draws", "evaluate.draws", EVALUATION),
    Flag("--labelled-fraction", "evaluate.labelled_fraction", EVALUATION),
    Flag("--runs", "evaluate.runs", EVALUATION, note="; implies --protocol runs"),
    Flag("--tta", "evaluate.tta", EVALUATION),
    Flag("--within-groups", "evaluate.within_groups", EVALUATION),
    Flag("--align", "evaluate.align", EVALUATION),
    Flag("--warp", "evaluate.warp", EVALUATION),
    Flag("--shape-weight", "evaluate.shape_weight", EVALUATION),
    Flag(
        "--data",
        "data.source",
        DATA,
        note="; a new one starts from default data settings",
        default=MODELS,
    ),
    Flag("--classes", "data.classes", DATA, default=MODELS),
    Flag("--pairs", "data.pairs", DATA, note="; scores a pairwise model", default=MODELS),
    Flag("--min-agreement", "data.min_agreement", DATA, default=MODELS),
    Flag("--min-reviewers", "data.min_reviewers", DATA, default=MODELS),
    Flag("--exclude-classes", "data.exclude_classes", DATA, default=MODELS),
    Flag("--seed", "seed", RUN, default=MODELS),
    Flag("--device", "device", RUN),
    THREADS,
)


def _path(decl: str, help: str, panel: str = OUTPUT, default: str = "none") -> Any:
    return Annotated[Path | None, option(decl, help=help, default=default, panel=panel)]


ModelRun = _path(
    "--model",
    "run folder (or model.json / model.safetensors) of a trained model",
    MODEL,
    "the newest run under ./runs",
)
EpisodesOut = _path("--episodes-out", "save the scored episodes as JSON, for --episodes-in")
SaveGrid = _path(
    "--save-grid", "draw the first episode to FILE.png: support row, queries, mistakes in red"
)
SaveConfusion = _path("--save-confusion", "draw the confusion matrix with class names to FILE.png")


@command(Config(), FLAGS)
def evaluate(
    given: Given,
    model: ModelRun = None,
    config: ConfigFile = None,
    episodes_out: EpisodesOut = None,
    save_grid: SaveGrid = None,
    save_confusion: SaveConfusion = None,
    as_json: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Evaluate a model on held-out data: episodes, kNN and linear probes, a classifier's head,
    Omniglot's runs.

    Each image is embedded once: N-way K-shot episodes (mean, 95% CI, hardest classes), kNN
    and linear probes of the encoder (train images as references on data split by images), a
    supervised model's head (top-1, top-5, macro-F1), or Omniglot's one-shot runs.

    Data and split default to those the model was trained with; a new --data starts from
    default data settings. --json prints every figure with the exact settings, seed and the
    model's sha256.

    A pairwise model is scored on labelled pairs (by default the test split of those it was
    trained on; --pairs CSV for others): accuracy with its 95% CI, and log-loss."""
    from sketchshot import engine

    # where and how a model was trained says nothing of where it is evaluated
    base = engine.saved_config(model).model_copy(update={"device": "auto", "threads": None})
    if "data.pairs" in given.values or base.data.pairs is not None:  # a pairwise model
        outputs = {"episodes_out": episodes_out, "save_grid": save_grid,
                   "save_confusion": save_confusion}  # fmt: skip
        return evaluate_pairs(given, base, config, outputs, model, as_json, quiet)
    if "data.source" in given.values:
        base = base.model_copy(update={"data": Config().data})
    implied = {"evaluate.protocol": "runs"} if "evaluate.runs" in given.values else {}
    cfg = given.config(config, base, {**implied, **given.values})
    refuse_unused(given, cfg.evaluate)
    r = engine.evaluate(
        cfg,
        model,
        quiet=quiet,
        console=stderr_console(),
        episodes_out=episodes_out,
        save_grid=save_grid,
        save_confusion=save_confusion,
    )
    emit(as_json, r.as_dict(), lambda c: print_evaluation(c, r))


# the options that only some protocols read; with any other, a given one is a usage error
EPISODE_KEYS = (
    "evaluate.n_way", "evaluate.n_shot", "evaluate.n_query", "evaluate.episodes",
    "evaluate.within_groups",
)  # fmt: skip
READ_BY = {
    **dict.fromkeys(EPISODE_KEYS, ("episodes",)),
    "evaluate.draws": ("knn", "linear"),
    "evaluate.labelled_fraction": ("knn", "linear"),
    "evaluate.align": ("runs", "episodes"),
    "evaluate.warp": ("runs", "episodes"),
    "evaluate.shape_weight": ("runs", "episodes"),
}


def refuse_unused(given: Given, e: EvaluateConfig) -> None:
    """An option the chosen protocol would ignore is an error that names it."""
    for key, protocols in READ_BY.items():
        if key not in given.values:
            continue
        flag = given.names.get(key, key)
        if e.protocol not in protocols:
            raise UsageError(
                f"{flag} does not apply to --protocol {e.protocol} (only to "
                f"{' and '.join(protocols)})"
            )
        if key in EPISODE_KEYS and e.episodes_in is not None:
            raise UsageError(
                f"{flag} does not apply with --episodes-in: the episode file fixes the ways, "
                "shots, queries and number of episodes"
            )


def print_evaluation(c: Console, r: Any) -> None:
    """The figures (each named with its way count and chance), the hardest classes and the
    per-run error rates of an ``EvalResult``."""
    where = f"{r.split} split, " if r.split else ""
    tta = f", {r.tta} views per image" if r.tta > 1 else ""
    c.print(
        f"{escape(r.model)}: {escape(r.data)} ({where}{r.n_classes} classes, {r.n_images} "
        f"images{tta})"
    )
    table = Table("read-out", "accuracy", "95% CI", "repeats")
    for f in r.figures:
        ci = "" if math.isnan(f.ci95) else f"± {100 * f.ci95:.2f}%"
        table.add_row(escape(f.name), f"{100 * f.accuracy:.2f}%", ci, str(f.repeats))
    c.print(table, soft_wrap=False)
    for line in r.details.get("notes", []):
        note(stderr_console(), line)
    if "macro_f1" in r.details:
        c.print(f"macro-F1 {100 * r.details['macro_f1']:.2f}% over the evaluated classes")
        worst = sorted(r.details["per_class"].items(), key=lambda kv: kv[1]["f1"])[:HARDEST]
        table = Table("lowest F1", "precision", "recall", "F1", "images", title_justify="left")
        for name, m in worst:
            table.add_row(escape(name), *(f"{100 * m[k]:.1f}%" for k in ("precision", "recall",
                          "f1")), str(m["support"]))  # fmt: skip
        c.print(table, soft_wrap=False)
    if r.hardest:
        hard = Table("hardest classes", "accuracy", "right", title_justify="left")
        for h in r.hardest:
            hard.add_row(
                escape(h["class"]), f"{100 * h['accuracy']:.1f}%", f"{h['correct']}/{h['total']}"
            )
        c.print(hard, soft_wrap=False)
    for run in r.details.get("runs", []):
        c.print(f"{run['run']}: error rate {100 * run['error_rate']:.1f}%")
    if "runs" in r.details:
        ci = r.details.get("error_ci95")
        within = f" ± {100 * ci:.2f}%" if ci is not None and ci == ci else ""
        c.print(f"[bold]mean error rate {100 * r.details['mean_error_rate']:.2f}%{within}[/]")
