"""Shape match and alignment: how far apart two drawings are once one is laid over the other by
the best affine map, a training-free distance in the spirit of the "affine model" of Lake,
Salakhutdinov & Tenenbaum (2015), and the drawings so laid over each other for the model to
score. Each drawing becomes its ink points, centred on their mean and scaled to a fixed spread,
and a distance transform of them; for every (query, candidate) pair an affine map is fitted by
gradient descent to minimise the symmetric chamfer distance (mean distance from each drawing's
points to the other's ink), plus a penalty on how far the map strays from the identity.
Learned embeddings and this distance err on different drawings, so their sum ranks one-shot
characters better than either (``fused``); the model scores drawings better still once they
agree in place, size and slant (``aligned``), and more so once a free-form (elastic) warp
after the affine map has also bent the strokes of one onto the other (``refined``). ``matched``
is what the one-shot protocols call."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Literal

import torch
import torch.nn.functional as F

from sketchshot.methods import Method

POINTS = 150  # ink points per drawing (sampled with a fixed seed where there are more)
STEPS = 40  # Adam steps of the affine fit
LR = 0.05
PENALTY = 0.03  # weight of the squared distance of the map's parameters from the identity
SPREAD = 0.5  # root-mean-square radius of the ink points in the shared frame ([-1, 1] square)
PAIRS_PER_CHUNK = 4096
# the elastic refinement (``refined``): a displacement field of GRID x GRID control points
# (bicubic in between), fitted by Adam to make the blurred images agree, with a penalty on its size
GRID = 4
ELASTIC_STEPS = 30
ELASTIC_LR = 0.02
ELASTIC_PENALTY = 0.1
BLUR = 1 / 28  # standard deviation of the Gaussian blur, in image sides (one pixel at 28 px)
PIXELS_PER_CHUNK = 4096 * 28 * 28
Warp = Literal["affine", "elastic"]


@dataclass(frozen=True)
class Frames:
    """Drawings in their normalised frames: ink points [N, POINTS, 2] (x, y), distance
    transforms [N, S, S], and where each frame sits in the image (``image = frame / scale +
    centre``, image coordinates in [-1, 1]): centres [N, 2] and scales [N]."""

    points: torch.Tensor
    transforms: torch.Tensor
    centres: torch.Tensor
    scales: torch.Tensor


def _frames(images: torch.Tensor) -> Frames:
    """uint8 [N, 1, S, S] (strokes bright) -> each drawing's ``Frames``."""
    n, size = images.shape[0], images.shape[-1]
    axis = torch.linspace(-1, 1, size)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), -1).view(-1, 2)
    points, transforms = torch.empty(n, POINTS, 2), torch.empty(n, size, size)
    centres, scales = torch.zeros(n, 2), torch.ones(n)
    generator = torch.Generator().manual_seed(0)
    for i, image in enumerate(images[:, 0].float()):
        ys, xs = torch.nonzero(image > image.max() / 2, as_tuple=True)
        ink = torch.stack([xs, ys], 1).float() / (size - 1) * 2 - 1
        centres[i] = ink.mean(0)
        scales[i] = SPREAD / (ink - centres[i]).pow(2).sum(1).mean().sqrt().clamp_min(1e-3)
        ink = (ink - centres[i]) * scales[i]
        transforms[i] = torch.cdist(grid, ink).min(1).values.view(size, size)
        pick = torch.randperm(ink.shape[0], generator=generator)[:POINTS]
        if pick.numel() < POINTS:
            pick = pick[torch.randint(0, pick.numel(), (POINTS,), generator=generator)]
        points[i] = ink[pick]
    return Frames(points, transforms, centres, scales)


