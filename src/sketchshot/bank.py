"""Class banks: the support embeddings of enrolled classes, saved as ``BANK.safetensors``
beside a ``BANK.json`` sidecar, so that ``predict`` never encodes the support set again.

A bank keeps every support embedding with its label rather than one prototype per class:
every method scores from support embeddings (``Method.score``), Matching and Siamese networks
need each one, and prototypes are a mean that costs microseconds to recompute. Adding or
removing a class is then tensor surgery that leaves the other classes' embeddings untouched.

A bank remembers the sha256 of the model that encoded it and refuses any other model. It finds
that model wherever the bank goes (``find_model``): the model given, else the bank's own copy
(``BANK.model.safetensors`` + ``BANK.model.json``, written by ``enroll --bundle``), else one
beside the bank whose hash matches, else the run folder it was encoded with, if it is still
there."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

import sketchshot
from sketchshot.card import (
    FORMAT_VERSION,
    BankCard,
    BankClass,
    ModelCard,
    ModelRef,
    Preprocessing,
    RejectThreshold,
    parse_card,
    read_json,
)
from sketchshot.checkpoint import (
    has_sha256,
    load_tensors,
    pending_weights,
    save_file_pair,
    save_pair,
)
from sketchshot.data.dataset import SketchDataset
from sketchshot.errors import CheckpointError, ConfigError, DataError
from sketchshot.evaluation import embed
from sketchshot.methods import Method

KIND = "class_bank"
# Query rows scored at once are capped so that pairwise heads (Siamese: [Q, S, D]) stay within
# about this many elements, whatever the size of the bank.
SCORE_ELEMENTS = 1 << 24
# The open-set statistic: cosine similarity of a sketch's encoder features to the nearest class
# mean. Measured on Omniglot (89 known classes, 5 shots each, Tagalog as the unknown, a
# fine-tuned ProtoNet), at 5% false rejects it let 6.8% of unknown drawings through where the
# top class probability let 72% through: ProtoNet probabilities saturate far from every class.
SIMILARITY = "nearest_class_similarity"


@dataclass(frozen=True)
class ClassBank:
    """Support embeddings float32 [N, D] with ``labels`` int64 [N] indexing ``class_names``
    (sorted), grouped by class; ``class_sources`` names where each class was enrolled from."""

    embeddings: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]
    class_sources: tuple[str, ...]
    model: ModelRef
    preprocessing: Preprocessing
    threshold: RejectThreshold | None = None

    def __len__(self) -> int:
        return int(self.labels.numel())

    def counts(self) -> list[int]:
        return torch.bincount(self.labels, minlength=len(self.class_names)).tolist()

    def embeddings_of(self, name: str) -> torch.Tensor:
        return self.embeddings[self.labels == self.class_names.index(name)]

    def without(self, names: set[str]) -> ClassBank:
        """The bank less the classes ``names``; no threshold (it was calibrated with them)."""
        keep = [i for i, n in enumerate(self.class_names) if n not in names]
        rows = torch.isin(self.labels, torch.tensor(keep, dtype=torch.long))
        return grouped(
            self.embeddings[rows],
            self.labels[rows],
            self.class_names,
            self.class_sources,
            self.model,
            self.preprocessing,
        )

    def merged(self, other: ClassBank) -> ClassBank:
        """Both banks' classes (names must not clash); no threshold."""
        clash = set(self.class_names) & set(other.class_names)
        if clash:
            raise ValueError(f"classes in both banks: {sorted(clash)}")
        return grouped(
            torch.cat([self.embeddings, other.embeddings.to(self.embeddings.dtype)]),
            torch.cat([self.labels, other.labels + len(self.class_names)]),
            self.class_names + other.class_names,
            self.class_sources + other.class_sources,
            self.model,
            self.preprocessing,
        )

    def with_threshold(self, threshold: RejectThreshold | None) -> ClassBank:
        return dataclasses.replace(self, threshold=threshold)

    def with_model(self, model: ModelRef) -> ClassBank:
        return dataclasses.replace(self, model=model)


def grouped(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    names: tuple[str, ...],
    sources: tuple[str, ...],
    model: ModelRef,
    preprocessing: Preprocessing,
) -> ClassBank:
    """A bank in canonical order: classes with embeddings sorted by name, each class's
    embeddings in their given order; classes without embeddings are dropped."""
    present = sorted(set(labels.tolist()), key=lambda i: names[i])
    if not present:
        raise DataError("a class bank needs at least one class")
    order = torch.cat([(labels == i).nonzero().flatten() for i in present])
    remap = torch.full((len(names),), -1, dtype=torch.long)
    remap[torch.tensor(present, dtype=torch.long)] = torch.arange(len(present))
    return ClassBank(
        embeddings=embeddings[order].float().contiguous(),
        labels=remap[labels[order]],
        class_names=tuple(names[i] for i in present),
        class_sources=tuple(sources[i] for i in present),
        model=model,
        preprocessing=preprocessing,
    )


