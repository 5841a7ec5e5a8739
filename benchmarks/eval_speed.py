"""Evaluation speed: N-way K-shot episodes on the Omniglot held-out alphabets scored on
embeddings computed once (sketchshot) versus re-encoding every episode's support and query
images through the encoder (as easyfsl's evaluation loop does), on the same seeded episodes.

  python benchmarks/eval_speed.py [--model RUN] [--episodes 10000] [--reencode 1000]

Without --model, a randomly initialised conv4 ProtoNet is used: the point is speed and that
both paths give the same predictions, not the accuracy itself. The re-encoding path runs the
first --reencode episodes and is extrapolated to all of them (it takes about 10 minutes for
10,000 on 2 cores); pass --reencode equal to --episodes to run it in full. The cached path
embeds as evaluate does (BatchNorm folded into the convolutions); the re-encoding path calls
the encoder as it is, as easyfsl does. Writes eval_speed.json to --out (benchmarks/results).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, write_json  # noqa: E402
from omniglot import held_out  # noqa: E402

from sketchshot.checkpoint import load_model  # noqa: E402
from sketchshot.data.episodes import EpisodeIndex  # noqa: E402
from sketchshot.encoders import create_encoder  # noqa: E402
from sketchshot.evaluation import (  # noqa: E402
    draw_episodes,
    embed,
    episode_accuracies,
    predict_episodes,
)
from sketchshot.methods import Method, create_method  # noqa: E402


@torch.no_grad()
def reencoding(method: Method, images: torch.Tensor, episodes: list[EpisodeIndex]) -> np.ndarray:
    """Predicted episode labels [E, n_way * n_query], encoding each episode's support and then
    its query images afresh, the way easyfsl's ``evaluate`` does (process_support_set, then
    forward on the queries)."""
    out = np.empty((len(episodes), episodes[0].n_way * episodes[0].n_query), dtype=np.int64)
    for i, ep in enumerate(episodes):
        support = method.encoder(images[torch.from_numpy(ep.support)].float().div_(255.0))
        query = method.encoder(images[torch.from_numpy(ep.query)].float().div_(255.0))
        out[i] = method.score(support, ep.support_labels, query, ep.n_way).argmax(1).numpy()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="run folder (default: random conv4 ProtoNet)")
    parser.add_argument("--episodes", type=int, default=10_000)
    parser.add_argument("--reencode", type=int, default=1000, help="episodes re-encoded")
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--queries", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="folder of eval_speed.json")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    if args.model is not None:
        method, meta = load_model(args.model)
        size, name = meta.preprocessing.image_size, str(args.model)
    else:
        method, size = create_method("protonet", create_encoder("conv4")).eval(), 28
        name = "conv4 ProtoNet, random weights"
    test = held_out(size)
    device = torch.device("cpu")
    print(
        f"{name}; {len(test)} images of {len(test.class_names)} held-out classes; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    # one-off library start-up (oneDNN kernels, vmap) is paid by neither path's timing
    warm = draw_episodes(test.labels, args.ways, args.shots, args.queries, 2, args.seed + 1)
    embed(method, test.images[:256], device)
    predict_episodes(method, torch.zeros(len(test), method.encoder.embedding_dim), warm)
    reencoding(method, test.images, warm[:1])

    start = time.perf_counter()
    episodes = draw_episodes(
        test.labels, args.ways, args.shots, args.queries, args.episodes, args.seed
    )
    drawing = time.perf_counter() - start

    start = time.perf_counter()
    embeddings = embed(method, test.images, device)
    embedding = time.perf_counter() - start
    start = time.perf_counter()
    cached = predict_episodes(method, embeddings, episodes)
    scoring = time.perf_counter() - start
    cached_total = drawing + embedding + scoring

    subset = episodes[: args.reencode]
    start = time.perf_counter()
    fresh = reencoding(method, test.images, subset)
    reencode_seconds = time.perf_counter() - start
    rate = len(subset) / reencode_seconds
    reencode_total = drawing + len(episodes) / rate

    acc_cached = episode_accuracies(cached, episodes)
    acc_cached_subset = episode_accuracies(cached[: len(subset)], subset)
    acc_fresh = episode_accuracies(fresh, subset)
    differing = int((cached[: len(subset)] != fresh).sum())
    setting = f"{args.ways}-way {args.shots}-shot {args.queries}-query"
    extrapolated = len(subset) < len(episodes)
    print(f"{len(episodes)} {setting} episodes, the same seeded list for both paths")
    print(
        f"cached:     {cached_total:8.2f} s end to end = draw {drawing:.2f} s + embed "
        f"{len(test)} images once {embedding:.2f} s + score {scoring:.2f} s "
        f"({len(episodes) / cached_total:,.0f} episodes/s; scoring alone "
        f"{len(episodes) / scoring:,.0f} episodes/s)"
    )
    print(
        f"re-encoded: {reencode_total:8.2f} s end to end"
        + (f" (extrapolated from the first {len(subset)} episodes" if extrapolated else " (")
        + f", {reencode_seconds:.1f} s; {rate:.1f} episodes/s)"
    )
    print(f"speed-up end to end: {reencode_total / cached_total:.0f}x")
    print(
        f"accuracy, cached, all {len(episodes)} episodes: {acc_cached.mean():.4f}; "
        f"on the {len(subset)} re-encoded: cached {acc_cached_subset.mean():.6f}, "
        f"re-encoded {acc_fresh.mean():.6f}"
    )
    print(
        f"max per-episode accuracy difference {np.abs(acc_cached_subset - acc_fresh).max():.6f}; "
        f"{differing} of {fresh.size} query predictions differ"
    )
    write_json(
        "eval_speed",
        {"machine": describe(), "command": " ".join(sys.argv), "model": name,
         "setting": setting, "episodes": len(episodes), "reencoded": len(subset),
         "cached_s": cached_total, "draw_s": drawing, "embed_s": embedding, "score_s": scoring,
         "cached_episodes_per_s": len(episodes) / cached_total,
         "reencode_s": reencode_total, "reencode_extrapolated": extrapolated,
         "reencode_episodes_per_s": rate, "speedup": reencode_total / cached_total,
         "accuracy_cached": float(acc_cached.mean()),
         "predictions_differing": differing},
        args.out,
    )  # fmt: skip


if __name__ == "__main__":
    main()
