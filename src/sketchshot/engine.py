"""The core behind every command. The CLI builds a ``Config``, calls one function here and
renders what it returns; nothing here imports typer."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from rich.console import Console

from sketchshot import __version__, compute
from sketchshot.bank import (
    ClassBank,
    bank_exists,
    bank_files,
    bundle_model,
    check_model,
    encode_support,
    find_model,
    is_bank,
    load_bank,
    read_bank_card,
    save_bank,
)
from sketchshot.calibration import DEFAULT_FALSE_REJECT, calibrate
from sketchshot.card import BankCard, ModelCard, Preprocessing
from sketchshot.checkpoint import load_model, load_tensors, read_card
from sketchshot.config import (
    Config,
    DataConfig,
    EmbedConfig,
    EncoderConfig,
    EnrollConfig,
    EvaluateConfig,
    ExportConfig,
    PredictConfig,
    TrainingConfig,
    ViewConfig,
)
from sketchshot.data import SketchDataset, load_source, load_splits, load_support
from sketchshot.data.batches import UniqueClassBatchSampler, shuffled_batches
from sketchshot.data.dataset import (
    filter_classes,
    match_classes,
    with_mirrors,
    with_rotations,
)
from sketchshot.data.episodes import Episode, EpisodeSampler
from sketchshot.data.folder import is_unlabelled, require_labels
from sketchshot.data.splits import presplit, splits_images
from sketchshot.data.vector.stroke_views import StrokeViews
from sketchshot.data.views import SketchAugment
from sketchshot.distributed import DistContext, resolve_device
from sketchshot.embeddings import encode_in_batches, write_embeddings
from sketchshot.encoders import ENCODERS, create_encoder, encoder_arguments, initialise_encoder
from sketchshot.ensembling import EnsembleConfig, EnsembleResult, ensemble
from sketchshot.errors import ConfigError, DataError
from sketchshot.evaluation import embed
from sketchshot.export import write_export
from sketchshot.methods import METHODS, Method, create_method
from sketchshot.methods.ssl.base import TwoViews
from sketchshot.methods.supervised import LabelledBatch, inverse_frequency_weights
from sketchshot.prediction import BankScorer, Prediction, expand_inputs, predict_paths
from sketchshot.progress import progress_bar
from sketchshot.protocols.report import Figure, hardest_classes, per_class_accuracy
from sketchshot.protocols.run import check_settings, run_protocol
from sketchshot.ranking import (
    evaluate_pairs,
    finetune_pairs,
    predict_pairs,
    refuse_pairs,
    same_pairs,
    sketch_encoder,
)
from sketchshot.runs import RunResult, TrainingJob, latest_run, model_spec, train_run
from sketchshot.training import BatchSource, unchanged

__all__ = [
    "RunResult", "enroll", "evaluate", "evaluate_pairs", "finetune", "info",
    "predict", "predict_pairs", "pretrain", "same_pairs", "export_model", "ensemble",
    "EnsembleConfig", "EnsembleResult",
]  # fmt: skip


def _check_kind(name: str, *kinds: str) -> None:
    if METHODS.get(name).kind not in kinds:
        valid = ", ".join(n for n in METHODS.names() if METHODS.get(n).kind in kinds)
        words = {"ssl": "self-supervised", "fewshot": "few-shot", "supervised": "supervised",
                 "pairwise": "pairwise"}  # fmt: skip
        what = " or ".join(words[k] for k in kinds)
        raise ConfigError(f"{name!r} is not a {what} method; choose one of: {valid}")


def held_out_note(data: DataConfig, splits: dict[str, SketchDataset | None]) -> str:
    """One line: which classes training leaves out of the train split, and why."""
    counts = {k: len(v.class_names) if v is not None else 0 for k, v in splits.items()}
    total, origin = sum(counts.values()), splits["train"].origin  # type: ignore[union-attr]
    train = splits["train"]
    if train is not None and is_unlabelled(train):
        return (
            f"{origin} is unlabelled (images outside class folders): training on all "
            f"{len(train)} images; nothing to validate on (the kNN monitor needs classes), "
            "the last epoch's weights are kept"
        )
    if splits_images(data):
        sizes = {k: len(v) if v is not None else 0 for k, v in splits.items()}
        how = "its train/valid/test folders" if presplit(data.source) else (
            f"--split-by images --split-fractions {_fractions(data)}"
        )  # fmt: skip
        return (
            f"splitting the images of {len(train.class_names)} classes by {how}: "  # type: ignore[union-attr]
            f"{sizes['train']} to train on, {sizes['val']} to validate each epoch, "
            f"{sizes['test']} for evaluate's test split"
        )
    explicit = data.train_classes or data.val_classes or data.test_classes
    how = "the class lists" if explicit else f"--split-fractions {_fractions(data)}"
    held = []
    if counts["val"]:
        held.append(f"{counts['val']} classes to validate each epoch and keep the best weights")
    if counts["test"]:
        held.append(f"{counts['test']} {'' if held else 'classes '}for evaluate's test split")
    if not held:
        return (
            f"training on all {total} classes of {origin}; nothing is held out to validate "
            "(--val-classes or --split-fractions would hold some out)"
        )
    hint = "; --split-fractions 1 0 0 trains on all" if not explicit else ""
    return (
        f"holding out {', and '.join(held)} ({how}): training on {counts['train']} of the "
        f"{total} classes of {origin}{hint}"
    )


def _fractions(data: DataConfig) -> str:
    return " ".join(f"{f:g}" for f in data.split_fractions)


def _preprocessing(cfg: Config, image_size: int) -> Preprocessing:
    return Preprocessing(image_size=image_size, invert=cfg.data.invert, fit=cfg.data.fit)


def pretrain(
    cfg: Config,
    out: Path | None = None,
    resume: Path | None = None,
    quiet: bool = False,
    console: Console | None = None,
) -> RunResult:
    """Self-supervised pretraining of an encoder on unlabelled images of the train split."""
    p = cfg.pretrain
    _check_kind(p.method.name, "ssl")
    refuse_pairs(cfg, "pretrain")
    check_compute(cfg, p)
    torch.manual_seed(cfg.seed)
    image_size = cfg.data.image_size or ENCODERS.get(cfg.encoder.name).default_image_size
    encoder_args = encoder_arguments(cfg.encoder, image_size)  # refused before reading data
    splits = load_splits(cfg.data, image_size)
    train, val = splits["train"], splits["val"]
    assert train is not None
    if len(train) < 2:
        raise DataError(f"pretraining needs at least 2 images, {train.origin} has {len(train)}")
    encoder = create_encoder(cfg.encoder.name, **encoder_args)
    init = "random"
    if resume is None:  # before the method copies it (BYOL's target starts as the encoder)
        init = initialise_encoder(encoder, cfg.encoder.init)
    method = create_method(p.method.name, encoder, p.method)
    unique = UniqueClassBatchSampler(train.labels, p.batch_size) if p.unique_class_batches else None
    augment = SketchAugment.from_config(p.views)
    strokes = stroke_views(p.views, train)

    def batches(ctx: DistContext) -> BatchSource:
        batch_size = max(2, min(p.batch_size, len(train) // ctx.world_size))
        steps = max(1, len(train) // (batch_size * ctx.world_size))

        def epoch(rng: np.random.Generator) -> Iterator[torch.Tensor]:
            if unique is not None:
                indices = unique.batches(rng, ctx.rank, ctx.world_size)
            else:
                indices = shuffled_batches(len(train), batch_size, rng, ctx.rank, ctx.world_size)
            for index in indices:
                if strokes is None:  # [B, 1, S, S]: both views start from the same image
                    yield train.floats(torch.from_numpy(index))
                else:  # [B, 2, S, S]: two renderings, each of its own view of the strokes
                    pair = [train.rendered(index, strokes, rng) for _ in range(2)]
                    yield torch.cat(pair, dim=1).float().div_(255.0)

        def views(x: torch.Tensor) -> TwoViews:
            return TwoViews(augment(x[:, :1]), augment(x[:, -1:]))

        return BatchSource(epoch, steps, views)

    job = TrainingJob(
        command="pretrain",
        cfg=cfg,
        section=p,
        method=method,
        model=model_spec(p.method, cfg.encoder.name, image_size, init, encoder_args),
        preprocessing=_preprocessing(cfg, image_size),
        train=train,
        val=val,
        batches=batches,
        notes=(held_out_note(cfg.data, splits),),
    )
    return train_run(job, out, resume, quiet, console)


def check_compute(cfg: Config, section: TrainingConfig) -> None:
    """Set the threads, and refuse an --amp that the device cannot use before any data is
    read (the training loop decides it again on the device it runs on)."""
    compute.set_threads(cfg.threads)
    compute.autocast_dtype(section.amp, resolve_device(cfg.device))


def stroke_views(views: ViewConfig, train: SketchDataset) -> StrokeViews | None:
    """The views on the strokes ``views`` asks for, or None when there are none; refused
    (``ConfigError``) on data that has no strokes."""
    if not views.on_strokes:
        return None
    if train.drawings is None:
        raise ConfigError(
            f"--stroke-jitter, --stroke-drop, --partial-p and --line-width-jitter work on "
            f"strokes; {train.origin} has images only (strokes: Omniglot stroke files, "
            "QuickDraw .ndjson/.npz, SVG)"
        )
    return StrokeViews.from_config(views)


def resolve_init(init: str) -> Path | None:
    """The run folder to start a fine-tune from; None for 'scratch' and 'imagenet'."""
    if init in ("scratch", "imagenet"):
        return None
    if init == "latest":
        return latest_run("ssl")
    if Path(init).is_file() and Path(init).suffix not in (".json", ".safetensors"):
        raise ConfigError(
            f"--init {init} is not a run folder; convert a PyTorch checkpoint once with "
            f"'sketchshot import-weights {init} --encoder ARCH --out RUN', then --init RUN"
        )
    return Path(init)


def start_encoder(cfg: Config, init: Path | None) -> tuple[Config, dict[str, torch.Tensor] | None]:
    """``cfg`` with the encoder and image size that fine-tuning from ``init`` (a run folder;
    None: scratch or ImageNet) decides, and that run's encoder weights (None without one).
    What ``init`` decides belongs in the saved config, so that ``--resume`` rebuilds the same
    model."""
    encoder_name, image_size, init_state = cfg.encoder.name, cfg.data.image_size, None
    if init is not None:
        source, card = load_model(init)
        encoder_name = card.model.encoder
        if cfg.encoder.name not in (encoder_name, EncoderConfig().name):
            raise ConfigError(f"--encoder {cfg.encoder.name} differs from {init}'s {encoder_name}")
        saved_size = card.preprocessing.image_size
        if image_size is not None and image_size != saved_size:
            raise ConfigError(f"--image-size {image_size} differs from {init}'s {saved_size}")
        image_size = saved_size
        init_state = sketch_encoder(source, init).state_dict()
    image_size = image_size or ENCODERS.get(encoder_name).default_image_size
    update = {
        "encoder": cfg.encoder.model_copy(update={"name": encoder_name}),
        "data": cfg.data.model_copy(update={"image_size": image_size}),
    }
    return cfg.model_copy(update=update), init_state


def finetune(
    cfg: Config,
    out: Path | None = None,
    resume: Path | None = None,
    quiet: bool = False,
    console: Console | None = None,
) -> RunResult:
    """Episodic N-way K-shot training, supervised training of a classifier on batches of the
    train classes, or (``ranking.finetune_pairs``) pairwise ranking on labelled pairs, from
    scratch or from a pretrained (or fine-tuned) run."""
    f = cfg.finetune
    name = f.method.name
    _check_kind(name, "fewshot", "supervised", "pairwise")
    check_compute(cfg, f)
    supervised = METHODS.get(name).kind == "supervised"
    torch.manual_seed(cfg.seed)
    init = resolve_init(f.init) if resume is None else None
    cfg, init_state = start_encoder(cfg, init)
    if name == "pairwise":  # labelled pairs of image files, not classes: data of its own
        return finetune_pairs(cfg, init, init_state, out, resume, quiet, console)
    refuse_pairs(cfg, f"--method {name}")
    encoder_name, image_size = cfg.encoder.name, cfg.data.image_size
    assert image_size is not None
    encoder_args = encoder_arguments(cfg.encoder, image_size)  # refused before reading data
    splits = load_splits(cfg.data, image_size)
    train, val = splits["train"], splits["val"]
    assert train is not None
    require_labels(train, "finetune")
    if f.mirror_classes:
        train = with_mirrors(train)
    if f.rotation_classes:
        train = with_rotations(train)
    if supervised:  # the head's classes: the train split's, recorded in the saved config
        n_classes = len(train.class_names)
        if f.method.n_classes not in (None, n_classes):
            raise ConfigError(
                f"n_classes {f.method.n_classes} differs from the {n_classes} classes of the "
                f"train split of {train.origin}; leave it out (finetune sets it)"
            )
        f = f.model_copy(update={"method": f.method.model_copy(update={"n_classes": n_classes})})
        cfg = cfg.model_copy(update={"finetune": f})
    else:
        sampler = EpisodeSampler(
            train.labels, f.n_way, f.n_shot, f.n_query, train.class_names, f.within_groups_p
        )
    encoder = create_encoder(encoder_name, **encoder_args)
    if supervised and f.method.class_weights == "auto":
        weights = inverse_frequency_weights(train.counts())
        method = METHODS.get(name)(encoder, f.method, class_weights=weights)
    else:
        method = create_method(name, encoder, f.method)
    started = "random"
    if init_state is not None:
        method.encoder.load_state_dict(init_state)
        started = str(init)
    elif resume is None:
        started = initialise_encoder(
            method.encoder, "imagenet" if f.init == "imagenet" else cfg.encoder.init
        )
    if f.freeze_encoder and not any(
        not n.startswith("encoder.") for n, _ in method.named_parameters()
    ):
        raise ConfigError(f"--freeze-encoder leaves {name} nothing to train: it has no head")
    if f.freeze_encoder:
        method.encoder.requires_grad_(False)
    augment = SketchAugment.from_config(f.views)
    strokes = stroke_views(f.views, train)
    if strokes is not None and f.freeze_encoder:
        raise ConfigError(
            "--freeze-encoder embeds every image once: views on the strokes need "
            "an encoder that trains"
        )
    if supervised and f.freeze_encoder and f.method.cutmix_alpha > 0:
        raise ConfigError(
            "--cutmix-alpha pastes boxes of images; --freeze-encoder trains on embeddings"
        )

    def batches(ctx: DistContext) -> BatchSource:
        cache: list[torch.Tensor] = []

        def take(index: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
            if strokes is not None:
                return train.rendered(index, strokes, rng).float().div_(255.0)
            if not f.freeze_encoder:
                return train.images[torch.from_numpy(index)].float().div_(255.0)
            if not cache:  # embed once, on first use: after --resume has restored the weights
                cache.append(embed(method, train.images, ctx.device).cpu())
            return cache[0][torch.from_numpy(index)]

        if supervised:
            return labelled_batches(train.labels, f.method.batch_size, take, augment, ctx)

        def epoch(rng: np.random.Generator) -> Iterator[Episode]:
            rng = np.random.default_rng([int(rng.integers(2**31)), ctx.rank])  # own episodes
            while True:
                ep = sampler.sample(rng)
                support, query = take(ep.support, rng), take(ep.query, rng)
                yield Episode(support, ep.support_labels, query, ep.query_labels, f.n_way)

        views = unchanged if f.freeze_encoder else lambda ep: ep.augmented(augment)
        return BatchSource(epoch, f.episodes_per_epoch, views)

    notes = [held_out_note(cfg.data, splits)]
    if started != "random":
        notes.append(f"encoder initialised from {started}")
    if supervised and val is not None and len(val) and val.class_names != train.class_names:
        notes.append(
            "the val split holds other classes than train: validating the encoder by few-shot "
            "episodes (val_acc); accuracy, macro-F1 and loss of the classifier need a val split "
            "of the train classes (--split-by images)"
        )
    job = TrainingJob(
        command="finetune",
        cfg=cfg,
        section=f,
        method=method,
        model=model_spec(f.method, encoder_name, image_size, started, encoder_args),
        preprocessing=_preprocessing(cfg, image_size),
        train=train,
        val=val,
        batches=batches,
        val_shots=f.n_shot,
        notes=tuple(notes),
    )
    return train_run(job, out, resume, quiet, console)


def labelled_batches(
    labels: torch.Tensor,
    batch_size: int,
    take: Callable[[np.ndarray, np.random.Generator], torch.Tensor],
    augment: SketchAugment,
    ctx: DistContext,
) -> BatchSource:
    """One epoch: this process's share of a seeded shuffle of the train split, in
    ``LabelledBatch``es of ``take(index, rng)`` (images [B, 1, S, S] in [0, 1], rendered from
    their strokes where there are views of them, or embeddings [B, D] of a frozen encoder)
    and their labels; images get ``augment``ed on the device."""
    batch_size = max(2, min(batch_size, len(labels) // ctx.world_size))
    steps = max(1, len(labels) // (batch_size * ctx.world_size))

    def epoch(rng: np.random.Generator) -> Iterator[LabelledBatch]:
        for index in shuffled_batches(len(labels), batch_size, rng, ctx.rank, ctx.world_size):
            yield LabelledBatch(take(index, rng), labels[torch.from_numpy(index)])

    def views(batch: LabelledBatch) -> LabelledBatch:
        if batch.images.dim() == 2:  # embeddings of a frozen encoder
            return batch
        return LabelledBatch(augment(batch.images), batch.labels)

    return BatchSource(epoch, steps, views)


HARDEST_SHOWN = 5


@dataclass
class EvalResult:
    """What ``evaluate`` measured and everything needed to reproduce it. ``accuracy`` and
    ``ci95`` are the protocol's headline figure (``figures[0]``): the mean episode accuracy,
    kNN with a labelled fraction and k=5, the linear probe, or 1 - the mean error rate of the
    one-shot runs; ``n_way`` is the number of classes each of its queries is told among (every
    evaluated class for kNN and the linear probe) and ``chance`` = 1 / n_way. ``n_shot``..
    ``episodes`` are None outside the episode protocol."""

    model: str
    model_sha256: str
    data: str
    split: str | None
    n_classes: int
    n_images: int
    protocol: str
    n_way: int
    n_shot: int | None
    n_query: int | None
    episodes: int | None
    seed: int
    tta: int
    accuracy: float
    ci95: float
    chance: float
    figures: list[Figure]
    per_class: dict[str, dict[str, Any]]  # class -> correct, total, accuracy
    hardest: list[dict[str, Any]]
    details: dict[str, Any]  # per-run error rates, where the episodes came from
    settings: dict[str, Any]  # seed, device, the data and evaluate sections as resolved
    versions: dict[str, str]
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(
    cfg: Config,
    model: Path | None = None,
    quiet: bool = False,
    console: Console | None = None,
    episodes_out: Path | None = None,
    save_grid: Path | None = None,
    save_confusion: Path | None = None,
) -> EvalResult:
    """Evaluate a saved model by ``cfg.evaluate.protocol`` on embeddings computed once:
    N-way K-shot episodes (mean, 95% CI, per-class accuracy), kNN or linear-probe read-outs of
    the encoder, or Omniglot's one-shot runs. Optionally save the episode list, a picture of
    one episode and the confusion matrix."""
    start = time.perf_counter()
    check_settings(cfg.evaluate, episodes_out, save_grid, save_confusion)
    compute.set_threads(cfg.threads)
    model = model or latest_run()
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    method, card = load_model(model, device)
    framed = cfg.data.model_copy(update={"fit": card.preprocessing.fit})  # as it was trained
    cfg = cfg.model_copy(update={"evaluate": evaluation_split(cfg, card), "data": framed})
    done = run_protocol(
        method, card.preprocessing, cfg, device, episodes_out, save_grid, save_confusion,
        card.class_names,
    )  # fmt: skip
    report, e = done.report, cfg.evaluate
    per_class = (
        per_class_accuracy(report.confusion, report.class_names)
        if report.confusion is not None
        else {}
    )
    episodes = report.details.get("episodes", {})
    return EvalResult(
        model=str(model),
        model_sha256=card.sha256,
        data=done.origin,
        split=done.split,
        n_classes=done.n_classes,
        n_images=done.n_images,
        protocol=e.protocol,
        n_way=report.figures[0].n_way,
        n_shot=episodes.get("n_shot"),
        n_query=episodes.get("n_query"),
        episodes=episodes.get("count"),
        seed=cfg.seed,
        tta=e.tta,
        accuracy=report.figures[0].accuracy,
        ci95=report.figures[0].ci95,
        chance=report.figures[0].chance,
        figures=list(report.figures),
        per_class=per_class,
        hardest=hardest_classes(per_class, HARDEST_SHOWN),
        details=report.details,
        settings={
            "seed": cfg.seed,
            "device": str(device),
            "data": cfg.data.model_dump(mode="json"),
            "evaluate": e.model_dump(mode="json"),
        },
        versions={"sketchshot": __version__, "torch": torch.__version__},
        seconds=round(time.perf_counter() - start, 2),
    )


def saved_config(model: Path | None) -> Config:
    """The resolved config a model was trained with (the base that evaluate's options refine)."""
    return read_card(model or latest_run()).run_config()


def evaluation_split(cfg: Config, card: ModelCard) -> EvaluateConfig:
    """``cfg.evaluate`` with ``split = "auto"`` decided: the test split where the data holds
    one out, every class of data other than the model's training data, else an error."""
    e, data = cfg.evaluate, cfg.data
    if e.split != "auto":
        return e
    if splits_images(data):  # the same classes in every split: the held-out images
        folders = presplit(data.source) if data.source != "builtin" else frozenset()
        held = "test" in folders if folders else data.split_fractions[2] > 0
        return e.model_copy(update={"split": "test" if held else "val"})
    explicit = data.train_classes or data.val_classes or data.test_classes
    if data.test_classes or (not explicit and data.split_fractions[2] > 0) or e.protocol == "runs":
        return e.model_copy(update={"split": "test"})
    if card.data is None and not card.config:  # imported weights: they saw none of this data
        return e.model_copy(update={"split": "all"})
    trained_on = card.config.get("data", {}).get("source") if card.config else None
    if trained_on is not None and trained_on != data.source:
        return e.model_copy(update={"split": "all"})
    raise DataError(
        f"{card.file} was trained on {data.source} with no test split held out: evaluate it on "
        "other data (--data), or pass --split val (the classes that picked its best epoch) or "
        "--split all"
    )


@dataclass(frozen=True)
class EmbedResult:
    out: Path
    model: str
    model_sha256: str
    images: int
    dim: int
    classes: int  # 0 for unlabelled data
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "out": str(self.out)}


