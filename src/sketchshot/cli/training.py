"""What ``pretrain`` and ``finetune`` share: the training loop's options, ``--resume``, the
command itself (build the config, call the engine, report) and the one-line summary."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from rich.markup import escape

from sketchshot.cli.app import command
from sketchshot.cli.options import (
    DATA_FLAGS,
    MODEL,
    OUTPUT,
    RUN,
    RUN_FLAGS,
    TRAINING,
    VIEWS,
    ConfigFile,
    Flag,
    Given,
    Json,
    Quiet,
    Verbose,
    option,
)
from sketchshot.cli.render import emit, stderr_console
from sketchshot.config import Config, TrainingConfig, resolve_config
from sketchshot.errors import ConfigError


def training_flags(section: str) -> tuple[Flag, ...]:
    """The options of the one training loop, for the config section ``section``."""
    return (
        Flag("--epochs", f"{section}.epochs", TRAINING),
        Flag("--lr", f"{section}.optim.lr", TRAINING),
        Flag("--weight-decay", f"{section}.optim.weight_decay", TRAINING),
        Flag("--optimizer", f"{section}.optim.optimizer", TRAINING),
        Flag("--schedule", f"{section}.optim.schedule", TRAINING),
        Flag("--warmup-epochs", f"{section}.optim.warmup_epochs", TRAINING),
        Flag("--accumulate", f"{section}.accumulate", TRAINING),
        Flag("--clip-grad", f"{section}.optim.grad_clip", TRAINING),
        Flag("--max-minutes", f"{section}.max_minutes", TRAINING),
        Flag("--patience", f"{section}.patience", TRAINING),
        Flag("--val-episodes", f"{section}.val_episodes", TRAINING),
        Flag("--val-ways", f"{section}.val_ways", TRAINING),
        Flag("--checkpoint-every", f"{section}.checkpoint_every", TRAINING),
        Flag("--amp", f"{section}.amp", TRAINING),
        Flag("--compile", f"{section}.compile", TRAINING),
        Flag(
            "--no-channels-last",
            f"{section}.channels_last",
            TRAINING,
            note=" (this switch turns them off)",
            invert=True,
        ),
    )


def command_flags(model: tuple[Flag, ...], section: str, own: tuple[Flag, ...]) -> tuple[Flag, ...]:
    """A training command's options, panel by panel: model, data, training, views, run."""
    encoder = (
        Flag("--drop-path", "encoder.drop_path", MODEL),
        Flag("--encoder-width", "encoder.width", MODEL),
    )
    memory = Flag("--grad-checkpointing", "encoder.grad_checkpointing", TRAINING)
    views = (
        Flag("--crop", f"{section}.views.crop", VIEWS),
        Flag("--flip", f"{section}.views.flip", VIEWS),
        Flag("--thickness-p", f"{section}.views.thickness_p", VIEWS),
        Flag("--erase-p", f"{section}.views.erase_p", VIEWS),
        Flag("--severity", f"{section}.views.severity", VIEWS),
        Flag("--augment-strength", f"{section}.views.strength", VIEWS),
        Flag("--elastic", f"{section}.views.elastic", VIEWS),
        Flag("--cutout-p", f"{section}.views.cutout_p", VIEWS),
        Flag("--stroke-jitter", f"{section}.views.stroke_jitter", VIEWS),
        Flag("--stroke-drop", f"{section}.views.stroke_drop", VIEWS),
        Flag("--partial-p", f"{section}.views.partial_p", VIEWS),
        Flag("--line-width-jitter", f"{section}.views.line_width_jitter", VIEWS),
    )
    return (*model, *encoder, *DATA_FLAGS, *training_flags(section), *own, memory, *views,
            *RUN_FLAGS)  # fmt: skip


Resume = Annotated[
    Path | None,
    option(
        "--resume",
        help="continue the run in this folder where it stopped, with its config.toml",
        default="none",
        panel=RUN,
    ),
]
RunOut = Annotated[
    Path | None,
    option(
        "--out", help="run folder to write", default="runs/<command>-<method>-<time>", panel=OUTPUT
    ),
]


def resume_base(resume: Path | None) -> Config | None:
    """The config a run to resume was written with (the base its options refine)."""
    if resume is None:
        return None
    saved = resume / "config.toml"
    if not saved.is_file():
        raise ConfigError(f"--resume {resume}: no config.toml there; is it a run folder?")
    return resolve_config(saved)


def summary(result: Any, settings: TrainingConfig) -> str:
    """One line: where the model is, how long it trained, and why it stopped early if it did."""
    m = result.metrics
    epochs = f"{m['epochs']} of {settings.epochs} epochs"
    rate = f", {m['images_per_s']:.0f} images/s" if m.get("images_per_s") else ""
    best = m.get("best") or {}
    monitored = next((k for k in best if k.startswith("val_") and best[k] is not None), None)
    val = f", best {monitored} {best[monitored]:.3f} at epoch {best['epoch']}" if monitored else ""
    stopped = ""
    if m.get("stopped") == "time":
        stopped = f"; stopped by --max-minutes {settings.max_minutes:g}"
    elif m.get("stopped") == "early_stop":
        stopped = f"; stopped early: no better validation in --patience {settings.patience}"
    return f"saved {result.run_dir / 'model.safetensors'} ({epochs}{rate}{val}){stopped}"


def training_command(
    section: str, model: tuple[Flag, ...], own: tuple[Flag, ...], doc: str
) -> None:
    """Register the command ``section`` ("pretrain" or "finetune") with the ``model`` and
    its ``own`` options besides the shared ones: resolve the config, call the engine function
    of that name, print the run's summary."""

    @command(Config(), command_flags(model, section, own), name=section, doc=doc)
    def train(
        given: Given,
        config: ConfigFile = None,
        resume: Resume = None,
        out: RunOut = None,
        as_json: Json = False,
        quiet: Quiet = False,
        verbose: Verbose = False,
    ) -> None:
        cfg = given.config(config, resume_base(resume))
        from sketchshot import engine

        run = getattr(engine, section)
        result = run(cfg, out, resume, quiet=quiet, console=stderr_console())
        payload = {"run": str(result.run_dir), "method": result.method, **result.metrics}
        settings = getattr(cfg, section)
        emit(as_json, payload, lambda c: c.print(escape(summary(result, settings))))
