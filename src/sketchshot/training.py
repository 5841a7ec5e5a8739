"""The one training loop every method runs through (pretraining and episodic fine-tuning).

It owns devices, the optimiser and schedule, gradient clipping, checkpoints, ``--resume``,
Ctrl-C, metrics logging and the progress bar; a method only supplies ``training_step``."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from sketchshot.checkpoint import load_training_state, save_training_state
from sketchshot.config import OptimConfig
from sketchshot.errors import ConfigError, TrainingInterrupted
from sketchshot.methods import Method

BatchFactory = Callable[[np.random.Generator], Iterator[Any]]
Validator = Callable[[Method], dict[str, float]]
ModelSaver = Callable[[str, dict[str, float]], None]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but no CUDA device is available")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device mps was asked for, but MPS is not available")
    return torch.device(name)


def make_optimizer(params: Any, cfg: OptimConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(cfg: OptimConfig, step: int, steps_per_epoch: int, total_steps: int) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based)."""
    warm = cfg.warmup_epochs * steps_per_epoch
    if step < warm:
        return (step + 1) / warm
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "step":
        return cfg.gamma ** ((step // steps_per_epoch) // cfg.step_size)
    t = (step - warm) / max(1, total_steps - warm)
    return 0.001 + 0.999 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def batch_to(batch: Any, device: torch.device) -> Any:
    return batch.to(device)


@dataclass
class FitResult:
    epochs: int
    steps: int
    seconds: float
    images_per_s: float
    stopped: str  # "done" or "time"
    history: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class LoopSettings:
    epochs: int
    steps_per_epoch: int
    optim: OptimConfig
    seed: int
    max_minutes: float | None = None
    checkpoint_every: int = 0
    monitor: str = "loss"  # key in the epoch record; "loss" is minimised, anything else maximised
    log_every: int = 50


def fit(
    method: Method,
    batches: BatchFactory,
    settings: LoopSettings,
    run_dir: Path,
    device: torch.device,
    save_model: ModelSaver,
    validate: Validator | None = None,
    resume: bool = False,
    console: Console | None = None,
    quiet: bool = False,
    label: str = "train",
) -> FitResult:
    """Train ``method`` for ``settings.epochs`` epochs of ``steps_per_epoch`` batches.

    ``batches(rng)`` yields one epoch's batches; its generator is seeded by (seed, epoch), so a
    resumed run sees the same batches. After every epoch: validation (if any), the ``last``
    training state, ``best`` weights by ``settings.monitor``; the best weights are loaded back
    into ``method`` at the end."""
    console = console or Console(stderr=True)
    method.to(device)
    params = [p for p in method.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, settings.optim)
    total_steps = settings.epochs * settings.steps_per_epoch
    ckpt = run_dir / "checkpoints"
    metrics_path = run_dir / "metrics.jsonl"
    loop: dict[str, Any] = {"epoch": 0, "step_in_epoch": 0, "step": 0, "best": None,
                            "seconds": 0.0, "images": 0}
    history: list[dict[str, float]] = []
    best_state: dict[str, torch.Tensor] | None = None
    if resume:
        loop = load_training_state(ckpt / "last", method, optimizer)
        if (ckpt / "best.safetensors").exists():
            from safetensors.torch import load_file

            best_state = load_file(str(ckpt / "best.safetensors"))
        history = [json.loads(line) for line in metrics_path.read_text().splitlines()
                   if '"epoch_end"' in line] if metrics_path.exists() else []
    better = (lambda a, b: a < b) if settings.monitor == "loss" else (lambda a, b: a > b)

    def log(record: dict[str, Any]) -> None:
        with open(metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def save_last() -> None:
        save_training_state(ckpt / "last", method, optimizer, loop)

    start = time.perf_counter() - loop["seconds"]
    images_at_start, seconds_at_start = loop["images"], loop["seconds"]
    stopped = "done"
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[status]}"),
        console=console, disable=quiet, transient=False,
    )
    try:
        with progress:
            task = progress.add_task(label, total=total_steps, completed=loop["step"], status="")
            while loop["epoch"] < settings.epochs and stopped == "done":
                epoch = loop["epoch"]
                method.train()
                rng = np.random.default_rng([settings.seed, epoch])
                epoch_batches = batches(rng)
                for _ in range(loop["step_in_epoch"]):  # resumed mid-epoch: skip what was done
                    next(epoch_batches)
                sums: dict[str, float] = {}
                count = 0
                for batch in epoch_batches:
                    if loop["step_in_epoch"] >= settings.steps_per_epoch:
                        break
                    lr = settings.optim.lr * lr_factor(
                        settings.optim, loop["step"], settings.steps_per_epoch, total_steps
                    )
                    for group in optimizer.param_groups:
                        group["lr"] = lr * group.get("lr_scale", 1.0)
                    out = method.training_step(batch_to(batch, device))
                    loss = out["loss"]
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"loss became {loss.item()} at step {loop['step']}")
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if settings.optim.grad_clip:
                        torch.nn.utils.clip_grad_norm_(params, settings.optim.grad_clip)
                    optimizer.step()
                    method.after_step((loop["step"] + 1) / total_steps)
                    values = {"loss": loss.item()} | {k: float(v) for k, v in out["metrics"].items()}
                    for k, v in values.items():
                        sums[k] = sums.get(k, 0.0) + v
                    count += 1
                    loop["step"] += 1
                    loop["step_in_epoch"] += 1
                    loop["images"] += len(batch)
                    loop["seconds"] = time.perf_counter() - start
                    rate = (loop["images"] - images_at_start) / max(
                        1e-9, loop["seconds"] - seconds_at_start
                    )
                    status = " ".join(f"{k} {v:.3g}" for k, v in values.items())
                    progress.update(task, advance=1, status=f"ep {epoch + 1} {status} {rate:.0f} img/s")
                    if loop["step"] % settings.log_every == 0:
                        log({"step": loop["step"], "epoch": epoch, "lr": lr, **values,
                             "images_per_s": rate, "seconds": loop["seconds"]})
                    if settings.max_minutes and loop["seconds"] > settings.max_minutes * 60:
                        stopped = "time"
                        break
                record = {"event": "epoch_end", "epoch": epoch + 1, "step": loop["step"],
                          **{k: v / max(count, 1) for k, v in sums.items()},
                          "seconds": loop["seconds"]}
                if validate is not None:
                    method.eval()
                    record.update(validate(method))
                    progress.update(task, status=" ".join(
                        f"{k} {v:.3g}" for k, v in record.items() if k.startswith("val")))
                log(record)
                history.append(record)
                loop["epoch"] += 1
                loop["step_in_epoch"] = 0
                score = record.get(settings.monitor)
                if score is not None and (loop["best"] is None or better(score, loop["best"])):
                    loop["best"] = score
                    loop["best_epoch"] = epoch + 1
                    best_state = {k: v.detach().cpu().clone()
                                  for k, v in method.state_dict().items()}
                    save_model("checkpoints/best", record)
                if settings.checkpoint_every and loop["epoch"] % settings.checkpoint_every == 0:
                    save_model(f"checkpoints/epoch_{loop['epoch']}", record)
                save_last()
    except KeyboardInterrupt:
        save_last()
        raise TrainingInterrupted(
            f"interrupted; progress saved to {ckpt / 'last'}; continue with --resume {run_dir}"
        ) from None
    if best_state is not None:
        method.load_state_dict(best_state)
    seconds = loop["seconds"]
    done_images = loop["images"] - images_at_start
    return FitResult(
        epochs=loop["epoch"], steps=loop["step"], seconds=seconds,
        images_per_s=done_images / max(1e-9, seconds - seconds_at_start),
        stopped=stopped, history=history,
        best={"epoch": loop.get("best_epoch", loop["epoch"]), settings.monitor: loop["best"]},
    )
