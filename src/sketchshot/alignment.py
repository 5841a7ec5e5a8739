"""Shape match: how far apart two drawings are once one is laid over the other by the best
affine map, a training-free distance in the spirit of the "affine model" of Lake, Salakhutdinov
& Tenenbaum (2015). Each drawing becomes its ink points, centred on their mean and scaled to a
fixed spread, and a distance transform of them; for every (query, candidate) pair an affine map
is fitted by gradient descent to minimise the symmetric chamfer distance (mean distance from
each drawing's points to the other's ink), plus a penalty on how far the map strays from the
identity. Learned embeddings and this distance err on different drawings, so their sum ranks
one-shot characters better than either (``fused``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

POINTS = 150  # ink points per drawing (sampled with a fixed seed where there are more)
STEPS = 40  # Adam steps of the affine fit
LR = 0.05
PENALTY = 0.03  # weight of the squared distance of the map's parameters from the identity
SPREAD = 0.5  # root-mean-square radius of the ink points in the shared frame ([-1, 1] square)
PAIRS_PER_CHUNK = 4096


def _frames(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 [N, 1, S, S] (strokes bright) -> ink points [N, POINTS, 2] (x, y) and distance
    transforms [N, S, S], both in each drawing's normalised frame."""
    n, size = images.shape[0], images.shape[-1]
    axis = torch.linspace(-1, 1, size)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), -1).view(-1, 2)
    points, transforms = torch.empty(n, POINTS, 2), torch.empty(n, size, size)
    generator = torch.Generator().manual_seed(0)
    for i, image in enumerate(images[:, 0].float()):
        ys, xs = torch.nonzero(image > image.max() / 2, as_tuple=True)
        ink = torch.stack([xs, ys], 1).float() / (size - 1) * 2 - 1
        centred = ink - ink.mean(0)
        ink = centred * SPREAD / centred.pow(2).sum(1).mean().sqrt().clamp_min(1e-3)
        transforms[i] = torch.cdist(grid, ink).min(1).values.view(size, size)
        pick = torch.randperm(ink.shape[0], generator=generator)[:POINTS]
        if pick.numel() < POINTS:
            pick = pick[torch.randint(0, pick.numel(), (POINTS,), generator=generator)]
        points[i] = ink[pick]
    return points, transforms


def _at(transforms: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Distance transforms [B, S, S] read at points [B, P, 2] -> [B, P]; beyond the square,
    the border's value."""
    where = points.clamp(-1.2, 1.2)[:, :, None, :]
    read = F.grid_sample(transforms[:, None], where, align_corners=True, padding_mode="border")
    return read[:, 0, :, 0]


def _fitted_cost(
    q_points: torch.Tensor, q_dt: torch.Tensor, s_points: torch.Tensor, s_dt: torch.Tensor
) -> torch.Tensor:
    """The penalised symmetric chamfer cost [B] of B pairs after fitting each pair's affine map
    (query frame -> candidate frame)."""
    b = q_points.shape[0]
    theta = torch.zeros(b, 6, requires_grad=True)
    optimizer = torch.optim.Adam([theta], lr=LR)
    eye = torch.eye(2)
    for step in range(STEPS + 1):
        matrix, shift = eye + theta[:, :4].view(b, 2, 2), theta[:, None, 4:]
        forward = q_points @ matrix.transpose(1, 2) + shift
        backward = (s_points - shift) @ torch.linalg.inv(matrix).transpose(1, 2)
        cost = _at(s_dt, forward).mean(1) + _at(q_dt, backward).mean(1)
        cost = cost + PENALTY * theta.pow(2).sum(1)
        if step == STEPS:
            return cost.detach()
        optimizer.zero_grad()
        cost.sum().backward()
        optimizer.step()
    raise AssertionError("unreachable")


def shape_distances(query: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """[Q, C] shape-match distances (smaller: more alike) between uint8 images [Q, 1, S, S]
    and [C, 1, S, S], on the CPU."""
    with torch.enable_grad():
        q_points, q_dt = _frames(query.cpu())
        s_points, s_dt = _frames(candidates.cpu())
        qi = torch.arange(query.shape[0]).repeat_interleave(candidates.shape[0])
        si = torch.arange(candidates.shape[0]).repeat(query.shape[0])
        costs = [
            _fitted_cost(q_points[q], q_dt[q], s_points[s], s_dt[s])
            for q, s in zip(qi.split(PAIRS_PER_CHUNK), si.split(PAIRS_PER_CHUNK), strict=True)
        ]
    return torch.cat(costs).view(query.shape[0], candidates.shape[0])


def shaped(
    scores: torch.Tensor,
    query: torch.Tensor,
    support: torch.Tensor,
    weight: float,
    n_shot: int = 1,
) -> torch.Tensor:
    """A model's class scores [Q, N] for query images [Q, 1, S, S] against class-major support
    images [N * n_shot, 1, S, S], ``fused`` with each query's shape-match distance to each
    class (its nearest support drawing)."""
    pairs = shape_distances(query, support)
    nearest = pairs.view(query.shape[0], -1, n_shot).min(-1).values
    return fused(scores.float(), nearest, weight)


def fused(scores: torch.Tensor, distances: torch.Tensor, weight: float) -> torch.Tensor:
    """A model's class scores [Q, C] (higher: more likely) joined with shape ``distances``
    [Q, C]: each standardised over its row (a query's candidates), the distances' weighted by
    ``weight`` and subtracted. Higher: more likely."""

    def standard(x: torch.Tensor) -> torch.Tensor:
        return (x - x.mean(1, keepdim=True)) / x.std(1, keepdim=True).clamp_min(1e-9)

    return standard(scores) - weight * standard(distances.to(scores.device, scores.dtype))
