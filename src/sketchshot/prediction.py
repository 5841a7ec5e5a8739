"""Streaming prediction: turn inputs (files, folders, globs, ``-`` for stdin) into image paths,
then read, embed and score them a batch at a time against a class bank, yielding one
``Prediction`` per path. Paths are expanded lazily, so paths piped on stdin are labelled as
they arrive. At most two batches of images are in memory: the one being scored and the next,
which threads decode meanwhile. An unreadable file becomes a row with an error."""

from __future__ import annotations

import dataclasses
import glob
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

from sketchshot.bank import ClassBank, class_probabilities, nearest_class_similarity
from sketchshot.card import Preprocessing
from sketchshot.compute import inference_encoder
from sketchshot.data.folder import IMAGE_SUFFIXES, decode_sketch, read_image_bytes
from sketchshot.errors import DataError, SketchshotError
from sketchshot.evaluation import embed
from sketchshot.methods import Method

UNKNOWN = "unknown"
READERS = 4  # decoding threads; PIL releases the GIL while it decodes


@dataclass(frozen=True)
class Prediction:
    """One image's result. ``confidence`` is the top class probability and ``scores`` the top-k
    classes and their probabilities, best first. ``similarity`` is the cosine similarity of the
    image's features to the nearest class mean; ``label`` is ``best_class``, or ``unknown``
    when ``similarity`` is below the reject threshold. On failure only ``path`` and ``error``
    are set."""

    path: str
    label: str | None
    confidence: float | None
    best_class: str | None = None
    similarity: float | None = None
    scores: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _has_magic(text: str) -> bool:
    return any(c in text for c in "*?[")


def _images_under(folder: Path) -> list[str]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__MACOSX")
        found += [
            os.path.join(root, f)
            for f in files
            if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES
        ]
    return sorted(found)


def _expand(item: str, patterns: bool) -> list[str]:
    path = Path(item)
    if path.is_dir():
        return _images_under(path) or [item]  # an empty folder is reported as a failed row
    if path.exists() or not patterns or not _has_magic(item):
        return [item]
    out: list[str] = []
    for match in sorted(glob.glob(item, recursive=True)):
        if Path(match).is_dir():
            out += _images_under(Path(match))
        elif Path(match).suffix.lower() in IMAGE_SUFFIXES:
            out.append(match)
    return out or [item]  # a pattern that matches nothing is reported as a failed row


def expand_inputs(inputs: Sequence[str], stdin: TextIO | None = None) -> Iterator[str]:
    """Image paths of ``inputs`` in order, expanded lazily: a file as given, a folder's images
    (recursively, sorted), a glob's matching images (sorted; ``**`` recurses), and for ``-``
    the paths read from ``stdin``, one a line (taken literally, not as patterns), each as soon
    as its line arrives."""
    for item in inputs:
        if item != "-":
            yield from _expand(item, patterns=True)
            continue
        try:
            for line in stdin if stdin is not None else ():
                if line.strip():
                    yield from _expand(line.rstrip("\r\n"), patterns=False)
        except UnicodeDecodeError as exc:
            raise DataError(f"stdin: a line is not text in its encoding ({exc.reason})") from None


def read_image(path: str, image_size: int, invert: Any, fit: Any = "page") -> np.ndarray:
    """uint8 [S, S] of one image file (``invert``, ``fit``: as ``decode_sketch``); a
    ``DataError`` saying why when it cannot be read."""
    try:
        data = read_image_bytes(path, path)
    except FileNotFoundError:
        what = "no file matches" if _has_magic(path) else "no such file:"
        raise DataError(f"{what} {path}") from None
    except IsADirectoryError:
        raise DataError(f"no images in folder {path}") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    return decode_sketch(data, image_size, invert, path, fit)


class PathFeed:
    """Paths taken a batch at a time. A sequence is sliced; any other iterable (paths read
    from stdin, expanded lazily) is read by a thread, so that a batch is what has arrived and
    labelling never waits for input that is not there yet."""

    _END = object()

    def __init__(self, paths: Iterable[str], batch_size: int) -> None:
        self.batch_size = batch_size
        self.sequence = paths if isinstance(paths, Sequence) else None
        self.start = 0
        self.done = False
        self.error: Exception | None = None
        if self.sequence is None:
            # bounded, so that a fast producer (find over a huge tree) keeps memory flat
            self.arrived: queue.Queue[object] = queue.Queue(maxsize=4 * batch_size)
            self.stop = threading.Event()
            self.reader = threading.Thread(target=self._read, args=(iter(paths),), daemon=True)
            self.reader.start()

    def _put(self, item: object) -> bool:
        while not self.stop.is_set():
            try:
                self.arrived.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _read(self, paths: Iterator[str]) -> None:
        try:
            for path in paths:
                if not self._put(path):
                    return
        except Exception as exc:  # handed to the consumer, raised in its thread
            self._put(exc)
        self._put(self._END)

    def take(self, wait: bool) -> list[str]:
        """The next paths, at most ``batch_size``. With ``wait``, at least one unless the
        input has ended; without, only those that have arrived (maybe none)."""
        if self.sequence is not None:
            sliced = list(self.sequence[self.start : self.start + self.batch_size])
            self.start += len(sliced)
            return sliced
        batch: list[str] = []
        while not self.done and len(batch) < self.batch_size:
            try:
                item = self.arrived.get(block=wait and not batch)
            except queue.Empty:
                break
            if item is self._END:
                self.done = True
            elif isinstance(item, Exception):
                self.done, self.error = True, item
            else:
                batch.append(item)  # type: ignore[arg-type]
        if wait and not batch and self.error is not None:  # once the paths before it are out
            raise self.error
        return batch

    def close(self) -> None:
        if self.sequence is None:
            self.stop.set()


