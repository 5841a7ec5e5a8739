"""Typed, frozen run configuration.

Precedence is defaults < TOML file (``--config``) < command-line options. One file can hold every
section; each command reads the sections it needs, and the resolved whole is written into each
run folder as ``config.toml`` so that a run can be repeated with ``--config RUN/config.toml``.

Each method's own settings are a model of their own, picked by the method's name (a
discriminated union): ``[pretrain] method = "byol"`` reads ``[pretrain.byol]``, and a key of
another method (``[pretrain.simclr] temperature``, ``--temperature`` with ``--method byol``) is
an error, not a silent no-op. View (augmentation) settings are data-side: ``[pretrain.views]``.

Nothing here imports torch: the CLI builds its options, choices and defaults from these models.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from sketchshot.errors import ConfigError, UsageError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the backport that became tomllib
    import tomli as tomllib  # type: ignore[no-redef]

Device = Literal["auto", "cpu", "cuda", "mps"]
Split = Literal["train", "val", "test", "all"]
THREADS = (
    "CPU threads to compute with (torch.set_num_threads); none: torch's default, one per core. "
    "On a machine that other jobs share, fewer (often 1) run faster; there, also set "
    "OMP_WAIT_POLICY=PASSIVE so that idle threads do not spin"
)
SPLITS = ("train", "val", "test")
# The encoder registry's names (sketchshot.encoders.ENCODERS), kept here so that the CLI's
# choices need no torch; a contract test checks that the two agree.
ENCODER_NAMES = ("conv4", "sketch_cnn", "resnet18", "resnet34", "resnet50", "swin_t")


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BuiltinDataConfig(Frozen):
    """The procedurally generated glyph dataset used when no ``--data`` is given."""

    n_classes: int = Field(150, ge=2, description="number of glyph classes")
    n_drawers: int = Field(20, ge=2, description="drawings per class, one per simulated drawer")
    seed: int = Field(0, description="seed of the glyph shapes and the drawers' jitter")


class DataConfig(Frozen):
    source: str = Field(
        "builtin",
        description="'builtin' (generated glyphs), an image folder ROOT/<class>/*.png, or a "
        ".zip archive of one",
    )
    image_size: int | None = Field(
        None, ge=8, le=512, description="image side in pixels; None: the encoder's default"
    )
    invert: Literal["auto", "yes", "no"] = Field(
        "auto", description="make strokes bright on dark; 'auto' inverts white-background images"
    )
    fit: Literal["page", "ink"] = Field(
        "page",
        description="frame of image files: 'page' keeps the whole page; 'ink' crops each "
        "image to its drawing's bounding box (where and how large people drew no longer "
        "matters: handwritten characters, scanned symbols). Vector drawings are always "
        "fitted. Saved with the model: evaluate, enroll and predict decode the same way",
    )
    classes: tuple[str, ...] = Field(
        (), description="keep only classes matching these globs or top-level groups"
    )
    exclude_classes: tuple[str, ...] = Field(
        (), description="drop classes matching these globs or groups"
    )
    split_fractions: tuple[float, float, float] = Field(
        (0.9, 0.1, 0.0),
        description="train, val and test fractions of the classes, drawn with split_seed, when "
        "no class lists are given; the default holds out 10% of the classes to validate each "
        "epoch and nothing for testing",
    )
    split_seed: int = Field(0, description="seed of the split")
    subsample: float = Field(
        1.0,
        gt=0,
        le=1,
        description="keep this fraction of the data for a quick experiment: of the top-level "
        "groups (alphabets) where class names have them, else of the classes; seeded with the "
        "split seed, drawn before the splits, so nothing leaks between them",
    )
    split_by: Literal["classes", "images"] = Field(
        "classes",
        description="'classes': splits hold different classes (few-shot: evaluate on unseen "
        "classes); 'images': each class's images are drawn into train/val/test by the "
        "fractions, so every split holds the same classes (classifiers, kNN with train images "
        "as references). A source laid out as train/ valid/ test/ folders is split by them",
    )
    small_classes: Literal["fail", "train"] = Field(
        "fail",
        description="split by images: a class with fewer images than splits is an error "
        "('fail') or stays in train only ('train')",
    )
    train_classes: tuple[str, ...] = Field(
        (),
        description="classes or groups (globs) of the train split; overrides the fractions; "
        "when only val/test classes are named, train takes the rest",
    )
    val_classes: tuple[str, ...] = Field((), description="classes or groups of the val split")
    test_classes: tuple[str, ...] = Field((), description="classes or groups of the test split")
    max_per_class: int | None = Field(
        None,
        ge=1,
        description="read at most this many drawings of each class (QuickDraw files hold "
        "~100,000); None: all",
    )
    line_width: float = Field(
        0.045,
        gt=0,
        le=0.5,
        description="stroke width of rendered vector drawings, as a fraction of the image side",
    )
    on_error: Literal["skip", "fail"] = Field(
        "fail",
        description="a bad record in vector data (malformed line, empty drawing, NaN "
        "coordinates): 'fail' stops naming it, 'skip' leaves it out and counts it in a note",
    )
    recognized: Literal["any", "yes", "no"] = Field(
        "any",
        description="QuickDraw .ndjson: keep only drawings the game recognised ('yes') or "
        "did not ('no')",
    )
    countries: tuple[str, ...] = Field(
        (), description="QuickDraw .ndjson: keep only drawings from these country codes (US, DE)"
    )
    trust_npz: bool = Field(
        False,
        description="read sketch-rnn .npz files, which numpy can only load by unpickling (and "
        "unpickling can run code): only for files from a source you trust",
    )
    pairs: str | None = Field(
        None,
        description="pairwise ranking: a CSV of labelled pairs with the header "
        "image_a,image_b,label (label 1: a preferred over b, 0: b over a, or the share of "
        "reviewers who preferred a) and optional group, agreement and reviewers columns; image "
        "paths relative to its folder. Split by group with --split-fractions (or the group "
        "lists --train-classes, --val-classes, --test-classes): no group in two splits; "
        "without a group column, pairs that share an image are one group",
    )
    min_agreement: float | None = Field(
        None,
        ge=0,
        le=1,
        description="pairs: keep only those whose agreement column is at least this (refused "
        "without the column)",
    )
    min_reviewers: int | None = Field(
        None,
        ge=1,
        description="pairs: keep only those whose reviewers column is at least this (refused "
        "without the column)",
    )
    builtin: BuiltinDataConfig = BuiltinDataConfig()

    @field_validator("split_fractions")
    @classmethod
    def _fractions(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(f < 0 for f in value) or abs(sum(value) - 1) > 1e-6:
            raise ValueError("split_fractions must be three non-negative numbers that sum to 1")
        return value


# The fields each ``ViewConfig.severity`` preset sets (line art: no colour jitter). light:
# small affine jitter; moderate: affine, crop, stroke thickness and erasing; aggressive:
# stronger, plus elastic distortion and cutout.
VIEW_PRESETS: dict[str, dict[str, float]] = {
    "light": {"strength": 0.5, "crop": 1.0, "thickness_p": 0.0, "erase_p": 0.0,
              "elastic": 0.0, "cutout_p": 0.0},
    "moderate": {"strength": 1.0, "crop": 0.7, "thickness_p": 0.3, "erase_p": 0.3,
                 "elastic": 0.0, "cutout_p": 0.0},
    "aggressive": {"strength": 1.0, "crop": 0.5, "thickness_p": 0.5, "erase_p": 0.5,
                   "elastic": 0.03, "cutout_p": 0.5},
}  # fmt: skip


class ViewConfig(Frozen):
    """Sketch views (data-side augmentation): affine jitter, crop, strokes, erasing."""

    severity: Literal["none", "light", "moderate", "aggressive"] = Field(
        "none",
        description="augmentation preset for line art: light (small affine jitter), moderate "
        "(affine, crop, stroke thickness, erasing) or aggressive (stronger, plus elastic "
        "distortion and cutout); it sets the other view fields' defaults, and those given "
        "explicitly win; none: no preset",
    )
    strength: float = Field(1.0, ge=0, le=2, description="scale of every view range, 0 to 2")
    crop: float = Field(
        1.0,
        gt=0,
        le=1,
        description="smallest area of a view's random crop (RandomResizedCrop, aspect 3/4 to "
        "4/3); 1: no crop",
    )
    flip: bool = Field(False, description="also mirror views left-right (not for characters)")
    thickness_p: float = Field(
        0.0, ge=0, le=1, description="probability of thickening or thinning the strokes"
    )
    erase_p: float = Field(0.0, ge=0, le=1, description="probability of erasing a random rectangle")
    elastic: float = Field(
        0.0,
        ge=0,
        le=0.2,
        description="elastic distortion: a smooth random displacement of every pixel, by this "
        "fraction of the image side (standard deviation, e.g. 0.03)",
    )
    cutout_p: float = Field(
        0.0,
        ge=0,
        le=1,
        description="probability of blanking a square of a quarter of the image side (cutout)",
    )
    # views on the strokes, before rendering: vector sources only (strokes, QuickDraw, SVG)
    stroke_jitter: float = Field(
        0.0,
        ge=0,
        le=0.2,
        description="motor noise: each stroke moved and smoothly bent by this fraction of the "
        "drawing's size (standard deviation; vector sources, e.g. 0.02)",
    )
    stroke_drop: float = Field(
        0.0, ge=0, lt=1, description="probability of leaving out each stroke (vector sources)"
    )
    partial_p: float = Field(
        0.0,
        ge=0,
        le=1,
        description="probability of drawing only the first strokes, at least half of them "
        "(vector sources)",
    )
    line_width_jitter: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="line width scaled by a random factor in 1 ± this (vector sources)",
    )

    @property
    def on_strokes(self) -> bool:
        """Whether any view works on the strokes, so drawings are rendered at every step."""
        on = (self.stroke_jitter, self.stroke_drop, self.partial_p, self.line_width_jitter)
        return self.strength > 0 and any(on)

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        """The severity preset's fields, where ``data`` does not give them."""
        if isinstance(data, Mapping) and data.get("severity") in VIEW_PRESETS:
            return {**VIEW_PRESETS[data["severity"]], **data}
        return data