def embed_source(
    cfg: EmbedConfig, quiet: bool = False, console: Console | None = None
) -> EmbedResult:
    """Every image of ``cfg.data`` through the model's encoder (as its preprocessing decodes
    them), written to ``cfg.out``; a progress bar on ``console``."""
    start = time.perf_counter()
    compute.set_threads(cfg.threads)
    model = cfg.model or latest_run()
    device = resolve_device(cfg.device)
    method, card = load_model(model, device)
    pre = card.preprocessing
    decoding = DataConfig(source=cfg.data, invert=pre.invert, fit=pre.fit)
    dataset = load_source(cfg.data, pre.image_size, decoding)
    with progress_bar(console or Console(stderr=True), quiet) as bar:
        task = bar.add_task("embedding", total=len(dataset))
        features = encode_in_batches(
            method, dataset, device, cfg.batch_size, lambda n: bar.advance(task, n)
        )
    write_embeddings(cfg.out, features, dataset, card.sha256)
    return EmbedResult(
        out=cfg.out,
        model=str(model),
        model_sha256=card.sha256,
        images=len(dataset),
        dim=int(features.shape[1]),
        classes=0 if is_unlabelled(dataset) else len(dataset.class_names),
        seconds=round(time.perf_counter() - start, 2),
    )


@dataclass(frozen=True)
class ExportResult:
    out: Path
    format: str
    files: tuple[str, ...]  # in ``out``, export.json last
    model: str
    model_sha256: str
    embedding_dim: int
    scoring: str | None  # the scoring module's output, where the method's scoring is learned
    max_abs_diff: dict[str, float]  # per module, the export's largest difference from the model
    runtime: str | None  # what ran the files back to check them
    notes: tuple[str, ...]
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "out": str(self.out)}


