"""Run folders and the one place a training run is assembled: a ``TrainingJob`` (config,
model card, method, batch source, data) goes in; processes, the folder, ``fit`` and the final
model come out. Pretraining and fine-tuning both end here."""

from __future__ import annotations

import errno
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from rich.console import Console

from sketchshot import distributed
from sketchshot.card import DataSummary, ModelSpec, Preprocessing
from sketchshot.checkpoint import atomic_write, read_card, save_model, write_error
from sketchshot.config import (
    Config,
    MethodSettings,
    SupervisedSettings,
    TrainingConfig,
    to_toml,
)
from sketchshot.data.dataset import SketchDataset
from sketchshot.data.pairs import PairSplit
from sketchshot.errors import CheckpointError, ConfigError, DiskFull, WriteFailed
from sketchshot.evaluation import embed, score_episodes
from sketchshot.methods import METHODS, Method
from sketchshot.methods.supervised import classification_metrics
from sketchshot.training import BatchSource, FitResult, LoopSettings, Validator, fit

RUNS = Path("runs")
# What a run writes into its folder's checkpoints/ (with the leftovers of killed saves, which
# start with a dot).
CHECKPOINT_FILE = re.compile(r"\.*(best|last|epoch_\d+)\.(json|safetensors)(\..+)?")


@dataclass
class RunResult:
    run_dir: Path
    method: str
    fit: FitResult
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainingJob:
    """One training run, as the engine built it from the config and the data.

    ``batches(ctx)`` gives this process's ``BatchSource`` once the processes have joined;
    ``val_shots`` is the support size of the validation episodes. ``validator(device)``, where
    given, is the run's own validation and the epoch record's key it monitors (pairwise: the
    val log-loss); ``train`` is then what it trains on, by its origin and number of images
    (a ``PairSplit``: pairs of image files)."""

    command: Literal["pretrain", "finetune"]
    cfg: Config
    section: TrainingConfig
    method: Method
    model: ModelSpec
    preprocessing: Preprocessing
    train: SketchDataset | PairSplit
    val: SketchDataset | None
    batches: Callable[[distributed.DistContext], BatchSource]
    val_shots: int = 1
    validator: Callable[[Any], tuple[Validator | None, str]] | None = None
    notes: tuple[str, ...] = ()  # said once before training (what is held out, the init)

    def card(self) -> dict[str, Any]:
        """The model card's fields known before training (metrics and hash come later)."""
        return {
            "model": self.model,
            "preprocessing": self.preprocessing,
            "class_names": self.train.class_names,
            "data": DataSummary(origin=self.train.origin, images=len(self.train)),
            "config": self.cfg.model_dump(mode="json"),
        }


def model_spec(
    settings: MethodSettings,
    encoder: str,
    image_size: int,
    init: str,
    encoder_args: dict[str, Any] | None = None,
) -> ModelSpec:
    """The card's ``model`` block: registry names and arguments to rebuild the network.
    ``encoder_args`` are ``create_encoder``'s but ``grad_checkpointing``, a way of training
    that a saved model does not need."""
    args = {**(encoder_args or {}), "image_size": image_size}
    args.pop("grad_checkpointing", None)
    return ModelSpec(
        method=settings.name,
        kind=METHODS.get(settings.name).kind,
        method_args=settings.arguments(),
        encoder=encoder,
        encoder_args=args,
        init=init,
    )


def new_run_dir(out: Path | None, command: str, method: str) -> Path:
    """The folder of a new run: ``out``, or a new one under ``runs/``. A folder that holds a
    finished run (``model.json``) or one to resume (``checkpoints/last.json``) is refused; one
    with neither (a run stopped before its first ``last``, by a full disk, say) is reused."""
    if out is None:
        out = RUNS / f"{command}-{method}-{time.strftime('%Y%m%d-%H%M%S')}"
    if (out / "model.json").exists() or (out / "checkpoints" / "last.json").exists():
        raise ConfigError(f"{out} already holds a run; choose another --out or use --resume {out}")
    return out


