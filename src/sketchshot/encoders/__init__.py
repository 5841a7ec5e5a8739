"""Encoders, by registry name. Importing this package registers every encoder."""

import inspect
from pathlib import Path

from sketchshot.config import EncoderConfig
from sketchshot.encoders import (  # noqa: F401  (registration)
    conv4,
    ensemble,
    resnet,
    sketch_cnn,
    swin,
)
from sketchshot.encoders.base import ENCODERS, Encoder, create_encoder
from sketchshot.encoders.resnet import ResNetEncoder, read_state_dict
from sketchshot.encoders.swin import SwinT
from sketchshot.errors import CheckpointError, ConfigError

__all__ = ["ENCODERS", "Encoder", "create_encoder", "encoder_arguments", "initialise_encoder"]

# encoders that can start from torchvision's ImageNet weights (``load_imagenet``)
IMAGENET_ENCODERS = (ResNetEncoder, SwinT)
# settings that only some encoders have, and what they are
OPTIONAL_SETTINGS = {
    "drop_path": "drop path (stochastic depth)",
    "grad_checkpointing": "gradient checkpointing",
    "width": "width setting",
}


def takes(name: str, setting: str) -> bool:
    """Whether encoder ``name``'s constructor has the argument ``setting``."""
    return setting in inspect.signature(ENCODERS.get(name)).parameters


def encoder_arguments(config: EncoderConfig, image_size: int) -> dict[str, object]:
    """``create_encoder``'s arguments for ``config``: the image size, and ``drop_path``,
    ``grad_checkpointing`` and ``width`` where set. An encoder without such a setting refuses it (a
    ConfigError) rather than ignoring it."""
    args: dict[str, object] = {"image_size": image_size}
    given = {
        "drop_path": config.drop_path,
        "grad_checkpointing": config.grad_checkpointing,
        "width": config.width,
    }
    for setting, value in given.items():
        if value is None or value is False:
            continue
        if not takes(config.name, setting):
            having = ", ".join(n for n in ENCODERS.names() if takes(n, setting)) or "none"
            raise ConfigError(
                f"encoder.{setting}: {config.name} has no {OPTIONAL_SETTINGS[setting]}; "
                f"encoders that have it: {having}"
            )
        args[setting] = value
    return args


def initialise_encoder(encoder: Encoder, init: str) -> str:
    """Apply ``init``: 'random' (as built), 'imagenet' (ResNets and swin_t: torchvision's
    weights, stem folded to one channel), or a path to an encoder state dict. Returns what was
    used."""
    if init == "random":
        return init
    if init == "imagenet" or (isinstance(encoder, IMAGENET_ENCODERS) and init.endswith(".pth")):
        if not isinstance(encoder, IMAGENET_ENCODERS):
            raise ConfigError("ImageNet weights exist only for the resnet encoders and swin_t")
        return str(encoder.load_imagenet(None if init == "imagenet" else init))
    state = read_state_dict(Path(init))
    try:
        encoder.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{init}: does not fit this encoder ({exc})") from None
    return init