def export_model(cfg: ExportConfig) -> ExportResult:
    """A saved model's encoder, and its scoring where that is a learned module, as ONNX or
    TorchScript files in ``cfg.out`` (by default ``RUN/export-FORMAT``) with ``export.json``:
    the preprocessing, inputs and outputs, the source model's sha256 and the versions."""
    start = time.perf_counter()
    model = cfg.model or latest_run()
    method, card = load_model(model)
    assert card.file is not None
    out = cfg.out or card.file.parent / f"export-{cfg.format}"
    written, notes = write_export(method, card, cfg.format, out, cfg.force)
    scoring, check = written.scoring.module, written.check
    diffs = {}
    if check is not None:
        diffs["encoder"] = check.encoder_max_abs_diff
        if check.scoring_max_abs_diff is not None:
            diffs["scoring"] = check.scoring_max_abs_diff
    return ExportResult(
        out=out,
        format=cfg.format,
        files=(written.encoder.filename, *([scoring.filename] if scoring else []), "export.json"),
        model=str(model),
        model_sha256=card.sha256,
        embedding_dim=written.embedding_dim,
        scoring=next(iter(scoring.outputs)) if scoring is not None else None,
        max_abs_diff=diffs,
        runtime=check.runtime if check is not None else None,
        notes=tuple(notes),
        seconds=round(time.perf_counter() - start, 2),
    )