def discard_unfinished(run_dir: Path) -> bool:
    """Remove what a run that never saved a ``last`` left in ``run_dir`` (its checkpoints and
    ``metrics.jsonl``), so that a new run there starts clean; other files are kept. True if
    there was anything to remove."""
    ckpt = run_dir / "checkpoints"
    found = [run_dir / "metrics.jsonl"] if (run_dir / "metrics.jsonl").is_file() else []
    if ckpt.is_dir():
        found += [e for e in ckpt.iterdir() if CHECKPOINT_FILE.fullmatch(e.name) and e.is_file()]
    for path in found:
        path.unlink()
    return bool(found)


def stopped_by(exc: WriteFailed, run_dir: Path) -> WriteFailed:
    """``exc`` with what to do next: resume from the last complete ``last``, or start again."""
    if (run_dir / "checkpoints" / "last.json").exists():
        then = f"continue with --resume {run_dir}"
    else:
        then = f"start again with --out {run_dir}"
    fix = "make room" if isinstance(exc, DiskFull) else "fix that"
    return type(exc)(f"{exc}; the run stopped: {fix}, then {then}")


def latest_run(kind: str | None = None, root: Path = RUNS) -> Path:
    """The most recently written run folder under ``root`` (of a method ``kind``: 'ssl',
    'fewshot' or 'supervised')."""
    candidates = []
    for sidecar in root.glob("*/model.json"):
        try:
            card = read_card(sidecar)
        except CheckpointError:
            continue
        if kind is None or card.model.kind == kind:
            candidates.append((sidecar.stat().st_mtime, sidecar.parent))
    if not candidates:
        commands = {"ssl": "pretrain", "fewshot": "finetune", "supervised": "finetune",
                    "pairwise": "pairwise finetune"}  # fmt: skip
        what = commands.get(kind or "", "saved")
        raise CheckpointError(f"no {what} run found under {root}/; pass a run folder explicitly")
    return max(candidates)[1]


def episode_validator(
    val: SketchDataset | None, section: TrainingConfig, n_shot: int, device: Any, seed: int
) -> Validator | None:
    """``val_ways``-way (or fewer) ``n_shot`` episodes on held-out classes, scored by the
    method's own ``score`` on embeddings computed once per validation. For self-supervised
    methods that is the 1-shot nearest-prototype (kNN) monitor on backbone features."""
    val = val.nonempty() if val is not None else None
    if val is None or section.val_episodes == 0 or len(val.class_names) < 2:
        return None
    n_way = min(section.val_ways, len(val.class_names))
    n_query = min(5, int(val.counts().min()) - n_shot)
    if n_query < 1:  # validation classes too small for an episode: train without it
        return None

    def validate(m: Method) -> dict[str, float]:
        emb = embed(m, val.images, device)
        scores = score_episodes(
            m, emb, val.labels, n_way, n_shot, n_query, section.val_episodes, seed
        )
        return {"val_acc": scores.mean}

    return validate


# SupervisedSettings.best_metric -> the classifier validation's key that it monitors
CLASSIFIER_MONITORS = {"accuracy": "val_acc", "macro_f1": "val_macro_f1", "loss": "val_loss"}


def classifier_validator(val: SketchDataset, device: Any) -> Validator:
    """A classifier's accuracy, macro-F1 and cross-entropy on the val split's images, which
    hold the train classes (a split by images): ``logits`` on features computed once."""
    labels = val.labels.to(device)

    def validate(m: Method) -> dict[str, float]:
        with torch.no_grad():
            logits = m.logits(embed(m, val.images, device))
        return {f"val_{k}": v for k, v in classification_metrics(logits, labels).items()}

    return validate


def job_validator(job: TrainingJob, device: Any) -> tuple[Validator | None, str]:
    """The run's validation and the epoch record's key that picks the best checkpoint: for a
    supervised method whose val split holds the train classes, its own accuracy, macro-F1 or
    loss (``best_metric``); otherwise few-shot episodes on the val classes (``val_acc``);
    without validation, the training loss."""
    if job.validator is not None:
        return job.validator(device)
    val, settings = job.val, job.method.settings
    if isinstance(settings, SupervisedSettings) and val is not None and len(val) > 0:
        if val.class_names == job.train.class_names:
            return classifier_validator(val, device), CLASSIFIER_MONITORS[settings.best_metric]
    validate = episode_validator(val, job.section, job.val_shots, device, job.cfg.seed)
    return validate, "val_acc" if validate else "loss"


