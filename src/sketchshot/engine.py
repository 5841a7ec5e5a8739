"""The core behind every command. The CLI builds a ``Config``, calls one function here and
renders what it returns; nothing here imports typer."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError
from rich.console import Console

from sketchshot.checkpoint import load_model, read_sidecar
from sketchshot.config import Config, DataConfig, Split
from sketchshot.data import SketchDataset, load_dataset
from sketchshot.data.batches import UniqueClassBatchSampler, shuffled_batches
from sketchshot.data.dataset import with_rotations
from sketchshot.data.episodes import Episode, EpisodeSampler
from sketchshot.data.folder import decode_sketch, load_image_folder
from sketchshot.distributed import DistContext, resolve_device
from sketchshot.encoders import ENCODERS, create_encoder, initialise_encoder
from sketchshot.errors import CheckpointError, ConfigError, DataError, SketchshotError
from sketchshot.evaluation import embed, evaluate_dataset
from sketchshot.methods import METHODS, create_method, method_arguments
from sketchshot.runs import RunResult, latest_run, model_spec, train_run

__all__ = ["RunResult", "evaluate", "finetune", "info", "predict", "pretrain"]


def load_split(cfg: DataConfig, image_size: int, split: Split) -> SketchDataset:
    """One split of the configured data (the built-in glyphs are generated once per process)."""
    return load_dataset(cfg, image_size, split)


def _optional_split(cfg: DataConfig, image_size: int, split: Split) -> SketchDataset | None:
    try:
        return load_split(cfg, image_size, split)
    except DataError:
        return None


def _check_kind(name: str, kind: str) -> None:
    if METHODS.get(name).kind != kind:
        valid = ", ".join(n for n in METHODS.names() if METHODS.get(n).kind == kind)
        what = {"ssl": "self-supervised", "fewshot": "few-shot"}[kind]
        raise ConfigError(f"{name!r} is not a {what} method; choose one of: {valid}")


def pretrain(
    cfg: Config,
    out: Path | None = None,
    resume: Path | None = None,
    quiet: bool = False,
    console: Console | None = None,
) -> RunResult:
    """Self-supervised pretraining of an encoder on unlabelled images of the train split."""
    p = cfg.pretrain
    _check_kind(p.method, "ssl")
    torch.manual_seed(cfg.seed)
    image_size = cfg.data.image_size or ENCODERS.get(cfg.encoder.name).default_image_size
    train = load_split(cfg.data, image_size, "train")
    if len(train) < 2:
        raise DataError(f"pretraining needs at least 2 images, {train.origin} has {len(train)}")
    spec = model_spec(p.method, cfg.encoder.name, image_size, **method_arguments(p.method, p))
    encoder = create_encoder(cfg.encoder.name, image_size=image_size)
    if resume is None:  # before the method copies it (BYOL's target starts as the encoder)
        spec["init"] = initialise_encoder(encoder, cfg.encoder.init)
    method = create_method(p.method, encoder, **spec["method_args"])
    unique = UniqueClassBatchSampler(train.labels, p.batch_size) if p.unique_class_batches else None

    def plan(ctx: DistContext) -> tuple[Any, int]:
        batch_size = max(2, min(p.batch_size, len(train) // ctx.world_size))
        steps = max(1, len(train) // (batch_size * ctx.world_size))

        def batches(rng: np.random.Generator) -> Iterator[torch.Tensor]:
            if unique is not None:
                indices = unique.batches(rng, ctx.rank, ctx.world_size)
            else:
                indices = shuffled_batches(len(train), batch_size, rng, ctx.rank, ctx.world_size)
            for index in indices:
                yield train.floats(torch.from_numpy(index))

        return batches, steps

    val = _optional_split(cfg.data, image_size, "val")
    console = console or Console(stderr=True)
    return train_run(
        "pretrain", cfg, p, method, spec, train, val, plan, 1, out, resume, quiet, console
    )


def resolve_init(init: str) -> Path | None:
    """The run folder to start a fine-tune from; None for 'scratch' and 'imagenet'."""
    if init in ("scratch", "imagenet"):
        return None
    if init == "latest":
        return latest_run("ssl")
    return Path(init)


def finetune(
    cfg: Config,
    out: Path | None = None,
    resume: Path | None = None,
    quiet: bool = False,
    console: Console | None = None,
) -> RunResult:
    """Episodic N-way K-shot training, from scratch or from a pretrained (or fine-tuned) run."""
    console = console or Console(stderr=True)
    f = cfg.finetune
    _check_kind(f.method, "fewshot")
    torch.manual_seed(cfg.seed)
    init = resolve_init(f.init) if resume is None else None
    encoder_name, image_size, init_state = cfg.encoder.name, cfg.data.image_size, None
    if init is not None:
        source, meta = load_model(init)
        encoder_name = meta["model"]["encoder"]
        saved_size = meta["preprocessing"]["image_size"]
        if image_size is not None and image_size != saved_size:
            raise ConfigError(f"--image-size {image_size} differs from {init}'s {saved_size}")
        image_size = saved_size
        init_state = source.encoder.state_dict()
    image_size = image_size or ENCODERS.get(encoder_name).default_image_size
    # what --init decided belongs in the saved config, so that --resume rebuilds the same model
    cfg = cfg.model_copy(
        update={
            "encoder": cfg.encoder.model_copy(update={"name": encoder_name}),
            "data": cfg.data.model_copy(update={"image_size": image_size}),
        }
    )
    train = load_split(cfg.data, image_size, "train")
    if f.rotation_classes:
        train = with_rotations(train)
    sampler = EpisodeSampler(train.labels, f.n_way, f.n_shot, f.n_query, train.class_names)
    spec = model_spec(f.method, encoder_name, image_size, **method_arguments(f.method, f))
    encoder = create_encoder(encoder_name, image_size=image_size)
    method = create_method(f.method, encoder, **spec["method_args"])
    if init_state is not None:
        method.encoder.load_state_dict(init_state)
        spec["init"] = str(init)
    elif resume is None:
        encoder_init = "imagenet" if f.init == "imagenet" else cfg.encoder.init
        spec["init"] = initialise_encoder(method.encoder, encoder_init)
    if f.freeze_encoder and not any(
        not name.startswith("encoder.") for name, _ in method.named_parameters()
    ):
        raise ConfigError(f"--freeze-encoder leaves {f.method} nothing to train: it has no head")
    if not quiet and spec.get("init", "random") != "random":
        console.print(f"encoder initialised from {spec['init']}")

    if f.freeze_encoder:
        method.encoder.requires_grad_(False)

    def plan(ctx: DistContext) -> tuple[Any, int]:
        cache: list[torch.Tensor] = []

        def take(index: np.ndarray) -> torch.Tensor:
            if not f.freeze_encoder:
                return train.images[torch.from_numpy(index)].float().div_(255.0)
            if not cache:  # embed once, on first use: after --resume has restored the weights
                cache.append(embed(method, train.images, ctx.device).cpu())
            return cache[0][torch.from_numpy(index)]

        def batches(rng: np.random.Generator) -> Iterator[Episode]:
            rng = np.random.default_rng([int(rng.integers(2**31)), ctx.rank])  # own episodes
            while True:
                ep = sampler.sample(rng)
                yield Episode(
                    take(ep.support), ep.support_labels, take(ep.query), ep.query_labels, f.n_way
                )

        return batches, f.episodes_per_epoch

    val = _optional_split(cfg.data, image_size, "val")
    return train_run(
        "finetune", cfg, f, method, spec, train, val, plan, f.n_shot, out, resume, quiet, console
    )


@dataclass
class EvalResult:
    model: str
    model_sha256: str
    data: str
    split: str
    n_classes: int
    n_images: int
    n_way: int
    n_shot: int
    n_query: int
    episodes: int
    seed: int
    accuracy: float
    ci95: float
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def evaluate(
    cfg: Config, model: Path | None = None, quiet: bool = False, console: Console | None = None
) -> EvalResult:
    """Mean accuracy and 95% CI of N-way K-shot episodes over one split of the data."""
    start = time.perf_counter()
    model = model or latest_run()
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    method, meta = load_model(model, device)
    e = cfg.evaluate
    dataset = load_split(cfg.data, meta["preprocessing"]["image_size"], e.split)
    scores = evaluate_dataset(
        method, dataset, device, e.n_way, e.n_shot, e.n_query, e.episodes, cfg.seed
    )
    return EvalResult(
        model=str(model),
        model_sha256=meta["sha256"],
        data=dataset.origin,
        split=e.split,
        n_classes=len(dataset.class_names),
        n_images=len(dataset),
        n_way=e.n_way,
        n_shot=e.n_shot,
        n_query=e.n_query,
        episodes=e.episodes,
        seed=cfg.seed,
        accuracy=scores.mean,
        ci95=scores.ci95,
        seconds=round(time.perf_counter() - start, 2),
    )


def saved_config(model: Path | None) -> Config:
    """The resolved config a model was trained with (the base that evaluate's options refine)."""
    meta = read_sidecar(model or latest_run())
    try:
        return Config.model_validate(meta.get("config", {}))
    except ValidationError as exc:
        raise CheckpointError(
            f"{meta['_sidecar']}: its config does not fit this sketchshot ({exc.error_count()} "
            "problem(s)); pass --data and --config explicitly"
        ) from None


@dataclass
class Prediction:
    path: str
    label: str | None
    confidence: float | None
    scores: dict[str, float] = field(default_factory=dict)
    error: str | None = None


def predict(
    model: Path | None,
    support: Path,
    images: Sequence[Path],
    device_name: str = "auto",
    top_k: int = 3,
) -> list[Prediction]:
    """Label each image by the model's score against the classes of a support folder."""
    model = model or latest_run()
    device = resolve_device(device_name)
    method, meta = load_model(model, device)
    pre = meta["preprocessing"]
    support_set = load_image_folder(support, pre["image_size"], pre["invert"])
    n_way = len(support_set.class_names)
    with torch.no_grad():
        support_emb = embed(method, support_set.images, device)
        labels = support_set.labels.to(device)
        out: list[Prediction] = []
        readable: list[tuple[Path, np.ndarray]] = []
        for path in images:
            try:
                readable.append(
                    (
                        path,
                        decode_sketch(
                            Path(path).read_bytes(), pre["image_size"], pre["invert"], str(path)
                        ),
                    )
                )
            except FileNotFoundError:
                out.append(Prediction(str(path), None, None, error=f"no such file: {path}"))
            except (SketchshotError, OSError) as exc:
                out.append(Prediction(str(path), None, None, error=str(exc)))
        if readable:
            batch = torch.from_numpy(np.stack([a for _, a in readable])).unsqueeze(1)
            query = embed(method, batch, device)
            probs = method.probabilities(method.score(support_emb, labels, query, n_way)).cpu()
            for (path, _), p in zip(readable, probs, strict=True):
                top = p.topk(min(top_k, n_way))
                scores = {
                    support_set.class_names[i]: round(float(v), 4)
                    for v, i in zip(top.values, top.indices, strict=True)
                }
                best = int(top.indices[0])
                out.append(
                    Prediction(
                        str(path), support_set.class_names[best], float(top.values[0]), scores
                    )
                )
    order = {str(p): i for i, p in enumerate(images)}
    return sorted(out, key=lambda r: order.get(r.path, 0))


def info(model: Path | None) -> dict[str, Any]:
    meta = read_sidecar(model or latest_run())
    meta.pop("_sidecar", None)
    return meta
