"""``import-weights``: a ResNet checkpoint from outside (a SimCLR repository's, or torchvision's
own) converted once into a run folder that every command takes as a pretrain run's encoder.

The run is recorded as SimCLR (Chen et al. 2020), an encoder-only self-supervised model like
``pretrain``'s: ``finetune --init``, ``evaluate``, ``enroll``, ``predict`` and
``sketchshot.load`` read its encoder's features. A projection MLP of two linear layers under
the backbone's ``fc.`` (as SimCLR repositories save it) is kept as SimCLR's head; anything else
there (torchvision's 1000-way classifier) is left out and the head starts fresh. The RGB stem
is summed into one channel. The file is read with the safe ``weights_only`` loader unless
``trust_pickle`` (unpickling can run code). Nothing is written unless the backbone fits."""

from __future__ import annotations

import pickle
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file
from torch import nn

from sketchshot.card import Preprocessing
from sketchshot.checkpoint import save_model, sha256_of
from sketchshot.config import SimCLRSettings
from sketchshot.encoders import ENCODERS, create_encoder
from sketchshot.encoders.resnet import ResNetEncoder, one_channel_state
from sketchshot.engine import model_spec
from sketchshot.errors import CheckpointError, ConfigError
from sketchshot.methods import create_method
from sketchshot.runs import new_run_dir

CONTAINER_KEYS = ("state_dict", "model", "backbone")  # where repositories nest the state dict
RESNET_PARTS = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.")  # torchvision's
SHOWN = 3  # key names a note or an error shows


class ImportConfig(BaseModel):
    """One ``import-weights`` call."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    source: Path = Field(description="the checkpoint: .pth/.pt/.tar/.ckpt or .safetensors")
    encoder: str = Field(description="the ResNet encoder its backbone is")
    out: Path | None = Field(None, description="the run folder to write; None: runs/import-*")
    prefix: str | None = Field(None, description="the backbone's key prefix; None: detected")
    image_size: int | None = Field(None, ge=8, le=512, description="None: the encoder's default")
    trust_pickle: bool = Field(False, description="torch.load(weights_only=False)")


@dataclass(frozen=True)
class ImportResult:
    run_dir: Path
    encoder: str
    method: str
    image_size: int
    source: str
    source_sha256: str
    prefix: str
    tensors: int  # encoder tensors taken from the file
    head: str  # "kept" (the file's projection) or "fresh"
    notes: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "run_dir": str(self.run_dir)}


def importable() -> list[str]:
    """The encoders whose keys are torchvision's ResNet keys."""
    found = {n: ENCODERS.get(n) for n in ENCODERS.names()}
    return [n for n, f in found.items() if isinstance(f, type) and issubclass(f, ResNetEncoder)]


def import_weights(cfg: ImportConfig) -> ImportResult:
    """Convert ``cfg.source`` into a SimCLR run folder (``model.safetensors`` + ``model.json``)
    whose encoder is the file's backbone; refuse, writing nothing, when it does not fit."""
    if cfg.encoder not in importable():
        raise ConfigError(
            f"--encoder {cfg.encoder}: import-weights reads torchvision ResNet keys; choose one "
            f"of: {', '.join(importable())}"
        )
    run_dir = new_run_dir(cfg.out, "import", cfg.encoder)
    where = str(cfg.source)
    state = read_checkpoint(cfg.source, cfg.trust_pickle)
    prefix = find_prefix(state, where) if cfg.prefix is None else with_dot(cfg.prefix)
    backbone = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if "conv1.weight" not in backbone or backbone["conv1.weight"].dim() != 4:
        raise CheckpointError(
            f"{where}: no ResNet backbone under the prefix {prefix!r} (no 4-D "
            f"{prefix}conv1.weight); its keys start: {named(state)}"
        )
    image_size = cfg.image_size or ENCODERS.get(cfg.encoder).default_image_size
    encoder = create_encoder(cfg.encoder, image_size=image_size)
    tensors, notes = backbone_tensors(backbone, encoder, where)
    outside = [k for k in state if not k.startswith(prefix)]
    if outside:
        notes.append(f"{len(outside)} keys outside the backbone left out: {named(outside)}")
    fc = {k[3:]: v for k, v in backbone.items() if k.startswith("fc.")}
    head, settings, said = projection_head_state(fc, encoder.embedding_dim, prefix)
    notes.append(said)
    with torch.random.fork_rng(devices=[]):  # a fresh head is the same on every import of a file
        torch.manual_seed(0)
        method = create_method("simclr", encoder, settings)
    method.encoder.net.load_state_dict(tensors, strict=False)  # checked: only counters missing
    if head is not None:
        method.head.load_state_dict(head, strict=True)
    digest = sha256_of(cfg.source)
    kept = "kept" if head is not None else "fresh"
    init = f"imported from {cfg.source.name} (sha256 {digest}); projection head {kept}"
    card = {
        "model": model_spec(settings, cfg.encoder, image_size, init),
        "preprocessing": Preprocessing(image_size=image_size),
        "config": {},  # not trained here: no run config, and no sketchshot data it has seen
    }
    save_model(run_dir / "model", method, card)
    return ImportResult(
        run_dir=run_dir,
        encoder=cfg.encoder,
        method="simclr",
        image_size=image_size,
        source=str(cfg.source),
        source_sha256=digest,
        prefix=prefix,
        tensors=len(tensors),
        head=kept,
        notes=tuple(notes),
    )