def train_run(
    job: TrainingJob,
    out: Path | None = None,
    resume: Path | None = None,
    quiet: bool = False,
    console: Console | None = None,
) -> RunResult:
    """Join the processes (under torchrun), pick the run folder, ``fit``, save the model."""
    console = console or Console(stderr=True)
    out, resume = (Path(p) if p is not None else None for p in (out, resume))
    cfg, section, method = job.cfg, job.section, job.method
    ctx = distributed.setup(cfg.device)
    try:
        problem = None
        if resume is not None:
            run_dir = resume
        elif ctx.is_main:
            try:
                run_dir = new_run_dir(out, job.command, job.model.method)
            except ConfigError as exc:
                run_dir, problem = Path(), str(exc)
        else:
            run_dir = Path()
        run_dir, problem = distributed.broadcast((run_dir, problem), ctx)
        if problem:
            raise ConfigError(problem)
        card = job.card()
        if ctx.is_main:
            if resume is None and discard_unfinished(run_dir) and not quiet:
                console.print(
                    f"{run_dir}: starting again the run that stopped before its first "
                    "complete checkpoint",
                    highlight=False,
                    soft_wrap=True,
                )
            run_dir.mkdir(parents=True, exist_ok=True)

        def write_config() -> None:  # what --resume and --config RUN/config.toml read back
            if ctx.is_main:
                text = to_toml(cfg)
                atomic_write(run_dir / "config.toml", lambda p: p.write_text(text, "utf-8"))

        if resume is None:  # a resumed run's is rewritten once its checkpoint has loaded
            write_config()

        def save(stem: str, metrics: dict[str, Any]) -> None:
            saved = method.inference_model()  # the EMA of the weights, where there is one
            if saved is not method:
                metrics = {**metrics, "weights": "ema"}
            save_model(run_dir / stem, saved, card | {"metrics": metrics})

        validate, monitor = job_validator(job, ctx.device)
        source = job.batches(ctx)
        settings = LoopSettings(
            epochs=section.epochs,
            optim=section.optim,
            seed=cfg.seed,
            max_minutes=section.max_minutes,
            checkpoint_every=section.checkpoint_every,
            val_every=section.val_every,
            monitor=monitor,
            patience=section.patience,
            head_lr_scale=(section.head_lr or section.optim.lr) / section.optim.lr,
            amp=section.amp,
            channels_last=section.channels_last,
            compile=section.compile,
            accumulate=section.accumulate,
        )
        if not quiet and ctx.is_main:
            procs = f", {ctx.world_size} processes" if ctx.enabled else ""
            classes = len(job.train.class_names)
            for note in job.notes:
                console.print(note, highlight=False, soft_wrap=True)
            console.print(
                f"[bold]{job.command}[/] {job.model.method} on {job.train.origin}: "
                f"{len(job.train)} images{f', {classes} classes' if classes else ''}, "
                f"{job.model.encoder} at {job.preprocessing.image_size}px, "
                f"device {ctx.device}{procs} -> {run_dir}",
                highlight=False,
                soft_wrap=True,
            )
        try:
            result = fit(
                method, source, settings, run_dir, ctx, save, validate,
                resume=resume is not None, console=console, quiet=quiet, label=job.command,
            )  # fmt: skip
            if resume is not None:
                write_config()
            metrics = {
                "epochs": result.epochs,
                "steps": result.steps,
                "seconds": round(result.seconds, 1),
                "images_per_s": round(result.images_per_s, 1),
                "precision": result.precision,
                "stopped": result.stopped,
                "best": result.best,
                "last": result.history[-1] if result.history else {},
            }
            if ctx.is_main:
                save("model", metrics)
        except WriteFailed as exc:
            raise stopped_by(exc, run_dir) from None
        except OSError as exc:  # the loop's own logs (metrics.jsonl, TensorBoard) on a full disk
            if exc.errno not in (errno.ENOSPC, getattr(errno, "EDQUOT", None)):
                raise
            raise stopped_by(write_error(Path(exc.filename or run_dir), exc), run_dir) from None
        distributed.barrier(ctx)
    finally:
        distributed.teardown(ctx)
    return RunResult(run_dir, job.model.method, result, metrics)
