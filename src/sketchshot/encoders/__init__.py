"""Encoders, by registry name. Importing this package registers every encoder."""

from sketchshot.encoders import conv4, resnet  # noqa: F401  (registration)
from sketchshot.encoders.base import ENCODERS, Encoder, create_encoder

__all__ = ["ENCODERS", "Encoder", "create_encoder"]
