"""Typed, frozen run configuration.

Precedence is defaults < TOML file (``--config``) < command-line options. One file can hold every
section; each command reads the sections it needs, and the resolved whole is written into each
run folder as ``config.toml`` so that a run can be repeated with ``--config RUN/config.toml``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sketchshot.errors import ConfigError

Device = Literal["auto", "cpu", "cuda", "mps"]
Split = Literal["train", "val", "test", "all"]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BuiltinDataConfig(Frozen):
    """The procedurally generated glyph dataset used when no ``--data`` is given."""

    n_classes: int = Field(150, ge=2, description="number of glyph classes")
    n_drawers: int = Field(20, ge=2, description="drawings per class, one per simulated drawer")
    seed: int = Field(0, description="seed of the glyph shapes and the drawers' jitter")


class DataConfig(Frozen):
    source: str = Field("builtin", description="'builtin', an image folder, or a .zip archive")
    image_size: int | None = Field(
        None, ge=8, le=512, description="side in pixels; None uses the encoder's default"
    )
    invert: Literal["auto", "yes", "no"] = Field(
        "auto", description="make strokes bright on dark; 'auto' inverts white-background images"
    )
    classes: tuple[str, ...] = Field((), description="keep only classes matching these globs")
    exclude_classes: tuple[str, ...] = Field((), description="drop classes matching these globs")
    split_fractions: tuple[float, float, float] = Field(
        (0.7, 0.1, 0.2), description="train/val/test fractions of classes, drawn with split_seed"
    )
    split_seed: int = 0
    train_classes: tuple[str, ...] = Field(
        (), description="explicit train classes or top-level groups (globs); overrides fractions"
    )
    val_classes: tuple[str, ...] = ()
    test_classes: tuple[str, ...] = ()
    builtin: BuiltinDataConfig = BuiltinDataConfig()

    @field_validator("split_fractions")
    @classmethod
    def _fractions(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(f < 0 for f in value) or abs(sum(value) - 1) > 1e-6:
            raise ValueError("split_fractions must be three non-negative numbers that sum to 1")
        return value


class EncoderConfig(Frozen):
    name: str = Field("conv4", description="encoder registry name")
    init: str = Field(
        "random",
        description="'random', 'imagenet' (ResNets; torch hub cache, downloaded if missing), "
        "or the path of a state dict (.pth/.safetensors)",
    )


class OptimConfig(Frozen):
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    warmup_epochs: int = Field(0, ge=0, description="linear warm-up before the schedule")
    step_size: int = Field(10, ge=1, description="epochs between decays of the step schedule")
    gamma: float = Field(0.5, gt=0, le=1, description="decay factor of the step schedule")
    grad_clip: float | None = Field(None, gt=0, description="max gradient norm; None: no clip")


class TrainingConfig(Frozen):
    """What the one training loop reads, shared by pretraining and fine-tuning."""

    epochs: int = Field(20, ge=1)
    max_minutes: float | None = Field(None, gt=0, description="stop after this wall time")
    checkpoint_every: int = Field(0, ge=0, description="also keep epoch_N every N epochs; 0: off")
    val_every: int = Field(1, ge=1, description="validation (kNN monitor) every N epochs")
    val_episodes: int = Field(200, ge=0, description="5-way validation episodes; 0: none")
    head_lr: float | None = Field(
        None, gt=0, description="learning rate of the method's head; None: the encoder's"
    )
    patience: int | None = Field(
        None, ge=1, description="stop after this many validations without improvement"
    )
    amp: Literal["off", "bf16", "fp16"] = Field("off", description="mixed precision on CUDA")
    channels_last: bool = Field(
        True, description="channels-last weights: faster convolutions on the CPU and on CUDA"
    )
    optim: OptimConfig = OptimConfig()


class PretrainConfig(TrainingConfig):
    method: str = Field("simclr", description="self-supervised method registry name")
    batch_size: int = Field(256, ge=2)
    unique_class_batches: bool = Field(
        False, description="with labels, every image of a batch from a different class"
    )
    temperature: float = Field(0.2, gt=0, description="NT-Xent temperature (SimCLR)")
    gather_negatives: bool = Field(False, description="SimCLR under DDP: negatives of all ranks")
    hidden_dim: int = Field(512, ge=1, description="projector/predictor MLP hidden width")
    projection_dim: int = Field(128, ge=1, description="projection output width")
    ema_decay: float = Field(0.996, ge=0, le=1, description="BYOL target EMA decay")
    ema_cosine: bool = Field(True, description="BYOL: ramp the EMA decay to 1.0 (cosine)")
    augment_strength: float = Field(1.0, ge=0, le=2, description="strength of the sketch views")
    flip: bool = Field(False, description="also mirror views left-right (not for characters)")
    crop: float = Field(
        0.6, gt=0, le=1, description="smallest crop area of a view (RandomResizedCrop); 1: none"
    )
    thickness_p: float = Field(
        0.0, ge=0, le=1, description="probability of a stroke-thickness change (dilate/erode)"
    )
    erase_p: float = Field(0.0, ge=0, le=1, description="probability of random erasing")


class FinetuneConfig(TrainingConfig):
    method: str = Field("protonet", description="few-shot method registry name")
    init: str = Field(
        "scratch", description="'scratch', 'imagenet', 'latest' pretrain run, or a run folder"
    )
    n_way: int = Field(20, ge=2)
    n_shot: int = Field(1, ge=1)
    n_query: int = Field(5, ge=1)
    episodes_per_epoch: int = Field(100, ge=1)
    augment_strength: float = Field(0.5, ge=0, le=2, description="affine jitter of episodes")
    rotation_classes: bool = Field(
        False, description="add each class rotated by 90, 180 and 270 degrees as new classes"
    )
    freeze_encoder: bool = Field(
        False, description="embed once with the frozen encoder; train only the method's head"
    )
    distance: Literal["euclidean", "cosine"] = Field(
        "euclidean", description="ProtoNet distance (cosine has a learnable scale)"
    )
    attention: Literal["cosine", "mlp"] = Field("cosine", description="Matching attention")
    hidden_dim: int = Field(128, ge=2, description="width of learned heads")
    optim: OptimConfig = OptimConfig(schedule="step", step_size=10, gamma=0.5)


class EvaluateConfig(Frozen):
    protocol: Literal["episodes", "knn", "linear", "runs"] = Field(
        "episodes",
        description="episodes: N-way K-shot through the method's score; knn / linear: read-outs "
        "of the encoder's features; runs: Omniglot's one-shot runs folder",
    )
    n_way: int = Field(5, ge=2)
    n_shot: int = Field(1, ge=1)
    n_query: int = Field(15, ge=1)
    episodes: int = Field(1000, ge=1)
    split: Split = Field("test", description="which class split of the data to evaluate on")
    episodes_in: str | None = Field(
        None, description="replay this saved episode list (it fixes way, shot, query, episodes)"
    )
    draws: int = Field(10, ge=1, description="kNN and linear probe: seeded labelled/query draws")
    labelled_fraction: float = Field(
        0.5, gt=0, lt=1, description="kNN k=5 and linear probe: labelled share of each class"
    )
    probe_weight_decay: float = Field(1e-2, ge=0, description="linear probe L2 penalty")
    runs: str | None = Field(None, description="folder or .zip of Omniglot one-shot runs")
    tta: int = Field(1, ge=1, le=64, description="views averaged per image (1: no augmentation)")


class Config(Frozen):
    seed: int = 0
    device: Device = "auto"
    data: DataConfig = DataConfig()
    encoder: EncoderConfig = EncoderConfig()
    pretrain: PretrainConfig = PretrainConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    evaluate: EvaluateConfig = EvaluateConfig()


class EnrollConfig(Frozen):
    """One ``enroll`` call: create a class bank from a support folder, or change one (add
    classes, remove classes, calibrate its reject threshold). Not a section of run configs."""

    model: Path | None = Field(None, description="run folder; None: the bank's, else the newest")
    support: Path | None = Field(None, description="folder or .zip SUPPORT/<class>/*.png to add")
    bank: Path | None = Field(None, description="an existing bank to change")
    out: Path | None = Field(None, description="where to write the bank; None: --bank in place")
    classes: tuple[str, ...] = Field((), description="enroll only support classes matching these")
    shots: int | None = Field(None, ge=1, description="at most this many images per class")
    remove: tuple[str, ...] = Field((), description="class names, globs or groups to drop")
    replace: bool = Field(False, description="re-encode classes of --support already in the bank")
    calibrate: bool = Field(False, description="calibrate a reject threshold on the bank")
    false_reject: float | None = Field(
        None, ge=0, lt=1, description="share of known drawings the threshold may reject (0.05)"
    )
    device: Device = "auto"


class PredictConfig(Frozen):
    """One ``predict`` call: which images, against which classes, and what to report."""

    inputs: tuple[str, ...] = Field((), description="image files, folders, globs, or '-'")
    model: Path | None = Field(None, description="run folder; None: the bank's, else the newest")
    support: Path | None = Field(None, description="folder SUPPORT/<class>/*.png")
    bank: Path | None = Field(None, description="a class bank written by enroll")
    top_k: int = Field(3, ge=1, description="scores of the k best classes")
    reject_below: float | None = Field(
        None,
        ge=-1,
        le=1,
        description="label 'unknown' below this cosine similarity to the nearest class mean",
    )
    batch_size: int = Field(256, ge=1, description="images read and embedded at a time")
    device: Device = "auto"


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def nest(dotted: Mapping[str, Any]) -> dict[str, Any]:
    """``{"pretrain.epochs": 3}`` -> ``{"pretrain": {"epochs": 3}}``, dropping ``None`` values."""
    out: dict[str, Any] = {}
    for key, value in dotted.items():
        if value is None:
            continue
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def _has(tree: Mapping[str, Any], loc: tuple[Any, ...]) -> bool:
    node: Any = tree
    for part in loc:
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def resolve_config(
    file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    base: Config | None = None,
) -> Config:
    """Defaults (or ``base``) < ``file`` < ``overrides`` (dotted keys from the command line)."""
    from_file = read_toml(file) if file is not None else {}
    from_cli = nest(overrides or {})
    tree = _merge((base or Config()).model_dump(), from_file)
    tree = _merge(tree, from_cli)
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if not isinstance(p, int))
            where = ".".join(str(p) for p in loc) or "config"
            if _has(from_cli, loc):
                origin = "command line"
            elif file is not None and _has(from_file, loc):
                origin = str(file)
            else:
                origin = "config"
            if err["type"] == "extra_forbidden":
                problems.append(f"{origin}: unknown key '{where}'")
            else:
                problems.append(f"{origin}: {where}: {err['msg']}")
        raise ConfigError("; ".join(problems)) from None


def to_toml(config: Config) -> str:
    """Write a config back as TOML (scalars, strings, arrays and nested tables only)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list | tuple):
            return "[" + ", ".join(value(x) for x in v) + "]"
        raise TypeError(f"cannot write {type(v).__name__} to TOML")

    lines: list[str] = []

    def table(prefix: str, tree: Mapping[str, Any]) -> None:
        scalars = {k: v for k, v in tree.items() if not isinstance(v, Mapping) and v is not None}
        tables = {k: v for k, v in tree.items() if isinstance(v, Mapping)}
        if prefix:
            lines.append(f"\n[{prefix}]")
        lines.extend(f"{k} = {value(v)}" for k, v in scalars.items())
        for k, v in tables.items():
            table(f"{prefix}.{k}" if prefix else k, v)

    table("", config.model_dump())
    return "\n".join(lines).lstrip() + "\n"