@dataclass(frozen=True)
class EnrollResult:
    bank: Path  # the sidecar written
    model: str
    classes: dict[str, int]  # name -> number of embeddings
    added: tuple[str, ...]
    removed: tuple[str, ...]
    threshold: dict[str, Any] | None
    notes: tuple[str, ...]
    seconds: float
    bundled: str | None = None  # the bank's own copy of its model (BANK.model.json)

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "bank": str(self.bank)}


def _bank_model(
    model: Path | None, bank: ClassBank | None, where: str, device: torch.device
) -> tuple[Method, ModelCard, Path]:
    """The model to encode or score with: ``model``, else the bank's own wherever it is
    (``bank.find_model``; ``where`` is the bank's card), else the newest run; refused when it
    is not the model the bank was encoded with."""
    if model is None and bank is not None:
        model = find_model(bank.model, Path(where))
    path = model or latest_run()
    method, card = load_model(path, device)
    if bank is not None:
        check_model(bank, card, where)
    return method, card, path


def _removed_classes(bank: ClassBank, patterns: Sequence[str], where: str) -> set[str]:
    names: set[str] = set()
    for pattern in patterns:
        matched = match_classes(bank.class_names, [pattern])
        if not matched:
            raise DataError(f"no class of {where} matches --remove {pattern!r}")
        names.update(matched)
    if len(names) == len(bank.class_names):
        raise DataError(f"--remove {list(patterns)} would remove every class of {where}")
    return names


