"""Self-describing weights: ``NAME.safetensors`` beside a ``NAME.json`` card (``ModelCard``).

The card names the registry entries and their arguments, the preprocessing, class names,
the resolved config, metrics and the sha256 of the weights, so a model rebuilds itself from
its folder. Loading checks the hash and loads strictly. Writes are atomic. No pickle."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

import sketchshot
from sketchshot.card import FORMAT_VERSION, ModelCard, ModelSpec, parse_card, read_json
from sketchshot.encoders import create_encoder
from sketchshot.errors import CheckpointError, SketchshotError
from sketchshot.methods import Method, create_method


def atomic_write(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)``, then rename onto ``path``: readers never see a torn file.
    The file gets the permissions a plain ``open`` would give it (0666 less the umask), not
    ``mkstemp``'s private 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it
    os.umask(mask)
    return mask


def write_json(path: Path, data: Any) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8"))


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


def save_weights(path: Path, tensors: dict[str, torch.Tensor]) -> str:
    """Write tensors atomically to ``path``; return the file's sha256."""
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    atomic_write(path, lambda p: save_file(tensors, str(p), metadata={"format": "pt"}))
    return sha256_of(path)


def save_model(stem: Path, method: nn.Module, card: dict[str, Any]) -> Path:
    """Write ``stem.safetensors`` and its card ``stem.json`` (``card`` holds every field but
    the versions, file name and hash); returns the weights' path."""
    weights = stem.with_suffix(".safetensors")
    digest = save_weights(weights, unwrap(method).state_dict())
    written = ModelCard.model_validate(
        {
            "format_version": FORMAT_VERSION,
            "sketchshot_version": sketchshot.__version__,
            **card,
            "weights": weights.name,
            "sha256": digest,
        }
    )
    atomic_write(stem.with_suffix(".json"), lambda p: p.write_text(written.to_json(), "utf-8"))
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
    if not weights.is_file():
        raise CheckpointError(f"weights file missing: {weights}")
    if expected_sha256 is not None and sha256_of(weights) != expected_sha256:
        raise CheckpointError(
            f"{weights}: sha256 does not match its sidecar; the file was changed or is corrupt"
        )
    try:
        return load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{weights}: unreadable safetensors file ({exc})") from None


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
    digest = save_weights(stem.with_suffix(".safetensors"), tensors)
    meta = {
        "format_version": FORMAT_VERSION,
        "kind": "training_state",
        "loop": state,
        "param_groups": opt["param_groups"],
        "optim_scalars": scalars,
        "sha256": digest,
    }
    write_json(stem.with_suffix(".json"), meta)


def load_training_state(
    stem: Path, method: nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Restore what ``save_training_state`` wrote; returns the loop counters."""
    try:
        meta = json.loads(stem.with_suffix(".json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(
            f"nothing to resume: {stem.with_suffix('.json')} is missing"
        ) from None
    tensors = load_tensors(stem.with_suffix(".safetensors"), meta.get("sha256"))
    model_state = {k[6:]: v for k, v in tensors.items() if k.startswith("model/")}
    try:
        unwrap(method).load_state_dict(model_state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{stem}: saved weights do not fit this model ({exc})") from None
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim/"):
            _, idx, name = key.split("/", 2)
            state.setdefault(int(idx), {})[name] = value
    for idx, slots in meta["optim_scalars"].items():
        state.setdefault(int(idx), {}).update(slots)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    torch.set_rng_state(tensors["rng/torch"])
    cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng/cuda/")]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)
    return meta["loop"]