class EncoderConfig(Frozen):
    name: Literal[ENCODER_NAMES] = Field("conv4", description="encoder architecture")  # type: ignore[valid-type]
    init: str = Field(
        "random",
        description="'random', 'imagenet' (ResNets and swin_t; torch hub cache, downloaded if "
        "missing), or the path of a state dict (.pth/.safetensors)",
    )
    drop_path: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="stochastic depth (swin_t): the rate of dropping the last block's residual "
        "branches, rising from 0 at the first; none: the encoder's default (swin_t 0.1)",
    )
    grad_checkpointing: bool = Field(
        False,
        description="gradient checkpointing (swin_t): recompute each block in the backward "
        "pass, for much less activation memory and about a third more compute",
    )
    width: int | None = Field(
        None,
        ge=8,
        le=1024,
        description="channels of every block (conv4; none: its default 64); compute grows "
        "with its square",
    )


class OptimConfig(Frozen):
    optimizer: Literal["adam", "adamw", "sgd"] = Field("adam", description="optimiser")
    lr: float = Field(1e-3, gt=0, description="base learning rate")
    weight_decay: float = Field(0.0, ge=0, description="L2 weight decay")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    schedule: Literal["cosine", "step", "constant"] = Field(
        "cosine", description="learning-rate schedule after the warm-up"
    )
    warmup_epochs: int = Field(0, ge=0, description="epochs of linear learning-rate warm-up")
    step_size: int = Field(10, ge=1, description="epochs between decays of the step schedule")
    gamma: float = Field(0.5, gt=0, le=1, description="decay factor of the step schedule")
    grad_clip: float | None = Field(None, gt=0, description="max gradient norm; None: no clip")


