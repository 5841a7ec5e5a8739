"""The core behind every command. The CLI builds a ``Config``, calls one function here and
renders what it returns; nothing here imports typer."""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from sketchshot.checkpoint import load_model, read_sidecar, save_model
from sketchshot.config import Config, DataConfig, Split, to_toml
from sketchshot.data import SketchDataset, load_dataset
from sketchshot.data.dataset import CONVENTION, PIXEL_MEAN, PIXEL_STD
from sketchshot.data.episodes import Episode, EpisodeSampler
from sketchshot.data.folder import decode_sketch, load_image_folder
from sketchshot.encoders import ENCODERS, create_encoder, initialise_encoder
from sketchshot.errors import CheckpointError, ConfigError, DataError, SketchshotError
from sketchshot.evaluation import embed, evaluate_dataset, score_episodes
from sketchshot.methods import METHODS, Method, create_method, method_arguments
from sketchshot.training import FitResult, LoopSettings, fit, resolve_device

RUNS = Path("runs")


@dataclass
class RunResult:
    run_dir: Path
    method: str
    fit: FitResult
    metrics: dict[str, Any] = field(default_factory=dict)


@functools.lru_cache(maxsize=4)
def _cached_glyphs(cfg: DataConfig, image_size: int) -> SketchDataset:
    return load_dataset(cfg, image_size)


def load_split(cfg: DataConfig, image_size: int, split: Split) -> SketchDataset:
    """One split of the configured data; the built-in glyphs are generated once per process."""
    from sketchshot.data.splits import take_split

    if cfg.source == "builtin":
        return take_split(_cached_glyphs(cfg, image_size), cfg, split)
    return load_dataset(cfg, image_size, split)


def _set_threads_and_seed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


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


def _model_spec(method_name: str, encoder_name: str, image_size: int, **method_args: Any) -> dict:
    return {
        "method": method_name,
        "kind": METHODS.get(method_name).kind,
        "method_args": method_args,
        "encoder": encoder_name,
        "encoder_args": {"image_size": image_size},
    }


def _sidecar(spec: dict, cfg: Config, image_size: int, dataset: SketchDataset) -> dict[str, Any]:
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


def _validator(
    method: Method,
    val: SketchDataset | None,
    n_shot: int,
    episodes: int,
    device: torch.device,
    seed: int,
):
    """5-way (or fewer) validation episodes on held-out classes, scored on cached embeddings."""
    if val is None or episodes == 0 or len(val.class_names) < 2:
        return None
    n_way = min(5, len(val.class_names))
    n_query = min(5, int(val.counts().min()) - n_shot)
    if n_query < 1:  # validation classes too small for an episode: train without it
        return None

    def validate(m: Method) -> dict[str, float]:
        scores = score_episodes(
            m, embed(m, val.images, device), val.labels, n_way, n_shot, n_query, episodes, seed
        )
        return {"val_acc": scores.mean}

    return validate


def _optional_split(cfg: DataConfig, image_size: int, split: Split) -> SketchDataset | None:
    try:
        return load_split(cfg, image_size, split)
    except DataError:
        return None


def _train(
    command: str,
    cfg: Config,
    method: Method,
    spec: dict,
    train: SketchDataset,
    batches,
    steps_per_epoch: int,
    epochs: int,
    section: Any,
    out: Path | None,
    resume: Path | None,
    validate,
    quiet: bool,
    console: Console,
) -> RunResult:
    """What pretrain and finetune share: the run folder, ``fit``, and the saved model."""
    run_dir = resume if resume is not None else new_run_dir(out, command, spec["method"])
    device = resolve_device(cfg.device)
    image_size = spec["encoder_args"]["image_size"]
    sidecar = _sidecar(spec, cfg, image_size, train)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.toml").write_text(to_toml(cfg), encoding="utf-8")

    def save(stem: str, metrics: dict[str, float]) -> None:
        save_model(run_dir / stem, method, sidecar | {"metrics": metrics})

    settings = LoopSettings(
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        optim=section.optim,
        seed=cfg.seed,
        max_minutes=section.max_minutes,
        checkpoint_every=section.checkpoint_every,
        monitor="val_acc" if validate else "loss",
    )
    if not quiet:
        console.print(
            f"[bold]{command}[/] {spec['method']} on {train.origin}: {len(train)} images, "
            f"{len(train.class_names)} classes, {spec['encoder']} at {image_size}px, "
            f"device {device} -> {run_dir}"
        )
    result = fit(
        method,
        batches,
        settings,
        run_dir,
        device,
        save,
        validate,
        resume=resume is not None,
        console=console,
        quiet=quiet,
        label=command,
    )
    metrics = {
        "epochs": result.epochs,
        "steps": result.steps,
        "seconds": round(result.seconds, 1),
        "images_per_s": round(result.images_per_s, 1),
        "stopped": result.stopped,
        "best": result.best,
        "last": result.history[-1] if result.history else {},
    }
    save("model", metrics)
    return RunResult(run_dir, spec["method"], result, metrics)


