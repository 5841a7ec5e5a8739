"""Swin-T (Liu et al. 2021, "Swin Transformer: Hierarchical Vision Transformer using Shifted
Windows"): torchvision's ``swin_t`` (patch 4, window 7, depths 2-2-6-2, heads 3-6-12-24, width
96 -> 768) with a 1-channel patch embedding and no classifier, with stochastic depth and
gradient checkpointing as settings, its windows fitted to the image size.

Patch and windows at small sizes: the patch stays 4 px (the ImageNet patch embedding), so a
stage's side is ``r = S // 4`` and halves (rounding up) at each patch merging: 16, 8, 4, 2 at
64 px; 32, 16, 8, 4 at 128 px; 56, 28, 14, 7 at 224 px. Each stage takes the fewest windows
of at most 7 that cover it, made as equal as possible: ``w = ceil(r / ceil(r / 7))``. That is
torchvision's 7 at 224 px (the ImageNet geometry, exactly), 6, 4, 4, 2 at 64 px and 7, 6, 4, 4
at 128 px. A stage of side 7 or less is a single window (global attention, and no shift, which
torchvision turns off when one window covers the stage). torchvision's own swin_t keeps 7 and
pads every stage to a multiple of it (16 -> 21, 8 -> 14, 4 -> 7 and 2 -> 7 at 64 px: 1.7, 3, 3
and 12 times the tokens in attention, the padding attended to as keys, since torchvision does
not mask it). Here a stage is padded only where its side does not split evenly into those
fewest windows, and by fewer tokens than there are windows across (16 -> 18 at 64 px; 32 -> 35
and 16 -> 18 at 128 px; unmasked as well). A window w < 7 uses the centre of the 13 x 13 table
of relative position biases (the offsets -(w-1)..w-1), so the parameters, and ImageNet weights,
fit every size; the index into the table follows from the size and is not saved."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from torchvision.models.swin_transformer import (
    ShiftedWindowAttention,
    SwinTransformer,
    SwinTransformerBlock,
)

from sketchshot.encoders.base import ENCODERS, Encoder
from sketchshot.encoders.resnet import load_imagenet_weights

PATCH = 4
STEM = "features.0.0.weight"  # the patch embedding's conv weight
WINDOW = 7  # torchvision's, and the side of the ImageNet weights' relative position tables


def stage_sides(image_size: int, stages: int = 4) -> list[int]:
    """The token grid's side in each stage: ``S // 4``, then halved rounding up."""
    sides = [max(image_size // PATCH, 1)]
    while len(sides) < stages:
        sides.append(math.ceil(sides[-1] / 2))
    return sides


def window_for(side: int) -> int:
    """The window of a stage of side ``side``: the fewest windows of at most 7 that cover it,
    as equal as possible (7 for 56, 28, 14 and 7; 6 for 16; the side itself up to 7)."""
    return math.ceil(side / math.ceil(side / WINDOW))


def relative_position_index(window: int) -> torch.Tensor:
    """[window**4] indices into a (2 * 7 - 1)**2 table of relative position biases, for every
    pair of tokens in a window of side ``window`` <= 7 (torchvision's index when it is 7)."""
    grid = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij"))
    coords = grid.flatten(1)  # [2, w*w]
    offsets = coords[:, :, None] - coords[:, None, :] + WINDOW - 1  # [2, w*w, w*w], 0..12
    return (offsets[0] * (2 * WINDOW - 1) + offsets[1]).flatten()


def fit_window(attn: ShiftedWindowAttention, window: int, shifted: bool) -> None:
    """Give ``attn`` windows of side ``window`` (shifted by half a window if ``shifted``),
    indexing the centre of its 13 x 13 bias table; the index is derived, not saved."""
    attn.window_size = [window, window]
    attn.shift_size = [window // 2 if shifted else 0] * 2
    del attn.relative_position_index
    attn.register_buffer("relative_position_index", relative_position_index(window), False)


@ENCODERS.register("swin_t")
class SwinT(Encoder):
    """[B, 1, S, S] -> [B, 768], the layer-normed, average-pooled last stage; any S >= 8.

    ``drop_path``: stochastic depth, the rate of dropping the last block's residual branches,
    rising linearly from 0 at the first block; inactive in eval mode. 0.1 rather than
    torchvision's 0.2, which is Swin-T's rate for 300 ImageNet-1k epochs from scratch: sketch
    runs are far shorter, on far less data, often from ImageNet weights, where a lighter
    regulariser lets a short run learn.
    ``grad_checkpointing``: keep only each block's input in the forward pass and recompute the
    block in the backward pass (about a third more compute, much less activation memory); the
    same gradients, drop-path masks included (the random state is replayed)."""

    default_image_size = 64  # the resnets' side: 16 x 16 patches, 12x cheaper than 224

    def __init__(
        self, image_size: int = 64, drop_path: float = 0.1, grad_checkpointing: bool = False
    ) -> None:
        super().__init__()
        self.drop_path = drop_path
        self.grad_checkpointing = grad_checkpointing
        # torchvision's swin_t, whose builder fixes the drop-path rate at 0.2
        net = SwinTransformer(
            patch_size=[PATCH, PATCH],
            embed_dim=96,
            depths=[2, 2, 6, 2],
            num_heads=[3, 6, 12, 24],
            window_size=[WINDOW, WINDOW],
            stochastic_depth_prob=drop_path,
        )
        net.features[0][0] = nn.Conv2d(1, 96, kernel_size=PATCH, stride=PATCH)
        self.embedding_dim = net.head.in_features
        net.head = nn.Identity()
        stages = [m for m in net.features if isinstance(m, nn.Sequential)][1:]  # after the stem
        self.windows = [window_for(side) for side in stage_sides(image_size, len(stages))]
        for stage, window in zip(stages, self.windows, strict=True):
            for i, block in enumerate(stage):
                fit_window(block.attn, window, shifted=i % 2 == 1)
        self.net = net

    def features(self, x: torch.Tensor) -> torch.Tensor:
        recompute = self.grad_checkpointing and torch.is_grad_enabled()
        for layer in self.net.features:
            for module in layer if isinstance(layer, nn.Sequential) else (layer,):
                if recompute and isinstance(module, SwinTransformerBlock):
                    x = checkpoint(module, x, use_reentrant=False)
                else:
                    x = module(x)
        return self.net.flatten(self.net.avgpool(self.net.permute(self.net.norm(x))))

    def load_imagenet(self, source: str | Path | None = None, download: bool = True) -> Path:
        """Load torchvision's ImageNet weights (``Swin_T_Weights.IMAGENET1K_V1``) through the
        resnets' download, cache and hash check (``load_imagenet_weights``), converted by
        ``one_channel_state``. Returns the file used."""
        return load_imagenet_weights(self.net, "swin_t", STEM, one_channel_state, source, download)


def one_channel_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A torchvision swin_t state dict as ``SwinT.net`` takes it: the patch embedding [96, C,
    4, 4] summed over its C input channels (a grey image is C equal channels, so its response
    is unchanged), the classifier ``head.*`` and the window indices (derived, not saved)
    dropped. ``state`` itself is not changed."""
    state = {
        k: v
        for k, v in state.items()
        if not k.startswith("head.") and not k.endswith(".relative_position_index")
    }
    state[STEM] = state[STEM].sum(dim=1, keepdim=True)
    return state
