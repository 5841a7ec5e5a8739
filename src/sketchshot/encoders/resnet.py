"""torchvision ResNets with a 1-channel stem and no classifier (He et al. 2016), optionally
starting from torchvision's ImageNet weights with the RGB stem folded into one channel.

ImageNet weights (of these and of ``swin_t``), downloaded or found in the cache, are checked
against torchvision's published hash: the leading hex digits of the file's sha256 are part of its
name (``resnet18-f37072fd.pth``), as ``torch.hub``'s ``check_hash`` uses them."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torchvision import models

from sketchshot.encoders.base import ENCODERS, Encoder
from sketchshot.errors import CheckpointError

# torchvision's published ImageNet weights (IMAGENET1K_V1), by architecture.
IMAGENET_WEIGHTS = {
    "resnet18": models.ResNet18_Weights.IMAGENET1K_V1,
    "resnet34": models.ResNet34_Weights.IMAGENET1K_V1,
    "resnet50": models.ResNet50_Weights.IMAGENET1K_V1,
    "swin_t": models.Swin_T_Weights.IMAGENET1K_V1,
}
# torch.hub's HASH_REGEX, with at least the 8 hex digits torchvision publishes
HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,})\.")


class ResNetEncoder(Encoder):
    """[B, 1, S, S] -> [B, 512] (resnet18/34) or [B, 2048] (resnet50). Weights start random;
    ``load_imagenet`` replaces them. No download happens unless asked for."""

    default_image_size = 64

    def __init__(self, arch: str, image_size: int = 64) -> None:
        super().__init__()
        self.arch = arch
        net = getattr(models, arch)(weights=None)
        net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.embedding_dim = net.fc.in_features
        net.fc = nn.Identity()
        self.net = net

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def load_imagenet(self, source: str | Path | None = None, download: bool = True) -> Path:
        """Load ImageNet weights (``load_imagenet_weights``): the RGB stem summed over its input
        channels into one channel, the classifier dropped. Returns the file used."""
        return load_imagenet_weights(
            self.net, self.arch, "conv1.weight", one_channel_state, source, download
        )


def load_imagenet_weights(
    net: nn.Module,
    arch: str,
    stem: str,
    convert: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]],
    source: str | Path | None = None,
    download: bool = True,
) -> Path:
    """Load torchvision's ImageNet weights of ``arch`` into ``net``, its 1-channel version
    without classifier, from ``source`` (a .pth or .safetensors state dict), else from the
    torch hub cache, downloading there if allowed. Torchvision's file (from the cache, or a
    ``source`` under its published name) must match its published hash, and hold the RGB
    stem ``stem`` (a 4-D conv weight); ``convert`` makes its state dict ``net``'s (the stem
    folded to one channel, the classifier dropped), which must then fit exactly. Returns the
    file used."""
    path = Path(source) if source else imagenet_file(arch, download)
    url = IMAGENET_WEIGHTS[arch].url
    if source and path.name == url.rsplit("/", 1)[-1] and path.is_file():
        check_published_hash(path, url)
    state = read_state_dict(path)
    weight = state.get(stem)
    if weight is None or weight.dim() != 4:
        raise CheckpointError(f"{path}: not a torchvision {arch} state dict")
    try:
        net.load_state_dict(convert(state), strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: does not fit {arch}: {exc}") from None
    return path


def one_channel_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A torchvision ResNet state dict as ``ResNetEncoder.net`` takes it: the stem
    ``conv1.weight`` [64, C, k, k] summed over its C input channels into [64, 1, k, k] (a grey
    image is C equal channels, so the stem's response is unchanged) and the classifier
    ``fc.*`` dropped. ``conv1.weight`` must be 4-D; ``state`` itself is not changed."""
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    state["conv1.weight"] = state["conv1.weight"].sum(dim=1, keepdim=True)
    return state


def imagenet_file(arch: str, download: bool = True) -> Path:
    """The cached ImageNet weights of ``arch`` (``$TORCH_HOME/hub/checkpoints``), fetched
    from torchvision's address first when missing and ``download`` is set."""
    url = IMAGENET_WEIGHTS[arch].url
    path = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    if path.is_file():
        check_published_hash(path, url)
        return path
    if not download:
        raise CheckpointError(f"ImageNet weights for {arch} are not cached at {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fetched = path.with_name(f".{path.name}.download")  # cached only once its hash matches
    try:
        torch.hub.download_url_to_file(url, str(fetched), progress=True)
    except Exception as exc:  # offline, proxy, HTTP error: say where to put the file
        raise CheckpointError(
            f"cannot download ImageNet weights for {arch} from {url} ({exc}); "
            f"put the file at {path} or pass its path"
        ) from None
    try:
        check_published_hash(fetched, url, downloaded=True)
        os.replace(fetched, path)
    finally:
        fetched.unlink(missing_ok=True)
    return path


def check_published_hash(path: Path, url: str, downloaded: bool = False) -> None:
    """Refuse ``path`` unless its sha256 starts with the hash in the name of ``url``."""
    found = HASH_IN_NAME.search(url.rsplit("/", 1)[-1])
    if found is None:
        raise CheckpointError(f"{url} names no published sha256 to check its file against")
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    if not digest.hexdigest().startswith(found.group(1)):
        then = (
            "it was not kept; try again"
            if downloaded
            else "the file is corrupt or not torchvision's; delete it to download it again"
        )
        what = f"the download of {url}" if downloaded else str(path)
        raise CheckpointError(
            f"{what}: sha256 {digest.hexdigest()[:16]}... does not match torchvision's "
            f"published hash {found.group(1)}; {then}"
        )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors, or from a torchvision .pth read with the safe
    ``weights_only`` loader (tensors only, no code)."""
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: unreadable weights file ({exc})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: does not hold a state dict")
    return state


@ENCODERS.register("resnet18")
class ResNet18(ResNetEncoder):
    def __init__(self, image_size: int = 64) -> None:
        super().__init__("resnet18", image_size)


@ENCODERS.register("resnet34")
class ResNet34(ResNetEncoder):
    def __init__(self, image_size: int = 64) -> None:
        super().__init__("resnet34", image_size)


@ENCODERS.register("resnet50")
class ResNet50(ResNetEncoder):
    def __init__(self, image_size: int = 64) -> None:
        super().__init__("resnet50", image_size)