class BankScorer:
    """Class probabilities of images against a bank, by a method's own ``score``, and their
    similarity to the nearest class."""

    def __init__(self, method: Method, bank: ClassBank, device: torch.device) -> None:
        self.method = method
        self.device = device
        self.encoder = inference_encoder(method.encoder, device)  # once, for every batch
        self.class_names = bank.class_names
        self.support = bank.embeddings.to(device)
        self.labels = bank.labels.to(device)

    def scores(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images [B, 1, S, S] -> (probabilities [B, n_way], similarities [B]) on the
        CPU."""
        query = embed(self.method, images, self.device, encoder=self.encoder)
        n_way = len(self.class_names)
        probs = class_probabilities(self.method, self.support, self.labels, n_way, query)
        sims = nearest_class_similarity(self.support, self.labels, n_way, query)
        return probs.cpu(), sims.cpu()


def label_rows(
    paths: Sequence[str],
    probs: torch.Tensor,
    sims: torch.Tensor,
    class_names: Sequence[str],
    top_k: int,
    reject_below: float | None,
) -> list[Prediction]:
    """A ``Prediction`` per scored image: class probabilities [N, C] and nearest-class
    similarities [N] -> the best class, the ``top_k`` scores, and ``unknown`` as the label
    below ``reject_below``."""
    top = probs.topk(min(top_k, len(class_names)), dim=1)
    rows = []
    for path, values, indices, similarity in zip(
        paths, top.values.tolist(), top.indices.tolist(), sims.tolist(), strict=True
    ):
        best = class_names[indices[0]]
        label = UNKNOWN if reject_below is not None and similarity < reject_below else best
        scores = {class_names[j]: round(v, 4) for v, j in zip(values, indices, strict=True)}
        rows.append(Prediction(path, label, values[0], best, round(similarity, 4), scores))
    return rows


def _scored(
    scorer: BankScorer,
    paths: Sequence[str],
    decoded: Sequence[Future[np.ndarray]],
    top_k: int,
    reject_below: float | None,
) -> list[Prediction]:
    arrays: list[np.ndarray] = []
    errors: dict[int, str] = {}
    for i, future in enumerate(decoded):
        try:
            arrays.append(future.result())
        except SketchshotError as exc:
            errors[i] = str(exc)
    if not arrays:
        return [Prediction(p, None, None, error=errors[i]) for i, p in enumerate(paths)]
    probs, sims = scorer.scores(torch.from_numpy(np.stack(arrays)).unsqueeze(1))
    good = [p for i, p in enumerate(paths) if i not in errors]
    labelled = iter(label_rows(good, probs, sims, scorer.class_names, top_k, reject_below))
    return [
        Prediction(p, None, None, error=errors[i]) if i in errors else next(labelled)
        for i, p in enumerate(paths)
    ]


def predict_paths(
    scorer: BankScorer,
    paths: Iterable[str],
    preprocessing: Preprocessing,
    batch_size: int = 256,
    top_k: int = 3,
    reject_below: float | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> Iterator[Prediction]:
    """One ``Prediction`` per path, in order, at most ``batch_size`` images at a time;
    ``on_batch(n)`` after each batch of n paths. ``paths`` may be a lazy iterable (stdin): its
    paths are labelled as they arrive, in batches of what has arrived. A query is labelled
    ``unknown`` when its similarity to the nearest class is below ``reject_below``."""
    size, invert, fit = preprocessing.image_size, preprocessing.invert, preprocessing.fit
    feed = PathFeed(paths, batch_size)
    try:
        with ThreadPoolExecutor(READERS) as pool:

            def submit(batch: list[str]) -> list[Future[np.ndarray]]:
                return [pool.submit(read_image, p, size, invert, fit) for p in batch]

            batch = feed.take(wait=True)
            decoding = submit(batch)
            while batch:
                # the next batch (what has arrived of it) decodes while this one is scored
                ahead = feed.take(wait=False)
                decoded, decoding = decoding, submit(ahead)
                yield from _scored(scorer, batch, decoded, top_k, reject_below)
                if on_batch is not None:
                    on_batch(len(batch))
                if not ahead:  # wait for input only once this batch's rows are out
                    ahead = feed.take(wait=True)
                    decoding = submit(ahead)
                batch = ahead
    finally:
        feed.close()
