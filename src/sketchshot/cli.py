"""The ``sketchshot`` command: parse options, build a config, call the engine, render.

torch is imported only inside commands, so ``sketchshot --help`` answers at once."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sketchshot import __version__
from sketchshot.config import Config, resolve_config
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
        "--channels-last",
        help="Channels-last memory format on CUDA (ignored on the CPU).",
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
            "--temperature", help="SimCLR NT-Xent temperature. [default: 0.5]", show_default=False
        ),
    ] = None,
    ema_decay: Annotated[
        float | None,
        typer.Option(
            "--ema-decay", help="BYOL target EMA decay. [default: 0.996]", show_default=False
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
    data: DataOpt = None,
    classes: ClassesOpt = None,
    exclude_classes: ExcludeOpt = None,
    config: ConfigOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """N-way K-shot episodes on held-out classes: mean accuracy and 95% confidence interval.

    Data and split default to those the model was trained with; a new --data starts from
    default data settings."""
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
                "seed": seed,
                "device": device,
                "data.source": data,
                "data.classes": classes or None,
                "data.exclude_classes": exclude_classes or None,
            },
            base,
        )
        r = engine.evaluate(cfg, model, console=err)

        def human(c: Console) -> None:
            c.print(f"{r.model}: {r.data} ({r.split} split, {r.n_classes} classes)")
            c.print(
                f"{r.n_way}-way {r.n_shot}-shot, {r.n_query} queries, {r.episodes} episodes: "
                f"[bold]{100 * r.accuracy:.2f}% ± {100 * r.ci95:.2f}%[/] (95% CI)"
            )

        _emit(as_json, r.as_dict(), human)


@app.command()
def predict(
    images: Annotated[
        list[Path], typer.Argument(help="Sketch image files to label.", show_default=False)
    ],
    support: Annotated[
        Path,
        typer.Option(
            "--support",
            help="Folder SUPPORT/<class>/*.png of labelled examples.",
            show_default=False,
        ),
    ],
    model: ModelOpt = None,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Scores of the k best classes.")] = 3,
    device: DeviceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Label sketches against the classes of a support folder."""
    with domain_errors():
        from sketchshot import engine

        rows = engine.predict(model, support, images, device or "auto", top_k)
        if as_json:
            for r in rows:
                print(to_json(r.__dict__))
        else:
            table = Table("image", "class", "confidence", "top scores")
            table.columns[0].overflow = "fold"
            for r in rows:
                if r.error:
                    table.add_row(escape(r.path), "[red]error[/]", "", escape(r.error))
                else:
                    table.add_row(
                        escape(r.path),
                        escape(r.label or ""),
                        f"{r.confidence:.3f}",
                        ", ".join(f"{k} {v:.2f}" for k, v in r.scores.items()),
                    )
            Console().print(table)
        failed = [r for r in rows if r.error]
        if failed:
            err.print(
                f"[bold red]error:[/] {len(failed)} of {len(rows)} image(s) could not be read"
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
