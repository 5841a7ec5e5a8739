"""The ``ensemble`` encoder: the embeddings of several encoders side by side, so that several
trained runs are one model (``sketchshot ensemble``). Under ProtoNet's euclidean score the
squared distance of two such embeddings is the sum of the members' squared distances, so the
ensemble's logits are the sum of the members' logits."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from sketchshot.encoders.base import ENCODERS, Encoder, create_encoder
from sketchshot.errors import ConfigError

MEMBER_KEYS = {"encoder", "encoder_args"}


def member_spec(member: Mapping[str, Any], index: int) -> tuple[str, dict[str, Any]]:
    """The registry name and arguments of one member, ``{"encoder": ..., "encoder_args":
    {...}}`` as a model card records them (``ModelSpec.encoder``, ``encoder_args``)."""
    if not isinstance(member, Mapping) or set(member) != MEMBER_KEYS:
        raise ConfigError(
            f"ensemble member {index}: expected the keys encoder and encoder_args, got "
            f"{sorted(member) if isinstance(member, Mapping) else type(member).__name__}"
        )
    name, args = member["encoder"], member["encoder_args"]
    if not isinstance(name, str) or not isinstance(args, Mapping):
        raise ConfigError(f"ensemble member {index}: encoder is a name, encoder_args an object")
    return name, dict(args)


@ENCODERS.register("ensemble", listed=False)  # built from saved runs, not trained by name
class EnsembleEncoder(Encoder):
    """Sketches [B, 1, S, S] in [0, 1] -> the members' embeddings concatenated in order,
    [B, sum of the members' embedding_dim].

    ``members``: each member's registry name and arguments as its card records them
    (``{"encoder": "conv4", "encoder_args": {"image_size": 28}}``), all at ``image_size``;
    a member may itself be an ensemble. The weights are the members', under
    ``members.<i>.``; the compute is the members' together."""

    def __init__(self, members: Sequence[Mapping[str, Any]], image_size: int = 28) -> None:
        super().__init__()
        if isinstance(members, Mapping | str) or not members:
            raise ConfigError("an ensemble encoder needs a list of at least one member")
        built = []
        for i, member in enumerate(members):
            name, args = member_spec(member, i)
            size = args.setdefault("image_size", image_size)
            if size != image_size:
                raise ConfigError(
                    f"ensemble member {i} ({name}) works at {size} px, the ensemble at "
                    f"{image_size} px"
                )
            built.append(create_encoder(name, **args))
        self.members = nn.ModuleList(built)
        self.embedding_dim = sum(m.embedding_dim for m in built)
        self.default_image_size = image_size  # type: ignore[misc]  (this instance's own)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The members' features of normalised sketches [B, 1, S, S], side by side [B, D]."""
        return torch.cat([m.features(x) for m in self.members], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Each member's own forward (its normalisation, then its features) on sketches in
        [0, 1]: exactly what the member computes alone."""
        return torch.cat([m(x) for m in self.members], dim=1)
