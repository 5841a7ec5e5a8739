"""The ``sketchshot`` command: parse options, build a config, call the engine, render.

torch is imported only inside commands, so ``sketchshot --help`` answers at once."""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sketchshot import __version__
from sketchshot.config import Config, EnrollConfig, PredictConfig, resolve_config
from sketchshot.errors import ConfigError, SketchshotError

app = typer.Typer(
    name="sketchshot",
    help="Few-shot recognition of hand-drawn sketches: self-supervised pretraining, episodic "
    "fine-tuning, evaluation and prediction. Run 'sketchshot demo' for a tour on built-in data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
err = Console(stderr=True)
OptionsT = TypeVar("OptionsT", bound=BaseModel)

# Shared options, defined once.
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="TOML file with any of the sections [data], [encoder], [pretrain], "
        "[finetune], [evaluate]; command-line options override it.",
        show_default=False,
    ),
]
OutOpt = Annotated[
    Path | None,
    typer.Option(
        "--out",
        help="Run folder to write (default: runs/<command>-<method>-<time>).",
        show_default=False,
    ),
]
SeedOpt = Annotated[
    int | None,
    typer.Option(
        "--seed",
        help="Seed of every random draw (data order, views, episodes). [default: 0]",
        show_default=False,
    ),
]
DeviceOpt = Annotated[
    str | None,
    typer.Option("--device", help="auto, cpu, cuda or mps. [default: auto]", show_default=False),
]
JsonOpt = Annotated[
    bool,
    typer.Option("--json", help="Print the result as JSON on stdout; human output goes to stderr."),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
DataOpt = Annotated[
    str | None,
    typer.Option(
        "--data",
        help="'builtin' (generated glyphs, the default), an image folder ROOT/<class>/*.png "
        "or a .zip archive of one.",
        show_default=False,
    ),
]
SizeOpt = Annotated[
    int | None,
    typer.Option(
        "--image-size",
        help="Image side in pixels (default: the encoder's, 28 for conv4).",
        show_default=False,
    ),
]
ClassesOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--classes",
        help="Keep only classes matching this glob or top-level group (repeatable), "
        "e.g. 'Sanskrit/*'.",
        show_default=False,
    ),
]
ExcludeOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--exclude-classes",
        help="Drop classes matching this glob or group (repeatable).",
        show_default=False,
    ),
]
TrainClassesOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--train-classes",
        help="Classes or groups of the train split (repeatable); when not "
        "given, train takes every class not named for val or test.",
        show_default=False,
    ),
]
ValClassesOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--val-classes",
        help="Classes or groups of the validation split (repeatable).",
        show_default=False,
    ),
]
TestClassesOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--test-classes",
        help="Classes or groups of the test split (repeatable).",
        show_default=False,
    ),
]
FractionsOpt = Annotated[
    tuple[float, float, float] | None,
    typer.Option(
        "--split-fractions",
        help="Train, val and test fractions of the classes, drawn with the "
        "split seed, when no class lists are given. [default: 0.7 0.1 0.2]",
        show_default=False,
    ),
]
EncoderOpt = Annotated[
    str | None,
    typer.Option(
        "--encoder",
        help="Encoder: conv4, sketch_cnn, resnet18, resnet34 or resnet50. [default: conv4]",
        show_default=False,
    ),
]
EpochsOpt = Annotated[
    int | None, typer.Option("--epochs", help="Training epochs.", show_default=False)
]
LrOpt = Annotated[
    float | None, typer.Option("--lr", help="Base learning rate.", show_default=False)
]
MinutesOpt = Annotated[
    float | None,
    typer.Option(
        "--max-minutes",
        help="Stop training after this much wall time, keeping what was learnt.",
        show_default=False,
    ),
]
AmpOpt = Annotated[
    str | None,
    typer.Option(
        "--amp",
        help="Mixed precision on CUDA: off, bf16 or fp16 (ignored on the CPU).",
        show_default=False,
    ),
]
ChannelsLastOpt = Annotated[
    bool | None,
    typer.Option(
        "--channels-last/--no-channels-last",
        help="Channels-last weights: faster convolutions on the CPU (oneDNN) and on CUDA. "
        "[default: on]",
        show_default=False,
    ),
]
OptimizerOpt = Annotated[
    str | None,
    typer.Option("--optimizer", help="adam, adamw or sgd (momentum).", show_default=False),
]
ScheduleOpt = Annotated[
    str | None,
    typer.Option(
        "--schedule", help="Learning-rate schedule: cosine, step or constant.", show_default=False
    ),
]
WarmupOpt = Annotated[
    int | None,
    typer.Option(
        "--warmup-epochs", help="Epochs of linear learning-rate warm-up.", show_default=False
    ),
]
CheckpointEveryOpt = Annotated[
    int | None,
    typer.Option(
        "--checkpoint-every",
        help="Also keep checkpoints/epoch_N every N epochs.",
        show_default=False,
    ),
]
ResumeOpt = Annotated[
    Path | None,
    typer.Option(
        "--resume", help="Continue the run in this folder where it stopped.", show_default=False
    ),
]
AugmentOpt = Annotated[
    float | None,
    typer.Option(
        "--augment-strength",
        help="Strength of the sketch augmentation, 0 to 2.",
        show_default=False,
    ),
]
ModelOpt = Annotated[
    Path | None,
    typer.Option(
        "--model",
        help="Run folder (or model.json / model.safetensors) of a trained model "
        "(default: the newest run under ./runs).",
        show_default=False,
    ),
]
WaysOpt = Annotated[
    int | None, typer.Option("--ways", help="Classes per episode (N).", show_default=False)
]
ShotsOpt = Annotated[
    int | None, typer.Option("--shots", help="Labelled examples per class (K).", show_default=False)
]
QueriesOpt = Annotated[
    int | None, typer.Option("--queries", help="Query images per class.", show_default=False)
]


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


