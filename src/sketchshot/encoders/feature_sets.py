"""The feature sets a pairwise model concatenates (``FeatureStack``): the sketch encoder, the
average-pooled stages of an ImageNet ResNet-50 (``resnet50-layer3``: 1024 features,
``resnet50-layer4``: 2048) and four image statistics (``stats``). The ResNet-50 and the
statistics never train; the sketch encoder does unless it is frozen."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sketchshot.card import PIXEL_MEAN, PIXEL_STD
from sketchshot.config import PAIR_FEATURES
from sketchshot.encoders.base import Encoder
from sketchshot.encoders.resnet import ResNetEncoder

RESNET_SETS = {"resnet50-layer3": 3, "resnet50-layer4": 4}
STATS = ("sharpness", "brightness", "contrast", "ink")
INK = 0.5  # a pixel brighter than this is ink (strokes are bright)
# the 4-neighbour Laplacian, [1, 1, 3, 3]
LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])[None, None]


def image_stats(x: torch.Tensor) -> torch.Tensor:
    """Statistics [B, 4] of sketches [B, 1, S, S] in [0, 1] (strokes bright): sharpness (the
    variance of the Laplacian), brightness (the mean), contrast (the standard deviation) and
    the ink fraction (the share of pixels above ``INK``), in the order of ``STATS``."""
    flat = x.flatten(1)
    laplacian = F.conv2d(x, LAPLACIAN.to(x.device, x.dtype)).flatten(1)
    ink = (flat > INK).to(x.dtype).mean(1)
    return torch.stack([laplacian.var(1), flat.mean(1), flat.std(1), ink], dim=1)


class ImageStats(nn.Module):
    """``image_stats`` as a module: [B, 1, S, S] -> [B, 4]; nothing to train."""

    dim = len(STATS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return image_stats(x)


class ResNet50Stages(nn.Module):
    """A ResNet-50 with a 1-channel stem, up to the last of ``layers`` (3 and/or 4): sketches
    [B, 1, S, S] in [0, 1] -> {layer: its output average-pooled, [B, 1024] for layer 3,
    [B, 2048] for layer 4}. Built with random weights; ``load_imagenet`` puts torchvision's
    ImageNet weights in (the stem folded to one channel, as ``ResNetEncoder`` does)."""

    def __init__(self, layers: tuple[int, ...]) -> None:
        super().__init__()
        self.wanted = tuple(sorted(set(layers)))
        net = ResNetEncoder("resnet50").net
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        all_layers = (net.layer1, net.layer2, net.layer3, net.layer4)
        self.layers = nn.ModuleList(all_layers[: max(self.wanted)])

    @staticmethod
    def dim(layer: int) -> int:
        return 256 * 2 ** (layer - 1)  # layer1: 256 ... layer4: 2048

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        h = self.stem((x - PIXEL_MEAN) / PIXEL_STD)
        out = {}
        for number, layer in enumerate(self.layers, start=1):
            h = layer(h)
            if number in self.wanted:
                out[number] = h.mean(dim=(2, 3))
        return out

    def modules_up_to(self, layer: int) -> list[nn.Module]:
        """The modules that layer ``layer``'s features depend on (what a cache key hashes)."""
        return [self.stem, *self.layers[:layer]]

    def load_imagenet(self, source: str) -> Path:
        """torchvision's resnet50 weights from ``source`` ('imagenet': the torch hub cache,
        downloaded if missing; else a .pth/.safetensors state dict), checked and loaded by
        ``ResNetEncoder.load_imagenet``; returns the file used."""
        full = ResNetEncoder("resnet50")
        path = full.load_imagenet(None if source == "imagenet" else source)
        mine = self.state_dict()
        prefixes = {"stem.0.": "conv1.", "stem.1.": "bn1."}
        prefixes |= {f"layers.{i}.": f"layer{i + 1}." for i in range(len(self.layers))}
        theirs = full.net.state_dict()
        for key in mine:
            prefix = next(p for p in prefixes if key.startswith(p))
            mine[key] = theirs[prefixes[prefix] + key[len(prefix) :]]
        self.load_state_dict(mine, strict=True)
        return path


class FeatureStack(Encoder):
    """Sketches [B, 1, S, S] in [0, 1] -> the features of ``sets`` (names of
    ``config.PAIR_FEATURES``) concatenated in that order, [B, embedding_dim]. ``sketch`` is
    the sketch encoder where ``"encoder"`` is among the sets (else it is not kept)."""

    def __init__(self, sets: tuple[str, ...], sketch: Encoder) -> None:
        super().__init__()
        unknown = [s for s in sets if s not in PAIR_FEATURES]
        if unknown or not sets:
            raise ValueError(f"unknown feature sets {unknown}; choose from {PAIR_FEATURES}")
        self.sets = tuple(sets)
        self.sketch = sketch if "encoder" in sets else None
        layers = tuple(RESNET_SETS[s] for s in sets if s in RESNET_SETS)
        self.resnet = ResNet50Stages(layers).requires_grad_(False) if layers else None
        self.stats = ImageStats() if "stats" in sets else None
        self.dims = {s: self._dim(s) for s in sets}
        self.embedding_dim = sum(self.dims.values())
        self.default_image_size = sketch.default_image_size

    def _dim(self, name: str) -> int:
        if name == "encoder":
            return self.sketch.embedding_dim  # type: ignore[union-attr]
        if name == "stats":
            return ImageStats.dim
        return ResNet50Stages.dim(RESNET_SETS[name])

    def by_set(
        self, x: torch.Tensor, only: Collection[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """Each set's features of sketches ``x`` [B, 1, S, S], by name: [B, dims[name]]; of
        the sets ``only`` names, where given."""
        wanted = set(self.sets if only is None else only)
        out = {}
        if self.sketch is not None and "encoder" in wanted:
            out["encoder"] = self.sketch(x)
        if self.resnet is not None and wanted & RESNET_SETS.keys():
            stages = self.resnet(x)
            out |= {s: stages[layer] for s, layer in RESNET_SETS.items() if s in wanted}
        if self.stats is not None and "stats" in wanted:
            out["stats"] = self.stats(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The sets' own inputs are the images in [0, 1]: each normalises them its own way."""
        found = self.by_set(x)
        return torch.cat([found[s] for s in self.sets], dim=1)

    def depends_on(self, name: str) -> list[nn.Module]:
        """The modules whose weights set ``name``'s features depend on (none for stats)."""
        if name == "encoder":
            return [self.sketch]  # type: ignore[list-item]
        if name in RESNET_SETS:
            return self.resnet.modules_up_to(RESNET_SETS[name])  # type: ignore[union-attr]
        return []