def enroll(cfg: EnrollConfig) -> EnrollResult:
    """Create a class bank from a support folder, or change one: add classes (encoding only
    those), remove classes, (re)calibrate its reject threshold. A calibrated bank is
    recalibrated after a change, from its embeddings alone."""
    start = time.perf_counter()
    compute.set_threads(cfg.threads)
    device = resolve_device(cfg.device)
    old = load_bank(cfg.bank) if cfg.bank is not None else None
    where = str(bank_files(cfg.bank)[0]) if cfg.bank is not None else ""
    if old is None and cfg.support is None:
        raise ConfigError(
            "enroll needs --support DIR to create a bank, or --bank BANK to change one"
        )
    if old is None and cfg.remove:
        raise ConfigError("--remove needs --bank BANK, the bank to remove classes from")
    asked = cfg.calibrate or cfg.false_reject is not None
    bundle = cfg.bundle or (old is not None and old.model.bundled is not None)
    if old is not None and cfg.support is None and not cfg.remove and not asked:
        if not cfg.bundle:
            raise ConfigError(
                "nothing to do: give --support DIR, --remove NAME, --calibrate or --bundle"
            )
    out = cfg.out or cfg.bank
    if out is None:
        raise ConfigError("enroll needs --out BANK, where to write the new bank")
    if bank_exists(out) and (cfg.bank is None or bank_files(out) != bank_files(cfg.bank)):
        raise ConfigError(f"{out} already holds a bank; change it with --bank {out}")
    bank, removed, added, notes = old, (), (), []
    method, card = None, None
    if old is not None and cfg.remove:
        dropped = _removed_classes(old, cfg.remove, where)
        bank, removed = old.without(dropped), tuple(sorted(dropped))
    if cfg.support is not None:
        method, card, _ = _bank_model(cfg.model, old, where, device)
        pre = card.preprocessing
        support = filter_classes(load_support(cfg.support, pre), cfg.classes, ())
        if cfg.shots is not None:
            support = support.first_per_class(cfg.shots)
        clash = sorted(set(support.class_names) & set(bank.class_names if bank else ()))
        if clash and not cfg.replace:
            raise DataError(
                f"{len(clash)} class(es) of {cfg.support} already in {where}: "
                f"{', '.join(clash[:5])}{', ...' if len(clash) > 5 else ''}; pass --replace to "
                "encode them again from it"
            )
        new = encode_support(method, card, support, device)
        kept = set(bank.class_names) - set(clash) if bank is not None else set()
        bank = bank.without(set(clash)).merged(new) if bank is not None and kept else new
        added = support.class_names
    assert bank is not None
    if old is not None:  # the same model (checked): keep where it was recorded, and its copy
        bank = bank.with_model(old.model)
    previous = old.threshold if old is not None else None
    if asked or (previous is not None and (added or removed)):
        if method is None:
            method, card, _ = _bank_model(cfg.model, bank, where, device)
        target = cfg.false_reject
        if target is None and previous is not None:
            target = previous.target_false_reject
        if target is None:
            target = DEFAULT_FALSE_REJECT
        try:
            bank = bank.with_threshold(calibrate(bank, device, target))
        except DataError as exc:
            if asked:
                raise
            notes.append(f"reject threshold dropped: {exc}")
    if bundle:  # the model first: a bank that names its copy always has it
        if card is None:
            _, card, _ = _bank_model(cfg.model, bank, where, device)
        bank = bank.with_model(bank.model.model_copy(update={"bundled": bundle_model(card, out)}))
    sidecar = save_bank(bank, out)
    return EnrollResult(
        bank=sidecar,
        model=bank.model.path,
        classes=dict(zip(bank.class_names, bank.counts(), strict=True)),
        added=tuple(added),
        removed=removed,
        threshold=bank.threshold.model_dump() if bank.threshold else None,
        notes=tuple(notes),
        seconds=round(time.perf_counter() - start, 2),
        bundled=bank.model.bundled,
    )


