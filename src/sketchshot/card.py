"""Typed cards of everything sketchshot saves: a model's ``model.json`` and a class bank's
``BANK.json``. Every module reads and writes these models, never raw dicts (timm's
``PretrainedCfg`` pattern). Cards written by sketchshot 0.1 (format version 1) still load.

A card carries two digests: ``sha256``, of the weights file, and ``card_sha256``, of the card
itself (the canonical JSON of every other field: model, preprocessing, class names, config,
...), so that an edited ``image_size`` or class list is refused on reading like edited weights.
They catch edits and corruption; they are not signatures (anyone can recompute them). Cards of
format version 1 have no ``card_sha256``: they load, and nothing vouches for their fields.

Nothing here imports torch."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_serializer,
    model_validator,
)

from sketchshot.config import (
    METHOD_SETTINGS,
    SECTION_METHODS,
    Config,
    MethodSettings,
    ViewConfig,
)
from sketchshot.errors import CheckpointError

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: sketchshot 0.1, migrated on reading
# Images are floats in [0, 1] with strokes bright on a dark background, then (x - mean) / std.
CONVENTION = "strokes bright on dark, pixel values in [0, 1] before normalisation"
PIXEL_MEAN = 0.5
PIXEL_STD = 0.5
VIEW_KEYS = ("augment_strength", *ViewConfig.model_fields)  # 0.1 saved them as model arguments


class Card(BaseModel):
    """Frozen, no unknown keys; remembers the file it was read from."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    _path: Path | None = PrivateAttr(None)

    @property
    def file(self) -> Path | None:
        """The JSON file this card was read from (None for a card made in memory)."""
        return self._path

    @property
    def weights_path(self) -> Path:
        """The tensors file beside the card (``weights``); for a pair renamed together
        (``other.json`` + ``other.safetensors``), the one of the card's own name. Its sha256
        is checked on loading either way."""
        weights = getattr(self, "weights", None)
        if self.file is None or weights is None:
            raise CheckpointError("a card made in memory has no weights file")
        named, beside = self.file.parent / weights, self.file.with_suffix(".safetensors")
        return beside if not named.exists() and beside.exists() else named

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2) + "\n"


def card_digest(data: dict[str, Any]) -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces) of ``data`` less ``card_sha256``."""
    body = {k: v for k, v in data.items() if k != "card_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def with_card_digest(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with its ``card_sha256`` (last)."""
    body = {k: v for k, v in data.items() if k != "card_sha256"}
    return body | {"card_sha256": card_digest(body)}


def check_card_digest(data: dict[str, Any], path: Path, required: bool = True) -> None:
    """Refuse a sidecar whose fields do not match its ``card_sha256`` (or, when ``required``,
    that has none)."""
    stored = data.get("card_sha256")
    if stored is None:
        if required:
            raise CheckpointError(
                f"{path}: no card_sha256, so nothing vouches for its fields (written by a "
                "development build of sketchshot 0.2?); save it again"
            )
        return
    if stored != card_digest(data):
        raise CheckpointError(
            f"{path}: card_sha256 does not match its fields; the sidecar was edited or is corrupt"
        )


class DigestedCard(Card):
    """A card whose JSON carries ``card_sha256``, written by ``to_json`` and checked by
    ``parse_card``. None only on a card of format version 1 (nothing vouches for it)."""

    card_sha256: str | None = Field(None, description="sha256 of the card's other fields")

    @property
    def covered(self) -> bool:
        """Whether ``card_sha256`` vouched for this card's fields when it was read."""
        return self.card_sha256 is not None

    def to_json(self) -> str:
        return json.dumps(with_card_digest(self.model_dump(mode="json")), indent=2) + "\n"


class TrainingStateCard(DigestedCard):
    """``checkpoints/last.json``: what ``--resume`` restores besides the tensors (the loop's
    counters, the optimiser's groups and scalar state)."""

    format_version: int = FORMAT_VERSION
    kind: Literal["training_state"] = "training_state"
    loop: dict[str, Any]
    param_groups: list[dict[str, Any]]
    optim_scalars: dict[str, dict[str, Any]] = {}
    sha256: str


