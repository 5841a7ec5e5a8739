"""Sketch augmentation on batched tensors: parameters drawn per sample, applied in one pass.

Line art calls for geometric jitter, stroke-width change and erasing, never photo colour
jitter. Everything runs on the batch's device, so two cores are spent on the model, not on PIL.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sketchshot.config import ViewConfig

ELASTIC_POINTS = 5  # control points per side of the elastic displacement field


class SketchAugment(nn.Module):
    """Random crop-and-resize, affine (rotation, scale, shear, translation), elastic
    distortion, stroke thickness (dilate/erode), random erasing and cutout of [B, 1, H, W]
    images in [0, 1] with bright strokes.

    The crop is torchvision's RandomResizedCrop folded into the same affine map: a window of
    ``crop`` to 1 of the image's area, aspect ratio 3/4 to 4/3, anywhere inside the image,
    stretched to the full size (``crop=1`` turns it off). The elastic distortion is a smooth
    random displacement field resampled in the same pass (``elastic``: its standard deviation
    as a fraction of the side). ``strength`` scales every range at once (0: identity, 1: the
    defaults below)."""

    def __init__(
        self,
        strength: float = 1.0,
        rotation: float = 15.0,
        scale: float = 0.2,
        shear: float = 10.0,
        translate: float = 0.1,
        thickness_p: float = 0.5,
        erase_p: float = 0.5,
        erase_area: float = 0.15,
        flip: bool = False,
        crop: float = 1.0,
        elastic: float = 0.0,
        cutout_p: float = 0.0,
        cutout_size: float = 0.25,
    ) -> None:
        super().__init__()
        self.strength = strength
        self.rotation, self.scale, self.shear, self.translate = rotation, scale, shear, translate
        self.thickness_p, self.erase_p, self.erase_area, self.flip = (
            thickness_p,
            erase_p,
            erase_area,
            flip,
        )
        self.crop = crop
        self.elastic, self.cutout_p, self.cutout_size = elastic, cutout_p, cutout_size

    @classmethod
    def from_config(cls, views: ViewConfig) -> SketchAugment:
        """The views a config asks for (``[pretrain.views]``, ``[finetune.views]``)."""
        return cls(
            views.strength,
            thickness_p=views.thickness_p,
            erase_p=views.erase_p,
            flip=views.flip,
            crop=views.crop,
            elastic=views.elastic,
            cutout_p=views.cutout_p,
        )

    def _uniform(self, n: int, limit: float, device: torch.device) -> torch.Tensor:
        return (torch.rand(n, device=device) * 2 - 1) * limit * self.strength

    def affine(self, x: torch.Tensor) -> torch.Tensor:
        b, device = x.shape[0], x.device
        angle = self._uniform(b, math.radians(self.rotation), device)
        shear = self._uniform(b, math.radians(self.shear), device)
        scale = 1 + self._uniform(b, self.scale, device)
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.zeros(b, 2, 3, device=device)
        # inverse map (output -> input coordinates), as affine_grid expects
        theta[:, 0, 0] = cos / scale
        theta[:, 0, 1] = (-sin + torch.tan(shear) * cos) / scale
        theta[:, 1, 0] = sin / scale
        theta[:, 1, 1] = (cos + torch.tan(shear) * sin) / scale
        theta[:, :, 2] = self._uniform(2 * b, self.translate * 2, device).view(b, 2)
        if self.crop < 1:
            theta = self._cropped(theta)
        if self.flip:
            sign = torch.where(torch.rand(b, device=device) < 0.5, -1.0, 1.0)
            theta[:, 0, :2] *= sign[:, None]
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        if self.elastic > 0:
            grid = grid + self.displacement(b, x.shape[2], x.shape[3], device, x.dtype)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def displacement(
        self, b: int, h: int, w: int, device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        """A smooth random displacement [b, h, w, 2] in grid units (the side is 2): normal
        offsets at ELASTIC_POINTS x ELASTIC_POINTS control points, upsampled bicubically."""
        std = 2 * self.elastic * self.strength
        coarse = torch.randn(b, 2, ELASTIC_POINTS, ELASTIC_POINTS, device=device) * std
        field = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)
        return field.permute(0, 2, 3, 1).to(dtype)

    def _cropped(self, theta: torch.Tensor) -> torch.Tensor:
        """Compose the affine map with a random window: output -> window -> input image."""
        b, device = theta.shape[0], theta.device
        low = 1 - (1 - self.crop) * min(1.0, self.strength)
        area = low + torch.rand(b, device=device) * (1 - low)
        ratio = torch.exp((torch.rand(b, device=device) * 2 - 1) * math.log(4 / 3))
        w = torch.sqrt(area * ratio).clamp(max=1)
        h = torch.sqrt(area / ratio).clamp(max=1)
        window = torch.zeros(b, 3, 3, device=device)
        window[:, 0, 0], window[:, 1, 1], window[:, 2, 2] = w, h, 1
        window[:, 0, 2] = (torch.rand(b, device=device) * 2 - 1) * (1 - w)
        window[:, 1, 2] = (torch.rand(b, device=device) * 2 - 1) * (1 - h)
        return torch.bmm(window[:, :2], torch.cat([theta, window[:, 2:]], 1))

    def thickness(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        p = min(1.0, self.thickness_p * self.strength)
        draw = torch.rand(b, device=x.device)
        thick = F.max_pool2d(x, 3, stride=1, padding=1)
        thin = -F.max_pool2d(-x, 3, stride=1, padding=1)
        # erode only where the result keeps ink: a thin stroke would vanish
        use_thin = (draw < p / 2) & (thin.flatten(1).amax(1) > 0.5)
        use_thick = (draw >= p / 2) & (draw < p)
        x = torch.where(use_thin.view(b, 1, 1, 1), thin, x)
        return torch.where(use_thick.view(b, 1, 1, 1), thick, x)

    def erase(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        device = x.device
        area = torch.rand(b, device=device) * self.erase_area * self.strength
        aspect = torch.exp((torch.rand(b, device=device) * 2 - 1) * math.log(3))
        eh = (torch.sqrt(area * aspect) * h).clamp(max=h)
        ew = (torch.sqrt(area / aspect) * w).clamp(max=w)
        top = torch.rand(b, device=device) * (h - eh)
        left = torch.rand(b, device=device) * (w - ew)
        rows = torch.arange(h, device=device).view(1, h, 1)
        cols = torch.arange(w, device=device).view(1, 1, w)
        inside = (
            (rows >= top.view(b, 1, 1))
            & (rows < (top + eh).view(b, 1, 1))
            & (cols >= left.view(b, 1, 1))
            & (cols < (left + ew).view(b, 1, 1))
        )
        apply = (torch.rand(b, device=device) < self.erase_p).view(b, 1, 1)
        return x.masked_fill((inside & apply).unsqueeze(1), 0.0)

    def cutout(self, x: torch.Tensor) -> torch.Tensor:
        """Blank a square of ``cutout_size`` of the side (scaled by ``strength``) centred
        anywhere in the image, so that part of it may fall outside (DeVries & Taylor 2017),
        in each image with probability ``cutout_p``."""
        b, _, h, w = x.shape
        device = x.device
        half = min(1.0, self.cutout_size * self.strength) / 2
        cy, cx = torch.rand(b, device=device), torch.rand(b, device=device)
        rows = (torch.arange(h, device=device).view(1, h, 1) + 0.5) / h
        cols = (torch.arange(w, device=device).view(1, 1, w) + 0.5) / w
        inside = ((rows - cy.view(b, 1, 1)).abs() < half) & ((cols - cx.view(b, 1, 1)).abs() < half)
        apply = (torch.rand(b, device=device) < self.cutout_p).view(b, 1, 1)
        return x.masked_fill((inside & apply).unsqueeze(1), 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.strength == 0:
            return x
        x = self.affine(x)
        if self.thickness_p > 0:
            x = self.thickness(x)
        if self.erase_p > 0 and self.erase_area > 0:
            x = self.erase(x)
        if self.cutout_p > 0 and self.cutout_size > 0:
            x = self.cutout(x)
        return x
