"""A disk cache of image features, for training a pairwise head on frozen features: each image
is read, decoded and encoded once, by the first run that needs it, and later runs read its
features back.

Features are kept by feature key and image: ``ROOT/<key>/<shard>.safetensors``, one tensor
[D] per image named by the sha256 of the image file's bytes. The key is a hash of what the
features depend on besides the file: the feature set's name, the sha256 of the weights it
computes them with (``state_digest``), the image size and inversion, and ``CACHE_VERSION``.
A run adds one shard per key with the images it had to encode (written atomically, named by
a hash of its contents), so runs that share a cache never write the same file; a shard that
cannot be read is skipped with a note (its images are encoded again)."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from sketchshot.checkpoint import atomic_write
from sketchshot.errors import DataWarning, WriteFailed

CACHE_VERSION = 1  # bumped when the way features are computed changes


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/sketchshot/features``, else ``~/.cache/sketchshot/features``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sketchshot" / "features"


def state_digest(modules: Iterable[nn.Module]) -> str:
    """sha256 of the weights and buffers of ``modules``, by name and value (not by file): the
    same weights hash the same however they were saved."""
    digest = hashlib.sha256()
    for number, module in enumerate(modules):
        for name, tensor in sorted(module.state_dict().items()):
            value = tensor.detach().cpu().contiguous()
            digest.update(f"{number}.{name}:{value.dtype}:{tuple(value.shape)};".encode())
            digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def feature_key(
    feature_set: str, weights: str, image_size: int, invert: str, fit: str = "page"
) -> str:
    """The cache key of one feature set's features: a hash of its name, its weights'
    ``state_digest``, the image size, inversion and frame, and ``CACHE_VERSION``."""
    about = {"set": feature_set, "weights": weights, "image_size": image_size,
             "invert": invert, "version": CACHE_VERSION}  # fmt: skip
    if fit != "page":  # keys of the whole-page frame stay those written before ``fit``
        about["fit"] = fit
    text = json.dumps(about, sort_keys=True)
    return f"{feature_set}-{hashlib.sha256(text.encode()).hexdigest()[:24]}"


class FeatureCache:
    """Features [D] by (key, image sha256) under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def load(self, key: str, hashes: Sequence[str]) -> dict[str, torch.Tensor]:
        """The cached features of the images ``hashes`` that the cache holds under ``key``."""
        wanted, found = set(hashes), {}
        folder = self.root / key
        for shard in sorted(folder.glob("*.safetensors")) if folder.is_dir() else ():
            try:
                with safe_open(str(shard), framework="pt") as f:
                    for name in wanted.intersection(f.keys()) - found.keys():
                        found[name] = f.get_tensor(name)
            except (SafetensorError, OSError) as exc:
                warnings.warn(
                    f"feature cache: skipped unreadable {shard} ({exc})", DataWarning, stacklevel=2
                )
        return found

    def save(self, key: str, features: dict[str, torch.Tensor], about: dict[str, str]) -> None:
        """Add ``features`` (image sha256 -> [D]) under ``key`` as one shard, with ``about`` in
        its metadata. A cache that cannot be written is a note, not an error: training goes
        on without it."""
        if not features:
            return
        tensors = {k: v.detach().float().cpu().clone() for k, v in features.items()}  # own rows
        name = hashlib.sha256("".join(sorted(tensors)).encode()).hexdigest()[:16]
        shard = self.root / key / f"{name}.safetensors"
        try:
            atomic_write(shard, lambda tmp: save_file(tensors, str(tmp), metadata=about))
        except WriteFailed as exc:
            warnings.warn(f"feature cache not written: {exc}", DataWarning, stacklevel=2)