# ---- per-method settings: one model per registered method, its defaults in one place ----


class MethodSettings(Frozen):
    """What a method adds to its encoder; saved in the model card as its arguments."""

    name: str

    def arguments(self) -> dict[str, Any]:
        """The settings as the method's (and the card's) arguments, without the name."""
        return self.model_dump(exclude={"name"})


class SimCLRSettings(MethodSettings):
    """SimCLR (Chen et al. 2020): NT-Xent on an MLP projection of two views."""

    name: Literal["simclr"] = "simclr"
    temperature: float = Field(0.2, gt=0, description="NT-Xent temperature")
    hidden_dim: int = Field(512, ge=1, description="projection head hidden width")
    projection_dim: int = Field(128, ge=1, description="projection output width")
    gather_negatives: bool = Field(
        False, description="under torchrun: negatives from every process"
    )


class BYOLSettings(MethodSettings):
    """BYOL (Grill et al. 2020). The widths are the ones measured on Omniglot (90.4/76.5 at
    15 minutes), narrower than the paper's 4096/256, which cost time on a CPU."""

    name: Literal["byol"] = "byol"
    hidden_dim: int = Field(512, ge=1, description="projector and predictor hidden width")
    projection_dim: int = Field(128, ge=1, description="projection output width")
    ema_decay: float = Field(
        0.996,
        ge=0,
        le=1,
        description="target EMA decay at the start (0.95 with batch 64 learns much faster in "
        "runs of minutes on a CPU)",
    )
    ema_cosine: bool = Field(True, description="ramp the EMA decay to 1.0 over training")


class ProtoNetSettings(MethodSettings):
    """Prototypical networks (Snell et al. 2017)."""

    name: Literal["protonet"] = "protonet"
    distance: Literal["euclidean", "cosine"] = Field(
        "euclidean", description="distance to the prototypes (cosine: with a learnable scale)"
    )


class MatchingSettings(MethodSettings):
    """Matching networks (Vinyals et al. 2016)."""

    name: Literal["matching"] = "matching"
    attention: Literal["cosine", "mlp"] = Field(
        "cosine", description="attention over the support: cosine, or a learned MLP"
    )
    hidden_dim: int = Field(128, ge=2, description="hidden width of the MLP attention")


class RelationSettings(MethodSettings):
    """Relation networks (Sung et al. 2018)."""

    name: Literal["relation"] = "relation"
    hidden_dim: int = Field(128, ge=2, description="hidden width of the relation module")


class SiameseSettings(MethodSettings):
    """Siamese networks (Koch et al. 2015)."""

    name: Literal["siamese"] = "siamese"
    hidden_dim: int = Field(128, ge=2, description="hidden width of the pair head")


class SupervisedSettings(MethodSettings):
    """Supervised classification: a linear head over the train classes on any encoder, with
    focal or label-smoothed losses, mixup/cutmix and an EMA of the weights."""

    name: Literal["supervised"] = "supervised"
    n_classes: int | None = Field(
        None,
        ge=2,
        description="classes of the head: set by finetune from the train split and recorded in "
        "the saved card",
    )
    batch_size: int = Field(64, ge=2, description="images per batch (per process under torchrun)")
    loss: Literal["ce", "focal", "combined"] = Field(
        "ce",
        description="training loss: ce (cross-entropy), focal (Lin et al. 2017: easy images "
        "weigh less) or combined (focal_weight * focal + (1 - focal_weight) * ce)",
    )
    label_smoothing: float = Field(
        0.0, ge=0, lt=1, description="share of each target spread evenly over the classes (0.1)"
    )
    focal_gamma: float = Field(
        2.0, ge=0, description="focal exponent: (1 - p) ** gamma weighs each log-loss; 0: ce"
    )
    focal_alpha: float | None = Field(
        None, gt=0, description="focal factor alpha, a constant weight on the focal term; none: 1"
    )
    focal_weight: float = Field(
        0.5, ge=0, le=1, description="weight of the focal term in the combined loss"
    )
    class_weights: Literal["none", "auto"] = Field(
        "none",
        description="auto: weigh each class's loss by its inverse frequency in the train split "
        "(normalised to mean 1), for imbalanced classes",
    )
    mixup_alpha: float = Field(
        0.0,
        ge=0,
        description="mixup (Zhang et al. 2018): blend pairs of images and their targets by "
        "lambda ~ Beta(alpha, alpha), e.g. 0.2; 0: off",
    )
    cutmix_alpha: float = Field(
        0.0,
        ge=0,
        description="cutmix (Yun et al. 2019): paste a box of another image, targets mixed by "
        "its area, lambda ~ Beta(alpha, alpha), e.g. 1.0; 0: off",
    )
    mix_p: float = Field(
        1.0, ge=0, le=1, description="probability of mixing a batch when mixup or cutmix is on"
    )
    switch_p: float = Field(
        0.5, ge=0, le=1, description="probability of cutmix rather than mixup when both are on"
    )
    ema_decay: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="keep an exponential moving average (EMA) of the weights with this decay, "
        "e.g. 0.999 (min(decay, t / (t + 10)) at update t): validation scores it and "
        "model.safetensors holds it; none: off",
    )
    best_metric: Literal["accuracy", "macro_f1", "loss"] = Field(
        "accuracy",
        description="what picks the best checkpoint and counts for --patience when the val split "
        "holds the train classes (--split-by images): val accuracy, macro-F1 or loss; a val "
        "split of other classes is scored by few-shot episodes (val_acc)",
    )