def read_checkpoint(path: Path, trust_pickle: bool) -> dict[str, torch.Tensor]:
    """The state dict in ``path``: the file itself, or nested under ``CONTAINER_KEYS``."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        if path.suffix == ".safetensors":
            found: Any = load_file(str(path))
        else:
            found = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as exc:
        pickled = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if pickled is None:
            raise CheckpointError(
                f"{path}: not a PyTorch checkpoint that torch.load reads"
            ) from None
        raise CheckpointError(
            f"{path}: holds pickled Python objects ({pickled.group(1)}) besides tensors, which "
            "the safe loader refuses; pass --trust-pickle only if you trust its source "
            "(unpickling can run code)"
        ) from None
    except Exception as exc:  # not a torch file, truncated, a module its pickles need
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: unreadable checkpoint ({first})") from None
    for _ in range(len(CONTAINER_KEYS) + 1):
        if isinstance(found, nn.Module):  # a whole pickled model (with --trust-pickle)
            found = found.state_dict()
        if not isinstance(found, dict):
            break
        inner = [found[k] for k in CONTAINER_KEYS if isinstance(found.get(k), dict | nn.Module)]
        if not inner:
            tensors = {k: v for k, v in found.items() if torch.is_tensor(v)}
            if tensors:
                return tensors
            break
        found = inner[0]
    raise CheckpointError(
        f"{path}: holds no state dict (a dict of tensors, or one under "
        f"{', '.join(repr(k) for k in CONTAINER_KEYS)})"
    )


def find_prefix(state: dict[str, torch.Tensor], where: str) -> str:
    """The prefix of the one ResNet backbone in ``state``: '' for torchvision's own keys,
    ``backbone.``, ``module.encoder.``, ..."""
    stem = "conv1.weight"
    found = sorted(
        key[: -len(stem)]
        for key in state
        if key.endswith(stem)
        and (key == stem or key[: -len(stem)].endswith("."))
        and f"{key[: -len(stem)]}layer1.0.conv1.weight" in state
    )
    if len(found) == 1:
        return found[0]
    if not found:
        raise CheckpointError(
            f"{where}: no ResNet backbone found (no conv1.weight beside layer1.0.conv1.weight "
            f"under any prefix); its keys start: {named(state)}"
        )
    raise CheckpointError(
        f"{where}: holds {len(found)} backbones ({', '.join(repr(p) for p in found)}); choose "
        "one with --prefix"
    )


def with_dot(prefix: str) -> str:
    return prefix if not prefix or prefix.endswith(".") else prefix + "."


def backbone_tensors(
    backbone: dict[str, torch.Tensor], encoder: ResNetEncoder, where: str
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The encoder's ``net`` tensors from ``backbone`` (stem folded, ``fc`` dropped) and notes;
    a CheckpointError naming the differences when the ResNet layout is not ``encoder``'s."""
    arch = encoder.arch
    folded = one_channel_state(backbone)
    own = {k: v for k, v in folded.items() if k.startswith(RESNET_PARTS)}
    found = {k: v.shape for k, v in own.items()}
    problem = misfit(found, shapes(arch), arch)
    if problem:
        fits = [a for a in importable() if a != arch and not misfit(found, shapes(a), a)]
        hint = f"it fits {fits[0]}: pass --encoder {fits[0]}" if fits else "is it another ResNet?"
        raise CheckpointError(f"{where}: its backbone does not fit {arch}: {problem}; {hint}")
    notes = [f"{len(own)} tensors of the backbone loaded into {arch}"]
    channels = backbone["conv1.weight"].shape[1]
    if channels != 1:
        notes[0] += f"; the {channels}-channel stem summed into one channel"
    counters = [k for k in encoder.net.state_dict() if k not in own]  # num_batches_tracked only
    if counters:
        notes.append(f"{len(counters)} BatchNorm counters missing, left at 0: {named(counters)}")
    other = [k for k in folded if k not in own]
    if other:
        notes.append(f"{len(other)} other backbone keys left out: {named(other)}")
    return own, notes


def shapes(arch: str) -> dict[str, torch.Size]:
    """The shapes of encoder ``arch``'s ``net`` tensors (built without memory, on 'meta')."""
    with torch.device("meta"):
        net = create_encoder(arch).net  # type: ignore[attr-defined]
    return {k: v.shape for k, v in net.state_dict().items()}


