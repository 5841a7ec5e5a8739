"""Episode lists saved as JSON and replayed, so that two models are compared on identical
episodes (``evaluate --episodes-out`` / ``--episodes-in``).

Images are named by their source (their path inside the data folder or archive) and class,
never by position, so a list replays on the same drawings whatever the image size or the
split it is evaluated with. A list that names a drawing the data does not hold, or holds under
another class, is refused; so is one whose image list no longer matches its fingerprint."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sketchshot.checkpoint import atomic_write
from sketchshot.data.dataset import SketchDataset
from sketchshot.data.episodes import EpisodeIndex
from sketchshot.errors import DataError

FORMAT = "sketchshot-episodes"
VERSION = 1


class EpisodeFile(BaseModel):
    """The file: ``images`` lists [source, class] once each; an episode is [support, query],
    positions in ``images``, class-major as ``EpisodeIndex`` holds them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: str
    version: int
    n_way: int = Field(ge=2)
    n_shot: int = Field(ge=1)
    n_query: int = Field(ge=1)
    seed: int
    origin: str
    fingerprint: str
    images: list[tuple[str, str]]
    episodes: list[tuple[list[int], list[int]]] = Field(min_length=1)


def fingerprint(images: Sequence[tuple[str, str]]) -> str:
    """sha256 of the [source, class] list: what the episodes' positions refer to."""
    return hashlib.sha256(json.dumps(list(images)).encode("utf-8")).hexdigest()


def save_episodes(
    path: Path, episodes: Sequence[EpisodeIndex], dataset: SketchDataset, seed: int
) -> None:
    """Write ``episodes`` (indices into ``dataset``) atomically as an episode list."""
    position: dict[int, int] = {}
    for ep in episodes:
        for i in (*ep.support.tolist(), *ep.query.tolist()):
            position.setdefault(i, len(position))
    images = [(dataset.sources[i], dataset.class_names[int(dataset.labels[i])]) for i in position]
    first = episodes[0]
    payload = {
        "format": FORMAT, "version": VERSION,
        "n_way": first.n_way, "n_shot": first.n_shot, "n_query": first.n_query, "seed": seed,
        "origin": dataset.origin, "fingerprint": fingerprint(images), "images": images,
        "episodes": [
            [[position[i] for i in ep.support.tolist()], [position[i] for i in ep.query.tolist()]]
            for ep in episodes
        ],
    }  # fmt: skip
    text = json.dumps(payload, separators=(",", ":")) + "\n"
    atomic_write(Path(path), lambda p: p.write_text(text, encoding="utf-8"))


def _read(path: Path) -> EpisodeFile:
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"episode list not found: {path}") from None
    except OSError as exc:
        raise DataError(f"cannot read episode list {path}: {exc}") from None
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a JSON episode list ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise DataError(f"{path}: not a sketchshot episode list (written by --episodes-out)")
    if data.get("version") != VERSION:
        raise DataError(f"{path}: episode list version {data.get('version')!r}, expected {VERSION}")
    try:
        return EpisodeFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise DataError(f"{path}: malformed episode list at {where}: {first['msg']}") from None


def load_episodes(path: Path, dataset: SketchDataset) -> tuple[list[EpisodeIndex], EpisodeFile]:
    """The saved episodes as indices into ``dataset``, and the file they came from."""
    file = _read(path)
    if fingerprint(file.images) != file.fingerprint:
        raise DataError(f"{path}: its image list does not match its fingerprint; was it edited?")
    names = [dataset.class_names[label] for label in dataset.labels.tolist()]
    lookup = {pair: i for i, pair in enumerate(zip(dataset.sources, names, strict=True))}
    index = [lookup.get((source, name), -1) for source, name in file.images]
    missing = [img for img, i in zip(file.images, index, strict=True) if i < 0]
    if missing:
        source, name = missing[0]
        raise DataError(
            f"{path} does not fit {dataset.origin}: {len(missing)} of its {len(file.images)} "
            f"images are not in this data (or in another class), e.g. {source!r} of class "
            f"{name!r}; evaluate with the data, split and classes it was saved from"
        )
    to_dataset = np.asarray(index, dtype=np.int64)
    labels = dataset.labels.numpy()
    episodes = []
    for number, (support, query) in enumerate(file.episodes):
        episodes.append(_episode(path, number, support, query, file, to_dataset, labels))
    return episodes, file


def _episode(
    path: Path,
    number: int,
    support: list[int],
    query: list[int],
    file: EpisodeFile,
    to_dataset: np.ndarray,
    labels: np.ndarray,
) -> EpisodeIndex:
    """One saved episode, checked: sizes, positions, class-major blocks, distinct classes."""
    n_way, n_shot, n_query = file.n_way, file.n_shot, file.n_query

    def bad(why: str) -> DataError:
        return DataError(f"{path}: episode {number} is malformed ({why})")

    if len(support) != n_way * n_shot or len(query) != n_way * n_query:
        raise bad(f"expected {n_way * n_shot} support and {n_way * n_query} query images")
    positions = np.asarray(support + query, dtype=np.int64)
    if positions.min() < 0 or positions.max() >= len(to_dataset):
        raise bad("an image position outside its image list")
    if len(set(positions.tolist())) != len(positions):
        raise bad("an image used twice")
    s_idx, q_idx = to_dataset[positions[: len(support)]], to_dataset[positions[len(support) :]]
    s_cls = labels[s_idx].reshape(n_way, n_shot)
    q_cls = labels[q_idx].reshape(n_way, n_query)
    classes = s_cls[:, 0]
    if (s_cls != classes[:, None]).any() or (q_cls != classes[:, None]).any():
        raise bad("support and query are not grouped by class in one order")
    if len(set(classes.tolist())) != n_way:
        raise bad("a class appears twice")
    return EpisodeIndex(classes, s_idx, q_idx, n_way, n_shot, n_query)
