"""Run the configured evaluation protocol of a loaded model: read the data (or the runs),
embed every image once (test-time augmentation included), score, and draw what was asked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from sketchshot.alignment import Matching
from sketchshot.card import Preprocessing
from sketchshot.config import Config, EvaluateConfig
from sketchshot.data import load_dataset, load_splits
from sketchshot.data.folder import require_labels
from sketchshot.data.splits import splits_images
from sketchshot.errors import ConfigError
from sketchshot.evaluation import embed, embedder
from sketchshot.methods import Method
from sketchshot.pictures import confusion_picture, save_png
from sketchshot.protocols.classify import classify_protocol
from sketchshot.protocols.episodes import episodes_protocol
from sketchshot.protocols.knn import knn_protocol, knn_reference_protocol
from sketchshot.protocols.linear_probe import linear_probe_protocol
from sketchshot.protocols.omniglot_runs import read_runs, runs_protocol
from sketchshot.protocols.report import ProtocolReport


@dataclass(frozen=True)
class Evaluated:
    """A protocol's report and what it was measured on."""

    report: ProtocolReport
    origin: str
    split: str | None
    n_classes: int
    n_images: int


def check_settings(
    e: EvaluateConfig,
    episodes_out: Path | None = None,
    save_grid: Path | None = None,
    save_confusion: Path | None = None,
) -> None:
    """Refuse option combinations that a protocol would ignore, before any work."""
    episodic = {"--episodes-in": e.episodes_in, "--episodes-out": episodes_out,
                "--save-grid": save_grid}  # fmt: skip
    for option, value in episodic.items():
        if value is not None and e.protocol != "episodes":
            raise ConfigError(f"{option} works with --protocol episodes, not {e.protocol}")
    if e.protocol == "runs" and e.runs is None:
        raise ConfigError("--protocol runs needs --runs DIR, a folder of Omniglot one-shot runs")
    if e.runs is not None and e.protocol != "runs":
        raise ConfigError(f"--runs is read by --protocol runs, not {e.protocol}")
    for option, value in (("--align", e.align), ("--shape-weight", e.shape_weight)):
        if value and e.protocol not in ("runs", "episodes"):
            raise ConfigError(f"{option} works with --protocol runs or episodes, not {e.protocol}")
    if e.warp != EvaluateConfig.model_fields["warp"].default and not e.align:
        raise ConfigError(f"--warp {e.warp} says how --align lays drawings over each other; add it")
    if save_confusion is not None and e.protocol == "runs":
        raise ConfigError("--save-confusion needs shared classes; the one-shot runs have none")
    for option, path in (("--save-grid", save_grid), ("--save-confusion", save_confusion)):
        if path is not None and Path(path).suffix.lower() != ".png":
            raise ConfigError(f"{option} {path}: the picture is a PNG; name it FILE.png")


def run_protocol(
    method: Method,
    preprocessing: Preprocessing,
    cfg: Config,
    device: torch.device,
    episodes_out: Path | None = None,
    save_grid: Path | None = None,
    save_confusion: Path | None = None,
    model_classes: tuple[str, ...] = (),
) -> Evaluated:
    """Evaluate ``method`` as ``cfg.evaluate`` says on ``cfg.data`` (whose ``fit``
    ``engine.evaluate`` sets to the model's); ``model_classes`` are the classes a supervised
    model's head was trained on (for the classifier protocol)."""
    e = cfg.evaluate
    check_settings(e, episodes_out, save_grid, save_confusion)
    size = preprocessing.image_size
    matching = Matching(e.align, e.shape_weight, e.warp)
    if e.protocol == "runs":
        runs = read_runs(Path(str(e.runs)), size, preprocessing.invert, preprocessing.fit)
        report = runs_protocol(method, runs, device, e.tta, cfg.seed, matching)
        n_images = sum(r.training.shape[0] + r.test.shape[0] for r in runs)
        n_classes = int(runs[0].training.shape[0])
        return Evaluated(report, str(e.runs), None, n_classes, n_images)
    if e.protocol == "knn" and splits_images(cfg.data):
        return _knn_references(method, preprocessing, cfg, device, save_confusion)
    dataset = require_labels(load_dataset(cfg.data, size, e.split), "evaluate")
    if e.protocol != "classifier":  # classes without images in this split take no part
        dataset = dataset.nonempty()
    embedded = embedder(method, device, cfg.seed)
    embeddings = embedded(dataset.images, e.tta)
    if e.protocol == "episodes":
        episodes_in = Path(e.episodes_in) if e.episodes_in is not None else None
        report = episodes_protocol(
            method, embeddings, dataset, e.n_way, e.n_shot, e.n_query, e.episodes, cfg.seed,
            episodes_in, episodes_out, save_grid, e.within_groups, matching, embedded,
        )  # fmt: skip
    elif e.protocol == "classifier":
        report = classify_protocol(
            method, embeddings, dataset.labels, dataset.class_names, model_classes
        )
    elif e.protocol == "knn":
        report = knn_protocol(
            embeddings, dataset.labels, dataset.class_names, e.draws, e.labelled_fraction,
            cfg.seed,
        )  # fmt: skip
    else:
        report = linear_probe_protocol(
            embeddings, dataset.labels, dataset.class_names, e.draws, e.labelled_fraction,
            e.probe_weight_decay, cfg.seed,
        )  # fmt: skip
    repeats = {"episodes": "episodes", "classifier": "images"}.get(e.protocol, "draws")
    _save_confusion(report, repeats, save_confusion)
    return Evaluated(report, dataset.origin, e.split, len(dataset.class_names), len(dataset))


def _save_confusion(report: ProtocolReport, repeats: str, path: Path | None) -> None:
    if path is not None and report.confusion is not None:
        headline = report.figures[0]
        title = (headline.name, f"{headline.accuracy_text(repeats)}; counts over all {repeats}")
        save_png(confusion_picture(report.confusion, report.class_names, title), path)


def _knn_references(
    method: Method,
    preprocessing: Preprocessing,
    cfg: Config,
    device: torch.device,
    save_confusion: Path | None,
) -> Evaluated:
    """kNN on data split by images: train-split references, evaluated-split queries."""
    e = cfg.evaluate
    if e.split in ("train", "all"):
        raise ConfigError(
            "kNN on data split by images uses train as references: evaluate val or test (--split)"
        )
    splits = load_splits(cfg.data, preprocessing.image_size)
    train, queries = splits["train"], splits[e.split]
    if train is None or queries is None:
        raise ConfigError(f"the {e.split} split of {cfg.data.source} has no images")
    if train.class_names != queries.class_names:
        raise ConfigError("the train and evaluated splits hold different classes")
    refs = embed(method, train.images, device)  # references: the images as they are
    emb = embed(method, queries.images, device, views=e.tta, seed=cfg.seed)
    report = knn_reference_protocol(
        refs, train.labels, emb, queries.labels, train.class_names, e.draws, cfg.seed
    )
    _save_confusion(report, "queries", save_confusion)
    n_classes = len(train.class_names)
    return Evaluated(report, queries.origin, e.split, n_classes, len(queries) + len(train))
