"""Pairwise ranking, the core behind ``finetune --method pairwise`` and behind ``evaluate`` and
``predict`` of a pairwise model: labelled pairs of image files (``data.pairs``), split by
group, trained through the one training loop either end to end (images through the encoder at
every step, with views and ``--freeze none|partial|full``) or on frozen features
(``--freeze-encoder``: every feature set's features of each image computed once and cached on
disk, then only the head trains). The run folder holds the config, the best weights (by the
val log-loss, with early stopping by ``--patience``) and ``results.json``: accuracy, log-loss
and counts of pairs, images and groups of each split."""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from sketchshot import __version__, compute
from sketchshot.card import ModelCard, Preprocessing, finite
from sketchshot.checkpoint import atomic_write, load_model
from sketchshot.config import Config, DataConfig, FinetuneConfig, PredictConfig
from sketchshot.data.batches import shuffled_batches
from sketchshot.data.pairs import (
    PairSplit,
    PairTable,
    decode_images,
    file_sha256s,
    read_pairs,
    split_counts,
    split_pairs,
)
from sketchshot.data.views import SketchAugment
from sketchshot.distributed import DistContext, resolve_device
from sketchshot.encoders import Encoder, create_encoder, encoder_arguments, initialise_encoder
from sketchshot.encoders.ensemble import EnsembleEncoder
from sketchshot.encoders.feature_sets import FeatureStack
from sketchshot.errors import ConfigError, DataError
from sketchshot.evaluation import embed, one_thread
from sketchshot.feature_cache import FeatureCache, default_cache_dir, feature_key, state_digest
from sketchshot.methods import Method, create_method
from sketchshot.methods.pairwise import PairBatch, PairwiseRanker, pair_accuracy, pairwise_loss
from sketchshot.progress import progress_bar
from sketchshot.runs import RunResult, TrainingJob, latest_run, model_spec, train_run
from sketchshot.training import BatchSource, Validator

ENCODE_BATCH = 128  # images per encoder call when features are computed
SCORE_BATCH = 4096  # pairs per head call when they are scored
PAIR_OPTIONS = {"pairs": "--pairs", "min_agreement": "--min-agreement",
                "min_reviewers": "--min-reviewers"}  # fmt: skip
# options of image sources, which pairs (image files named in a CSV) do not read
SOURCE_OPTIONS = {
    "source": "--data", "classes": "--classes", "exclude_classes": "--exclude-classes",
    "split_by": "--split-by", "small_classes": "--small-classes",
    "max_per_class": "--max-per-class", "line_width": "--line-width", "on_error": "--on-error",
    "recognized": "--recognized", "countries": "--countries", "trust_npz": "--trust-npz",
}  # fmt: skip


def refuse_pairs(cfg: Config, command: str) -> None:
    """Pairs options are for ``finetune --method pairwise``: a ``ConfigError`` for ``command``
    (a saved config with them is a pairwise model's, as evaluate reads it)."""
    given = [flag for key, flag in PAIR_OPTIONS.items() if getattr(cfg.data, key) is not None]
    if given:
        raise ConfigError(
            f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} to finetune "
            f"--method pairwise, not to {command}"
        )


def same_pairs(a: str | None, b: str | None) -> bool:
    """Whether two ``--pairs`` values name the same CSV."""
    if a is None or b is None:
        return a == b
    return a == b or Path(a).resolve() == Path(b).resolve()


def sketch_encoder(method: Method, where: Path | str) -> Encoder:
    """The sketch encoder of a saved model, to fine-tune from: its encoder, or a pairwise
    model's own sketch encoder (a ``ConfigError`` when its feature sets have none, or for an
    ensemble, which has no one encoder to start from)."""
    encoder = method.encoder
    if isinstance(encoder, EnsembleEncoder):
        raise ConfigError(
            f"--init {where}: an ensemble of {len(encoder.members)} runs has no one encoder to "
            "fine-tune from; start from one of its runs (sketchshot info lists them)"
        )
    if isinstance(encoder, FeatureStack):
        if encoder.sketch is None:
            raise ConfigError(
                f"--init {where}: a pairwise model whose features ({', '.join(encoder.sets)}) "
                "hold no sketch encoder to start from"
            )
        return encoder.sketch
    return encoder


