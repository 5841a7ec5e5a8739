"""Run folders: where a training run writes, how its sidecar is described, and the part of
training that pretraining and fine-tuning share (processes, folder, ``fit``, final model)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from sketchshot import distributed
from sketchshot.checkpoint import read_sidecar, save_model
from sketchshot.config import Config, TrainingConfig, to_toml
from sketchshot.data.dataset import CONVENTION, PIXEL_MEAN, PIXEL_STD, SketchDataset
from sketchshot.errors import CheckpointError, ConfigError
from sketchshot.evaluation import embed, score_episodes
from sketchshot.methods import METHODS, Method
from sketchshot.training import BatchFactory, FitResult, LoopSettings, Validator, fit

RUNS = Path("runs")
Plan = Callable[[distributed.DistContext], tuple[BatchFactory, int]]


@dataclass
class RunResult:
    run_dir: Path
    method: str
    fit: FitResult
    metrics: dict[str, Any] = field(default_factory=dict)


def new_run_dir(out: Path | None, command: str, method: str) -> Path:
    if out is None:
        out = RUNS / f"{command}-{method}-{time.strftime('%Y%m%d-%H%M%S')}"
    if out.exists() and any((out / n).exists() for n in ("model.json", "checkpoints")):
        raise ConfigError(f"{out} already holds a run; choose another --out or use --resume {out}")
    return out


def latest_run(kind: str | None = None, root: Path = RUNS) -> Path:
    """The most recently written run folder under ``root`` (of ``kind`` 'ssl'/'fewshot')."""
    candidates = []
    for sidecar in root.glob("*/model.json"):
        try:
            meta = read_sidecar(sidecar)
        except CheckpointError:
            continue
        if kind is None or meta.get("model", {}).get("kind") == kind:
            candidates.append((sidecar.stat().st_mtime, sidecar.parent))
    if not candidates:
        what = {"ssl": "pretrain", "fewshot": "finetune"}.get(kind or "", "saved")
        raise CheckpointError(f"no {what} run found under {root}/; pass a run folder explicitly")
    return max(candidates)[1]


def model_spec(method: str, encoder: str, image_size: int, **method_args: Any) -> dict:
    """The sidecar's ``model`` block: registry names and arguments to rebuild the model."""
    return {
        "method": method,
        "kind": METHODS.get(method).kind,
        "method_args": method_args,
        "encoder": encoder,
        "encoder_args": {"image_size": image_size},
    }


def sidecar_for(spec: dict, cfg: Config, image_size: int, dataset: SketchDataset) -> dict:
    return {
        "model": spec,
        "preprocessing": {
            "image_size": image_size,
            "invert": cfg.data.invert,
            "mean": PIXEL_MEAN,
            "std": PIXEL_STD,
            "convention": CONVENTION,
        },
        "class_names": list(dataset.class_names),
        "data": {"origin": dataset.origin, "images": len(dataset)},
        "config": cfg.model_dump(mode="json"),
    }


def episode_validator(
    val: SketchDataset | None, n_shot: int, episodes: int, device: Any, seed: int
) -> Validator | None:
    """5-way (or fewer) ``n_shot`` episodes on held-out classes, scored by the method's own
    ``score`` on embeddings computed once per validation. For self-supervised methods that is
    the 1-shot nearest-prototype (kNN) monitor on backbone features."""
    if val is None or episodes == 0 or len(val.class_names) < 2:
        return None
    n_way = min(5, len(val.class_names))
    n_query = min(5, int(val.counts().min()) - n_shot)
    if n_query < 1:  # validation classes too small for an episode: train without it
        return None

    def validate(m: Method) -> dict[str, float]:
        emb = embed(m, val.images, device)
        scores = score_episodes(m, emb, val.labels, n_way, n_shot, n_query, episodes, seed)
        return {"val_acc": scores.mean}

    return validate


def train_run(
    command: str,
    cfg: Config,
    section: TrainingConfig,
    method: Method,
    spec: dict,
    train: SketchDataset,
    val: SketchDataset | None,
    plan: Plan,
    val_shots: int,
    out: Path | None,
    resume: Path | None,
    quiet: bool,
    console: Console,
) -> RunResult:
    """Join the processes (under torchrun), pick the run folder, ``fit``, save the model.

    ``plan(ctx)`` gives this rank's batch factory and the steps in one epoch."""
    ctx = distributed.setup(cfg.device)
    try:
        problem = None
        if resume is not None:
            run_dir = resume
        elif ctx.is_main:
            try:
                run_dir = new_run_dir(out, command, spec["method"])
            except ConfigError as exc:
                run_dir, problem = Path(), str(exc)
        else:
            run_dir = Path()
        run_dir, problem = distributed.broadcast((run_dir, problem), ctx)
        if problem:
            raise ConfigError(problem)
        image_size = spec["encoder_args"]["image_size"]
        sidecar = sidecar_for(spec, cfg, image_size, train)
        if ctx.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "config.toml").write_text(to_toml(cfg), encoding="utf-8")

        def save(stem: str, metrics: dict[str, Any]) -> None:
            save_model(run_dir / stem, method, sidecar | {"metrics": metrics})

        validate = episode_validator(val, val_shots, section.val_episodes, ctx.device, cfg.seed)
        batches, steps_per_epoch = plan(ctx)
        settings = LoopSettings(
            epochs=section.epochs,
            steps_per_epoch=steps_per_epoch,
            optim=section.optim,
            seed=cfg.seed,
            max_minutes=section.max_minutes,
            checkpoint_every=section.checkpoint_every,
            val_every=section.val_every,
            monitor="val_acc" if validate else "loss",
            patience=section.patience,
            head_lr_scale=(section.head_lr or section.optim.lr) / section.optim.lr,
            amp=section.amp,
            channels_last=section.channels_last,
        )
        if not quiet and ctx.is_main:
            procs = f", {ctx.world_size} processes" if ctx.enabled else ""
            console.print(
                f"[bold]{command}[/] {spec['method']} on {train.origin}: {len(train)} images, "
                f"{len(train.class_names)} classes, {spec['encoder']} at {image_size}px, "
                f"device {ctx.device}{procs} -> {run_dir}"
            )
        result = fit(
            method, batches, settings, run_dir, ctx, save, validate,
            resume=resume is not None, console=console, quiet=quiet, label=command,
        )  # fmt: skip
        metrics = {
            "epochs": result.epochs,
            "steps": result.steps,
            "seconds": round(result.seconds, 1),
            "images_per_s": round(result.images_per_s, 1),
            "stopped": result.stopped,
            "best": result.best,
            "last": result.history[-1] if result.history else {},
        }
        if ctx.is_main:
            save("model", metrics)
        distributed.barrier(ctx)
    finally:
        distributed.teardown(ctx)
    return RunResult(run_dir, spec["method"], result, metrics)
