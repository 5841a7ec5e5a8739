"""Omniglot's one-shot classification runs (Lake et al. 2015; github.com/brendenlake/omniglot,
python/one-shot-classification/all_runs): 20-way 1-shot, an error rate per run and the mean.

A folder or .zip holds ``runNN/`` folders, each with ``training/`` (one drawing per class,
``class01.png``...), ``test/`` (the queries, ``item01.png``...) and ``class_labels.txt``,
whose lines pair a query with its class: ``run01/test/item01.png run01/training/class12.png``
(paths relative to the folder that holds the runs). Each query takes the class of the
training drawing that ``method.score`` rates highest."""

from __future__ import annotations

import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np
import torch
from PIL import Image

from sketchshot.alignment import Matching, Meeting, matched
from sketchshot.config import DataConfig
from sketchshot.data.dataset import SketchDataset
from sketchshot.data.episodes import class_groups
from sketchshot.data.folder import IMAGE_SUFFIXES, decode_sketch, read_image_bytes, read_member
from sketchshot.errors import DataError
from sketchshot.evaluation import embedder
from sketchshot.methods import Method
from sketchshot.protocols.report import Figure, ProtocolReport

LABELS_FILE = re.compile(r"(?:^|/)(run\d+)/class_labels\.txt$")


@dataclass(frozen=True)
class OneShotRun:
    """One run: ``training`` uint8 [T, 1, S, S] (one per class), ``test`` uint8 [Q, 1, S, S],
    and ``answers`` [Q], the index into ``training`` of each query's class."""

    name: str
    training: torch.Tensor
    test: torch.Tensor
    answers: np.ndarray


class _Files:
    """Read-only view of a folder or a .zip archive by POSIX paths relative to its root."""

    def __init__(self, source: Path) -> None:
        self.source = source
        if source.is_dir():
            self.archive = None
            files = (p for p in source.rglob("*") if p.is_file())
            self.names = {p.relative_to(source).as_posix() for p in files}
        elif zipfile.is_zipfile(source):
            self.archive = zipfile.ZipFile(source)
            self.names = {n for n in self.archive.namelist() if not n.endswith("/")}
        elif source.exists():
            raise DataError(f"--runs {source} is neither a folder nor a .zip archive")
        else:
            raise DataError(f"--runs path does not exist: {source}")

    def read(self, name: str) -> bytes:
        if name not in self.names:
            raise DataError(f"{self.source}: {name} is missing")
        where = f"{self.source}:{name}" if self.archive is not None else str(self.source / name)
        try:
            if self.archive is not None:
                return read_member(self.archive, self.archive.getinfo(name), where)
            return read_image_bytes(self.source / name, where)
        except OSError as exc:
            raise DataError(f"cannot read {where}: {exc.strerror or exc}") from None

    def close(self) -> None:
        if self.archive is not None:
            self.archive.close()


def _read_run(
    files: _Files,
    labels_name: str,
    run: str,
    size: int,
    invert: Literal["auto", "yes", "no"],
    fit: Literal["page", "ink"],
) -> OneShotRun:
    root = labels_name[: -len(f"{run}/class_labels.txt")]
    training_dir = f"{root}{run}/training/"
    training = sorted(
        n for n in files.names
        if n.startswith(training_dir) and PurePosixPath(n).suffix.lower() in IMAGE_SUFFIXES
        and "/" not in n[len(training_dir):]
    )  # fmt: skip
    if len(training) < 2:
        raise DataError(f"{files.source}: {training_dir} needs at least 2 class drawings")
    position = {name: i for i, name in enumerate(training)}
    queries, answers = [], []
    text = files.read(labels_name).decode("utf-8", errors="replace")
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise DataError(
                f"{files.source}: {labels_name} line {number}: expected 'TEST_IMAGE "
                f"TRAINING_IMAGE', got {line.strip()!r}"
            )
        query, answer = (root + p.lstrip("/") for p in parts)
        if answer not in position:
            raise DataError(
                f"{files.source}: {labels_name} line {number} names {answer}, which is not "
                f"a drawing in {training_dir}"
            )
        queries.append(query)
        answers.append(position[answer])
    if not queries:
        raise DataError(f"{files.source}: {labels_name} pairs no test image with a class")

    def decode(names: list[str]) -> torch.Tensor:
        arrays = [
            decode_sketch(files.read(n), size, invert, f"{files.source}:{n}", fit) for n in names
        ]
        return torch.from_numpy(np.stack(arrays)).unsqueeze(1)

    return OneShotRun(run, decode(training), decode(queries), np.asarray(answers))


