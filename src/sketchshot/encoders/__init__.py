"""Encoders, by registry name. Importing this package registers every encoder."""

from pathlib import Path

from sketchshot.encoders import conv4, resnet, sketch_cnn  # noqa: F401  (registration)
from sketchshot.encoders.base import ENCODERS, Encoder, create_encoder
from sketchshot.encoders.resnet import ResNetEncoder, read_state_dict
from sketchshot.errors import CheckpointError, ConfigError

__all__ = ["ENCODERS", "Encoder", "create_encoder", "initialise_encoder"]


def initialise_encoder(encoder: Encoder, init: str) -> str:
    """Apply ``init``: 'random' (as built), 'imagenet' (ResNets: torchvision's weights, stem
    folded to one channel), or a path to an encoder state dict. Returns what was used."""
    if init == "random":
        return init
    if init == "imagenet" or (isinstance(encoder, ResNetEncoder) and init.endswith(".pth")):
        if not isinstance(encoder, ResNetEncoder):
            raise ConfigError("ImageNet weights exist only for the resnet encoders")
        return str(encoder.load_imagenet(None if init == "imagenet" else init))
    state = read_state_dict(Path(init))
    try:
        encoder.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{init}: does not fit this encoder ({exc})") from None
    return init
