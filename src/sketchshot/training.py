"""The one training loop every method runs through (pretraining and episodic fine-tuning).

It owns devices, the optimiser and schedule, gradient accumulation and clipping, checkpoints,
``--resume``, Ctrl-C, metrics logging and the progress bar; a method only supplies
``training_step``."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import signal
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress
from torch import nn

from sketchshot import compute
from sketchshot.checkpoint import load_tensors, load_training_state, read_card, save_training_state
from sketchshot.config import OptimConfig
from sketchshot.distributed import DistContext
from sketchshot.errors import ConfigError, SketchshotError, TrainingDiverged, TrainingInterrupted
from sketchshot.methods import Method
from sketchshot.progress import progress_bar

BatchFactory = Callable[[np.random.Generator], Iterator[Any]]
Validator = Callable[[Method], dict[str, float]]
ModelSaver = Callable[[str, dict[str, float]], None]


def unchanged(batch: Any) -> Any:
    return batch


@dataclass(frozen=True)
class BatchSource:
    """This process's training batches. ``batches(rng)`` yields one epoch's batches on the
    CPU, seeded by (seed, epoch) so that a resumed run sees the same ones; ``views`` turns a
    batch, once on the device, into what the method's ``training_step`` takes (the data side's
    augmentation: two views of each image for SSL, jittered episodes for few-shot)."""

    batches: BatchFactory
    steps_per_epoch: int
    views: Callable[[Any], Any] = unchanged


def make_optimizer(params: Any, cfg: OptimConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(
    cfg: OptimConfig, step: int, steps_per_epoch: int, total_steps: int, elapsed: float = 0.0
) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based).

    Training progress is the larger of the step fraction and ``elapsed``, the fraction of a
    time limit used, so that a cosine schedule completes when ``--max-minutes`` runs out."""
    warm = cfg.warmup_epochs * steps_per_epoch
    if step < warm:
        return (step + 1) / warm
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "step":
        return cfg.gamma ** ((step // steps_per_epoch) // cfg.step_size)
    t = max((step - warm) / max(1, total_steps - warm), elapsed)
    return 0.001 + 0.999 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


@dataclass
class LoopState:
    """Where a run is: what ``--resume`` restores from ``checkpoints/last.json``."""

    epoch: int = 0  # epochs completed
    step_in_epoch: int = 0
    step: int = 0  # optimiser steps in all
    best: float | None = None  # the best monitored value so far, at epoch best_epoch
    best_epoch: int | None = None
    stale: int = 0  # validations since the best one
    seconds: float = 0.0
    images: int = 0
    # running sums of this epoch's step values (loss, lr, metrics) over ``summed`` steps, so
    # that a resumed epoch's record averages the steps before the interrupt as well
    sums: dict[str, float] = field(default_factory=dict)
    summed: int = 0

    def add(self, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.summed += 1

    @classmethod
    def fields(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}


class DeferredInterrupt:
    """Ctrl-C held back to the next step boundary, so that ``last`` is never written with
    weights half-way through an optimiser step (or an epoch's bookkeeping) and counters that
    say the step did not happen. The first SIGINT sets ``requested``; the loop stops at the
    next boundary. A second one raises ``KeyboardInterrupt`` at once. Only on the main
    thread, and only while SIGINT has Python's default handler (raise ``KeyboardInterrupt``);
    the previous handler comes back on exit."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> DeferredInterrupt:
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


@dataclass
class FitResult:
    epochs: int
    steps: int
    seconds: float
    images_per_s: float
    stopped: str  # "done", "time" or "early_stop"
    history: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, float] = field(default_factory=dict)
    precision: str = "float32"  # what the encoder computed in: float32, bfloat16 or float16


@dataclass(frozen=True)
class LoopSettings:
    epochs: int
    optim: OptimConfig
    seed: int
    max_minutes: float | None = None
    checkpoint_every: int = 0
    val_every: int = 1
    monitor: str = "loss"  # key in the epoch record; a "...loss" is minimised, the rest maximised
    patience: int | None = None  # validations without improvement before stopping
    head_lr_scale: float = 1.0
    amp: str = "off"  # autocast: "bf16", "fp16" or "auto" (compute.autocast_dtype decides)
    channels_last: bool = True
    compile: str = "off"  # torch.compile of the training step: "off", "on" or "auto"
    log_every: int = 50
    accumulate: int = 1  # batches per optimiser step

    @property
    def minimise(self) -> bool:
        """Whether the monitored value is a loss (lower is better)."""
        return self.monitor.endswith("loss")


def grouped(batches: Iterator[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive lists of ``size`` batches (the last one shorter if the batches run out)."""
    while group := list(itertools.islice(batches, size)):
        yield group


def no_notes(text: str) -> None:
    """Where a run's notes go when nobody reads them (``quiet``, ranks other than 0)."""


class Trainer:
    """State of one training run; ``fit`` below is the entry point."""

    def __init__(
        self,
        method: Method,
        source: BatchSource,
        settings: LoopSettings,
        run_dir: Path,
        ctx: DistContext,
        save_model: ModelSaver,
        validate: Validator | None,
        note: Callable[[str], None] = no_notes,
    ) -> None:
        self.method, self.source, self.settings = method.to(ctx.device), source, settings
        self.ctx, self.device = ctx, ctx.device
        self.save_model, self.validate, self.note = save_model, validate, note
        cuda = ctx.device.type == "cuda"
        if settings.channels_last:  # faster convolutions on the CPU (oneDNN) and on CUDA
            method.to(memory_format=torch.channels_last)
        # None (float32), or bf16 where the CPU or GPU has it natively (a ConfigError otherwise)
        self.amp_dtype = compute.autocast_dtype(settings.amp, ctx.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        # DDP syncs gradients through forward(), which every Method routes to training_step
        self.eager_model: nn.Module = (
            nn.parallel.DistributedDataParallel(method, device_ids=[ctx.device] if cuda else None)
            if ctx.enabled
            else method
        )
        # what each step calls: the eager model, or torch.compile's wrapper of it (of the DDP
        # wrapper under torchrun, as PyTorch recommends); checkpoints always save ``method``
        self.model: nn.Module = self.eager_model
        # "off", "auto" (eager steps being timed), "first" (the first compiled step is
        # next: a failure falls back to eager), "trial" (auto: compiled steps being timed
        # against the eager ones), "on" (compiled and working), "failed"
        self.compiling = "off"
        self.eager_seconds: float | None = None  # auto: the median eager step
        problem = compute.compile_problem(ctx.device) if settings.compile != "off" else None
        if settings.compile == "on":
            if problem is None:
                self.start_compiling("--compile on")
            else:
                note(f"--compile on: {problem}; training without it")
        elif settings.compile == "auto" and problem is None:
            self.compiling = "auto"
        groups = method.parameter_groups(settings.head_lr_scale)
        if not groups:
            raise ConfigError("nothing to train: every parameter is frozen")
        self.params = [p for g in groups for p in g["params"]]
        self.optimizer = make_optimizer(groups, settings.optim)
        # optimiser steps: the source's batches, ``accumulate`` of them per step
        self.steps_per_epoch = max(1, source.steps_per_epoch // settings.accumulate)
        self.total_steps = settings.epochs * self.steps_per_epoch
        self.ckpt = run_dir / "checkpoints"
        if ctx.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = run_dir / "metrics.jsonl"
        self.loop = LoopState()
        self.history: list[dict[str, Any]] = []
        self.best_state: dict[str, torch.Tensor] | None = None
        self.board = tensorboard_writer(run_dir) if ctx.is_main else None
        self.interrupt = DeferredInterrupt()
        # False while a step or an epoch's end is under way: the state in memory is then not
        # one that a resumed run could continue from, and Ctrl-C must not save it
        self.settled = True

    def restore(self) -> None:
        """Continue from ``checkpoints/last``: weights, optimiser, RNG, counters, best weights
        (each hash-checked against its sidecar)."""
        saved = load_training_state(self.ckpt / "last", self.method, self.optimizer)
        self.loop = LoopState(**{k: v for k, v in saved.items() if k in LoopState.fields()})
        if (self.ckpt / "best.safetensors").exists() or (self.ckpt / "best.json").exists():
            best = read_card(self.ckpt / "best.json")
            self.best_state = load_tensors(best.weights_path, best.sha256)
        if self.metrics_path.exists():
            lines = self.metrics_path.read_text(encoding="utf-8").splitlines()
            self.history = [json.loads(x) for x in lines if '"epoch_end"' in x]

    def log(self, record: dict[str, Any]) -> None:
        if not self.ctx.is_main:
            return
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.board is not None:
            for key, value in record.items():
                if isinstance(value, int | float) and key not in ("step", "epoch"):
                    self.board.add_scalar(key, value, record["step"])
            self.board.flush()

    def save_last(self) -> None:
        if self.ctx.is_main:
            save_training_state(
                self.ckpt / "last", self.method, self.optimizer, dataclasses.asdict(self.loop)
            )

    def elapsed(self) -> float:
        """Fraction of the time limit used so far (0 without one)."""
        limit = self.settings.max_minutes
        return min(1.0, self.loop.seconds / (limit * 60)) if limit else 0.0

    def start_compiling(self, why: str) -> None:
        self.model = compute.compiled(self.eager_model)
        self.compiling = "first"
        self.note(f"{why}: compiling the training step (torch.compile); the first step is slow")

    def decide_compiling(self, step_seconds: float) -> None:
        """``--compile auto``, after timing its first eager steps: compile if the rest of the
        run is long enough to pay for the warm-up (``compute.should_compile``; rank 0 decides
        for every rank)."""
        limit = self.settings.max_minutes
        seconds_left = limit * 60 - self.loop.seconds if limit else None
        steps_left = self.total_steps - self.loop.step
        self.eager_seconds = step_seconds
        if self.rank0_says(compute.should_compile(step_seconds, steps_left, seconds_left)):
            rest = min(
                steps_left * step_seconds, math.inf if seconds_left is None else seconds_left
            )
            self.start_compiling(f"--compile auto (about {rest / 60:.0f} min left)")
        else:
            self.compiling = "off"

    def keep_compiled_if_faster(self, compiled_seconds: float) -> None:
        """``--compile auto``, after timing compiled steps: keep them only where they beat the
        eager ones (``compute.compiled_pays``; on some CPUs the compiled step is slower), else
        go back to eager for the rest of the run. Rank 0 decides for every rank."""
        eager = self.eager_seconds or math.inf
        ms = f"{1000 * compiled_seconds:.0f} ms a step against {1000 * eager:.0f} ms eager"
        if self.rank0_says(compute.compiled_pays(eager, compiled_seconds)):
            self.compiling = "on"
            self.note(f"--compile auto: compiled, {ms}; keeping it")
        else:
            self.model, self.compiling = self.eager_model, "off"
            self.note(f"--compile auto: compiled, {ms}, not faster; training on without it")

    def guarded_step(self, batches: list[Any]) -> dict[str, float]:
        """``step``; the first compiled one falls back to eager where compiling fails (no C++
        compiler, an operation the compiler cannot handle): one note line, the BatchNorm
        statistics of the failed attempt undone, and the step done again eagerly."""
        if self.compiling != "first":
            return self.step(batches)
        saved = compute.copy_buffers(self.method)
        try:
            values = self.step(batches)
        except SketchshotError:
            raise
        except Exception as exc:  # torch._dynamo / inductor errors have no common base
            compute.restore_buffers(self.method, saved)
            self.model, self.compiling = self.eager_model, "failed"
            reason = compute.failure_reason(exc)
            self.note(f"torch.compile failed ({reason}); training on without it")
            return self.step(batches)
        self.compiling = "trial" if self.eager_seconds is not None else "on"
        return values

    def step(self, batches: list[Any]) -> dict[str, float]:
        """One optimiser step over ``batches`` (``accumulate`` of them): schedule, forward and
        backward of each, its loss scaled by 1 / len(batches) (gradients synced across
        processes on the last one only), clip, step, EMA hook. Returns the batches' mean loss
        and metrics, and the learning rate."""
        s, loop = self.settings, self.loop
        lr = s.optim.lr * lr_factor(
            s.optim, loop.step, self.steps_per_epoch, self.total_steps, self.elapsed()
        )
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        self.optimizer.zero_grad(set_to_none=True)
        images, n, values = 0, len(batches), {}
        for i, batch in enumerate(batches):
            batch = batch.to(self.device)
            images += len(batch)
            # DDP syncs gradients on the last batch only
            quiet = self.ctx.enabled and i < n - 1
            with self.model.no_sync() if quiet else contextlib.nullcontext():
                amp = self.amp_dtype is not None
                with torch.autocast(self.device.type, self.amp_dtype, enabled=amp):
                    out = self.model(self.source.views(batch))
                loss = out["loss"]
                if not torch.isfinite(loss):
                    raise TrainingDiverged(
                        f"training diverged: the loss became {loss.item()} at step {loop.step}; "
                        "try a lower --lr"
                    )
                scaled = loss / n if n > 1 else loss
                if self.scaler is not None:
                    self.scaler.scale(scaled).backward()
                else:
                    scaled.backward()
            step_values = {"loss": loss.item()} | {k: float(v) for k, v in out["metrics"].items()}
            for k, v in step_values.items():
                values[k] = values.get(k, 0.0) + v / n
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if s.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params, s.optim.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.method.after_step(max((loop.step + 1) / self.total_steps, self.elapsed()))
        loop.step += 1
        loop.step_in_epoch += 1
        loop.images += images * self.ctx.world_size
        return {"loss": values.pop("loss"), "lr": lr} | values

    def end_epoch(self, record: dict[str, Any], last: bool = False) -> None:
        """Validate (every ``val_every`` epochs and at the end), log, keep ``best`` by the
        monitored value, write ``last`` (rank 0)."""
        s, loop = self.settings, self.loop
        loop.epoch += 1
        loop.step_in_epoch = 0
        loop.sums, loop.summed = {}, 0
        if not self.ctx.is_main:
            return
        if self.validate is not None and (loop.epoch % s.val_every == 0 or last):
            self.method.eval()
            record.update(self.validate(self.method.inference_model()))
        self.log(record)
        self.history.append(record)
        score = record.get(s.monitor)
        if score is not None:
            if loop.best is None or (score < loop.best if s.minimise else score > loop.best):
                loop.best, loop.best_epoch, loop.stale = score, loop.epoch, 0
                self.best_state = {
                    k: v.detach().cpu().clone() for k, v in self.method.state_dict().items()
                }
                self.save_model("checkpoints/best", record)
            else:
                loop.stale = loop.stale + 1  # validations without improvement
        if s.checkpoint_every and loop.epoch % s.checkpoint_every == 0:
            self.save_model(f"checkpoints/epoch_{loop.epoch}", record)
        self.save_last()

    def out_of_time(self) -> bool:
        """The time limit, decided on rank 0 and shared so that every rank stops together."""
        limit = self.settings.max_minutes
        return self.rank0_says(bool(limit) and self.loop.seconds > limit * 60)

    def stop_if_interrupted(self) -> None:
        """At a step boundary: stop (``KeyboardInterrupt``) if Ctrl-C was pressed on any rank
        since the last boundary."""
        flag = self.interrupt.requested
        if self.ctx.enabled:  # every rank must stop at the same boundary
            shared = torch.tensor([float(flag)], device=self.device)
            torch.distributed.all_reduce(shared, op=torch.distributed.ReduceOp.MAX)
            flag = bool(shared.item())
        if flag:
            raise KeyboardInterrupt

    def rank0_says(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every rank (itself without torchrun)."""
        if not self.ctx.enabled:
            return flag
        shared = torch.tensor([float(flag)], device=self.device)
        torch.distributed.broadcast(shared, src=0)
        return bool(shared.item())

    def run(self, progress: Progress, label: str) -> str:
        """Epochs until done or out of time; returns why it stopped ("done" or "time")."""
        s, loop = self.settings, self.loop
        start = time.perf_counter() - loop.seconds
        first = (loop.images, loop.seconds)
        task = progress.add_task(label, total=self.total_steps, completed=loop.step, status="")
        # seconds of the eager steps that --compile auto decides by, then of the compiled ones
        timed: list[float] = []
        trial: list[float] = []
        while loop.epoch < s.epochs:
            self.method.train()
            batches = self.source.batches(np.random.default_rng([s.seed, loop.epoch]))
            groups = grouped(batches, s.accumulate)
            for _ in range(loop.step_in_epoch):  # resumed mid-epoch: skip what was done
                next(groups)
            for group in groups:
                if loop.step_in_epoch >= self.steps_per_epoch:
                    break
                self.stop_if_interrupted()
                self.settled = False
                began, was = time.perf_counter(), self.compiling
                values = self.guarded_step(group)
                loop.add(values)
                loop.seconds = time.perf_counter() - start
                self.settled = True
                if was == "auto":  # the first step (warm-up) is not timed
                    timed.append(time.perf_counter() - began)
                    if len(timed) > compute.AUTO_PROBE_STEPS:
                        self.decide_compiling(statistics.median(timed[1:]))
                elif was == "trial":  # compiled steps after the compiling one
                    trial.append(time.perf_counter() - began)
                    if len(trial) >= compute.AUTO_PROBE_STEPS:
                        self.keep_compiled_if_faster(statistics.median(trial))
                rate = (loop.images - first[0]) / max(1e-9, loop.seconds - first[1])
                shown = " ".join(f"{k} {v:.3g}" for k, v in values.items() if k != "lr")
                progress.update(
                    task, advance=1, status=f"ep {loop.epoch + 1} {shown} {rate:.0f} img/s"
                )
                if loop.step % s.log_every == 0:
                    self.log(
                        {
                            "step": loop.step,
                            "epoch": loop.epoch,
                            **values,
                            "images_per_s": rate,
                            "seconds": loop.seconds,
                        }
                    )
                if self.out_of_time():
                    break
            n = max(1, loop.summed)
            record = {
                "event": "epoch_end",
                "epoch": loop.epoch + 1,
                "step": loop.step,
                **{k: v / n for k, v in loop.sums.items()},
                "seconds": loop.seconds,
            }
            self.settled = False
            self.end_epoch(record, last=loop.epoch + 1 >= s.epochs or self.out_of_time())
            self.settled = True
            progress.update(
                task,
                status=" ".join(
                    f"{k} {v:.3g}" for k, v in record.items() if k in ("loss", s.monitor)
                ),
            )
            self.stop_if_interrupted()
            if self.out_of_time():
                return "time"
            if self.patience_ran_out():
                return "early_stop"
        return "done"

    def patience_ran_out(self) -> bool:
        """No better validation for ``patience`` validations (decided on rank 0, shared)."""
        s, loop = self.settings, self.loop
        return self.rank0_says(bool(s.patience and loop.stale >= s.patience))


def finished(loop: LoopState, settings: LoopSettings, run_dir: Path) -> None:
    """Refuse to resume a run that has nothing left to do and has saved its model (it would
    only rewrite it). Without model.json (a full disk at the last save) it saves the model."""
    if not (run_dir / "model.json").exists():
        return
    if loop.epoch >= settings.epochs:
        raise ConfigError(
            f"{run_dir} has already trained {loop.epoch} of {settings.epochs} epochs; pass a "
            "larger --epochs to train on"
        )
    limit = settings.max_minutes
    if limit and loop.seconds >= limit * 60:
        raise ConfigError(
            f"{run_dir} has already used its --max-minutes {limit:g}; pass a larger "
            "--max-minutes to train on"
        )


def tensorboard_writer(run_dir: Path) -> Any:
    """A TensorBoard writer into ``run_dir/tensorboard`` when tensorboard is installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # optional extra: sketchshot[tensorboard]
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


def fit(
    method: Method,
    source: BatchSource,
    settings: LoopSettings,
    run_dir: Path,
    device: torch.device | DistContext,
    save_model: ModelSaver,
    validate: Validator | None = None,
    resume: bool = False,
    console: Console | None = None,
    quiet: bool = False,
    label: str = "train",
) -> FitResult:
    """Train ``method`` for ``settings.epochs`` epochs of ``source.steps_per_epoch`` batches
    (``settings.accumulate`` per optimiser step).

    After every epoch: validation (if any), the ``last``
    training state, ``best`` weights by ``settings.monitor``; the best weights are loaded back
    into ``method`` at the end. With ``settings.compile``, steps run through torch.compile's
    wrapper of ``method``; what is saved is always ``method``'s own state. Ctrl-C stops at the
    next step boundary, writes ``last`` there and raises ``TrainingInterrupted``; a second
    Ctrl-C stops at once and saves nothing. Under torchrun, pass the ``DistContext``: rank 0
    alone logs and saves."""
    ctx = device if isinstance(device, DistContext) else DistContext(0, 1, device)
    console = console or Console(stderr=True)

    def note(text: str) -> None:
        console.print(text, highlight=False, soft_wrap=True, markup=False)

    notes = no_notes if quiet or not ctx.is_main else note
    trainer = Trainer(method, source, settings, run_dir, ctx, save_model, validate, notes)
    if resume:
        trainer.restore()
        finished(trainer.loop, settings, run_dir)
    if trainer.amp_dtype is None and settings.amp not in ("off", "auto"):
        notes(f"--amp {settings.amp} is ignored on {ctx.device}")
    elif trainer.amp_dtype is not None and settings.amp == "auto":
        notes(f"bf16 autocast on {ctx.device} (--amp auto; --amp off trains in float32)")
    images0, seconds0 = trainer.loop.images, trainer.loop.seconds
    progress = progress_bar(console, disable=quiet or not ctx.is_main, status=True)
    try:
        with trainer.interrupt, progress:
            stopped = trainer.run(progress, label)
    except KeyboardInterrupt:
        if trainer.settled:
            trainer.save_last()
            raise TrainingInterrupted(
                f"interrupted; progress saved to {trainer.ckpt / 'last'}; "
                f"continue with --resume {run_dir}"
            ) from None
        kept = (
            f"{trainer.ckpt / 'last'} holds the last save; continue with --resume {run_dir}"
            if (trainer.ckpt / "last.json").exists()
            else "nothing was saved"
        )
        raise TrainingInterrupted(f"interrupted in the middle of a step; {kept}") from None
    finally:
        if trainer.board is not None:
            trainer.board.close()
    if trainer.best_state is not None:
        method.load_state_dict(trainer.best_state)
    loop = trainer.loop
    return FitResult(
        epochs=loop.epoch,
        steps=loop.step,
        seconds=loop.seconds,
        images_per_s=(loop.images - images0) / max(1e-9, loop.seconds - seconds0),
        stopped=stopped,
        history=trainer.history,
        best={"epoch": loop.best_epoch, settings.monitor: loop.best},
        precision=str(trainer.amp_dtype or torch.float32).removeprefix("torch."),
    )
