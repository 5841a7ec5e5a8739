"""torchvision ResNets with a 1-channel stem and no classifier (He et al. 2016), optionally
starting from torchvision's ImageNet weights with the RGB stem folded into one channel."""

from __future__ import annotations

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
}


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
        """Load ImageNet weights from ``source`` (a .pth or .safetensors state dict), else from
        the torch hub cache, downloading there if allowed. The RGB stem is summed over its
        input channels into one channel; the classifier is dropped. Returns the file used."""
        path = Path(source) if source else imagenet_file(self.arch, download)
        state = read_state_dict(path)
        stem = state.get("conv1.weight")
        if stem is None or stem.dim() != 4:
            raise CheckpointError(f"{path}: not a torchvision {self.arch} state dict")
        state["conv1.weight"] = stem.sum(dim=1, keepdim=True)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        try:
            self.net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{path}: does not fit {self.arch}: {exc}") from None
        return path


def imagenet_file(arch: str, download: bool = True) -> Path:
    """The cached ImageNet weights of ``arch`` (``$TORCH_HOME/hub/checkpoints``), fetched
    from torchvision's address first when missing and ``download`` is set."""
    url = IMAGENET_WEIGHTS[arch].url
    path = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    if path.is_file():
        return path
    if not download:
        raise CheckpointError(f"ImageNet weights for {arch} are not cached at {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(path), progress=True)
    except Exception as exc:  # offline, proxy, HTTP error: say where to put the file
        raise CheckpointError(
            f"cannot download ImageNet weights for {arch} from {url} ({exc}); "
            f"put the file at {path} or pass its path"
        ) from None
    return path


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