# The feature sets a pairwise model can concatenate (sketchshot.encoders.feature_sets)
PAIR_FEATURES = ("encoder", "resnet50-layer3", "resnet50-layer4", "stats")


class PairwiseSettings(MethodSettings):
    """Pairwise ranking: a Siamese network (one encoder for both images) and an MLP head on
    the two embeddings give P(a preferred over b), trained on labelled pairs."""

    name: Literal["pairwise"] = "pairwise"
    features: tuple[str, ...] = Field(
        ("encoder",),
        description="feature sets whose features are concatenated: encoder (the sketch "
        "encoder, from --init or scratch), resnet50-layer3 and resnet50-layer4 (an ImageNet "
        "ResNet-50's pooled stages, always frozen), stats (sharpness, brightness, contrast, "
        "ink fraction)",
    )
    hidden_dim: int = Field(256, ge=2, description="hidden width of the pair head")
    dropout: float = Field(0.2, ge=0, lt=1, description="dropout before the pair head's output")
    freeze: Literal["none", "partial", "full"] = Field(
        "none",
        description="end-to-end training (without --freeze-encoder): none (the whole encoder "
        "trains), partial (only its last stage trains) or full (it does not train; images still "
        "go through it at every step, with views)",
    )
    batch_size: int = Field(64, ge=2, description="pairs per batch (per process under torchrun)")
    resnet_weights: str = Field(
        "imagenet",
        description="weights of the resnet50 feature sets: 'imagenet' (torchvision's, from the "
        "torch hub cache, downloaded if missing) or the path of a torchvision resnet50 state "
        "dict (.pth/.safetensors); the model saves them",
    )
    feature_cache: str | None = Field(
        None,
        description="with --freeze-encoder: the folder of cached features (safetensors, by the "
        "image file's sha256 and the feature set's weights and preprocessing), reused by later "
        "runs; none: sketchshot/features in the user's cache folder ($XDG_CACHE_HOME, else "
        "~/.cache)",
    )

    @field_validator("features")
    @classmethod
    def _features(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [f for f in value if f not in PAIR_FEATURES]
        if unknown:
            raise ValueError(
                f"unknown feature set {unknown[0]!r}; choose from {', '.join(PAIR_FEATURES)}"
            )
        if not value or len(set(value)) != len(value):
            raise ValueError("features must name at least one feature set, each once")
        return value

    def arguments(self) -> dict[str, Any]:
        """The network's arguments, as the card's JSON holds them: without the paths of this
        machine that training read."""
        return self.model_dump(mode="json", exclude={"name", "resnet_weights", "feature_cache"})


PRETRAIN_METHODS: dict[str, type[MethodSettings]] = {"simclr": SimCLRSettings, "byol": BYOLSettings}
FINETUNE_METHODS: dict[str, type[MethodSettings]] = {
    "protonet": ProtoNetSettings,
    "matching": MatchingSettings,
    "relation": RelationSettings,
    "siamese": SiameseSettings,
    "supervised": SupervisedSettings,
    "pairwise": PairwiseSettings,
}
METHOD_SETTINGS = {**PRETRAIN_METHODS, **FINETUNE_METHODS}
PretrainMethod = Annotated[SimCLRSettings | BYOLSettings, Field(discriminator="name")]
FinetuneMethod = Annotated[
    ProtoNetSettings
    | MatchingSettings
    | RelationSettings
    | SiameseSettings
    | SupervisedSettings
    | PairwiseSettings,
    Field(discriminator="name"),
]
# FinetuneConfig's fields that only episodic training reads (refused for supervised, pairwise)
EPISODE_FIELDS = (
    "n_way", "n_shot", "n_query", "episodes_per_epoch", "rotation_classes", "mirror_classes",
    "within_groups_p",
)  # fmt: skip


def _method_sections(data: Any, methods: Mapping[str, type[MethodSettings]], section: str) -> Any:
    """``{"method": "byol", "byol": {...}}`` (the TOML shape) -> ``{"method": {"name": "byol",
    ...}}`` (the union's shape). A section of another method is refused."""
    if not isinstance(data, Mapping):
        return data
    data = dict(data)
    method = data.get("method", next(iter(methods)))
    if isinstance(method, MethodSettings | Mapping):
        name = method.name if isinstance(method, MethodSettings) else method.get("name")
    else:
        name = method
    for other in methods:
        if other in data and other != name:
            raise ValueError(
                f"[{section}.{other}] does not apply to method {name!r} "
                f"(its settings go in [{section}.{name}])"
            )
    if isinstance(method, str):
        own = data.pop(name, {}) if name in methods else {}
        if not isinstance(own, Mapping):
            raise ValueError(f"[{section}.{name}] must be a table of settings")
        data["method"] = {"name": name, **own}
    return data


def _method_dump(out: dict[str, Any]) -> dict[str, Any]:
    settings = dict(out.pop("method"))
    name = settings.pop("name")
    return {"method": name, name: settings, **out}


class TrainingConfig(Frozen):
    """What the one training loop reads, shared by pretraining and fine-tuning."""

    epochs: int = Field(20, ge=1, description="training epochs")
    max_minutes: float | None = Field(
        None, gt=0, description="stop after this much wall time, keeping what was learnt"
    )
    checkpoint_every: int = Field(
        0, ge=0, description="also keep checkpoints/epoch_N every N epochs; 0: off"
    )
    val_every: int = Field(1, ge=1, description="validate every N epochs")
    val_episodes: int = Field(
        200, ge=0, description="validation episodes on the val classes; 0: no validation"
    )
    val_ways: int = Field(
        5, ge=2, description="classes per validation episode (fewer if the val split has fewer)"
    )
    head_lr: float | None = Field(
        None, gt=0, description="learning rate of the method's head; None: the encoder's"
    )
    accumulate: int = Field(
        1,
        ge=1,
        description="gradient accumulation: batches (or episodes) per optimiser step, each "
        "loss scaled by 1/N; the schedule counts optimiser steps",
    )
    patience: int | None = Field(
        None, ge=1, description="stop after this many validations without improvement"
    )
    amp: Literal["off", "bf16", "fp16", "auto"] = Field(
        "auto",
        description="mixed precision (autocast; weights, losses and scores stay float32): bf16 "
        "on CUDA or on a CPU with native bf16 (avx512_bf16 or amx_bf16; refused on other CPUs, "
        "where it is much slower), fp16 on CUDA only; auto: bf16 where the device has it "
        "natively (1.5-2.9x the training images/s of float32 on an AVX-512 CPU, as accurate at "
        "equal time), else float32; off: float32 everywhere",
    )
    channels_last: bool = Field(
        True, description="channels-last weights: faster convolutions on the CPU and on CUDA"
    )
    compile: Literal["off", "on", "auto"] = Field(
        "off",
        description="compile the training step with torch.compile after a warm-up of tens of "
        "seconds to minutes; often faster on CUDA, slower on some CPUs (on the CPU it needs a "
        "C++ compiler; if compiling fails, training goes on eagerly after a note); auto: "
        "compile when, timed over its first steps, the run has at least 10 more minutes to go, "
        "and keep it only if the compiled steps are faster",
    )
    optim: OptimConfig = OptimConfig()


class PretrainConfig(TrainingConfig):
    method: PretrainMethod = Field(
        default_factory=SimCLRSettings, description="self-supervised method"
    )
    batch_size: int = Field(256, ge=2, description="images per batch (two views each)")
    unique_class_batches: bool = Field(
        False,
        description="with labels, every image of a batch from a different class (no same-class "
        "negatives)",
    )
    views: ViewConfig = ViewConfig(crop=0.6)

    @model_validator(mode="before")
    @classmethod
    def _sections(cls, data: Any) -> Any:
        return _method_sections(data, PRETRAIN_METHODS, "pretrain")

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        return _method_dump(handler(self))


class FinetuneConfig(TrainingConfig):
    method: FinetuneMethod = Field(
        default_factory=ProtoNetSettings, description="few-shot, supervised or pairwise method"
    )
    init: str = Field(
        "scratch",
        description="'scratch', 'imagenet' (ResNets, swin_t), 'latest' (the newest pretrain "
        "run), a run folder whose encoder to start from (import-weights converts other "
        "checkpoints into one)",
    )
    n_way: int = Field(
        20,
        ge=2,
        description="classes per training episode; more than you test with (characters: 60)",
    )
    n_shot: int = Field(1, ge=1, description="support images per class")
    n_query: int = Field(5, ge=1, description="query images per class")
    episodes_per_epoch: int = Field(100, ge=1, description="training episodes per epoch")
    rotation_classes: bool = Field(
        False,
        description="add every class rotated by 90, 180 and 270 degrees as new classes: x4 "
        "classes for characters, whose turned shapes are other symbols; leave off for doodles "
        "and symbols that keep their meaning when turned",
    )
    mirror_classes: bool = Field(
        False,
        description="add every class mirrored left-right as a new class (x2 classes; with "
        "--rotation-classes, x8): for characters, whose mirror images are other symbols; "
        "leave off for doodles",
    )
    within_groups_p: float = Field(
        0.0,
        ge=0,
        le=1,
        description="share of training episodes whose classes all come from one top-level "
        "group (an alphabet): harder negatives where groups hold similar classes (characters: "
        "0.5); 0 for doodles",
    )
    freeze_encoder: bool = Field(
        False,
        description="embed once with the frozen encoder; train only the method's head "
        "(pairwise: every feature set's features of each image, cached in --feature-cache)",
    )
    views: ViewConfig = ViewConfig(strength=0.5)
    optim: OptimConfig = OptimConfig(schedule="step", step_size=10, gamma=0.5)

    @model_validator(mode="before")
    @classmethod
    def _sections(cls, data: Any) -> Any:
        return _method_sections(data, FINETUNE_METHODS, "finetune")

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        return _method_dump(handler(self))


class EvaluateConfig(Frozen):
    protocol: Literal["episodes", "knn", "linear", "runs", "classifier"] = Field(
        "episodes",
        description="episodes: N-way K-shot episodes scored by the model's method, head "
        "included; knn: cosine kNN on the encoder's features (before any head), 1-shot k=1, "
        "5-shot k=3 and full k=5 (on data split by images: train images as references); "
        "linear: logistic-regression probe on the frozen encoder's features; runs: Omniglot's "
        "one-shot runs folder; classifier: a supervised model's head on its own classes "
        "(top-1, top-5, macro-F1, per-class precision and recall)",
    )
    n_way: int = Field(5, ge=2, description="classes per episode (N)")
    n_shot: int = Field(1, ge=1, description="labelled examples per class (K)")
    n_query: int = Field(15, ge=1, description="query images per class")
    episodes: int = Field(1000, ge=1, description="number of episodes")
    split: Literal["auto", "train", "val", "test", "all"] = Field(
        "auto",
        description="class split to evaluate on; auto: the test split where the data holds one "
        "out, every class of data the model was not trained on",
    )
    episodes_in: str | None = Field(
        None, description="replay this saved episode list (it fixes way, shot, query, episodes)"
    )
    draws: int = Field(
        10, ge=1, description="knn and linear: seeded draws of the labelled images, for the CI"
    )
    labelled_fraction: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="knn (k=5) and linear: share of each class's images that is labelled",
    )
    probe_weight_decay: float = Field(1e-2, ge=0, description="linear probe L2 penalty")
    runs: str | None = Field(None, description="folder or .zip of Omniglot one-shot runs")
    within_groups: bool = Field(
        False,
        description="episodes: draw each episode's classes from one top-level group (an "
        "alphabet: similar characters, as in Omniglot's one-shot runs); groups with fewer than "
        "N classes are left out",
    )
    tta: int = Field(
        1, ge=1, le=64, description="views averaged per image (test-time augmentation; 1: off)"
    )
    align: bool = Field(
        False,
        description="runs and episodes: also score each query laid over each class drawing by "
        "their best affine map and then bent onto it (--warp), and the drawing laid over the "
        "query (the mean of the three scores): handwritten characters, where place, size, "
        "slant and the strokes' bends vary between writers. It embeds two more images per "
        "query-drawing pair, one view each",
    )
    warp: Literal["affine", "elastic"] = Field(
        "elastic",
        description="with --align: how each drawing is laid over the other: 'elastic', the "
        "affine map and then a smooth free-form warp fitted to bend its strokes onto the "
        "other's (about 3 ms more per pair on one core); 'affine', the map alone",
    )
    shape_weight: float = Field(
        0.0,
        ge=0,
        le=10,
        description="runs and episodes: join the model's scores with a training-free shape "
        "match (each query laid over each class drawing by the best affine map; "
        "sketchshot.alignment), this much of it: 0.25 for handwritten characters (with "
        "--align it adds nothing more: 0); 0: the model alone. It costs about 0.3 ms per "
        "query-drawing pair on one core",
    )