def read_runs(
    source: Path,
    image_size: int,
    invert: Literal["auto", "yes", "no"] = "auto",
    fit: Literal["page", "ink"] = "page",
) -> list[OneShotRun]:
    """Every run under ``source`` (a folder or .zip), in name order, decoded at ``image_size``
    (``invert``, ``fit``: as ``decode_sketch``)."""
    files = _Files(Path(source))
    try:
        found = sorted(
            (m.group(1), name) for name in files.names if (m := LABELS_FILE.search(name))
        )
        if not found:
            raise DataError(
                f"no runNN/class_labels.txt under {source} (expected Omniglot's one-shot layout: "
                "runNN/training/, runNN/test/, runNN/class_labels.txt)"
            )
        return [_read_run(files, name, run, image_size, invert, fit) for run, name in found]
    finally:
        files.close()


def runs_protocol(
    method: Method,
    runs: list[OneShotRun],
    device: torch.device,
    views: int = 1,
    seed: int = 0,
    matching: Matching = Matching(),
) -> ProtocolReport:
    """Error rate of each run and the mean accuracy over runs (1 - mean error rate). With
    ``matching``, each query's scores are ``alignment.matched``: aligned with the run's class
    drawings, fused with its shape-match distances to them. Every query is scored on its own."""
    errors = np.empty(len(runs))
    embedded = embedder(method, device, seed)
    with torch.no_grad():
        for i, run in enumerate(runs):
            support, query = embedded(run.training, views), embedded(run.test, views)
            n_way = support.shape[0]
            labels = torch.arange(n_way, device=device)
            scores = method.score(support, labels, query, n_way)
            meeting = Meeting(
                method, embedded, (run.test, query), (run.training, support), labels, n_way
            )
            scores = matched(matching, meeting, scores)
            predicted = scores.argmax(1).cpu().numpy()
            errors[i] = float((predicted != run.answers).mean())
    per_run = [
        {"run": run.name, "error_rate": float(e), "classes": int(run.training.shape[0]),
         "queries": int(run.test.shape[0])}
        for run, e in zip(runs, errors, strict=True)
    ]  # fmt: skip
    ways = sorted({int(run.training.shape[0]) for run in runs})
    setting = "one-shot runs" if len(ways) == 1 else f"one-shot runs ({ways[0]}-{ways[-1]} classes)"
    setting += matching.describe()
    figure = Figure.of(ways[-1], setting, 1 - errors)
    details = {"runs": per_run, "mean_error_rate": float(errors.mean()), "error_ci95": figure.ci95,
               "align": matching.align, "warp": matching.warp if matching.align else None,
               "shape_weight": matching.shape_weight}  # fmt: skip
    return ProtocolReport([figure], (), None, details)


# ---- writing runs of our own, in the same layout -------------------------------------------

DRAWER = re.compile(r"[_-](\d+)$")  # Omniglot: <character>_<drawer>.png; built-in: drawer-NN


def drawers(dataset: SketchDataset) -> np.ndarray:
    """The drawer of each image: the number after the last ``_`` or ``-`` of its file name
    where every name has one (Omniglot's ``0709_04.png``: drawer 4; built-in ``drawer-04``),
    else its position within its class (the k-th drawing of each class stands for drawer k)."""
    found = [DRAWER.search(PurePosixPath(s).stem) for s in dataset.sources]
    if all(found):
        return np.asarray([int(m.group(1)) for m in found if m])
    labels = dataset.labels.numpy()
    position = np.empty(labels.size, dtype=np.int64)
    for c in range(len(dataset.class_names)):
        where = np.flatnonzero(labels == c)
        position[where] = np.arange(where.size)
    return position