@contextmanager
def domain_errors() -> Iterator[None]:
    """Turn a domain error into one red line and its exit code; no traceback."""
    try:
        yield
    except SketchshotError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        err.print("[bold red]interrupted[/]")
        raise typer.Exit(130) from None


def _data_overrides(data, image_size, classes, exclude, train_c, val_c, test_c, fractions) -> dict:
    return {
        "data.source": data,
        "data.image_size": image_size,
        "data.classes": classes or None,
        "data.exclude_classes": exclude or None,
        "data.train_classes": train_c or None,
        "data.val_classes": val_c or None,
        "data.test_classes": test_c or None,
        "data.split_fractions": fractions,
    }


def _training_overrides(
    section: str, epochs, lr, max_minutes, optimizer, schedule, warmup, every, amp, channels_last
) -> dict[str, Any]:
    return {
        f"{section}.epochs": epochs,
        f"{section}.optim.lr": lr,
        f"{section}.max_minutes": max_minutes,
        f"{section}.optim.optimizer": optimizer,
        f"{section}.optim.schedule": schedule,
        f"{section}.optim.warmup_epochs": warmup,
        f"{section}.checkpoint_every": every,
        f"{section}.amp": amp,
        f"{section}.channels_last": channels_last,
    }


def _config(config: Path | None, overrides: dict[str, Any], base: Config | None = None) -> Config:
    return resolve_config(config, overrides, base=base)


def _resume_base(resume: Path | None) -> Config | None:
    if resume is None:
        return None
    saved = resume / "config.toml"
    if not saved.is_file():
        raise ConfigError(f"--resume {resume}: no config.toml there; is it a run folder?")
    return resolve_config(saved)


def to_json(payload: Any) -> str:
    """Strict JSON: NaN and infinities (a CI over one episode, say) become null."""

    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    return json.dumps(clean(payload), default=str, allow_nan=False)


def _emit(as_json: bool, payload: Any, human: Callable[[Console], None]) -> None:
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 alone reports
        return
    if as_json:
        print(to_json(payload))
    else:
        human(Console())


def _run_summary(result: Any) -> dict[str, Any]:
    return {"run": str(result.run_dir), "method": result.method, **result.metrics}