class Config(Frozen):
    seed: int = Field(0, description="seed of every random draw (data order, views, episodes)")
    device: Device = Field("auto", description="where to compute: auto, cpu, cuda or mps")
    threads: int | None = Field(None, ge=1, description=THREADS)
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
        None,
        ge=0,
        lt=1,
        description="share of known drawings the threshold may reject; None: the bank's "
        "previous target, else 0.05",
    )
    bundle: bool = Field(
        False,
        description="copy the model into the bank (BANK.model.safetensors and BANK.model.json "
        "beside it), so that the bank works wherever its BANK.* files go",
    )
    device: Device = Field("auto", description="where to compute: auto, cpu, cuda or mps")
    threads: int | None = Field(None, ge=1, description=THREADS)


class EmbedConfig(Frozen):
    """One ``embed`` call: every image of a source through a model's encoder, to a file."""

    data: str = Field(..., description="a folder, .zip or vector source; labelled or not")
    out: Path = Field(
        Path("embeddings.safetensors"),
        description="FILE.safetensors (embeddings, labels; paths and classes in its metadata), "
        "FILE.npy (embeddings; paths and classes in FILE.json) or FILE.csv (path, class, one "
        "column per feature)",
    )
    model: Path | None = Field(None, description="run folder; None: the newest run")
    batch_size: int = Field(256, ge=1, description="images encoded at a time")
    device: Device = Field("auto", description="where to compute: auto, cpu, cuda or mps")
    threads: int | None = Field(None, ge=1, description=THREADS)

    @field_validator("out")
    @classmethod
    def _format(cls, value: Path) -> Path:
        if value.suffix.lower() not in EMBEDDING_FORMATS:
            raise ValueError(f"--out must end in {', '.join(EMBEDDING_FORMATS)}, not {value.name}")
        return value