def _at(transforms: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Distance transforms [B, S, S] read at points [B, P, 2] -> [B, P]; beyond the square,
    the border's value."""
    where = points.clamp(-1.2, 1.2)[:, :, None, :]
    read = F.grid_sample(transforms[:, None], where, align_corners=True, padding_mode="border")
    return read[:, 0, :, 0]


def _fit(query: Frames, candidate: Frames) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit each of B pairs' affine map (query frame -> candidate frame): the penalised
    symmetric chamfer costs [B] and the maps [B, 2, 3] ([matrix | shift])."""
    b = query.points.shape[0]
    theta = torch.zeros(b, 6, requires_grad=True)
    optimizer = torch.optim.Adam([theta], lr=LR)
    eye = torch.eye(2)
    for step in range(STEPS + 1):
        matrix, shift = eye + theta[:, :4].view(b, 2, 2), theta[:, None, 4:]
        forward = query.points @ matrix.transpose(1, 2) + shift
        backward = (candidate.points - shift) @ torch.linalg.inv(matrix).transpose(1, 2)
        cost = _at(candidate.transforms, forward).mean(1) + _at(query.transforms, backward).mean(1)
        cost = cost + PENALTY * theta.pow(2).sum(1)
        if step == STEPS:
            return cost.detach(), torch.cat([matrix, shift.transpose(1, 2)], 2).detach()
        optimizer.zero_grad()
        cost.sum().backward()
        optimizer.step()
    raise AssertionError("unreachable")


def _select(frames: Frames, index: torch.Tensor) -> Frames:
    return Frames(*(getattr(frames, f.name)[index] for f in fields(Frames)))


def affine_fits(query: torch.Tensor, candidates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit the affine map of every (query, candidate) pair of uint8 images [Q, 1, S, S] and
    [C, 1, S, S], on the CPU: shape-match distances [Q, C] (smaller: more alike) and the maps
    [Q, C, 2, 3] that take a point of the query's image to the candidate's (image coordinates
    in [-1, 1], x then y: ``p_candidate = M p_query + b`` as ``[M | b]``)."""
    q_frames, c_frames = _frames(query.cpu()), _frames(candidates.cpu())
    qi = torch.arange(query.shape[0]).repeat_interleave(candidates.shape[0])
    ci = torch.arange(candidates.shape[0]).repeat(query.shape[0])
    costs, maps = [], []
    for q, c in zip(qi.split(PAIRS_PER_CHUNK), ci.split(PAIRS_PER_CHUNK), strict=True):
        qf, cf = _select(q_frames, q), _select(c_frames, c)
        with torch.enable_grad():
            cost, fitted = _fit(qf, cf)
        # image -> query frame -> (fitted) -> candidate frame -> image
        ratio = (qf.scales / cf.scales)[:, None, None]
        matrix = fitted[:, :, :2] * ratio
        shift = fitted[:, :, 2] / cf.scales[:, None] + cf.centres
        shift = shift - (matrix @ qf.centres[:, :, None])[:, :, 0]
        costs.append(cost)
        maps.append(torch.cat([matrix, shift[:, :, None]], 2))
    shape = (query.shape[0], candidates.shape[0])
    return torch.cat(costs).view(shape), torch.cat(maps).view(*shape, 2, 3)


def shape_distances(query: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """[Q, C] shape-match distances (smaller: more alike) between uint8 images [Q, 1, S, S]
    and [C, 1, S, S], on the CPU."""
    return affine_fits(query, candidates)[0]


def inverted(maps: torch.Tensor) -> torch.Tensor:
    """The inverse of each affine map [..., 2, 3]."""
    matrix = torch.linalg.inv(maps[..., :2])
    return torch.cat([matrix, -(matrix @ maps[..., 2:])], -1)


def laid_over(images: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """uint8 images [B, 1, S, S] moved by their maps [B, 2, 3] (``affine_fits``' convention):
    the ink at p lands at M p + b; what comes from beyond the image is background."""
    grid = F.affine_grid(inverted(maps).float(), list(images.shape), align_corners=True)
    moved = F.grid_sample(images.float(), grid, align_corners=True, padding_mode="zeros")
    return moved.round_().clamp_(0, 255).to(torch.uint8)


def _blurred(images: torch.Tensor) -> torch.Tensor:
    """Float images [B, 1, S, S] under a Gaussian blur of ``BLUR`` image sides."""
    sigma = BLUR * images.shape[-1]
    radius = max(1, math.ceil(3 * sigma))
    taps = torch.exp(-torch.arange(-radius, radius + 1).float().pow(2) / (2 * sigma**2))
    taps = taps / taps.sum()
    images = F.conv2d(images, taps.view(1, 1, 1, -1), padding=(0, radius))
    return F.conv2d(images, taps.view(1, 1, -1, 1), padding=(radius, 0))


def _field(control: torch.Tensor, size: int) -> torch.Tensor:
    """Control-point displacements [B, 2, G, G] -> a displacement per pixel [B, S, S, 2]."""
    return F.interpolate(control, size=(size, size), mode="bicubic", align_corners=True).permute(
        0, 2, 3, 1
    )


def refined(images: torch.Tensor, targets: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """uint8 ``images`` [B, 1, S, S] laid over ``targets`` [B, 1, S, S] by their affine
    ``maps`` [B, 2, 3] (as ``laid_over``) and then by a free-form warp: a smooth displacement
    field (``GRID`` x ``GRID`` control points) fitted to minimise the squared difference of the
    blurred images plus ``ELASTIC_PENALTY`` times its mean squared size. Strokes bend onto the
    target's where the affine map left them beside it, as another writer's hand bends them."""
    out = torch.empty_like(images)
    size = images.shape[-1]
    chunk = max(1, PIXELS_PER_CHUNK // (size * size))
    for part in torch.arange(images.shape[0]).split(chunk):
        source = images[part].float()
        start = F.affine_grid(inverted(maps[part]).float(), list(source.shape), align_corners=True)
        blurred, goal = _blurred(source / 255), _blurred(targets[part].float() / 255)
        control = torch.zeros(len(part), 2, GRID, GRID, requires_grad=True)
        optimizer = torch.optim.Adam([control], lr=ELASTIC_LR)
        with torch.enable_grad():
            for _ in range(ELASTIC_STEPS):
                grid = start + _field(control, size)
                moved = F.grid_sample(blurred, grid, align_corners=True, padding_mode="zeros")
                cost = (moved - goal).pow(2).mean((1, 2, 3))
                cost = cost + ELASTIC_PENALTY * control.pow(2).mean((1, 2, 3))
                optimizer.zero_grad()
                cost.sum().backward()
                optimizer.step()
        grid = start + _field(control.detach(), size)
        moved = F.grid_sample(source, grid, align_corners=True, padding_mode="zeros")
        out[part] = moved.round_().clamp_(0, 255).to(torch.uint8)
    return out


@dataclass(frozen=True)
class Matching:
    """How a one-shot protocol meets queries with class drawings beyond the model's own
    scores: ``align`` (``aligned``) with the ``warp`` that lays drawings over each other (the
    affine map alone, or ``refined`` after it), and the shape match's weight (``fused``)."""

    align: bool = False
    shape_weight: float = 0.0
    warp: Warp = "elastic"

    def __bool__(self) -> bool:
        return self.align or self.shape_weight > 0

    def describe(self) -> str:
        """', aligned (elastic), shape match x0.25' (what the figure's name gains), or ''."""
        parts = [f"aligned ({self.warp})"] if self.align else []
        parts += [f"shape match x{self.shape_weight:g}"] if self.shape_weight else []
        return "".join(f", {p}" for p in parts)


@dataclass(frozen=True)
class Meeting:
    """What one-shot scoring compares: queries (images [Q, 1, S, S], embeddings [Q, D]) with
    class drawings (images and embeddings, with ``labels`` [K] in 0..n_way-1), scored by
    ``method``; ``embed`` embeds uint8 images with the model's encoder, one view each."""

    method: Method
    embed: Callable[[torch.Tensor], torch.Tensor]
    query: tuple[torch.Tensor, torch.Tensor]
    support: tuple[torch.Tensor, torch.Tensor]
    labels: torch.Tensor
    n_way: int


def matched(matching: Matching, meeting: Meeting, scores: torch.Tensor) -> torch.Tensor:
    """The model's class scores [Q, n_way] of the ``meeting``'s queries, joined with what
    ``matching`` asks: every (query, drawing) pair's affine map is fitted once; ``aligned``
    scores the drawings laid over each other by it, and the shape match's distance to each
    class (its nearest drawing) is ``fused`` in. Laid-over drawings are embedded with one view
    each: aligning does what test-time views do (on Omniglot's development runs, one member:
    13.6% error with one view, 13.1% with 4, 13.5% with 16)."""
    if not matching:
        return scores
    distances, maps = affine_fits(meeting.query[0], meeting.support[0])
    if matching.align:
        scores = aligned(meeting, scores, maps, matching.warp)
    if matching.shape_weight:
        nearest = torch.full((distances.shape[0], meeting.n_way), float("inf"))
        nearest = nearest.scatter_reduce(
            1, meeting.labels.cpu().expand_as(distances), distances, "amin", include_self=True
        )
        scores = fused(scores.float(), nearest, matching.shape_weight)
    return scores


def aligned(
    meeting: Meeting, scores: torch.Tensor, maps: torch.Tensor, warp: Warp = "elastic"
) -> torch.Tensor:
    """The mean of three scores of each query for each class: the model's; the query laid over
    the class's drawing by their fitted map (``maps`` [Q, K, 2, 3]; with ``warp="elastic"``,
    then ``refined`` onto it) and scored by the model against the support as it stands (with K
    shots: its best drawing); and the class's drawings laid over the query the other way, in
    place of the originals, scoring the query. The model then compares drawings that already
    agree in place, size, slant and shear (and, bent, in the run of their strokes), so that
    mostly their shapes differ."""
    method, embed, labels, n_way = meeting.method, meeting.embed, meeting.labels, meeting.n_way
    q, k = maps.shape[:2]
    q_images, q_embedded = meeting.query
    s_images, s_embedded = meeting.support
    queries, drawings = q_images.repeat_interleave(k, 0), s_images.repeat(q, 1, 1, 1)

    def lay(images: torch.Tensor, targets: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        return refined(images, targets, maps) if warp == "elastic" else laid_over(images, maps)

    over_support = embed(lay(queries, drawings, maps.flatten(0, 1)))
    over_query = embed(lay(drawings, queries, inverted(maps).flatten(0, 1)))
    over_support, over_query = over_support.view(q, k, -1), over_query.view(q, k, -1)
    forward = torch.full_like(scores, float("-inf"))
    for j, c in enumerate(labels.tolist()):
        laid = method.score(s_embedded, labels, over_support[:, j], n_way)[:, c]
        forward[:, c] = torch.maximum(forward[:, c], laid)
    backward = torch.empty_like(scores)
    rows = [labels == c for c in range(n_way)]
    for i in range(q):
        for c in range(n_way):
            swapped = torch.where(rows[c][:, None], over_query[i], s_embedded)
            backward[i, c] = method.score(swapped, labels, q_embedded[i : i + 1], n_way)[0, c]
    return (scores + forward + backward) / 3


def fused(scores: torch.Tensor, distances: torch.Tensor, weight: float) -> torch.Tensor:
    """A model's class scores [Q, C] (higher: more likely) joined with shape ``distances``
    [Q, C]: each standardised over its row (a query's candidates), the distances' weighted by
    ``weight`` and subtracted. Higher: more likely."""

    def standard(x: torch.Tensor) -> torch.Tensor:
        return (x - x.mean(1, keepdim=True)) / x.std(1, keepdim=True).clamp_min(1e-9)

    return standard(scores) - weight * standard(distances.to(scores.device, scores.dtype))