def refuse_unused(cfg: Config) -> None:
    """The options that pairwise training would ignore, refused by name (a ``ConfigError``)."""
    f, s, data = cfg.finetune, cfg.finetune.method, cfg.data
    if data.pairs is None:
        raise ConfigError(
            "finetune --method pairwise needs --pairs CSV: labelled pairs with the header "
            "image_a,image_b,label"
        )
    defaults, fine = DataConfig(), FinetuneConfig()
    given = [flag for key, flag in SOURCE_OPTIONS.items()
             if getattr(data, key) != getattr(defaults, key)]  # fmt: skip
    given += [f"--{key.replace('_', '-')}" for key in ("val_episodes", "val_ways")
              if getattr(f, key) != getattr(fine, key)]  # fmt: skip
    if given:
        raise ConfigError(
            f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to --method "
            "pairwise: its images are the files --pairs names, validated by the val pairs' "
            "log-loss"
        )
    if f.views.on_strokes:
        raise ConfigError(
            "--stroke-jitter, --stroke-drop, --partial-p and --line-width-jitter work on "
            "strokes; the pairs' images are image files"
        )
    if f.freeze_encoder and s.freeze != "none":
        raise ConfigError(
            f"--freeze {s.freeze} sets what trains end to end; --freeze-encoder trains the head "
            "alone, on cached features"
        )
    if not f.freeze_encoder and "encoder" not in s.features:
        raise ConfigError(
            f"--features {' '.join(s.features)} holds no sketch encoder to train end to end; "
            "add 'encoder', or pass --freeze-encoder to train the head on cached features"
        )


class CachedFeatures:
    """The features [N, D] of a table's image files through a frozen ``FeatureStack``,
    computed on first use (after ``--resume`` has restored the weights): each feature set's
    from the cache where it holds them, the rest decoded, encoded and added to it. ``report``
    then says how many were cached and how long it took."""

    def __init__(
        self,
        stack: FeatureStack,
        paths: tuple[Path, ...],
        preprocessing: Preprocessing,
        cache: FeatureCache,
        console: Console,
        quiet: bool,
    ) -> None:
        self.stack, self.paths, self.pre, self.cache = stack, paths, preprocessing, cache
        self.console, self.quiet = console, quiet
        self.features: torch.Tensor | None = None
        self.report: dict[str, Any] = {}

    def get(self, device: torch.device) -> torch.Tensor:
        if self.features is None:
            start = time.perf_counter()
            self.features, counts = self._compute(device)
            seconds = time.perf_counter() - start
            self.report = {"cache": str(self.cache.root), "seconds": round(seconds, 2), **counts}
            if not self.quiet:
                self.console.print(
                    f"features of {len(self.paths)} images ({', '.join(self.stack.sets)}): "
                    f"{counts['cached']} cached, {counts['computed']} computed, in "
                    f"{seconds:.1f} s (cache {self.cache.root})",
                    highlight=False,
                    soft_wrap=True,
                )
        return self.features

    def _compute(self, device: torch.device) -> tuple[torch.Tensor, dict[str, int]]:
        stack, pre = self.stack, self.pre
        hashes = file_sha256s(self.paths)
        keys = {
            s: feature_key(
                s, state_digest(stack.depends_on(s)), pre.image_size, pre.invert, pre.fit
            )
            for s in stack.sets
        }
        found = {s: self.cache.load(keys[s], hashes) for s in stack.sets}
        # images missing from a set, grouped so that sets missing the same ones run together
        missing: dict[tuple[int, ...], list[str]] = {}
        for s in stack.sets:
            need = tuple(i for i, h in enumerate(hashes) if h not in found[s])
            if need:
                missing.setdefault(need, []).append(s)
        todo = sorted(set().union(*missing)) if missing else []
        if todo:
            images = decode_images(
                [self.paths[i] for i in todo], pre.image_size, pre.invert, fit=pre.fit
            )
            row = {image: n for n, image in enumerate(todo)}
            with progress_bar(self.console, disable=self.quiet) as bar:
                task = bar.add_task("features", total=sum(len(n) for n in missing))
                for need, sets in missing.items():
                    rows = torch.tensor([row[i] for i in need])
                    computed = self._encode(images[rows], sets, device, bar, task)
                    for s in sets:
                        new = {hashes[i]: computed[s][j] for j, i in enumerate(need)}
                        about = {"feature_set": s, "image_size": str(pre.image_size),
                                 "invert": pre.invert, "fit": pre.fit}  # fmt: skip
                        self.cache.save(keys[s], new, about)
                        found[s].update(new)
        features = torch.cat(
            [torch.stack([found[s][h] for h in hashes]).float() for s in stack.sets], dim=1
        )
        return features, {"cached": len(hashes) - len(todo), "computed": len(todo)}

    @torch.no_grad()
    def _encode(
        self, images: torch.Tensor, sets: list[str], device: torch.device, bar: Any, task: Any
    ) -> dict[str, torch.Tensor]:
        was_training = self.stack.training
        self.stack.eval()
        out: dict[str, list[torch.Tensor]] = {s: [] for s in sets}
        for start in range(0, images.shape[0], ENCODE_BATCH):
            chunk = images[start : start + ENCODE_BATCH].to(device).float().div_(255.0)
            found = self.stack.by_set(chunk, only=sets)
            for s in sets:
                out[s].append(found[s].float().cpu())
            bar.advance(task, chunk.shape[0])
        self.stack.train(was_training)
        return {s: torch.cat(v) for s, v in out.items()}


