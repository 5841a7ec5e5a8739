"""Omniglot's one-shot classification runs (Lake et al. 2015; github.com/brendenlake/omniglot,
python/one-shot-classification/all_runs): 20-way 1-shot, an error rate per run and the mean.

A folder or .zip holds ``runNN/`` folders, each with ``training/`` (one drawing per class,
``class01.png``...), ``test/`` (the queries, ``item01.png``...) and ``class_labels.txt``,
whose lines pair a query with its class: ``run01/test/item01.png run01/training/class12.png``
(paths relative to the folder that holds the runs). Each query takes the class of the
training drawing that ``method.score`` rates highest."""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np
import torch

from sketchshot.data.folder import IMAGE_SUFFIXES, decode_sketch, read_image_bytes, read_member
from sketchshot.errors import DataError
from sketchshot.evaluation import embed
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
    files: _Files, labels_name: str, run: str, size: int, invert: Literal["auto", "yes", "no"]
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
        arrays = [decode_sketch(files.read(n), size, invert, f"{files.source}:{n}") for n in names]
        return torch.from_numpy(np.stack(arrays)).unsqueeze(1)

    return OneShotRun(run, decode(training), decode(queries), np.asarray(answers))


def read_runs(
    source: Path, image_size: int, invert: Literal["auto", "yes", "no"] = "auto"
) -> list[OneShotRun]:
    """Every run under ``source`` (a folder or .zip), in name order, decoded at ``image_size``."""
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
        return [_read_run(files, name, run, image_size, invert) for run, name in found]
    finally:
        files.close()


def runs_protocol(
    method: Method,
    runs: list[OneShotRun],
    device: torch.device,
    views: int = 1,
    seed: int = 0,
) -> ProtocolReport:
    """Error rate of each run and the mean accuracy over runs (1 - mean error rate)."""
    errors = np.empty(len(runs))
    with torch.no_grad():
        for i, run in enumerate(runs):
            support = embed(method, run.training, device, views=views, seed=seed)
            query = embed(method, run.test, device, views=views, seed=seed)
            n_way = support.shape[0]
            labels = torch.arange(n_way, device=device)
            predicted = method.score(support, labels, query, n_way).argmax(1).cpu().numpy()
            errors[i] = float((predicted != run.answers).mean())
    per_run = [
        {"run": run.name, "error_rate": float(e), "classes": int(run.training.shape[0]),
         "queries": int(run.test.shape[0])}
        for run, e in zip(runs, errors, strict=True)
    ]  # fmt: skip
    figure = Figure.of(int(runs[0].training.shape[0]), "one-shot runs", 1 - errors)
    details = {"runs": per_run, "mean_error_rate": float(errors.mean())}
    return ProtocolReport([figure], (), None, details)