def misfit(found: dict[str, torch.Size], expected: dict[str, torch.Size], arch: str) -> str:
    """What keeps ``found`` from loading as ``expected``, the tensors of ``arch`` ('' when
    nothing): tensors of another shape, missing ones (a BatchNorm's ``num_batches_tracked``
    may be) and ones ``arch`` lacks."""
    other = [k for k in found if k in expected and found[k] != expected[k]]
    missing = [k for k in expected if k not in found and not k.endswith("num_batches_tracked")]
    extra = [k for k in found if k not in expected]
    parts = []
    if other:
        k = other[0]
        parts.append(
            f"{len(other)} tensors of another shape ({k}: {list(found[k])} in the file, "
            f"{list(expected[k])} in {arch}{', ...' if len(other) > 1 else ''})"
        )
    if missing:
        parts.append(f"{len(missing)} missing ({named(missing)})")
    if extra:
        parts.append(f"{len(extra)} that {arch} lacks ({named(extra)})")
    return ", ".join(parts)


def projection_head_state(
    fc: dict[str, torch.Tensor], in_dim: int, prefix: str, eps: float = 1e-5
) -> tuple[dict[str, torch.Tensor] | None, SimCLRSettings, str]:
    """SimCLR's head (Linear without bias, BatchNorm, ReLU, Linear) from the file's projection
    ``fc`` (keys without ``fc.``): two linear layers [H, in_dim] and [P, H], with or without a
    BatchNorm between them. A first-layer bias moves into the BatchNorm, which is the identity
    when the file has none: the same function in eval mode. Returns (the head's state or None,
    its settings, a note)."""
    where = f"{prefix}fc"
    layers = projection_layers(fc, in_dim)
    if layers is None:
        start = (
            f"{where} ({named(f'fc.{k}' for k in fc)}) is not a projection of two linear "
            "layers: left out, and SimCLR's projection head"
            if fc
            else f"no projection head under {where}: SimCLR's"
        )
        note = f"{start} is freshly initialised (seed 0); the commands use the encoder only"
        return None, SimCLRSettings(), note
    first, norm, second = layers
    w1, w2 = fc[f"{first}.weight"], fc[f"{second}.weight"]
    hidden, out = w1.shape[0], w2.shape[0]
    bias = fc.get(f"{first}.bias", torch.zeros(hidden))
    if norm is not None:
        bn = {
            "weight": fc.get(f"{norm}.weight", torch.ones(hidden)),
            "bias": fc.get(f"{norm}.bias", torch.zeros(hidden)),
            "running_mean": fc[f"{norm}.running_mean"] - bias,  # BN(Wx + b) = BN'(Wx)
            "running_var": fc[f"{norm}.running_var"],
        }
    else:
        bn = {
            "weight": torch.ones(hidden),
            "bias": bias,
            "running_mean": torch.zeros(hidden),
            "running_var": torch.full((hidden,), 1 - eps),  # (x - 0) / sqrt(1 - eps + eps)
        }
    head = {
        "0.weight": w1,
        **{f"1.{k}": v for k, v in bn.items()},
        "1.num_batches_tracked": torch.tensor(0),
        "3.weight": w2,
        "3.bias": fc.get(f"{second}.bias", torch.zeros(out)),
    }
    between = "its BatchNorm" if norm is not None else "a BatchNorm, the identity in eval mode"
    note = (
        f"projection head kept from {where} ({in_dim} -> {hidden} -> {out}, ReLU between; the "
        f"first layer's bias in {between})"
    )
    return head, SimCLRSettings(hidden_dim=hidden, projection_dim=out), note


def projection_layers(
    fc: dict[str, torch.Tensor], in_dim: int
) -> tuple[int, int | None, int] | None:
    """The indices (first linear, BatchNorm or None, second linear) of a projection that maps
    [B, in_dim] -> [B, H] -> [B, P]; None for anything else."""
    names = {k.split(".")[0] for k in fc}
    if not names or not all(n.isdigit() for n in names):
        return None  # not an nn.Sequential (torchvision's classifier is fc.weight, fc.bias)
    layers = sorted(int(n) for n in names)
    linear = [i for i in layers if f"{i}.weight" in fc and fc[f"{i}.weight"].dim() == 2]
    norms = [i for i in layers if f"{i}.running_mean" in fc and f"{i}.running_var" in fc]
    if len(linear) != 2 or len(norms) > 1 or len(layers) != len(linear) + len(norms):
        return None
    first, second = linear
    w1, w2 = fc[f"{first}.weight"], fc[f"{second}.weight"]
    if w1.shape[1] != in_dim or w2.shape[1] != w1.shape[0]:
        return None
    if norms and not (
        first < norms[0] < second and fc[f"{norms[0]}.running_mean"].shape == (w1.shape[0],)
    ):
        return None
    return first, norms[0] if norms else None, second


def named(keys: Iterable[str]) -> str:
    """The first few of ``keys``, for a note."""
    keys = list(keys)
    return ", ".join(keys[:SHOWN]) + (", ..." if len(keys) > SHOWN else "")