@torch.no_grad()
def score_pairs(
    method: PairwiseRanker, features: torch.Tensor, a: np.ndarray, b: np.ndarray
) -> torch.Tensor:
    """Logits [P] (on the CPU) of pairs ``a``, ``b`` [P] (rows of ``features`` [N, D], the
    encoder's features of the images), by the head in eval mode."""
    was_training = method.training
    method.eval()
    out = []
    for start in range(0, len(a), SCORE_BATCH):
        ia = torch.from_numpy(a[start : start + SCORE_BATCH]).to(features.device)
        ib = torch.from_numpy(b[start : start + SCORE_BATCH]).to(features.device)
        out.append(method.logits(features[ia], features[ib]).float().cpu())
    method.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def pair_metrics(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Accuracy (of the pairs that are not ties), its 95% confidence interval (normal
    approximation), log-loss, and the numbers of pairs and of pairs that are not ties."""
    right, decided = pair_accuracy(logits, targets)
    accuracy = right / decided if decided else math.nan
    ci95 = 1.96 * math.sqrt(accuracy * (1 - accuracy) / decided) if decided else math.nan
    return {
        "accuracy": accuracy,
        "ci95": ci95,
        "log_loss": float(pairwise_loss(logits, targets)) if len(logits) else math.nan,
        "pairs": int(len(logits)),
        "decided": decided,
    }


def encoded(method: Method, images: torch.Tensor, rows: np.ndarray, device: Any) -> torch.Tensor:
    """Features [N, D] (on ``device``) of ``images`` [N, 1, S, S] through the method's encoder,
    only the ``rows`` asked for computed (the others zero)."""
    out = torch.zeros(images.shape[0], method.encoder.embedding_dim, device=device)
    if len(rows):
        index = torch.from_numpy(rows)
        out[index.to(device)] = embed(method, images[index], device).float()
    return out


def finetune_pairs(
    cfg: Config,
    init: Path | None,
    init_state: dict[str, torch.Tensor] | None,
    out: Path | None = None,
    resume: Path | None = None,
    quiet: bool = False,
    console: Console | None = None,
) -> RunResult:
    """Train a pairwise ranker on ``cfg.data.pairs`` (after ``engine.finetune`` decided the
    encoder, image size and ``init_state``, the weights of the run ``init`` to start from):
    end to end, or with ``freeze_encoder`` on cached features; then score every split with
    the best weights into ``results.json``."""
    console = console or Console(stderr=True)
    refuse_unused(cfg)
    f, s, data = cfg.finetune, cfg.finetune.method, cfg.data
    image_size = data.image_size
    assert image_size is not None and data.pairs is not None
    pre = Preprocessing(image_size=image_size, invert=data.invert, fit=data.fit)
    encoder_args = encoder_arguments(cfg.encoder, image_size)
    table = read_pairs(data.pairs, data.min_agreement, data.min_reviewers)
    assert table.labels is not None
    splits = split_pairs(table, data)
    counts = split_counts(table, splits)
    train_ix, val_ix = splits["train"], splits["val"]
    if len(train_ix) < 2:
        raise DataError(
            f"the train split of {data.pairs} has {len(train_ix)} pair(s); it needs 2 or more "
            f"(groups by {table.grouped_by}: lower the val and test --split-fractions)"
        )
    labels = torch.from_numpy(table.labels)
    method = create_method("pairwise", create_encoder(cfg.encoder.name, **encoder_args), s)
    assert isinstance(method, PairwiseRanker)
    stack, started, notes = method.encoder, "random", [pairs_note(table, counts)]
    if init_state is not None:
        if stack.sketch is None:
            raise ConfigError(
                f"--init {init} gives a sketch encoder, and --features has no 'encoder' to use it"
            )
        stack.sketch.load_state_dict(init_state)
        started = str(init)
    elif resume is None and stack.sketch is not None:
        encoder_init = "imagenet" if f.init == "imagenet" else cfg.encoder.init
        started = initialise_encoder(stack.sketch, encoder_init)
    if resume is None and stack.resnet is not None:
        notes.append(f"resnet50 feature sets from {stack.resnet.load_imagenet(s.resnet_weights)}")
    if started != "random":
        notes.append(f"encoder initialised from {started}")
    if f.freeze_encoder:
        stack.requires_grad_(False)
        # fixed features: the head's BatchNorm keeps their exact mean and variance over the
        # batches seen (a cumulative average), not a lagging EMA that a short run leaves far
        # from them, which would make eval-mode log-loss disagree with the training loss
        method.norm.momentum = None
        cache = FeatureCache(Path(s.feature_cache) if s.feature_cache else default_cache_dir())
        frozen = CachedFeatures(stack, table.images, pre, cache, console, quiet)
        images = None
        if resume is None:  # now, so that the loop's epochs time training alone; a resumed
            frozen.get(resolve_device(cfg.device))  # run computes them once restored
    else:
        images = decode_images(table.images, image_size, data.invert, fit=data.fit)
    augment = SketchAugment.from_config(f.views)

    def features(device: torch.device) -> torch.Tensor:
        """Every image's features [N, D] on ``device``: cached ones, or the encoder's now."""
        if f.freeze_encoder:
            return frozen.get(device).to(device)
        return encoded(method, images, np.arange(len(table.images)), device)  # type: ignore[arg-type]

    def batches(ctx: DistContext) -> BatchSource:
        n = len(train_ix)
        batch_size = max(2, min(s.batch_size, n // ctx.world_size))
        steps = max(1, n // (batch_size * ctx.world_size))

        def side(rows: np.ndarray) -> torch.Tensor:
            index = torch.from_numpy(rows)
            if images is None:  # features [B, D] of the frozen stack
                return frozen.get(ctx.device)[index]
            return images[index].float().div_(255.0)

        def epoch(rng: np.random.Generator) -> Iterator[PairBatch]:
            for index in shuffled_batches(n, batch_size, rng, ctx.rank, ctx.world_size):
                pairs = train_ix[index]
                yield PairBatch(side(table.a[pairs]), side(table.b[pairs]), labels[pairs])

        def views(batch: PairBatch) -> PairBatch:
            if batch.a.dim() == 2:
                return batch
            return PairBatch(augment(batch.a), augment(batch.b), batch.targets)

        return BatchSource(epoch, steps, views)

    def validator(device: Any) -> tuple[Validator | None, str]:
        if not len(val_ix):
            return None, "loss"
        rows = table.images_of(val_ix)

        def validate(m: Method) -> dict[str, float]:
            assert isinstance(m, PairwiseRanker)
            feats = frozen.get(device).to(device) if images is None else encoded(
                m, images, rows, device
            )  # fmt: skip
            logits = score_pairs(m, feats, table.a[val_ix], table.b[val_ix])
            scores = pair_metrics(logits, labels[val_ix])
            return {"val_loss": scores["log_loss"], "val_acc": scores["accuracy"]}

        return validate, "val_loss"

    job = TrainingJob(
        command="finetune",
        cfg=cfg,
        section=f,
        method=method,
        model=model_spec(s, cfg.encoder.name, image_size, started, encoder_args),
        preprocessing=pre,
        train=PairSplit(table.origin, train_ix, counts["train"]["images"]),
        val=None,
        batches=batches,
        validator=validator,
        notes=tuple(notes),
    )
    # a head on cached features is a stream of tiny ops, which one thread runs faster than a
    # pool that waits on itself: 0.05 s against 1.0 s an epoch (750 pairs) on 2 busy cores
    on_cpu = f.freeze_encoder and resolve_device(cfg.device).type == "cpu"
    with one_thread() if on_cpu else contextlib.nullcontext():
        result = train_run(job, out, resume, quiet, console)
    device = next(method.parameters()).device
    all_features = features(device)
    scored = {}
    for split, ix in splits.items():
        if len(ix):
            logits = score_pairs(method, all_features, table.a[ix], table.b[ix])
            scored[split] = counts[split] | pair_metrics(logits, labels[ix])
    results = {
        "pairs": table.origin,
        "mode": "frozen" if f.freeze_encoder else f"end-to-end (--freeze {s.freeze})",
        "features": list(s.features),
        "grouped_by": table.grouped_by,
        "dropped": table.dropped,
        "splits": scored,
        "empty_splits": [split for split, ix in splits.items() if not len(ix)],
        "best": result.metrics.get("best", {}),
        "epochs": result.metrics.get("epochs"),
        "stopped": result.metrics.get("stopped"),
        "train_seconds": result.metrics.get("seconds"),
        "seconds_per_epoch": round(result.fit.seconds / max(1, result.fit.epochs), 3),
        "feature_cache": frozen.report if f.freeze_encoder else None,
    }
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 writes
        text = json.dumps(finite(results), indent=2, allow_nan=False) + "\n"
        atomic_write(result.run_dir / "results.json", lambda p: p.write_text(text, "utf-8"))
    result.metrics["results"] = results["splits"]
    return result


def pairs_note(table: PairTable, counts: dict[str, dict[str, int]]) -> str:
    """One line: the pairs read, what the filters left out, and the split."""
    dropped = "".join(f", {n} left out by {flag}" for flag, n in table.dropped.items())
    kept = sum(c["pairs"] for c in counts.values())
    if kept < len(table):
        dropped += f", {kept} kept by --subsample"
    parts = ", ".join(
        f"{c['pairs']} {split} ({c['groups']} groups, {c['images']} images)"
        for split, c in counts.items()
    )
    return (
        f"{table.origin}: {len(table)} pairs of {len(table.images)} images{dropped}; split by "
        f"{table.grouped_by}: {parts}"
    )


# ---------------------------------------------------------------- evaluate and predict


@dataclass
class PairEvalResult:
    """What ``evaluate`` measured on pairs: accuracy (of the pairs that are not ties, with its
    95% confidence interval), log-loss, counts, and the settings to reproduce it."""

    model: str
    model_sha256: str
    pairs: str
    split: str
    n_pairs: int
    n_images: int
    n_groups: int
    decided: int
    accuracy: float
    ci95: float
    log_loss: float
    chance: float
    settings: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def pairwise_model(model: Path, device: torch.device) -> tuple[PairwiseRanker, ModelCard]:
    """A saved pairwise model, or a ``ConfigError`` for a model of another method."""
    method, card = load_model(model, device)
    if not isinstance(method, PairwiseRanker):
        raise ConfigError(
            f"{card.file.parent if card.file else model} is a {card.model.method} model; pairs "
            "are scored by a pairwise one (finetune --method pairwise)"
        )
    return method, card


def evaluation_split(cfg: Config, card: ModelCard) -> str:
    """``cfg.evaluate.split``, with ``auto`` decided: the test split of the pairs the model was
    trained on where it held one out, all of other pairs, else an error."""
    split, data = cfg.evaluate.split, cfg.data
    if split != "auto":
        return split
    trained_on = (card.config.get("data") or {}).get("pairs")
    if not same_pairs(trained_on, data.pairs):
        return "all"
    if data.test_classes or data.split_fractions[2] > 0:
        return "test"
    raise DataError(
        f"{card.file} was trained on {data.pairs} with no test split held out: evaluate it on "
        "other pairs (--pairs), or pass --split val (the pairs that picked its best epoch) or "
        "--split all"
    )


def evaluate_pairs(
    cfg: Config, model: Path | None = None, quiet: bool = False, console: Console | None = None
) -> PairEvalResult:
    """Accuracy and log-loss of a pairwise model on the pairs of ``cfg.data.pairs`` (a split
    of them, as ``evaluation_split`` decides), each image embedded once."""
    start = time.perf_counter()
    compute.set_threads(cfg.threads)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = model or latest_run("pairwise")
    method, card = pairwise_model(model, device)
    data = cfg.data
    if data.pairs is None:
        raise ConfigError("a pairwise model is evaluated on labelled pairs: pass --pairs CSV")
    table = read_pairs(data.pairs, data.min_agreement, data.min_reviewers)
    assert table.labels is not None
    split = evaluation_split(cfg, card)
    index = np.arange(len(table)) if split == "all" else split_pairs(table, data)[split]
    if not len(index):
        raise DataError(f"the {split} split of {data.pairs} has no pairs")
    rows = table.images_of(index)
    pre = card.preprocessing
    images = torch.zeros(len(table.images), 1, pre.image_size, pre.image_size, dtype=torch.uint8)
    images[torch.from_numpy(rows)] = decode_images(
        [table.images[i] for i in rows], pre.image_size, pre.invert, fit=pre.fit
    )
    features = encoded(method, images, rows, device)
    labels = torch.from_numpy(table.labels[index])
    scores = pair_metrics(score_pairs(method, features, table.a[index], table.b[index]), labels)
    return PairEvalResult(
        model=str(model),
        model_sha256=card.sha256,
        pairs=data.pairs,
        split=split,
        n_pairs=scores["pairs"],
        n_images=int(len(rows)),
        n_groups=len({table.groups[i] for i in index.tolist()}),
        decided=scores["decided"],
        accuracy=scores["accuracy"],
        ci95=scores["ci95"],
        log_loss=scores["log_loss"],
        chance=0.5,
        settings={"seed": cfg.seed, "device": str(device), "data": data.model_dump(mode="json")},
        versions={"sketchshot": __version__, "torch": torch.__version__},
        seconds=round(time.perf_counter() - start, 2),
    )


@dataclass(frozen=True)
class PairPrediction:
    """One pair's result: ``p_a`` = P(a preferred over b) and the side ``preferred`` ("a" or
    "b"), with the CSV's ``label`` where it has one. On failure only the images, ``line`` and
    ``error`` are set."""

    image_a: str
    image_b: str
    line: int
    p_a: float | None = None
    preferred: str | None = None
    label: float | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PairPredictionRun:
    model: str
    pairs: str
    rows: list[PairPrediction]


def predict_pairs(cfg: PredictConfig, console: Console | None = None) -> PairPredictionRun:
    """P(a preferred over b) of every pair of ``cfg.pairs`` (a label column is optional) by a
    pairwise model. A pair with an unreadable image becomes a row with its error."""
    if cfg.inputs or cfg.support is not None or cfg.bank is not None:
        raise ConfigError(
            "--pairs scores pairs with a pairwise --model; it takes no images, --support or --bank"
        )
    assert cfg.pairs is not None
    compute.set_threads(cfg.threads)
    device = resolve_device(cfg.device)
    model = cfg.model or latest_run("pairwise")
    method, card = pairwise_model(model, device)
    table = read_pairs(cfg.pairs, labelled=False, check_files=False)
    pre = card.preprocessing
    errors: dict[int, str] = {}
    images = decode_images(table.images, pre.image_size, pre.invert, errors, pre.fit)
    features = embed(method, images, device, cfg.batch_size)
    p_a = score_pairs(method, features.float(), table.a, table.b).sigmoid().tolist()
    rows = []
    for k, (i, j) in enumerate(zip(table.a.tolist(), table.b.tolist(), strict=True)):
        common = {"image_a": table.names[i], "image_b": table.names[j],
                  "line": int(table.lines[k])}  # fmt: skip
        failed = [errors[x] for x in (i, j) if x in errors]
        if failed:
            rows.append(PairPrediction(**common, error="; ".join(dict.fromkeys(failed))))
            continue
        label = None if table.labels is None else float(table.labels[k])
        label = None if label is not None and math.isnan(label) else label
        p = round(p_a[k], 6)
        rows.append(PairPrediction(**common, p_a=p, preferred="a" if p >= 0.5 else "b",
                                   label=label))  # fmt: skip
    return PairPredictionRun(model=str(model), pairs=str(cfg.pairs), rows=rows)


__all__ = [
    "CachedFeatures", "PairEvalResult", "PairPrediction", "evaluate_pairs", "finetune_pairs",
    "predict_pairs", "refuse_pairs", "same_pairs", "sketch_encoder",
]  # fmt: skip