class ModelSpec(Card):
    """Registry names and arguments that rebuild the network (nothing about data or views)."""

    method: str
    kind: Literal["ssl", "fewshot", "supervised", "pairwise"]
    method_args: dict[str, Any] = {}
    encoder: str
    encoder_args: dict[str, Any] = {}
    init: str = Field("random", description="where the encoder's weights started from")

    @property
    def image_size(self) -> int:
        return int(self.encoder_args["image_size"])

    def settings(self) -> MethodSettings:
        """The method's typed settings; a CheckpointError when they do not fit."""
        if self.method not in METHOD_SETTINGS:
            valid = ", ".join(METHOD_SETTINGS)
            raise CheckpointError(f"unknown method {self.method!r} (this version has: {valid})")
        try:
            return METHOD_SETTINGS[self.method](**self.method_args)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise CheckpointError(
                f"saved {self.method} arguments do not fit this version ({where}: {first['msg']})"
            ) from None


class Preprocessing(Card):
    """How an image becomes the model's input."""

    image_size: int = Field(ge=8, le=512)
    invert: Literal["auto", "yes", "no"] = "auto"
    fit: Literal["page", "ink"] = "page"  # older cards: the whole page
    mean: float = PIXEL_MEAN
    std: float = PIXEL_STD
    convention: str = CONVENTION


class DataSummary(Card):
    origin: str
    images: int


class ModelCard(DigestedCard):
    """``model.json``: the sidecar of ``model.safetensors`` (and of checkpoints' best/epoch_N)."""

    format_version: int = FORMAT_VERSION
    sketchshot_version: str
    model: ModelSpec
    preprocessing: Preprocessing
    class_names: tuple[str, ...] = ()
    data: DataSummary | None = None
    config: dict[str, Any] = Field(
        default_factory=dict, description="the resolved run config (see ``run_config``)"
    )
    metrics: dict[str, Any] = {}
    members: tuple[ModelRef, ...] = Field(
        (),
        description="an ensemble's runs (``sketchshot ensemble``), in the order of its "
        "encoder's members: where each was and the sha256 of its weights",
    )
    weights: str = "model.safetensors"
    sha256: str

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("format_version") == 1:
            data = migrate_v1(data)
        return data

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        # a card of one run is written as before ensembles existed
        data = handler(self)
        if not data.get("members"):
            data.pop("members", None)
        return data

    def run_config(self) -> Config:
        """The resolved config the model was trained with."""
        try:
            return Config.model_validate(self.config)
        except ValidationError as exc:
            raise CheckpointError(
                f"{self.file}: its config does not fit this sketchshot ({exc.error_count()} "
                "problem(s)); pass --data and --config explicitly"
            ) from None


def migrate_v1(data: dict[str, Any]) -> dict[str, Any]:
    """A 0.1 card in the current shape: view settings leave the model's arguments, and flat
    method keys of the config move into the method's own section."""
    data = {k: v for k, v in data.items() if k != "card_sha256"}  # 0.1 wrote none
    data["format_version"] = FORMAT_VERSION
    if isinstance(data.get("model"), dict):
        model = dict(data["model"])
        args = model.get("method_args", {})
        model["method_args"] = {k: v for k, v in args.items() if k not in VIEW_KEYS}
        data["model"] = model
    if isinstance(data.get("config"), dict):
        data["config"] = migrate_v1_config(data["config"])
    return data


def migrate_v1_config(tree: dict[str, Any]) -> dict[str, Any]:
    tree = dict(tree)
    for section, methods in SECTION_METHODS.items():
        old = tree.get(section)
        if not isinstance(old, dict) or isinstance(old.get("method"), dict):
            continue
        new = {k: v for k, v in old.items() if k not in VIEW_KEYS}
        name = old.get("method")
        settings = methods.get(name) if isinstance(name, str) else None
        own = {}
        for key in list(new):
            if any(key in s.model_fields for s in methods.values()) and key != "method":
                value = new.pop(key)
                if settings is not None and key in settings.model_fields:
                    own[key] = value
        views = {k: old[k] for k in ViewConfig.model_fields if k in old}
        if "augment_strength" in old:
            views["strength"] = old["augment_strength"]
        new["views"] = views
        if settings is not None:
            new[name] = own
        tree[section] = new
    return tree


class ModelRef(Card):
    """The model a bank was encoded with: the sha256 of its weights, which identifies it, and
    where it was (its run folder, or its card where that is not a run's ``model.json``), a
    hint for finding it. ``bundled``: the card of the bank's own copy of the model, beside
    the bank (``BANK.model.json``), where ``enroll --bundle`` wrote one (older banks have no
    such field, and load as unbundled)."""

    path: str
    sha256: str
    method: str
    encoder: str
    bundled: str | None = None

    @classmethod
    def of(cls, card: ModelCard) -> ModelRef:
        assert card.file is not None
        where = card.file.parent if card.file.name == "model.json" else card.file
        return cls(
            path=str(where.resolve()),
            sha256=card.sha256,
            method=card.model.method,
            encoder=card.model.encoder,
        )