@app.command()
def pretrain(
    method: Annotated[
        str | None,
        typer.Option(
            "--method",
            help="Self-supervised method: simclr or byol. [default: simclr]",
            show_default=False,
        ),
    ] = None,
    encoder: EncoderOpt = None,
    data: DataOpt = None,
    image_size: SizeOpt = None,
    classes: ClassesOpt = None,
    exclude_classes: ExcludeOpt = None,
    train_classes: TrainClassesOpt = None,
    val_classes: ValClassesOpt = None,
    test_classes: TestClassesOpt = None,
    split_fractions: FractionsOpt = None,
    epochs: EpochsOpt = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            help="Images per batch (two views each). [default: 256]",
            show_default=False,
        ),
    ] = None,
    lr: LrOpt = None,
    temperature: Annotated[
        float | None,
        typer.Option(
            "--temperature", help="SimCLR NT-Xent temperature. [default: 0.2]", show_default=False
        ),
    ] = None,
    ema_decay: Annotated[
        float | None,
        typer.Option(
            "--ema-decay",
            help="BYOL target EMA decay at the start, ramped to 1.0 over training (unless "
            "pretrain.ema_cosine is false in --config). For runs of minutes on a CPU, 0.95 "
            "with --batch-size 64 learns much faster. [default: 0.996]",
            show_default=False,
        ),
    ] = None,
    unique_class_batches: Annotated[
        bool | None,
        typer.Option(
            "--unique-class-batches",
            help="Batches whose images all come from different classes (uses the "
            "labels only to avoid same-class negatives).",
            show_default=False,
        ),
    ] = None,
    init: Annotated[
        str | None,
        typer.Option(
            "--init",
            help="Encoder start: random, imagenet (ResNets; torch hub "
            "cache, downloaded if missing) or a state-dict file. [default: random]",
            show_default=False,
        ),
    ] = None,
    augment_strength: AugmentOpt = None,
    crop: Annotated[
        float | None,
        typer.Option(
            "--crop",
            help="Smallest area of a view's random crop, as a fraction of the image "
            "(RandomResizedCrop, aspect 3/4 to 4/3); 1 turns cropping off. [default: 0.6]",
            show_default=False,
        ),
    ] = None,
    thickness_p: Annotated[
        float | None,
        typer.Option(
            "--thickness-p",
            help="Probability of thickening or thinning a view's strokes. [default: 0]",
            show_default=False,
        ),
    ] = None,
    erase_p: Annotated[
        float | None,
        typer.Option(
            "--erase-p",
            help="Probability of erasing a random rectangle of a view. [default: 0]",
            show_default=False,
        ),
    ] = None,
    max_minutes: MinutesOpt = None,
    optimizer: OptimizerOpt = None,
    schedule: ScheduleOpt = None,
    warmup_epochs: WarmupOpt = None,
    checkpoint_every: CheckpointEveryOpt = None,
    amp: AmpOpt = None,
    channels_last: ChannelsLastOpt = None,
    resume: ResumeOpt = None,
    config: ConfigOpt = None,
    out: OutOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Self-supervised pretraining of an encoder on unlabelled sketches (train split)."""
    with domain_errors():
        cfg = _config(
            config,
            {
                "pretrain.method": method,
                "encoder.name": encoder,
                "pretrain.batch_size": batch_size,
                "pretrain.temperature": temperature,
                "pretrain.ema_decay": ema_decay,
                "pretrain.unique_class_batches": unique_class_batches,
                "encoder.init": init,
                "pretrain.augment_strength": augment_strength,
                "pretrain.crop": crop,
                "pretrain.thickness_p": thickness_p,
                "pretrain.erase_p": erase_p,
                **_training_overrides(
                    "pretrain",
                    epochs,
                    lr,
                    max_minutes,
                    optimizer,
                    schedule,
                    warmup_epochs,
                    checkpoint_every,
                    amp,
                    channels_last,
                ),
                "seed": seed,
                "device": device,
                **_data_overrides(
                    data,
                    image_size,
                    classes,
                    exclude_classes,
                    train_classes,
                    val_classes,
                    test_classes,
                    split_fractions,
                ),
            },
            _resume_base(resume),
        )
        from sketchshot import engine

        result = engine.pretrain(cfg, out, resume, quiet=quiet, console=err)
        _emit(
            as_json,
            _run_summary(result),
            lambda c: c.print(
                f"saved {result.run_dir / 'model.safetensors'} "
                f"({result.fit.epochs} epochs, {result.fit.images_per_s:.0f} images/s)"
            ),
        )


@app.command()
def finetune(
    method: Annotated[
        str | None,
        typer.Option(
            "--method",
            help="Few-shot method: protonet, matching, relation or siamese. [default: protonet]",
            show_default=False,
        ),
    ] = None,
    init: Annotated[
        str | None,
        typer.Option(
            "--init",
            help="'scratch', 'imagenet' (ResNets), 'latest' (the newest pretrain run) or a run "
            "folder whose encoder to start from. [default: scratch]",
            show_default=False,
        ),
    ] = None,
    encoder: EncoderOpt = None,
    data: DataOpt = None,
    image_size: SizeOpt = None,
    classes: ClassesOpt = None,
    exclude_classes: ExcludeOpt = None,
    train_classes: TrainClassesOpt = None,
    val_classes: ValClassesOpt = None,
    test_classes: TestClassesOpt = None,
    split_fractions: FractionsOpt = None,
    ways: Annotated[
        int | None,
        typer.Option(
            "--ways", help="Classes per training episode. [default: 20]", show_default=False
        ),
    ] = None,
    shots: Annotated[
        int | None,
        typer.Option("--shots", help="Support images per class. [default: 1]", show_default=False),
    ] = None,
    queries: Annotated[
        int | None,
        typer.Option("--queries", help="Query images per class. [default: 5]", show_default=False),
    ] = None,
    episodes: Annotated[
        int | None,
        typer.Option(
            "--episodes", help="Training episodes per epoch. [default: 100]", show_default=False
        ),
    ] = None,
    epochs: EpochsOpt = None,
    lr: LrOpt = None,
    augment_strength: AugmentOpt = None,
    max_minutes: MinutesOpt = None,
    optimizer: OptimizerOpt = None,
    schedule: ScheduleOpt = None,
    warmup_epochs: WarmupOpt = None,
    checkpoint_every: CheckpointEveryOpt = None,
    amp: AmpOpt = None,
    channels_last: ChannelsLastOpt = None,
    rotation_classes: Annotated[
        bool | None,
        typer.Option(
            "--rotation-classes",
            help="Add every class rotated by 90, 180 and 270 degrees as new training classes (x4).",
            show_default=False,
        ),
    ] = None,
    freeze_encoder: Annotated[
        bool | None,
        typer.Option(
            "--freeze-encoder",
            help="Embed the images once with the frozen encoder "
            "and train only the method's head (matching, relation, siamese; protonet with "
            "--distance cosine trains its scale).",
            show_default=False,
        ),
    ] = None,
    head_lr: Annotated[
        float | None,
        typer.Option(
            "--head-lr",
            help="Learning rate of the method's head (default: --lr).",
            show_default=False,
        ),
    ] = None,
    distance: Annotated[
        str | None,
        typer.Option(
            "--distance",
            help="ProtoNet distance: euclidean or cosine (learnable scale).",
            show_default=False,
        ),
    ] = None,
    attention: Annotated[
        str | None,
        typer.Option(
            "--attention", help="Matching networks' attention: cosine or mlp.", show_default=False
        ),
    ] = None,
    patience: Annotated[
        int | None,
        typer.Option(
            "--patience",
            help="Stop after this many epochs without a better validation accuracy.",
            show_default=False,
        ),
    ] = None,
    resume: ResumeOpt = None,
    config: ConfigOpt = None,
    out: OutOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Episodic N-way K-shot training of a few-shot classifier."""
    with domain_errors():
        cfg = _config(
            config,
            {
                "finetune.method": method,
                "finetune.init": init,
                "encoder.name": encoder,
                "finetune.n_way": ways,
                "finetune.n_shot": shots,
                "finetune.n_query": queries,
                "finetune.episodes_per_epoch": episodes,
                "finetune.augment_strength": augment_strength,
                "finetune.rotation_classes": rotation_classes,
                "finetune.freeze_encoder": freeze_encoder,
                "finetune.head_lr": head_lr,
                "finetune.attention": attention,
                "finetune.distance": distance,
                "finetune.patience": patience,
                **_training_overrides(
                    "finetune",
                    epochs,
                    lr,
                    max_minutes,
                    optimizer,
                    schedule,
                    warmup_epochs,
                    checkpoint_every,
                    amp,
                    channels_last,
                ),
                "seed": seed,
                "device": device,
                **_data_overrides(
                    data,
                    image_size,
                    classes,
                    exclude_classes,
                    train_classes,
                    val_classes,
                    test_classes,
                    split_fractions,
                ),
            },
            _resume_base(resume),
        )
        from sketchshot import engine

        result = engine.finetune(cfg, out, resume, quiet=quiet, console=err)
        best = result.metrics["best"]
        _emit(
            as_json,
            _run_summary(result),
            lambda c: c.print(
                f"saved {result.run_dir / 'model.safetensors'} ({result.fit.epochs} epochs"
                + (
                    f", best val_acc {best['val_acc']:.3f} at epoch {best['epoch']}"
                    if best.get("val_acc") is not None
                    else ""
                )
                + ")"
            ),
        )