@dataclass
class PredictionRun:
    """What ``predict`` labels against, and its rows: a generator that reads, embeds and
    scores the images a batch at a time as it is consumed."""

    model: str
    classes_from: str
    class_names: tuple[str, ...]
    threshold: float | None
    threshold_from: str | None
    rows: Iterator[Prediction]


def predict(
    cfg: PredictConfig,
    quiet: bool = False,
    console: Console | None = None,
    stdin: TextIO | None = None,
) -> PredictionRun:
    """Label images against a class bank (``--bank``) or a support folder (``--support``),
    streaming them in batches. The model, bank and support are loaded before it returns, so
    that their errors come before any row; unreadable images become rows with an error."""
    if (cfg.support is None) == (cfg.bank is None):
        raise ConfigError("predict needs exactly one of --support DIR or --bank BANK")
    if not cfg.inputs:
        raise ConfigError(
            "no images to label: pass image files, folders, glob patterns, or - to read paths "
            "from stdin"
        )
    compute.set_threads(cfg.threads)
    device = resolve_device(cfg.device)
    if cfg.bank is not None:
        where = str(bank_files(cfg.bank)[0])
        bank = load_bank(cfg.bank)
        method, _, model_path = _bank_model(cfg.model, bank, where, device)
    else:
        where = str(cfg.support)
        method, card, model_path = _bank_model(cfg.model, None, where, device)
        support = load_support(cfg.support, card.preprocessing)
        bank = encode_support(method, card, support, device)
    threshold, threshold_from = cfg.reject_below, "--reject-below"
    if threshold is None and bank.threshold is not None:
        threshold, threshold_from = bank.threshold.value, f"calibrated in {where}"
    paths: Sequence[str] | Iterator[str] = expand_inputs(cfg.inputs, stdin)
    if "-" not in cfg.inputs:  # no stdin: expand now, for the progress bar's total
        paths = list(paths)
    scorer = BankScorer(method, bank, device)
    console = console or Console(stderr=True)

    def rows() -> Iterator[Prediction]:
        with progress_bar(console, disable=quiet or not console.is_terminal) as progress:
            total = len(paths) if isinstance(paths, list) else None  # stdin: not known
            task = progress.add_task("predict", total=total)
            yield from predict_paths(
                scorer,
                paths,
                bank.preprocessing,
                cfg.batch_size,
                cfg.top_k,
                threshold,
                lambda n: progress.advance(task, n),
            )

    return PredictionRun(
        model=str(model_path),
        classes_from=where,
        class_names=bank.class_names,
        threshold=threshold,
        threshold_from=threshold_from if threshold is not None else None,
        rows=rows(),
    )


def info(path: Path | None) -> ModelCard | BankCard:
    """The card of a saved model or class bank, its weights' (or embeddings') hash and its
    own fields' checked (a CheckpointError otherwise)."""
    if path is not None and is_bank(path):
        card: ModelCard | BankCard = read_bank_card(path)
    else:
        card = read_card(path or latest_run())
    load_tensors(card.weights_path, card.sha256)
    return card