def encode_support(
    method: Method, card: ModelCard, support: SketchDataset, device: torch.device
) -> ClassBank:
    """Encode every image of ``support`` once with ``method``'s encoder (saved with ``card``)
    into a bank."""
    embeddings = embed(method, support.images, device).cpu()
    return grouped(
        embeddings,
        support.labels,
        support.class_names,
        (support.origin,) * len(support.class_names),
        ModelRef.of(card),
        card.preprocessing,
    )


def check_model(bank: ClassBank, card: ModelCard, where: str) -> None:
    """Refuse a model other than the one the bank was encoded with."""
    if card.sha256 != bank.model.sha256:
        model_path = card.file.parent if card.file is not None else "?"
        raise CheckpointError(
            f"{where} was encoded with another model ({bank.model.path}, sha256 "
            f"{bank.model.sha256[:12]}), not {model_path} (sha256 {card.sha256[:12]}); "
            "enroll its classes again with this model"
        )


@torch.no_grad()
def class_probabilities(
    method: Method,
    support: torch.Tensor,
    labels: torch.Tensor,
    n_way: int,
    query: torch.Tensor,
) -> torch.Tensor:
    """Probabilities [Q, n_way] of query embeddings [Q, D] against support embeddings [S, D],
    by the method's own ``score`` and ``probabilities``, a slice of queries at a time."""
    step = max(1, SCORE_ELEMENTS // max(1, support.shape[0] * support.shape[1]))
    out = [
        method.probabilities(method.score(support, labels, query[i : i + step], n_way))
        for i in range(0, query.shape[0], step)
    ]
    return torch.cat(out) if out else query.new_zeros(0, n_way)


@torch.no_grad()
def nearest_class_similarity(
    support: torch.Tensor, labels: torch.Tensor, n_classes: int, query: torch.Tensor
) -> torch.Tensor:
    """[Q]: the cosine similarity of each query embedding [Q, D] to the nearest class mean of
    support embeddings [S, D] with labels [S] (in [-1, 1]; the reject statistic)."""
    sums = support.new_zeros(n_classes, support.shape[1]).index_add_(0, labels, support)
    means = F.normalize(sums, dim=1)  # the mean's direction: the sum's
    return (F.normalize(query, dim=1) @ means.T).max(dim=1).values


def bank_files(path: str | Path) -> tuple[Path, Path]:
    """(``BANK.json``, ``BANK.safetensors``) of ``BANK``, ``BANK.json`` or ``BANK.safetensors``."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; name the bank's file, e.g. {path / 'bank'}")
    stem = path.with_suffix("") if path.suffix in (".json", ".safetensors") else path
    return stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".safetensors")


def bundled_files(path: str | Path) -> tuple[Path, Path]:
    """(``BANK.model.json``, ``BANK.model.safetensors``): the bank's own copy of its model."""
    sidecar, _ = bank_files(path)
    stem = sidecar.with_suffix("").name
    return sidecar.with_name(f"{stem}.model.json"), sidecar.with_name(f"{stem}.model.safetensors")


def bundle_model(card: ModelCard, path: str | Path) -> str:
    """Copy the model of ``card`` (its weights byte for byte, so that their sha256 stays the
    bank's ``built_with.sha256``) beside the bank at ``path`` as ``BANK.model.safetensors``
    and ``BANK.model.json``, one unit like every pair; returns the card's file name. A copy
    already there is kept."""
    sidecar, weights = bundled_files(path)
    if _card_sha256(sidecar) == card.sha256 and has_sha256(weights, card.sha256):
        return sidecar.name
    source = card.weights_path
    if not has_sha256(source, card.sha256):  # a save killed after its commit (save_pair)
        source = pending_weights(source, card.sha256)
        if not has_sha256(source, card.sha256):
            raise CheckpointError(f"{card.weights_path}: sha256 does not match its sidecar")
    copy = card.model_copy(update={"weights": weights.name})
    save_file_pair(weights, sidecar, source.read_bytes(), lambda _: copy.to_json())
    return sidecar.name


MODEL_CARD_BYTES = 1 << 22  # a model card is kilobytes; larger JSON files are not read


def _card_sha256(path: Path) -> str | None:
    """The weights' sha256 that the model card at ``path`` names, or None when ``path`` is not
    a model card (missing, a bank, other JSON, larger than any card)."""
    try:
        if not path.is_file() or path.stat().st_size > MODEL_CARD_BYTES:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or "kind" in data or not isinstance(data.get("model"), dict):
        return None
    sha256 = data.get("sha256")
    return sha256 if isinstance(sha256, str) else None


def find_model(ref: ModelRef, sidecar: Path) -> Path:
    """The card of the model that encoded the bank whose card is ``sidecar``, found by its
    weights' sha256 ``ref.sha256``: the bank's bundled copy, else a model card beside the bank
    (``*.json``, or ``*/model.json`` of a run folder there), else the recorded ``ref.path``.
    A CheckpointError saying where it looked when none is there. ``load_model`` then checks
    the weights against the card's hash."""
    folder = sidecar.parent
    looked = []
    if ref.bundled is not None:
        bundled = folder / ref.bundled
        if _card_sha256(bundled) == ref.sha256:
            return bundled
        state = "another model" if bundled.is_file() else "missing"
        looked.append(f"its bundled copy {ref.bundled} is {state}")
    beside = sorted(folder.glob("*.json"), key=lambda p: (p.name != "model.json", p.name))
    for candidate in [*beside, *sorted(folder.glob("*/model.json"))]:
        if candidate != sidecar and _card_sha256(candidate) == ref.sha256:
            return candidate
    looked.append(f"no model card beside it in {folder} has that sha256")
    recorded = Path(ref.path)
    card = recorded / "model.json" if recorded.is_dir() else recorded
    if _card_sha256(card) == ref.sha256:
        return card
    state = "holds another model" if recorded.exists() else "is not there any more"
    looked.append(f"the model it was encoded with, {recorded}, {state}")
    raise CheckpointError(
        f"{sidecar} needs the model it was encoded with ({ref.method}/{ref.encoder}, sha256 "
        f"{ref.sha256[:12]}), but {'; '.join(looked)}: pass it with --model RUN, or copy its "
        "run folder beside the bank (enroll --bundle writes a bank that carries its model)"
    )


def bank_exists(path: str | Path) -> bool:
    return any(p.exists() for p in bank_files(path))


def save_bank(bank: ClassBank, path: str | Path) -> Path:
    """Write ``BANK.safetensors`` and ``BANK.json`` as one unit (``checkpoint.save_pair``: a
    bank edited in place and killed mid-save is the old bank or the new one); returns the
    sidecar."""
    sidecar, weights = bank_files(path)
    classes = tuple(
        BankClass(name=n, count=c, source=s)
        for n, c, s in zip(bank.class_names, bank.counts(), bank.class_sources, strict=True)
    )

    def text(digest: str) -> str:
        return BankCard(
            format_version=FORMAT_VERSION,
            sketchshot_version=sketchshot.__version__,
            built_with=bank.model,
            preprocessing=bank.preprocessing,
            embedding_dim=int(bank.embeddings.shape[1]),
            n_embeddings=len(bank),
            classes=classes,
            reject=bank.threshold,
            weights=weights.name,
            sha256=digest,
        ).to_json()

    save_pair(weights, sidecar, {"embeddings": bank.embeddings, "labels": bank.labels}, text)
    return sidecar


def is_bank(path: str | Path) -> bool:
    """Whether ``path`` (``BANK``, ``BANK.json`` or ``BANK.safetensors``) names a class bank."""
    path = Path(path)
    if path.is_dir() or not bank_files(path)[0].is_file():
        return False
    try:
        return json.loads(bank_files(path)[0].read_text(encoding="utf-8")).get("kind") == KIND
    except (OSError, ValueError, AttributeError):
        return False


def read_bank_card(path: str | Path) -> BankCard:
    sidecar, _ = bank_files(path)
    if not sidecar.is_file():
        raise CheckpointError(f"no class bank at {sidecar} (write one with 'sketchshot enroll')")
    data = read_json(sidecar)
    if data.get("kind") != KIND:
        raise CheckpointError(f"{sidecar} is not a class bank (written by 'sketchshot enroll')")
    return parse_card(BankCard, data, sidecar)


def load_bank(path: str | Path) -> ClassBank:
    """Read and check a bank: its card, the embeddings' sha256, shapes and per-class counts."""
    card = read_bank_card(path)
    sidecar = card.file
    tensors = load_tensors(card.weights_path, card.sha256)
    embeddings, labels = tensors.get("embeddings"), tensors.get("labels")
    if embeddings is None or labels is None:
        raise CheckpointError(f"{sidecar}: not a complete class bank (no embeddings or labels)")
    names = tuple(c.name for c in card.classes)
    bank = ClassBank(
        embeddings=embeddings.float(),
        labels=labels.long(),
        class_names=names,
        class_sources=tuple(c.source for c in card.classes),
        model=card.built_with,
        preprocessing=card.preprocessing,
        threshold=card.reject,
    )
    threshold = card.reject
    if (
        embeddings.dim() != 2
        or labels.shape != (embeddings.shape[0],)
        or not names
        or bool((labels < 0).any() or (labels >= len(names)).any())
        or bank.counts() != [c.count for c in card.classes]
    ):
        raise CheckpointError(f"{sidecar}: its embeddings do not match its class list")
    if threshold is not None and threshold.statistic != SIMILARITY:
        raise CheckpointError(
            f"{sidecar}: reject threshold on {threshold.statistic!r}, which this version does not "
            "use; calibrate it again with enroll --bank BANK --calibrate"
        )
    if threshold is not None and not (
        -1 <= threshold.value <= 1 and math.isfinite(threshold.value)
    ):
        raise CheckpointError(f"{sidecar}: reject threshold {threshold.value} is not in [-1, 1]")
    return bank