@app.command()
def evaluate(
    model: ModelOpt = None,
    ways: WaysOpt = None,
    shots: ShotsOpt = None,
    queries: QueriesOpt = None,
    episodes: Annotated[
        int | None,
        typer.Option("--episodes", help="Number of episodes. [default: 1000]", show_default=False),
    ] = None,
    split: Annotated[
        str | None,
        typer.Option(
            "--split",
            help="Class split to evaluate on: train, val, test or all. [default: test]",
            show_default=False,
        ),
    ] = None,
    protocol: Annotated[
        str | None,
        typer.Option(
            "--protocol",
            help="episodes: N-way K-shot episodes scored by the model's method, head included; "
            "knn: cosine kNN on the encoder's features (before any head), 1-shot k=1, 5-shot "
            "k=3 and --labelled-fraction k=5; linear: logistic-regression probe on the frozen "
            "encoder's features; runs: Omniglot's one-shot runs (--runs). [default: episodes]",
            show_default=False,
        ),
    ] = None,
    episodes_in: Annotated[
        Path | None,
        typer.Option(
            "--episodes-in",
            help="Replay the episode list in this JSON file (from --episodes-out) on the same "
            "drawings; its ways, shots, queries and count replace those options.",
            show_default=False,
        ),
    ] = None,
    episodes_out: Annotated[
        Path | None,
        typer.Option(
            "--episodes-out",
            help="Save the scored episode list as JSON, to replay with --episodes-in (another "
            "model on identical episodes).",
            show_default=False,
        ),
    ] = None,
    draws: Annotated[
        int | None,
        typer.Option(
            "--draws",
            help="knn and linear: seeded draws of the labelled images, for the 95% CI. "
            "[default: 10]",
            show_default=False,
        ),
    ] = None,
    labelled_fraction: Annotated[
        float | None,
        typer.Option(
            "--labelled-fraction",
            help="knn (k=5) and linear: share of each class's images that is labelled; the "
            "rest are queries. [default: 0.5]",
            show_default=False,
        ),
    ] = None,
    runs: Annotated[
        Path | None,
        typer.Option(
            "--runs",
            help="Folder or .zip of Omniglot one-shot runs (runNN/training/, runNN/test/, "
            "runNN/class_labels.txt): error rate per run and the mean; implies --protocol runs.",
            show_default=False,
        ),
    ] = None,
    tta: Annotated[
        int | None,
        typer.Option(
            "--tta",
            help="Test-time augmentation: average each image's embedding with N-1 seeded "
            "augmented views (mild affine jitter). [default: 1, off]",
            show_default=False,
        ),
    ] = None,
    save_grid: Annotated[
        Path | None,
        typer.Option(
            "--save-grid",
            help="Draw the first episode to FILE.png: support row, queries with predicted "
            "labels, mistakes in red.",
            show_default=False,
        ),
    ] = None,
    save_confusion: Annotated[
        Path | None,
        typer.Option(
            "--save-confusion",
            help="Draw the confusion matrix with class names to FILE.png (episodes, knn, linear).",
            show_default=False,
        ),
    ] = None,
    data: DataOpt = None,
    classes: ClassesOpt = None,
    exclude_classes: ExcludeOpt = None,
    config: ConfigOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Evaluate a model on held-out classes, each image embedded once: N-way K-shot episodes
    (mean, 95% CI, hardest classes), kNN and linear probes, or Omniglot's one-shot runs.

    Data and split default to those the model was trained with; a new --data starts from
    default data settings. --json prints every figure with the exact settings, seed and the
    model's sha256."""
    with domain_errors():
        from sketchshot import engine

        base = engine.saved_config(model).model_copy(update={"device": "auto"})
        if data is not None:
            base = base.model_copy(update={"data": Config().data})
        cfg = _config(
            config,
            {
                "evaluate.n_way": ways,
                "evaluate.n_shot": shots,
                "evaluate.n_query": queries,
                "evaluate.episodes": episodes,
                "evaluate.split": split,
                "evaluate.protocol": protocol or ("runs" if runs is not None else None),
                "evaluate.episodes_in": str(episodes_in) if episodes_in else None,
                "evaluate.draws": draws,
                "evaluate.labelled_fraction": labelled_fraction,
                "evaluate.runs": str(runs) if runs else None,
                "evaluate.tta": tta,
                "seed": seed,
                "device": device,
                "data.source": data,
                "data.classes": classes or None,
                "data.exclude_classes": exclude_classes or None,
            },
            base,
        )
        r = engine.evaluate(
            cfg,
            model,
            quiet=quiet,
            console=err,
            episodes_out=episodes_out,
            save_grid=save_grid,
            save_confusion=save_confusion,
        )
        _emit(as_json, r.as_dict(), lambda c: _print_evaluation(c, r))


def _print_evaluation(c: Console, r: Any) -> None:
    """The figures, the hardest classes and per-run error rates of an ``EvalResult``."""
    where = f"{r.split} split, " if r.split else ""
    tta = f", {r.tta} views per image" if r.tta > 1 else ""
    c.print(
        f"{escape(r.model)}: {escape(r.data)} ({where}{r.n_classes} classes, {r.n_images} "
        f"images{tta})"
    )
    table = Table("protocol", "accuracy", "95% CI", "repeats")
    for f in r.figures:
        ci = "" if math.isnan(f["ci95"]) else f"± {100 * f['ci95']:.2f}%"
        table.add_row(escape(f["name"]), f"{100 * f['accuracy']:.2f}%", ci, str(f["repeats"]))
    c.print(table)
    if r.hardest:
        hard = Table("hardest classes", "accuracy", "right", title_justify="left")
        for h in r.hardest:
            hard.add_row(escape(h["class"]), f"{100 * h['accuracy']:.1f}%",
                         f"{h['correct']}/{h['total']}")  # fmt: skip
        c.print(hard)
    for run in r.details.get("runs", []):
        c.print(f"{run['run']}: error rate {100 * run['error_rate']:.1f}%")
    if "runs" in r.details:
        c.print(f"[bold]mean error rate {100 * r.details['mean_error_rate']:.2f}%[/]")


def _options(options: type[OptionsT], **values: Any) -> OptionsT:
    """A frozen options model from command-line values; a bad value names its option."""
    try:
        return options(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        problems = [
            f"--{'.'.join(str(p) for p in e['loc']).replace('_', '-')}: {e['msg']}"
            for e in exc.errors()
        ]
        raise ConfigError("; ".join(problems)) from None


BankOpt = Annotated[
    Path | None,
    typer.Option(
        "--bank",
        help="Class bank written by 'sketchshot enroll' (BANK, BANK.json or BANK.safetensors).",
        show_default=False,
    ),
]
BankModelOpt = Annotated[
    Path | None,
    typer.Option(
        "--model",
        help="Run folder of a trained model (default: the model the bank was encoded with, "
        "else the newest run under ./runs).",
        show_default=False,
    ),
]


@app.command()
def enroll(
    support: Annotated[
        Path | None,
        typer.Option(
            "--support",
            help="Folder or .zip SUPPORT/<class>/*.png of labelled examples to add; only "
            "these images are encoded.",
            show_default=False,
        ),
    ] = None,
    bank: Annotated[
        Path | None,
        typer.Option(
            "--bank",
            help="An existing bank to change (add --support classes, --remove, --calibrate); "
            "rewritten in place unless --out is given.",
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Bank to write: OUT.safetensors (embeddings) and OUT.json (class names, "
            "counts, model hash, threshold).",
            show_default=False,
        ),
    ] = None,
    model: BankModelOpt = None,
    classes: ClassesOpt = None,
    shots: Annotated[
        int | None,
        typer.Option(
            "--shots",
            min=1,
            help="Enroll at most this many images per class (the first by file name).",
            show_default=False,
        ),
    ] = None,
    remove: Annotated[
        list[str] | None,
        typer.Option(
            "--remove",
            help="Remove classes matching this name, glob or top-level group (repeatable); "
            "nothing is encoded again.",
            show_default=False,
        ),
    ] = None,
    replace: Annotated[
        bool,
        typer.Option(
            "--replace",
            help="Encode again classes of --support that the bank already has (without it, "
            "such a clash is an error).",
        ),
    ] = False,
    calibrate: Annotated[
        bool,
        typer.Option(
            "--calibrate",
            help="Calibrate a reject threshold for unknown sketches on leave-one-class-out "
            "episodes of the bank and store it (needs 3 classes, 2 with 2+ images).",
        ),
    ] = False,
    false_reject: Annotated[
        float | None,
        typer.Option(
            "--false-reject",
            min=0.0,
            max=0.99,
            help="Share of drawings of known classes the calibrated threshold may label "
            "unknown, as measured on the bank; implies --calibrate. [default: 0.05]",
            show_default=False,
        ),
    ] = None,
    device: DeviceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Encode support classes once into a class bank for predict; add, remove, calibrate.

    A calibrated bank is calibrated again after classes are added or removed."""
    with domain_errors():
        cfg = _options(
            EnrollConfig,
            model=model,
            support=support,
            bank=bank,
            out=out,
            classes=tuple(classes or ()),
            shots=shots,
            remove=tuple(remove or ()),
            replace=replace,
            calibrate=calibrate,
            false_reject=false_reject,
            device=device,
        )
        from sketchshot import engine

        r = engine.enroll(cfg)

        def human(c: Console) -> None:
            changes = [f"added {len(r.added)}"] if r.added else []
            changes += [f"removed {len(r.removed)}"] if r.removed else []
            c.print(
                f"saved {escape(str(r.bank))}: {len(r.classes)} classes, "
                f"{sum(r.classes.values())} embeddings ({', '.join(changes) or 'unchanged'}); "
                f"model {escape(r.model)}",
                highlight=False,
            )
            t = r.threshold
            if t is not None:
                c.print(
                    f"unknown below similarity {t['value']:.4f}: rejects "
                    f"{100 * t['false_reject']:.1f}% of known and accepts "
                    f"{100 * t['false_accept']:.1f}% of unknown drawings in "
                    f"{t['episodes']} leave-one-class-out episodes",
                    highlight=False,
                )
            for note in r.notes:
                err.print(f"[yellow]note:[/] {escape(note)}", highlight=False)

        _emit(as_json, r.as_dict(), human)


def _csv_header(top_k: int) -> list[str]:
    ranks = [[f"top{i}", f"score{i}"] for i in range(1, top_k + 1)]
    return ["path", "label", "confidence", "similarity", *(c for pair in ranks for c in pair),
            "error"]  # fmt: skip


def _csv_row(row: Any, top_k: int) -> list[Any]:
    ranked = [x for pair in row.scores.items() for x in pair]
    ranked += [""] * (2 * top_k - len(ranked))
    confidence = "" if row.confidence is None else f"{row.confidence:.6f}"
    similarity = "" if row.similarity is None else f"{row.similarity:.4f}"
    return [row.path, row.label or "", confidence, similarity, *ranked, row.error or ""]


@app.command()
def predict(
    images: Annotated[
        list[str] | None,
        typer.Argument(
            help="Image files, folders (searched recursively), glob patterns (quoted ones are "
            "expanded here; ** recurses), or - to read paths from stdin, one a line.",
            show_default=False,
        ),
    ] = None,
    support: Annotated[
        Path | None,
        typer.Option(
            "--support",
            help="Folder SUPPORT/<class>/*.png of labelled examples, encoded on each call "
            "(enroll them once into a --bank instead).",
            show_default=False,
        ),
    ] = None,
    bank: BankOpt = None,
    model: BankModelOpt = None,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Scores of the k best classes.")] = 3,
    reject_below: Annotated[
        float | None,
        typer.Option(
            "--reject-below",
            min=-1.0,
            max=1.0,
            help="Label a sketch 'unknown' when the cosine similarity of its features to the "
            "nearest class mean is below this (default: the bank's calibrated threshold, if "
            "any; -1 turns it off).",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="One JSON object per image on stdout (JSON lines), batch by batch."
        ),
    ] = False,
    as_csv: Annotated[
        bool,
        typer.Option(
            "--csv",
            help="CSV on stdout, a row per image: path, label, confidence, similarity, then "
            "top1, score1 ... topK, scoreK, and error.",
        ),
    ] = False,
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size", min=1, help="Images read and embedded at a time (bounds memory)."
        ),
    ] = 256,
    device: DeviceOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Label sketches against a class bank (--bank) or a support folder (--support).

    The best class and its probability, the top-k scores, the similarity to the nearest class,
    and 'unknown' when that is below a reject threshold. An unreadable image gets a row with
    its error; the exit code is then 1."""
    with domain_errors():
        if as_json and as_csv:
            raise ConfigError("choose one of --json and --csv")
        inputs = tuple(images or ())
        if "-" in inputs and sys.stdin.isatty():
            raise ConfigError("- reads image paths from stdin, but stdin is a terminal")
        cfg = _options(
            PredictConfig,
            inputs=inputs,
            model=model,
            support=support,
            bank=bank,
            top_k=top_k,
            reject_below=reject_below,
            batch_size=batch_size,
            device=device,
        )
        from sketchshot import engine

        streaming = as_json or as_csv
        # a bar on a terminal that also shows the streamed rows would be torn by them
        bar = not quiet and not (streaming and sys.stdout.isatty())
        run = engine.predict(cfg, quiet=not bar, console=err, stdin=sys.stdin)
        k = min(cfg.top_k, len(run.class_names))
        writer = csv.writer(sys.stdout, lineterminator="\n") if as_csv else None
        if writer is not None:
            writer.writerow(_csv_header(k))
        table = Table("image", "class", "confidence", "similarity", "top scores")
        table.columns[0].overflow = "fold"
        total = failed = 0
        for r in run.rows:
            total += 1
            failed += r.error is not None
            if writer is not None:
                writer.writerow(_csv_row(r, k))
            elif as_json:
                print(to_json(r.as_dict()), flush=True)
            elif r.error:
                table.add_row(escape(r.path), "[red]error[/]", "", "", escape(r.error))
            else:
                label = escape(r.label or "")
                if r.label != r.best_class:
                    label += f" [dim](best {escape(r.best_class or '')})[/]"
                table.add_row(
                    escape(r.path),
                    label,
                    f"{r.confidence:.3f}",
                    f"{r.similarity:.3f}",
                    escape(", ".join(f"{c} {v:.2f}" for c, v in r.scores.items())),
                )
        if writer is not None:
            sys.stdout.flush()
        if not streaming:
            table.caption = escape(
                f"{len(run.class_names)} classes from {run.classes_from}"
                + (
                    f"; unknown below similarity {run.threshold:.3f} ({run.threshold_from})"
                    if run.threshold is not None
                    else ""
                )
            )
            Console().print(table)
        if failed:
            err.print(
                f"[bold red]error:[/] {failed} of {total} image(s) could not be read",
                highlight=False,
            )
            raise typer.Exit(1)


@app.command()
def info(
    model: Annotated[
        Path | None,
        typer.Argument(
            help="Run folder or model.json (default: the newest run under ./runs).",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Print a saved model's metadata (architecture, preprocessing, classes, metrics, hash)."""
    with domain_errors():
        from sketchshot import engine

        meta = engine.info(model)
        if as_json:
            print(to_json(meta))
            return
        m, p = meta.get("model", {}), meta.get("preprocessing", {})
        table = Table(show_header=False)
        for key, value in [
            ("method", f"{m.get('method')} ({m.get('kind')})"),
            ("encoder", f"{m.get('encoder')} {m.get('encoder_args', {})}"),
            ("method args", str(m.get("method_args", {}))),
            ("initialised from", m.get("init", "scratch")),
            (
                "preprocessing",
                f"{p.get('image_size')}px, invert {p.get('invert')}, "
                f"mean {p.get('mean')}, std {p.get('std')}",
            ),
            (
                "classes",
                f"{len(meta.get('class_names', []))} from {meta.get('data', {}).get('origin')}",
            ),
            ("metrics", json.dumps(meta.get("metrics", {}).get("best", {}))),
            ("sketchshot", meta.get("sketchshot_version")),
            ("sha256", meta.get("sha256")),
        ]:
            table.add_row(key, escape(str(value)))
        Console().print(table)


@app.command()
def demo(
    out: Annotated[
        Path, typer.Option("--out", help="Folder for the demo's runs and files.")
    ] = Path("sketchshot-demo"),
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Pretrain, finetune, evaluate and predict on the built-in glyphs; prints the accuracy.

    Takes about two minutes on two CPU cores."""
    with domain_errors():
        from sketchshot.demo import DEMO_SETTINGS, run_demo

        if (out / "pretrain").exists() or (out / "finetune").exists():
            raise ConfigError(f"{out} already holds a demo; remove it or choose another --out")
        cfg = resolve_config(overrides={**DEMO_SETTINGS, "seed": seed, "device": device})
        r = run_demo(out, cfg, quiet=quiet, console=err)
        payload = {
            "out": str(r.out),
            "seconds": round(r.seconds, 1),
            "evaluation": r.evaluation,
            "evaluation_pretrained_only": r.evaluation_pretrained,
            "predictions": r.predictions,
            "predict_accuracy": r.predict_accuracy,
        }

        def human(c: Console) -> None:
            table = Table("image", "predicted", "confidence", "truth")
            for p in r.predictions:
                ok = "[green]" if p["label"] == p["truth"] else "[red]"
                table.add_row(
                    Path(p["path"]).name, f"{ok}{p['label']}", f"{p['confidence']:.3f}", p["truth"]
                )
            c.print(table)
            e, ep = r.evaluation, r.evaluation_pretrained
            c.print(
                f"self-supervised encoder alone: {100 * ep['accuracy']:.1f}% ± "
                f"{100 * ep['ci95']:.1f}%"
            )
            c.print(
                f"[bold]demo done in {r.seconds:.0f} s: {e['n_way']}-way {e['n_shot']}-shot "
                f"accuracy on unseen glyph classes {100 * e['accuracy']:.1f}% ± "
                f"{100 * e['ci95']:.1f}% (chance {100 / e['n_way']:.0f}%)[/]"
            )
            c.print(
                f"runs in {r.out}/pretrain and {r.out}/finetune; try "
                f"'sketchshot predict --model {r.out}/finetune --support {r.out}/predict/support "
                f"{r.out}/predict/queries/*.png'"
            )

        _emit(as_json, payload, human)


def main() -> None:
    app()
