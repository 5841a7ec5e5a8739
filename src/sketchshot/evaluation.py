"""Episode evaluation on cached embeddings: each image is encoded once, then any number of
N-way K-shot episodes are scored on the cache through the method's own ``score``."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from sketchshot.compute import inference_encoder
from sketchshot.data.episodes import EpisodeIndex, EpisodeSampler
from sketchshot.data.views import SketchAugment
from sketchshot.methods import Method

# Test-time views: half the default affine ranges, no stroke-width change and no erasing (the
# views few-shot training uses, milder). With stroke-width changes, 8 views of a fine-tuned
# ProtoNet on Omniglot scored 0.9 / 2.3 points lower (5- / 20-way 1-shot) than these.
TTA_STRENGTH = 0.5


@torch.no_grad()
def embed(
    method: Method,
    images: torch.Tensor,
    device: torch.device,
    batch_size: int = 128,  # on a CPU, 128 small sketches run twice as fast as 512 (cache)
    views: int = 1,
    seed: int = 0,
    encoder: nn.Module | None = None,
) -> torch.Tensor:
    """Encoder features [N, D] (on ``device``) of uint8 images [N, 1, S, S], in eval mode.

    With ``views`` > 1 (test-time augmentation), each image's features are the mean over the
    image itself and ``views - 1`` seeded augmented views (mild affine jitter). ``encoder``
    computes them: by default ``inference_encoder(method.encoder)``, the same features with
    BatchNorm folded into the convolutions, faster; pass one made once when embedding batch
    after batch with the same weights."""
    was_training = method.training
    method.eval()
    if encoder is None:
        encoder = inference_encoder(method.encoder, device)
    augment = SketchAugment(TTA_STRENGTH, thickness_p=0.0, erase_p=0.0) if views > 1 else None
    out = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in range(0, images.shape[0], batch_size):
            chunk = images[start : start + batch_size].to(device).float().div_(255.0)
            features = encoder(chunk)
            for _ in range(views - 1):
                features = features + encoder(augment(chunk))
            out.append(features / views if views > 1 else features)
    method.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def embedder(
    method: Method, device: torch.device, seed: int = 0
) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """``embed`` with ``method``'s inference encoder made once: a function of images and a view
    count (default 1), for callers that embed batch after batch (episodes, runs, alignment)."""
    encoder = inference_encoder(method.encoder, device)

    def embedded(images: torch.Tensor, views: int = 1) -> torch.Tensor:
        return embed(method, images, device, views=views, seed=seed, encoder=encoder)

    return embedded


def mean_ci95(values: np.ndarray) -> tuple[float, float]:
    """Mean and the half-width of its 95% confidence interval (1.96 standard errors)."""
    if values.size < 2:
        return float(values.mean()), float("nan")
    return float(values.mean()), float(1.96 * values.std(ddof=1) / math.sqrt(values.size))


@dataclass(frozen=True)
class EpisodeScores:
    accuracies: np.ndarray  # [episodes], fraction of queries right in each episode
    n_way: int
    n_shot: int
    n_query: int

    @property
    def mean(self) -> float:
        return mean_ci95(self.accuracies)[0]

    @property
    def ci95(self) -> float:
        return mean_ci95(self.accuracies)[1]


@contextmanager
def one_thread() -> Iterator[None]:
    """Episode tensors are tiny: one thread beats a thread pool that waits on itself (measured
    on 2 busy cores: 300 episodes in 0.14 s instead of 20 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def draw_episodes(
    labels: torch.Tensor,
    n_way: int,
    n_shot: int,
    n_query: int,
    episodes: int,
    seed: int,
    class_names: tuple[str, ...] | None = None,
    within_groups: bool = False,
) -> list[EpisodeIndex]:
    """The seeded list of ``episodes`` episodes that evaluation with ``seed`` scores; with
    ``within_groups``, each takes its classes from one top-level group."""
    sampler = EpisodeSampler(labels, n_way, n_shot, n_query, class_names, float(within_groups))
    rng = np.random.default_rng([seed, 0x6576616C])
    return list(sampler.episodes(episodes, rng))


# Episodes per vmapped call: at most VMAP_BUDGET query x support x feature elements, so that
# a learned pair head (Relation, Siamese, Matching with an MLP) stays within the CPU's caches;
# measured on 2 cores, 5-way 1-shot ProtoNet scores ~5x faster, the heads about as fast.
VMAP_BUDGET = 1_000_000
VMAP_MAX_CHUNK = 64


@torch.inference_mode()
def predict_episodes(
    method: Method, embeddings: torch.Tensor, episodes: Sequence[EpisodeIndex]
) -> np.ndarray:
    """Predicted episode labels [episodes, n_way * n_query] of every query, scored by
    ``method.score`` on cached ``embeddings`` [N, D]. The episodes share one N-way K-shot.

    Small episodes go in chunks through ``torch.vmap(method.score)``: the same function,
    batched; large episodes, and a method whose ``score`` cannot be vmapped, are scored one
    episode at a time."""
    if not episodes:
        return np.empty((0, 0), dtype=np.int64)
    first, device = episodes[0], embeddings.device
    support_labels = first.support_labels.to(device)
    support = torch.from_numpy(np.stack([ep.support for ep in episodes])).to(device)
    query = torch.from_numpy(np.stack([ep.query for ep in episodes])).to(device)

    def score(s: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return method.score(s, support_labels, q, first.n_way).argmax(-1)

    out = torch.empty(len(episodes), first.n_way * first.n_query, dtype=torch.long, device=device)
    work = support.shape[1] * query.shape[1] * embeddings.shape[1]
    chunk = min(VMAP_MAX_CHUNK, VMAP_BUDGET // max(work, 1))
    with one_thread():
        if chunk < 2 or not _vmapped(score, embeddings, support, query, chunk, out):
            for i in range(len(episodes)):
                out[i] = score(embeddings[support[i]], embeddings[query[i]])
    return out.cpu().numpy()  # one transfer at the end: no sync per episode on a GPU


def _vmapped(
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    embeddings: torch.Tensor,
    support: torch.Tensor,
    query: torch.Tensor,
    chunk: int,
    out: torch.Tensor,
) -> bool:
    """Fill ``out`` chunk by chunk through ``torch.vmap(score)``; False where ``score`` cannot
    be vmapped (data-dependent control flow, ``.item()``), leaving the caller to loop."""
    batched = torch.vmap(score)
    try:
        for start in range(0, support.shape[0], chunk):
            rows = slice(start, start + chunk)
            out[rows] = batched(embeddings[support[rows]], embeddings[query[rows]])
    except (RuntimeError, NotImplementedError, ValueError):
        return False
    return True


def episode_accuracies(predictions: np.ndarray, episodes: Sequence[EpisodeIndex]) -> np.ndarray:
    """Fraction of queries right in each episode, [episodes]."""
    if not episodes:
        return np.empty(0)
    truth = episodes[0].query_labels.numpy()
    return (predictions == truth[None]).mean(axis=1)


def score_episodes(
    method: Method,
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    n_way: int,
    n_shot: int,
    n_query: int,
    episodes: int,
    seed: int,
    class_names: tuple[str, ...] | None = None,
) -> EpisodeScores:
    """Accuracy of ``episodes`` seeded episodes drawn over cached ``embeddings`` [N, D]."""
    drawn = draw_episodes(labels, n_way, n_shot, n_query, episodes, seed, class_names)
    accuracies = episode_accuracies(predict_episodes(method, embeddings, drawn), drawn)
    return EpisodeScores(accuracies, n_way, n_shot, n_query)