EMBEDDING_FORMATS = (".safetensors", ".npy", ".csv")


class ExportConfig(Frozen):
    """One ``export`` call: a saved model's encoder, and its scoring where that is a module,
    as ONNX or TorchScript files with an ``export.json`` that describes them."""

    model: Path | None = Field(None, description="run folder; None: the newest run")
    format: Literal["onnx", "torchscript"] = Field(
        "onnx",
        description="ONNX (needs the onnx extra: pip install 'sketchshot[onnx]') or TorchScript "
        "(a traced module)",
    )
    out: Path | None = Field(
        None,
        description="the folder to write, created whole (None: RUN/export-FORMAT); one that is "
        "not empty is refused",
    )
    force: bool = Field(False, description="replace a previous export in --out")


class EnsembleConfig(Frozen):
    """One ``ensemble`` call: which runs, in which order, and where the model goes."""

    runs: tuple[Path, ...] = Field(
        (), description="run folders (or model.json files) of euclidean ProtoNets, two or more"
    )
    out: Path | None = Field(
        None,
        description="the folder to write model.safetensors and model.json into (None: a new "
        "folder under runs/); one that holds a model is refused",
    )


class PredictConfig(Frozen):
    """One ``predict`` call: which images, against which classes, and what to report."""

    inputs: tuple[str, ...] = Field((), description="image files, folders, globs, or '-'")
    pairs: Path | None = Field(
        None,
        description="a CSV of pairs (image_a, image_b and optionally label; paths relative to "
        "its folder): the probability that each a is preferred over b, by a pairwise model",
    )
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
    device: Device = Field("auto", description="where to compute: auto, cpu, cuda or mps")
    threads: int | None = Field(None, ge=1, description=THREADS)