def pretrain(
    cfg: Config,
    out: Path | None = None,
    resume: Path | None = None,
    quiet: bool = False,
    console: Console | None = None,
) -> RunResult:
    """Self-supervised pretraining of an encoder on unlabelled images of the train split."""
    console = console or Console(stderr=True)
    p = cfg.pretrain
    method_cls = METHODS.get(p.method)
    if method_cls.kind != "ssl":
        raise ConfigError(
            f"{p.method!r} is not a self-supervised method; choose one of: {_names('ssl')}"
        )
    _set_threads_and_seed(cfg.seed)
    image_size = cfg.data.image_size or ENCODERS.get(cfg.encoder.name).default_image_size
    train = load_split(cfg.data, image_size, "train")
    if len(train) < 2:
        raise DataError(f"pretraining needs at least 2 images, {train.origin} has {len(train)}")
    batch_size = min(p.batch_size, len(train))
    spec = _model_spec(p.method, cfg.encoder.name, image_size, **method_arguments(p.method, p))
    method = create_method(
        p.method, create_encoder(cfg.encoder.name, image_size=image_size), **spec["method_args"]
    )
    if resume is None:
        spec["init"] = initialise_encoder(method.encoder, cfg.encoder.init)
    steps = max(1, len(train) // batch_size)

    def batches(rng: np.random.Generator) -> Iterator[torch.Tensor]:
        order = torch.from_numpy(rng.permutation(len(train)))
        for i in range(steps):
            yield train.floats(order[i * batch_size : (i + 1) * batch_size])

    val = _optional_split(cfg.data, image_size, "val")
    validate = _validator(method, val, 1, 200, resolve_device(cfg.device), cfg.seed)
    return _train(
        "pretrain",
        cfg,
        method,
        spec,
        train,
        batches,
        steps,
        p.epochs,
        p,
        out,
        resume,
        validate,
        quiet,
        console,
    )


def _names(kind: str) -> str:
    return ", ".join(n for n in METHODS.names() if METHODS.get(n).kind == kind)


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
    if METHODS.get(f.method).kind != "fewshot":
        raise ConfigError(
            f"{f.method!r} is not a few-shot method; choose one of: {_names('fewshot')}"
        )
    _set_threads_and_seed(cfg.seed)
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
    train = load_split(cfg.data, image_size, "train")
    sampler = EpisodeSampler(train.labels, f.n_way, f.n_shot, f.n_query, train.class_names)
    spec = _model_spec(f.method, encoder_name, image_size, **method_arguments(f.method, f))
    method = create_method(
        f.method, create_encoder(encoder_name, image_size=image_size), **spec["method_args"]
    )
    if init_state is not None:
        method.encoder.load_state_dict(init_state)
        spec["init"] = str(init)
    elif resume is None:
        encoder_init = "imagenet" if f.init == "imagenet" else cfg.encoder.init
        spec["init"] = initialise_encoder(method.encoder, encoder_init)
    if not quiet and spec.get("init", "random") != "random":
        console.print(f"encoder initialised from {spec['init']}")

    def batches(rng: np.random.Generator) -> Iterator[Episode]:
        while True:
            ep = sampler.sample(rng)
            yield Episode(
                train.floats(torch.from_numpy(ep.support)),
                ep.support_labels,
                train.floats(torch.from_numpy(ep.query)),
                ep.query_labels,
                f.n_way,
            )

    val = _optional_split(cfg.data, image_size, "val")
    validate = _validator(
        method, val, f.n_shot, f.val_episodes, resolve_device(cfg.device), cfg.seed
    )
    return _train(
        "finetune",
        cfg,
        method,
        spec,
        train,
        batches,
        f.episodes_per_epoch,
        f.epochs,
        f,
        out,
        resume,
        validate,
        quiet,
        console,
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
    _set_threads_and_seed(cfg.seed)
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
    except Exception:  # an older or hand-edited sidecar: fall back to defaults
        return Config()


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
            probs = method.score(support_emb, labels, query, n_way).softmax(dim=1).cpu()
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


__all__ = ["evaluate", "finetune", "info", "predict", "pretrain"]
