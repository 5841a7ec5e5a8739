"""One-shot classification toward human level (issue 17): train on Omniglot's minimal
background set (images_background_small1 or its pen strokes), score on development runs in
Omniglot's one-shot layout built from the alphabets found only in images_background_small2
(Japanese (katakana), Sanskrit, Tagalog: each run one alphabet, 20 characters or all 17 of
Tagalog, one drawer to learn from and another to classify, every query scored on its own), and
on the usual held-out episodes of those alphabets.

  python benchmarks/one_shot_runs.py --idea baseline [--data png|strokes] [--epochs 10]
      [--image-size 28] [--encoder conv4] [--init RUN] [--tta 8] [--set KEY=VALUE ...]

The development runs are written once (``sketchshot data runs``, 60 runs, seed 0) under
--runs-dir. Each call trains one idea and appends its row to
benchmarks/results/one_shot_runs.md: error on the runs with its 95% CI (over runs), 5- and
20-way 1-shot accuracy (1000 seeded episodes, 15 queries), 20-way episodes within one alphabet,
training minutes and images/s."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from omniglot import OMNIGLOT, TEST_ZIP, TRAIN_ZIP, held_out, section  # noqa: E402

from sketchshot import engine  # noqa: E402
from sketchshot.alignment import Matching  # noqa: E402
from sketchshot.card import Preprocessing  # noqa: E402
from sketchshot.checkpoint import read_card  # noqa: E402
from sketchshot.config import Config, DataConfig, EncoderConfig, EnsembleConfig  # noqa: E402
from sketchshot.evaluation import embedder  # noqa: E402
from sketchshot.protocols.episodes import episodes_protocol  # noqa: E402
from sketchshot.protocols.omniglot_runs import make_runs, read_runs, runs_protocol  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "one_shot_runs.md"
STROKES_ZIP = OMNIGLOT / "strokes_background_small1.zip"
DEV_ALPHABETS = ("Japanese_(katakana)", "Sanskrit", "Tagalog")
HEADER = (
    "| idea | data, encoder, size | settings | train min | images/s | dev-runs error "
    "| 5-way 1-shot | 20-way 1-shot | 20-way within alphabet |\n"
    "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
)


def dev_runs(folder: Path, count: int = 60, seed: int = 0) -> Path:
    """The development runs, written once from the small2-only alphabets."""
    if not folder.exists():
        make_runs(str(TEST_ZIP), folder, count, 20, seed, classes=DEV_ALPHABETS)
    return folder


def scores(
    model,
    runs_dir: Path,
    pre: Preprocessing,
    episodes: int,
    tta: int,
    matching: Matching = Matching(),
    queries: int = 15,
) -> dict:
    """Dev-runs error and the held-out episode accuracies of ``model`` (mean, 95% CI), the
    images decoded as its ``pre``processing says, the model's scores joined with ``matching``
    (``evaluate --align --shape-weight``)."""
    cpu, size = torch.device("cpu"), pre.image_size
    read = read_runs(runs_dir, size, pre.invert, pre.fit)
    runs = runs_protocol(model, read, cpu, views=tta, matching=matching)
    test = held_out(size, pre.fit)
    embedded = embedder(model, cpu)
    emb = embedded(test.images, tta)
    out = {"error": (runs.details["mean_error_rate"], runs.figures[0].ci95)}
    for key, n_way, within in (("5w", 5, False), ("20w", 20, False), ("20w_in", 20, True)):
        report = episodes_protocol(
            model, emb, test, n_way, 1, queries, episodes, 0, within_groups=within,
            matching=matching, embedded=embedded,
        )  # fmt: skip
        out[key] = (report.figures[0].accuracy, report.figures[0].ci95)
    return out


def rescore(args: argparse.Namespace, runs_dir: Path) -> None:
    """Score saved runs (one, or an ensemble of several) without training."""
    cards = [read_card(Path(m)) for m in args.models]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.models[0])
        if len(args.models) > 1:  # the members side by side, as `sketchshot ensemble` makes
            path = Path(tmp) / "ensemble"
            runs = tuple(Path(m) for m in args.models)
            engine.ensemble(EnsembleConfig(runs=runs, out=path))
        model, card = engine.load_model(path)
    matching = Matching(args.align, args.shape_weight, args.warp)
    s = scores(model.eval(), runs_dir, card.preprocessing, args.episodes, args.tta, matching,
               args.queries)  # fmt: skip
    names = ", ".join(Path(m).name for m in args.models)
    what = f"ensemble of {len(cards)}: {names}" if len(cards) > 1 else f"saved run {names}"
    label = f"tta={args.tta}" if args.tta > 1 else ""
    label += f" align ({args.warp})" if args.align else ""
    label += f" shape={args.shape_weight:g}" if args.shape_weight else ""
    label += f" queries={args.queries} episodes={args.episodes}" if args.queries != 15 else ""
    minutes = sum(c.metrics.get("seconds", 0) / 60 for c in cards)
    record(row(args.idea, what, label, minutes, float("nan"), s))


def record(line: str) -> None:
    print(HEADER)
    print(line, flush=True)
    RESULTS.parent.mkdir(exist_ok=True)
    if not RESULTS.exists():
        RESULTS.write_text("# One-shot runs toward human level\n\n" + HEADER + "\n")
    with open(RESULTS, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def row(name: str, data: str, settings: str, minutes: float, rate: float, s: dict) -> str:
    def pct(key: str) -> str:
        mean, ci = s[key]
        return f"{100 * mean:.1f} ± {100 * ci:.1f}%"

    cells = [name, data, settings or "-", f"{minutes:.1f}", f"{rate:.0f}" if rate == rate else "-",
             pct("error"),
             pct("5w"), pct("20w"), pct("20w_in")]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def parse_sets(items: list[str]) -> dict:
    def value(v: str):
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            return v

    return {k: value(v) for k, v in (item.split("=", 1) for item in items)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idea", required=True, help="name of the row")
    parser.add_argument("--data", choices=("png", "strokes"), default="png")
    parser.add_argument("--method", default="protonet")
    parser.add_argument("--encoder", default="conv4")
    parser.add_argument("--width", type=int, help="conv4's channels (default 64)")
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--fit", choices=("page", "ink"), default="page", help="image frame")
    parser.add_argument("--init", default="scratch", help="scratch or a pretrain run folder")
    parser.add_argument("--epochs", type=int, default=10, help="epochs of 100 episodes")
    parser.add_argument("--minutes", type=float, help="stop after this many minutes instead")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--tta", type=int, default=1, help="test-time views (1: none)")
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=15, help="queries per class, episodes")
    parser.add_argument(
        "--shape-weight", type=float, default=0.0, help="fuse the shape match (--models only)"
    )
    parser.add_argument(
        "--align", action="store_true", help="score aligned drawings too (--models only)"
    )
    parser.add_argument(
        "--warp", choices=("affine", "elastic"), default="elastic", help="how --align lays drawings"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs-dir", type=Path, default=Path("/tmp/sketchshot-dev-runs"))
    parser.add_argument("--keep", type=Path, help="keep the run folder as KEEP/<idea>")
    parser.add_argument(
        "--models", nargs="+", help="score these saved runs (several: a ProtoNet ensemble)"
    )
    args = parser.parse_args()

    runs_dir = dev_runs(args.runs_dir)
    if args.models:
        return rescore(args, runs_dir)
    overrides = parse_sets(args.set)
    source = STROKES_ZIP if args.data == "strokes" else TRAIN_ZIP
    data = DataConfig(
        source=str(source),
        split_fractions=(1.0, 0.0, 0.0),
        image_size=args.image_size,
        fit=args.fit,
    )
    settings = {
        "init": args.init, "n_way": 60, "n_shot": 1, "n_query": 5, "episodes_per_epoch": 100,
        "epochs": args.epochs if args.minutes is None else 10_000, "val_episodes": 0,
        "strength": 1.0, "rotation_classes": True, "optim": {"schedule": "cosine", "lr": 1e-3},
        **({"max_minutes": args.minutes} if args.minutes else {}), **overrides,
    }  # fmt: skip
    cfg = Config.model_validate(
        {
            "seed": args.seed,
            "data": data.model_dump(),
            "encoder": EncoderConfig(name=args.encoder, width=args.width).model_dump(),
            "finetune": section(args.method, settings),
        }
    )
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        run = engine.finetune(cfg, (args.keep or Path(tmp)) / args.idea, quiet=True)
        minutes = (time.perf_counter() - start) / 60
        model, card = engine.load_model(run.run_dir)
    model.eval()
    size = card.preprocessing.image_size
    s = scores(model, runs_dir, card.preprocessing, args.episodes, args.tta)
    label = " ".join(f"{k}={v}" for k, v in overrides.items())
    if args.tta > 1:
        label = f"{label} tta={args.tta}".strip()
    encoder = f"{args.encoder} width {args.width}" if args.width else args.encoder
    what = f"{args.data}, {encoder}, {size} px, {run.fit.epochs} ep"
    if args.fit == "ink":
        what = what.replace(f"{args.data}, ", f"{args.data} fit to ink, ")
    if args.init != "scratch":
        what += f", init {Path(args.init).name}"
    record(row(args.idea, what, label, minutes, run.fit.images_per_s, s))


if __name__ == "__main__":
    main()