@dataclass(frozen=True)
class RunDraw:
    """One run to write: dataset indices of its ``training`` drawings (one per class, by
    ``drawers[0]``) and ``test`` drawings (the same classes, by ``drawers[1]``, shuffled)."""

    name: str
    group: str
    training: np.ndarray
    test: np.ndarray
    drawers: tuple[int, int]

    @property
    def n_way(self) -> int:
        return int(self.training.size)


def draw_runs(dataset: SketchDataset, count: int, n_way: int, seed: int) -> list[RunDraw]:
    """``count`` seeded runs in the manner of Lake et al.: each within one top-level group
    (run i in group i mod the number of groups, taken in name order), ``n_way`` of its classes
    (all of them in a smaller group), training drawings by one drawer and test drawings by
    another, both having drawn every class of the run."""
    if count < 1:
        raise DataError("--count must be at least 1")
    groups = class_groups(dataset.class_names)
    tops = list(dict.fromkeys(n.split("/", 1)[0] for n in dataset.class_names))
    by = drawers(dataset)
    labels = dataset.labels.numpy()
    rng = np.random.default_rng([seed, 0x72756E73])
    runs = []
    for i in range(count):
        g = i % len(tops)
        members = np.flatnonzero(groups == g)
        if members.size < 2:
            raise DataError(f"group {tops[g]!r} has {members.size} class; a run needs 2")
        classes = np.sort(rng.choice(members, min(n_way, members.size), replace=False))
        # drawers who drew every class of the run, and the image of each (class, drawer)
        image = {(int(labels[j]), int(by[j])): j for j in np.flatnonzero(np.isin(labels, classes))}
        common = sorted(set.intersection(*({d for c2, d in image if c2 == c} for c in classes)))
        if len(common) < 2:
            raise DataError(
                f"group {tops[g]!r}: fewer than 2 drawers drew all of {classes.size} classes"
            )
        first, second = (int(d) for d in rng.choice(common, 2, replace=False))
        training = np.asarray([image[(int(c), first)] for c in classes])
        test = rng.permutation(np.asarray([image[(int(c), second)] for c in classes]))
        runs.append(RunDraw(f"run{i + 1:02d}", tops[g], training, test, (first, second)))
    return runs


def write_runs(dataset: SketchDataset, out: Path, runs: list[RunDraw]) -> None:
    """Write ``runs`` under ``out`` in Omniglot's one-shot layout (``read_runs`` reads it):
    ``runNN/training/classKK.png`` in class order, ``runNN/test/itemKK.png`` and
    ``runNN/class_labels.txt``, black strokes on white as the upstream PNGs. All or nothing:
    written beside ``out`` and renamed onto it; an existing non-empty ``out`` is refused."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"--out {out} exists and is not an empty folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for run in runs:
            training = [f"{run.name}/training/class{k + 1:02d}.png" for k in range(run.n_way)]
            position = {int(dataset.labels[i]): k for k, i in enumerate(run.training)}
            lines = []
            for k, index in enumerate(run.test):
                item = f"{run.name}/test/item{k + 1:02d}.png"
                lines.append(f"{item} {training[position[int(dataset.labels[index])]]}")
                _save(dataset, int(index), tmp / item)
            for name, index in zip(training, run.training, strict=True):
                _save(dataset, int(index), tmp / name)
            (tmp / run.name / "class_labels.txt").write_text("\n".join(lines) + "\n")
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"cannot write the runs to {out}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _save(dataset: SketchDataset, index: int, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(255 - dataset.images[index, 0].numpy()).save(path, format="PNG")


def make_runs(
    source: str,
    out: Path,
    count: int,
    n_way: int,
    seed: int,
    classes: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
    image_size: int = 105,
) -> list[RunDraw]:
    """Draw ``count`` runs from the classes of ``source`` (a sketch source; ``classes`` and
    ``exclude`` are globs of classes or whole top-level groups) and write them under ``out``."""
    from sketchshot.data import load_source
    from sketchshot.data.dataset import filter_classes

    dataset = load_source(source, image_size, DataConfig(source=source))
    dataset = filter_classes(dataset, classes, exclude)
    runs = draw_runs(dataset, count, n_way, seed)
    write_runs(dataset, out, runs)
    return runs