ModelCard.model_rebuild()  # ``members`` names ModelRef, defined after it


class RejectThreshold(Card):
    """Below ``value`` of its ``statistic`` a sketch is labelled unknown. ``episodes`` > 0
    when it was calibrated on the bank."""

    value: float
    statistic: str = "nearest_class_similarity"
    target_false_reject: float | None = None
    episodes: int = 0
    known_queries: int = 0
    unknown_queries: int = 0
    false_reject: float | None = None
    false_accept: float | None = None
    seed: int = 0


class BankClass(Card):
    name: str
    count: int
    source: str = ""


class BankCard(DigestedCard):
    """``BANK.json``: the sidecar of a class bank's ``BANK.safetensors`` (embeddings, labels)."""

    format_version: int = FORMAT_VERSION
    kind: Literal["class_bank"] = "class_bank"
    sketchshot_version: str
    built_with: ModelRef
    preprocessing: Preprocessing
    embedding_dim: int
    n_embeddings: int
    classes: tuple[BankClass, ...]
    reject: RejectThreshold | None = None
    weights: str
    sha256: str


class ExportedFile(Card):
    """One exported module: its file's name and sha256, and its inputs and output, each a
    name and a shape whose named dimensions (``batch``) are free."""

    filename: str
    sha256: str
    inputs: dict[str, list[int | str]]
    outputs: dict[str, list[int | str]]


class ExportedScoring(Card):
    """How the exported model scores queries against classes: ``rule`` in words with the
    learned scalars it uses, and the ``module`` file where the scoring is learned."""

    rule: str
    parameters: dict[str, float] = {}
    module: ExportedFile | None = None


class ExportCheck(Card):
    """The export loaded back and run on ``images`` images in [0, 1] (another batch size than
    the one it was traced or exported with) and ``embeddings`` random embeddings per scoring
    input, against the model itself."""

    runtime: str
    images: int
    encoder_max_abs_diff: float
    scoring_max_abs_diff: float | None = None


class ExportCard(DigestedCard):
    """``export.json``: what ``sketchshot export`` wrote, for a program that runs it without
    sketchshot: the preprocessing, the encoder's and scoring module's files, inputs and
    outputs, the source model and the versions that wrote it."""

    format_version: int = FORMAT_VERSION
    kind: Literal["export"] = "export"
    format: Literal["onnx", "torchscript"]
    sketchshot_version: str
    torch_version: str
    onnx_opset: int | None = None
    source: ModelRef
    model: ModelSpec
    preprocessing: Preprocessing
    pixels: str
    embedding_dim: int
    encoder: ExportedFile
    scoring: ExportedScoring
    class_names: tuple[str, ...] = ()
    check: ExportCheck | None = Field(None, description="None: nothing here could run it back")


def finite(value: Any) -> Any:
    """``value`` with NaN and infinities (a CI over one repeat, the accuracy of no decided
    pairs) as None, nested in dicts, lists and tuples: what strict JSON can hold."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not a valid JSON sidecar ({exc})") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not a sketchshot sidecar (a JSON object)")
    if data.get("format_version") not in READABLE_VERSIONS:
        raise CheckpointError(
            f"{path}: unsupported format version {data.get('format_version')!r} "
            f"(this sketchshot reads versions {', '.join(map(str, READABLE_VERSIONS))})"
        )
    written_by = str(data.get("sketchshot_version", ""))
    relabelled = data.get("kind") != "training_state" and not written_by.startswith("0.1")
    if data.get("format_version") == 1 and relabelled:
        # only sketchshot 0.1 wrote version 1 (without card_sha256): a card relabelled as 1
        # by hand must not escape the check of its fields
        raise CheckpointError(
            f"{path}: format version 1 from sketchshot {written_by or '?'}; only 0.1 wrote "
            "that version, so the card was edited"
        )
    return data


def parse_card(kind: type[Card], data: dict[str, Any], path: Path) -> Any:
    """``kind`` validated from ``data``; one line naming the first bad field otherwise. A
    ``DigestedCard`` of format version 2 must match its ``card_sha256``."""
    try:
        card = kind.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "card"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise CheckpointError(f"{path}: {where}: {first['msg']}{more}") from None
    if isinstance(card, DigestedCard) and data.get("format_version") != 1:
        # the fields as read, so that a value pydantic would coerce still counts as an edit
        check_card_digest(data, path)
    card._path = path
    return card
