"""What `evaluate --align` and `--shape-weight` cost per query-drawing pair, on one CPU thread:
the affine fit (``alignment.affine_fits``), laying drawings over each other by the map alone
(``laid_over``, both ways) and by the map and the elastic warp (``refined``, both ways).

  python benchmarks/alignment_cost.py [--pairs 400] [--repeats 3]

The pairs are 20 held-out Omniglot drawings against 20 by another drawer (one 20-way run's
worth, 28 px, fit to ink) where ../shared/data/omniglot is present, else built-in glyphs. Prints
the best of --repeats, in milliseconds per pair. The model's embeddings of the laid-over
drawings (two per pair) come on top and depend on the model."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from omniglot import TEST_ZIP, held_out  # noqa: E402

from sketchshot.alignment import affine_fits, inverted, laid_over, refined  # noqa: E402
from sketchshot.data.glyphs import make_glyphs  # noqa: E402


def drawings(side: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``side`` queries and ``side`` class drawings of the same characters by other drawers."""
    if TEST_ZIP.exists():
        data = held_out(28, "ink")
        first = torch.stack([data.images[data.labels == c][0] for c in range(side)])
        second = torch.stack([data.images[data.labels == c][1] for c in range(side)])
        return second, first, f"Omniglot held-out characters ({TEST_ZIP.name})"
    glyphs = make_glyphs(side, 2, 28).images
    return glyphs[1::2], glyphs[0::2], "built-in glyphs (no Omniglot archive found)"


def best_ms_per_pair(work, pairs: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3 / pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=400, help="a square number: side x side")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    side = int(args.pairs**0.5)
    query, support, source = drawings(side)
    pairs = side * side
    maps = affine_fits(query, support)[1].flatten(0, 1)
    queries, targets = query.repeat_interleave(side, 0), support.repeat(side, 1, 1, 1)
    figures = {
        "affine fit": lambda: affine_fits(query, support),
        "laid over by the map, both ways": lambda: (
            laid_over(queries, maps),
            laid_over(targets, inverted(maps)),
        ),
        "bent by the elastic warp, both ways": lambda: (
            refined(queries, targets, maps),
            refined(targets, queries, inverted(maps)),
        ),
    }
    print(f"{pairs} pairs of {source}, 28 px, one thread, best of {args.repeats}")
    for name, work in figures.items():
        print(f"  {name}: {best_ms_per_pair(work, pairs, args.repeats):.3f} ms a pair")


if __name__ == "__main__":
    main()