SECTION_METHODS: dict[str, Mapping[str, type[MethodSettings]]] = {
    "pretrain": PRETRAIN_METHODS,
    "finetune": FINETUNE_METHODS,
}
METHOD = "<method>"  # in an override key: the section's method, e.g. "pretrain.<method>.hidden_dim"


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"pretrain": {"epochs": 3}}`` -> ``{"pretrain.epochs": 3}``, ``nest``'s inverse (TOML's
    bare dotted keys and quoted ones, ``pretrain.epochs`` and ``"pretrain.epochs"``, read
    alike)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
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
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {path} is a folder; pass a .toml file (or RUN/config.toml)")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def _section_method(section: str, *trees: Mapping[str, Any]) -> str:
    """The method a section will have: the last tree that names one, else the default."""
    name = next(iter(SECTION_METHODS[section]))
    for tree in trees:
        value = tree.get(section, {}).get("method") if isinstance(tree, Mapping) else None
        if isinstance(value, str):
            name = value
    return name


def resolve_config(
    file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    base: Config | None = None,
    names: Mapping[str, str] | None = None,
) -> Config:
    """Defaults (or ``base``) < ``file`` < ``overrides`` (dotted keys from the command line).

    An override key may hold ``<method>`` for the section's method (``pretrain.<method>.
    hidden_dim``). ``names`` maps override keys to what the user typed (``--hidden-dim``), so
    that errors name it. A setting of another method than the section's is a usage error."""
    names = dict(names or {})
    from_file = read_toml(file) if file is not None else {}
    base_tree = (base or Config()).model_dump()
    overrides = dict(overrides or {})
    methods = {
        s: _section_method(s, base_tree, from_file, nest(overrides)) for s in SECTION_METHODS
    }
    resolved: dict[str, Any] = {}
    for key, value in overrides.items():
        if METHOD in key:
            section = key.split(".", 1)[0]
            new = key.replace(METHOD, methods[section])
            names.setdefault(new, names.get(key, key))
            key = new
        resolved[key] = value
    from_cli = nest(resolved)

    def said(dotted: str) -> str:
        return names.get(dotted, dotted)

    problems: list[str] = []
    for section, section_methods in SECTION_METHODS.items():
        name = methods[section]
        if base_tree[section]["method"] != name:  # the base's settings belong to its method
            base_tree[section].pop(base_tree[section]["method"], None)
        if name not in section_methods:
            continue  # the union reports an unknown method with the valid names
        for key in (k for k in resolved if k.startswith(f"{section}.{name}.")):
            field = key.rsplit(".", 1)[1]
            takes = [m for m, s in section_methods.items() if field in s.model_fields]
            if takes and name not in takes:
                problems.append(
                    f"{said(key)} does not apply to {section} method {name!r} (only to "
                    f"{', '.join(takes)})"
                )
        for other in section_methods:
            if other == name:
                continue
            if _has(from_cli, (section, other)):
                keys = [k for k in resolved if k.startswith(f"{section}.{other}.")]
                for key in keys:
                    field = key.rsplit(".", 1)[1]
                    takes = [m for m, s in section_methods.items() if field in s.model_fields]
                    problems.append(
                        f"{said(key)} does not apply to {section} method {name!r} (only to "
                        f"{', '.join(takes)})"
                    )
            if _has(from_file, (section, other)):
                problems.append(
                    f"{file}: [{section}.{other}] does not apply to {section} method {name!r}"
                )
    if methods["finetune"] in BATCH_TRAINED:
        problems += _episode_settings(resolved, from_file, file, said, methods["finetune"])
    if problems:
        raise UsageError("; ".join(problems))
    tree = _merge(_merge(base_tree, from_file), from_cli)
    _view_presets(tree, from_file, from_cli)
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        raise _config_error(exc, file, from_file, from_cli, said) from None


