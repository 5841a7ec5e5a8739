"""Self-describing weights: ``NAME.safetensors`` beside a ``NAME.json`` card (``ModelCard``).

The card names the registry entries and their arguments, the preprocessing, class names,
the resolved config, metrics and the sha256 of the weights, so a model rebuilds itself from
its folder. Loading checks the hash and loads strictly. No pickle.

Every file is written atomically (a temporary file, flushed to disk, then renamed), and a pair
of weights and sidecar is replaced as one unit (``save_pair``): a process killed at any
instant of a save leaves a pair that loads and passes its hash check, either the previous
one or the new one (no pair at all when there was none before). The commit point is the
rename of the sidecar. The new weights are first written beside the old ones as
``.NAME.safetensors.<sha256[:16]>`` and renamed onto ``NAME.safetensors`` only after the
commit; a sidecar whose ``NAME.safetensors`` does not match its hash loads those pending
weights instead, if they match it (``load_tensors``). Anything else that fails its hash is
refused. The next save of the pair removes what a killed save left behind. This holds for
one writer at a time per pair. A write that fails (a full disk) raises ``DiskFull`` or
``WriteFailed``, naming the file, and leaves the previous pair in place."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as serialize
from torch import nn

import sketchshot
from sketchshot.card import (
    FORMAT_VERSION,
    ModelCard,
    ModelSpec,
    TrainingStateCard,
    parse_card,
    read_json,
)
from sketchshot.encoders import create_encoder
from sketchshot.errors import CheckpointError, DiskFull, SketchshotError, WriteFailed
from sketchshot.methods import Method, create_method


def atomic_write(path: Path, write: Any, shown: Path | None = None) -> None:
    """Call ``write(tmp_path)``, flush it to disk, then rename onto ``path``: readers never see
    a torn file. The file gets the permissions a plain ``open`` would give it (0666 less the
    umask), not ``mkstemp``'s private 0600. An ``OSError`` (a full disk) becomes a
    ``WriteFailed`` naming ``shown`` (by default ``path``; ``DiskFull`` for no space), and
    ``path`` is left as it was."""
    shown = shown or path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise write_error(shown, exc) from None
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise write_error(shown, exc) from None
        raise


def write_error(path: Path, exc: OSError) -> WriteFailed:
    """The one-line error for a failed write of ``path``."""
    if exc.errno == errno.ENOSPC:
        return DiskFull(f"cannot write {path}: no space left on device")
    if exc.errno == getattr(errno, "EDQUOT", None):
        return DiskFull(f"cannot write {path}: no space left (disk quota exceeded)")
    return WriteFailed(f"cannot write {path}: {exc.strerror or exc}")


def _fsync(path: str | Path) -> None:
    """Flush a file (or, on POSIX, a folder's entries) to disk."""
    if Path(path).is_dir() and os.name != "posix":
        return  # Windows cannot open a folder; its renames are journalled
    fd = os.open(path, os.O_RDONLY if Path(path).is_dir() else os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it
    os.umask(mask)
    return mask


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module inside a DDP (``.module``) or ``torch.compile`` (``._orig_mod``) wrapper."""
    while True:
        if isinstance(module, nn.parallel.DistributedDataParallel):
            module = module.module
        elif hasattr(module, "_orig_mod"):
            module = module._orig_mod
        else:
            return module


def build_model(spec: ModelSpec) -> Method:
    """Rebuild a method from a card's ``model`` block through the registries."""
    settings = spec.settings()
    try:
        encoder = create_encoder(spec.encoder, **spec.encoder_args)
        return create_method(spec.method, encoder, settings)
    except SketchshotError as exc:
        raise CheckpointError(f"cannot rebuild the saved model: {exc}") from None
    except TypeError as exc:
        raise CheckpointError(f"saved model arguments do not fit this version: {exc}") from None


def pending_weights(weights: Path, sha256: str) -> Path:
    """Where ``save_pair`` keeps new weights of hash ``sha256`` until its sidecar is in place."""
    return weights.with_name(f".{weights.name}.{sha256[:16]}")


def save_pair(
    weights: Path, sidecar: Path, tensors: dict[str, torch.Tensor], card: Callable[[str], str]
) -> str:
    """Replace ``weights`` (the tensors, as safetensors) and ``sidecar`` (the text
    ``card(sha256)`` for the new weights' hash) as one unit; returns the hash.

    Three steps, each one rename: the weights to ``pending_weights``, the sidecar into place
    (the commit), the pending weights onto ``weights``. Killed before the commit, the
    previous pair is untouched; after it, ``load_tensors`` takes the pending weights."""
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    return save_file_pair(weights, sidecar, serialize(tensors, metadata={"format": "pt"}), card)


def save_file_pair(weights: Path, sidecar: Path, data: bytes, card: Callable[[str], str]) -> str:
    """``save_pair`` of a weights file's bytes ``data`` as they are (a copy of saved weights
    keeps its sha256)."""
    digest = hashlib.sha256(data).hexdigest()
    text = card(digest)
    pending = pending_weights(weights, digest)
    atomic_write(pending, lambda p: p.write_bytes(data), shown=weights)
    atomic_write(sidecar, lambda p: p.write_text(text, encoding="utf-8"))  # the commit
    try:
        os.replace(pending, weights)
        _fsync(weights.parent)
    except OSError as exc:  # the new pair is saved, and loads through its pending weights
        raise write_error(weights, exc) from None
    discard_leftovers(weights, sidecar)
    return digest


def discard_leftovers(weights: Path, sidecar: Path) -> None:
    """Remove what saves of this pair that were killed left: temporary and pending files
    (``.NAME.safetensors.*``, ``.NAME.json.*``; a temporary file of pending weights starts
    with ``..``)."""
    own = (f"{weights.name}.", f"{sidecar.name}.")
    for entry in os.scandir(weights.parent):
        if entry.name.startswith(".") and entry.name.lstrip(".").startswith(own):
            Path(entry.path).unlink(missing_ok=True)


def save_model(stem: Path, method: nn.Module, card: dict[str, Any]) -> Path:
    """Write ``stem.safetensors`` and its card ``stem.json`` as one unit (``save_pair``;
    ``card`` holds every field but the versions, file name and hash); returns the weights'
    path."""
    weights = stem.with_suffix(".safetensors")

    def text(digest: str) -> str:
        return ModelCard.model_validate(
            {
                "format_version": FORMAT_VERSION,
                "sketchshot_version": sketchshot.__version__,
                **card,
                "weights": weights.name,
                "sha256": digest,
            }
        ).to_json()

    save_pair(weights, stem.with_suffix(".json"), unwrap(method).state_dict(), text)
    return weights


def find_sidecar(path: str | Path) -> Path:
    """Accept a run folder, a ``.safetensors`` file or a ``.json`` sidecar."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.json"
    elif path.suffix == ".safetensors":
        path = path.with_suffix(".json")
    if not path.is_file():
        raise CheckpointError(f"no saved model at {path} (expected a run folder with model.json)")
    return path


def read_card(path: str | Path) -> ModelCard:
    """The card of a saved model (a run folder, its ``.json`` or its ``.safetensors``)."""
    sidecar = find_sidecar(path)
    data = read_json(sidecar)
    if data.get("kind") == "class_bank":
        raise CheckpointError(
            f"{sidecar} is a class bank, not a model; pass the run folder it was encoded with "
            "(enroll/predict take it as --bank)"
        )
    return parse_card(ModelCard, data, sidecar)


def load_tensors(weights: Path, expected_sha256: str | None) -> dict[str, torch.Tensor]:
    """The tensors of ``weights``, hash-checked. Weights that do not match ``expected_sha256``
    are refused unless the pending weights of a save killed after its commit (``save_pair``)
    match it: those are the sidecar's own."""
    if expected_sha256 is not None and not has_sha256(weights, expected_sha256):
        pending = pending_weights(weights, expected_sha256)
        if has_sha256(pending, expected_sha256):
            weights = pending
        elif weights.is_file():
            raise CheckpointError(
                f"{weights}: sha256 does not match its sidecar; the file was changed or is corrupt"
            )
    if not weights.is_file():
        raise CheckpointError(f"weights file missing: {weights}")
    try:
        return load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{weights}: unreadable safetensors file ({exc})") from None


def has_sha256(path: Path, sha256: str) -> bool:
    return path.is_file() and sha256_of(path) == sha256


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[Method, ModelCard]:
    """Rebuild, hash-check and strictly load a saved model; returns (eval-mode model, card)."""
    card = read_card(path)
    weights = card.weights_path
    tensors = load_tensors(weights, card.sha256)
    model = build_model(card.model)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise CheckpointError(
            f"{weights}: weights do not match the model in its sidecar ({' '.join(first[:2])})"
        ) from None
    return model.to(device).eval(), card


def save_training_state(
    stem: Path, method: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    """Everything ``--resume`` needs: weights, optimiser, RNG and loop counters."""
    tensors = {f"model/{k}": v for k, v in unwrap(method).state_dict().items()}
    opt = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for idx, slots in opt["state"].items():
        for name, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"optim/{idx}/{name}"] = value
            else:
                scalars.setdefault(str(idx), {})[name] = value
    tensors["rng/torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{i}"] = s

    def text(digest: str) -> str:
        card = TrainingStateCard(
            loop=state, param_groups=opt["param_groups"], optim_scalars=scalars, sha256=digest
        )
        return card.to_json()

    save_pair(stem.with_suffix(".safetensors"), stem.with_suffix(".json"), tensors, text)


def load_training_state(
    stem: Path, method: nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Restore what ``save_training_state`` wrote; returns the loop counters. The sidecar
    must hold the weights' ``sha256`` and (from format version 2) its ``card_sha256``."""
    sidecar = stem.with_suffix(".json")
    if not sidecar.is_file():
        raise CheckpointError(f"nothing to resume: {sidecar} is missing")
    meta = read_json(sidecar)
    if meta.get("kind") != "training_state" or not isinstance(meta.get("sha256"), str):
        raise CheckpointError(
            f"{sidecar}: not a training state with the sha256 of its weights; it cannot be "
            "trusted to resume from"
        )
    card: TrainingStateCard = parse_card(TrainingStateCard, meta, sidecar)
    tensors = load_tensors(stem.with_suffix(".safetensors"), card.sha256)
    model_state = {k[6:]: v for k, v in tensors.items() if k.startswith("model/")}
    try:
        unwrap(method).load_state_dict(model_state, strict=True)
    except RuntimeError as exc:
        missing = str(exc).count('"') // 2  # the keys named in the state-dict error
        raise CheckpointError(
            f"{stem}: saved weights do not fit this {type(unwrap(method)).__name__} model "
            f"({missing} mismatched keys); resume with the run's own --method, --encoder and "
            "--image-size"
        ) from None
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim/"):
            _, idx, name = key.split("/", 2)
            state.setdefault(int(idx), {})[name] = value
    for idx, slots in card.optim_scalars.items():
        state.setdefault(int(idx), {}).update(slots)
    try:
        optimizer.load_state_dict({"state": state, "param_groups": card.param_groups})
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"{stem}: its optimiser state does not fit ({exc})") from None
    torch.set_rng_state(tensors["rng/torch"])
    cuda = sorted((int(k.rsplit("/", 1)[1]), v) for k, v in tensors.items() if "rng/cuda/" in k)
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([state for _, state in cuda])
    return card.loop
