"""Class banks: the support embeddings of enrolled classes, saved as ``BANK.safetensors``
beside a ``BANK.json`` sidecar, so that ``predict`` never encodes the support set again.

A bank keeps every support embedding with its label rather than one prototype per class:
every method scores from support embeddings (``Method.score``), Matching and Siamese networks
need each one, and prototypes are a mean that costs microseconds to recompute. Adding or
removing a class is then tensor surgery that leaves the other classes' embeddings untouched.
A bank remembers the sha256 of the model that encoded it and refuses any other model."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import sketchshot
from sketchshot.checkpoint import (
    FORMAT_VERSION,
    load_tensors,
    read_sidecar,
    save_weights,
    write_json,
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
class RejectThreshold:
    """Below ``value`` of its ``nearest_class_similarity`` a sketch is labelled unknown.
    ``episodes`` > 0 when it was calibrated on the bank."""

    value: float
    statistic: str = SIMILARITY
    target_false_reject: float | None = None
    episodes: int = 0
    known_queries: int = 0
    unknown_queries: int = 0
    false_reject: float | None = None
    false_accept: float | None = None
    seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ModelRef:
    """The model a bank was encoded with: where it was, and the sha256 of its weights."""

    path: str
    sha256: str
    method: str
    encoder: str

    @classmethod
    def of(cls, path: Path, meta: dict[str, Any]) -> ModelRef:
        model = meta.get("model", {})
        return cls(
            str(Path(path).resolve()),
            meta["sha256"],
            model.get("method", "?"),
            model.get("encoder", "?"),
        )


@dataclass(frozen=True)
class ClassBank:
    """Support embeddings float32 [N, D] with ``labels`` int64 [N] indexing ``class_names``
    (sorted), grouped by class; ``class_sources`` names where each class was enrolled from."""

    embeddings: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]
    class_sources: tuple[str, ...]
    model: ModelRef
    preprocessing: dict[str, Any]
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


def grouped(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    names: tuple[str, ...],
    sources: tuple[str, ...],
    model: ModelRef,
    preprocessing: dict[str, Any],
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
        preprocessing=dict(preprocessing),
    )


def encode_support(
    method: Method,
    meta: dict[str, Any],
    model_path: Path,
    support: SketchDataset,
    device: torch.device,
) -> ClassBank:
    """Encode every image of ``support`` once with ``method``'s encoder into a bank."""
    embeddings = embed(method, support.images, device).cpu()
    return grouped(
        embeddings,
        support.labels,
        support.class_names,
        (support.origin,) * len(support.class_names),
        ModelRef.of(model_path, meta),
        {k: meta["preprocessing"][k] for k in ("image_size", "invert", "mean", "std")},
    )


def check_model(bank: ClassBank, meta: dict[str, Any], model_path: Path, where: str) -> None:
    """Refuse a model other than the one the bank was encoded with."""
    if meta.get("sha256") != bank.model.sha256:
        raise CheckpointError(
            f"{where} was encoded with another model ({bank.model.path}, sha256 "
            f"{bank.model.sha256[:12]}), not {model_path} (sha256 {str(meta.get('sha256'))[:12]}); "
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


def bank_exists(path: str | Path) -> bool:
    return any(p.exists() for p in bank_files(path))


def save_bank(bank: ClassBank, path: str | Path) -> Path:
    """Write ``BANK.safetensors`` then ``BANK.json`` (each atomically); returns the sidecar."""
    sidecar, weights = bank_files(path)
    digest = save_weights(weights, {"embeddings": bank.embeddings, "labels": bank.labels})
    counts = bank.counts()
    write_json(
        sidecar,
        {
            "format_version": FORMAT_VERSION,
            "kind": KIND,
            "sketchshot_version": sketchshot.__version__,
            "built_with": dataclasses.asdict(bank.model),
            "preprocessing": bank.preprocessing,
            "embedding_dim": int(bank.embeddings.shape[1]),
            "n_embeddings": len(bank),
            "classes": [
                {"name": n, "count": c, "source": s}
                for n, c, s in zip(bank.class_names, counts, bank.class_sources, strict=True)
            ],
            "reject": bank.threshold.as_dict() if bank.threshold else None,
            "weights": weights.name,
            "sha256": digest,
        },
    )
    return sidecar


def load_bank(path: str | Path) -> ClassBank:
    """Read and check a bank: sidecar kind, weights' sha256, shapes and per-class counts."""
    sidecar, _ = bank_files(path)
    if not sidecar.is_file():
        raise CheckpointError(f"no class bank at {sidecar} (write one with 'sketchshot enroll')")
    meta = read_sidecar(sidecar)
    if meta.get("kind") != KIND:
        raise CheckpointError(f"{sidecar} is not a class bank (written by 'sketchshot enroll')")
    if not isinstance(meta.get("sha256"), str):
        raise CheckpointError(f"{sidecar}: no sha256 of the embeddings; refusing to load")
    tensors = load_tensors(sidecar.parent / meta.get("weights", ""), meta["sha256"])
    try:
        embeddings, labels = tensors["embeddings"], tensors["labels"]
        classes = meta["classes"]
        names = tuple(c["name"] for c in classes)
        model = ModelRef(**meta["built_with"])
        reject = meta.get("reject")
        threshold = RejectThreshold(**reject) if reject else None
        bank = ClassBank(
            embeddings=embeddings.float(),
            labels=labels.long(),
            class_names=names,
            class_sources=tuple(c.get("source", "") for c in classes),
            model=model,
            preprocessing=meta["preprocessing"],
            threshold=threshold,
        )
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{sidecar}: not a complete class bank ({exc})") from None
    if (
        embeddings.dim() != 2
        or labels.shape != (embeddings.shape[0],)
        or not names
        or bool((labels < 0).any() or (labels >= len(names)).any())
        or bank.counts() != [c.get("count") for c in classes]
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
