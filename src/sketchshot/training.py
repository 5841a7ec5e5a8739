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
from safetensors.torch import load_file

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
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
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


class Trainer:
    """State of one training run; ``fit`` below is the entry point."""

    def __init__(
        self,
        method: Method,
        batches: BatchFactory,
        settings: LoopSettings,
        run_dir: Path,
        device: torch.device,
        save_model: ModelSaver,
        validate: Validator | None,
    ) -> None:
        self.method, self.batches, self.settings = method.to(device), batches, settings
        self.device, self.save_model, self.validate = device, save_model, validate
        self.params = [p for p in method.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(self.params, settings.optim)
        self.total_steps = settings.epochs * settings.steps_per_epoch
        self.ckpt = run_dir / "checkpoints"
        self.metrics_path = run_dir / "metrics.jsonl"
        self.loop: dict[str, Any] = {
            "epoch": 0,
            "step_in_epoch": 0,
            "step": 0,
            "best": None,
            "best_epoch": None,
            "seconds": 0.0,
            "images": 0,
        }
        self.history: list[dict[str, Any]] = []
        self.best_state: dict[str, torch.Tensor] | None = None

    def restore(self) -> None:
        """Continue from ``checkpoints/last``: weights, optimiser, RNG, counters, best weights."""
        self.loop = load_training_state(self.ckpt / "last", self.method, self.optimizer)
        if (self.ckpt / "best.safetensors").exists():
            self.best_state = load_file(str(self.ckpt / "best.safetensors"))
        if self.metrics_path.exists():
            lines = self.metrics_path.read_text(encoding="utf-8").splitlines()
            self.history = [json.loads(x) for x in lines if '"epoch_end"' in x]

    def log(self, record: dict[str, Any]) -> None:
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def save_last(self) -> None:
        save_training_state(self.ckpt / "last", self.method, self.optimizer, self.loop)

    def step(self, batch: Any) -> dict[str, float]:
        """One optimiser step: schedule, forward, backward, clip, step, EMA hook."""
        s, loop = self.settings, self.loop
        lr = s.optim.lr * lr_factor(s.optim, loop["step"], s.steps_per_epoch, self.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        out = self.method.training_step(batch.to(self.device))
        loss = out["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {loop['step']}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if s.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params, s.optim.grad_clip)
        self.optimizer.step()
        self.method.after_step((loop["step"] + 1) / self.total_steps)
        loop["step"] += 1
        loop["step_in_epoch"] += 1
        loop["images"] += len(batch)
        return {"loss": loss.item(), "lr": lr} | {k: float(v) for k, v in out["metrics"].items()}

    def end_epoch(self, record: dict[str, Any]) -> None:
        """Validate, log, keep ``best`` by the monitored value, write ``last``."""
        s, loop = self.settings, self.loop
        if self.validate is not None:
            self.method.eval()
            record.update(self.validate(self.method))
        self.log(record)
        self.history.append(record)
        loop["epoch"] += 1
        loop["step_in_epoch"] = 0
        score = record.get(s.monitor)
        if score is not None and (
            loop["best"] is None
            or (score < loop["best"] if s.monitor == "loss" else score > loop["best"])
        ):
            loop["best"], loop["best_epoch"] = score, loop["epoch"]
            self.best_state = {
                k: v.detach().cpu().clone() for k, v in self.method.state_dict().items()
            }
            self.save_model("checkpoints/best", record)
        if s.checkpoint_every and loop["epoch"] % s.checkpoint_every == 0:
            self.save_model(f"checkpoints/epoch_{loop['epoch']}", record)
        self.save_last()

    def run(self, progress: Progress, label: str) -> str:
        """Epochs until done or out of time; returns why it stopped ("done" or "time")."""
        s, loop = self.settings, self.loop
        start = time.perf_counter() - loop["seconds"]
        first = (loop["images"], loop["seconds"])
        task = progress.add_task(label, total=self.total_steps, completed=loop["step"], status="")
        while loop["epoch"] < s.epochs:
            self.method.train()
            batches = self.batches(np.random.default_rng([s.seed, loop["epoch"]]))
            for _ in range(loop["step_in_epoch"]):  # resumed mid-epoch: skip what was done
                next(batches)
            sums: dict[str, float] = {}
            for batch in batches:
                if loop["step_in_epoch"] >= s.steps_per_epoch:
                    break
                values = self.step(batch)
                for k, v in values.items():
                    sums[k] = sums.get(k, 0.0) + v
                loop["seconds"] = time.perf_counter() - start
                rate = (loop["images"] - first[0]) / max(1e-9, loop["seconds"] - first[1])
                shown = " ".join(f"{k} {v:.3g}" for k, v in values.items() if k != "lr")
                progress.update(
                    task, advance=1, status=f"ep {loop['epoch'] + 1} {shown} {rate:.0f} img/s"
                )
                if loop["step"] % s.log_every == 0:
                    self.log(
                        {
                            "step": loop["step"],
                            "epoch": loop["epoch"],
                            **values,
                            "images_per_s": rate,
                            "seconds": loop["seconds"],
                        }
                    )
                if s.max_minutes and loop["seconds"] > s.max_minutes * 60:
                    break
            n = max(1, loop["step_in_epoch"])
            record = {
                "event": "epoch_end",
                "epoch": loop["epoch"] + 1,
                "step": loop["step"],
                **{k: v / n for k, v in sums.items()},
                "seconds": loop["seconds"],
            }
            self.end_epoch(record)
            progress.update(
                task,
                status=" ".join(
                    f"{k} {v:.3g}" for k, v in record.items() if k in ("loss", s.monitor)
                ),
            )
            if s.max_minutes and loop["seconds"] > s.max_minutes * 60:
                return "time"
        return "done"


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
    into ``method`` at the end. Ctrl-C writes ``last`` and raises ``TrainingInterrupted``."""
    trainer = Trainer(method, batches, settings, run_dir, device, save_model, validate)
    if resume:
        trainer.restore()
    images0, seconds0 = trainer.loop["images"], trainer.loop["seconds"]
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=console or Console(stderr=True),
        disable=quiet,
    )
    try:
        with progress:
            stopped = trainer.run(progress, label)
    except KeyboardInterrupt:
        trainer.save_last()
        raise TrainingInterrupted(
            f"interrupted; progress saved to {trainer.ckpt / 'last'}; "
            f"continue with --resume {run_dir}"
        ) from None
    if trainer.best_state is not None:
        method.load_state_dict(trainer.best_state)
    loop = trainer.loop
    return FitResult(
        epochs=loop["epoch"],
        steps=loop["step"],
        seconds=loop["seconds"],
        images_per_s=(loop["images"] - images0) / max(1e-9, loop["seconds"] - seconds0),
        stopped=stopped,
        history=trainer.history,
        best={"epoch": loop["best_epoch"], settings.monitor: loop["best"]},
    )