# finetune methods trained on batches (of what), not episodes
BATCH_TRAINED = {"supervised": "images", "pairwise": "labelled pairs"}


def _episode_settings(
    resolved: Mapping[str, Any],
    from_file: Mapping[str, Any],
    file: Path | None,
    said: Any,
    method: str = "supervised",
) -> list[str]:
    """Episode settings given to supervised or pairwise fine-tuning: refused from the command
    line, and from a file unless they hold the default (a run's config.toml writes every
    field)."""
    problems, defaults, in_file = [], FinetuneConfig(), from_file.get("finetune", {})
    for field in EPISODE_FIELDS:
        key = f"finetune.{field}"
        default = getattr(defaults, field)
        if key in resolved:
            problems.append(
                f"{said(key)} does not apply to finetune method {method!r} (it sets "
                f"episodes; {method} trains on batches of {BATCH_TRAINED[method]})"
            )
        elif isinstance(in_file, Mapping) and in_file.get(field, default) != default:
            problems.append(f"{file}: {key} does not apply to finetune method {method!r}")
    return problems


def _view_presets(tree: dict[str, Any], *given: Mapping[str, Any]) -> None:
    """Where a file or the command line gives a view ``severity``, the fields of its preset
    that they do not give leave the tree (the defaults, a resumed run's values), so that
    ``ViewConfig`` takes them from the preset."""
    for section, node in tree.items():
        if not isinstance(node, dict) or not isinstance(node.get("views"), Mapping):
            continue
        explicit: set[str] = set()
        for source in given:
            views = source.get(section, {}).get("views", {}) if isinstance(source, Mapping) else {}
            explicit |= set(views) if isinstance(views, Mapping) else set()
        if "severity" in explicit:
            preset = VIEW_PRESETS.get(node["views"].get("severity"), {})
            kept = {k: v for k, v in node["views"].items() if k in explicit or k not in preset}
            node["views"] = kept


def _config_error(
    exc: ValidationError,
    file: Path | None,
    from_file: Mapping[str, Any],
    from_cli: Mapping[str, Any],
    said: Any,
) -> ConfigError:
    problems = []
    usage = False
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"] if not isinstance(p, int))
        # the union's tag ("simclr") sits in the location of a method setting: drop it
        loc = tuple(p for i, p in enumerate(loc) if not (i == 2 and loc[1] == "method"))
        if loc[1:2] == ("method",) and loc[0] in SECTION_METHODS:
            tree_loc = (loc[0], _section_method(loc[0], from_file, from_cli), *loc[2:])
            if len(loc) == 2:
                tree_loc = loc
        else:
            tree_loc = loc
        dotted_tree = ".".join(tree_loc)
        if _has(from_cli, tree_loc):
            origin, shown, usage = "command line", said(dotted_tree), True
        elif file is not None and _has(from_file, tree_loc):
            origin, shown = str(file), dotted_tree
        else:
            origin, shown = "config", dotted_tree
        if err["type"] == "extra_forbidden":
            hint = _settings_hint(loc)
            problems.append(f"{origin}: unknown key '{shown}'{hint}")
        elif err["type"] == "union_tag_invalid":
            section = loc[0]
            valid = ", ".join(SECTION_METHODS.get(section, {}))
            problems.append(f"{origin}: {shown}: unknown method; choose one of: {valid}")
        else:
            problems.append(f"{origin}: {shown}: {err['msg']}")
    error = ConfigError("; ".join(problems))
    if usage:
        error.exit_code = 2
    return error


def _settings_hint(loc: tuple[str, ...]) -> str:
    """Where a key written flat in a method's section (the 0.1 layout) belongs now."""
    if len(loc) != 2 or loc[0] not in SECTION_METHODS:
        return ""
    section, key = loc
    takes = [m for m, s in SECTION_METHODS[section].items() if key in s.model_fields]
    if takes:
        return f": it is a setting of {' and '.join(takes)}, under [{section}.{takes[0]}]"
    if key in ViewConfig.model_fields or key == "augment_strength":
        return f": views are set under [{section}.views]"
    return ""


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):  # a JSON string is a TOML basic string, escapes and all
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def to_toml(config: BaseModel | Mapping[str, Any]) -> str:
    """Write a config back as TOML that reads back to the same values (scalars, strings with
    any characters, arrays and nested tables; ``None`` is left out, which reads as the
    default)."""
    lines: list[str] = []

    def table(prefix: str, tree: Mapping[str, Any]) -> None:
        scalars = {k: v for k, v in tree.items() if not isinstance(v, Mapping) and v is not None}
        tables = {k: v for k, v in tree.items() if isinstance(v, Mapping)}
        if prefix:
            lines.append(f"\n[{prefix}]")
        lines.extend(f"{_key(k)} = {_toml_value(v)}" for k, v in scalars.items())
        for k, v in tables.items():
            table(f"{prefix}.{_key(k)}" if prefix else _key(k), v)

    table("", config.model_dump() if isinstance(config, BaseModel) else config)
    return "\n".join(lines).lstrip() + "\n"


def _key(key: str) -> str:
    bare = key.replace("_", "").replace("-", "").isalnum() and key.isascii()
    return key if bare else json.dumps(key, ensure_ascii=False)
