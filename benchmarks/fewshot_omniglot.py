"""Episodic fine-tuning on Omniglot: train conv4 at 28x28 on images_background_small1.zip,
test 1-shot on the alphabets found only in images_background_small2.zip (1000 episodes, 95% CI),
optionally side by side with easyfsl's PrototypicalNetworks in its own venv.

  python benchmarks/fewshot_omniglot.py --methods protonet matching relation siamese \\
      --minutes 20 [--init scratch RUN] [--tta 8] [--peers-python /tmp/peers/bin/python]

Every row trains for the same wall time and is scored on the same episodes. Prints a table and
appends it to benchmarks/results/fewshot_omniglot.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from omniglot import (  # noqa: E402
    fmt,
    held_out,
    one_shot_accuracy,
    report,
    run_peer,
    section,
    train_config,
)

from sketchshot import engine  # noqa: E402
from sketchshot.config import Config  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "fewshot_omniglot.md"


def run_ours(
    method: str,
    minutes: float,
    init: str,
    overrides: dict,
    test,
    episodes: int,
    tta: int,
    keep: Path | None = None,
) -> list[dict]:
    """One row per evaluation (plain, and with ``tta`` test-time views when > 1)."""
    finetune = section(method, {
        "init": init, "n_way": 60, "n_shot": 1, "n_query": 5,
        "episodes_per_epoch": 100, "epochs": 1000, "max_minutes": minutes, "val_episodes": 0,
        "strength": 1.0, "rotation_classes": True,
        "optim": {"schedule": "cosine", "lr": 1e-3}, **overrides,
    })  # fmt: skip
    cfg = Config.model_validate({"data": train_config().model_dump(), "finetune": finetune})
    with tempfile.TemporaryDirectory() as tmp:
        folder = f"{method}-{'scratch' if init == 'scratch' else 'ssl'}"
        run = engine.finetune(cfg, (keep or Path(tmp)) / folder, quiet=True)
        model, _ = engine.load_model(run.run_dir)
    label = " ".join(f"{k}={v}" for k, v in overrides.items())
    start = "scratch" if init == "scratch" else "SSL init"
    name = f"sketchshot {method} ({start}) {label}".strip()
    rows = [{"name": name, "images_per_s": run.fit.images_per_s,
             **one_shot_accuracy(model, test, episodes)}]  # fmt: skip
    if tta > 1:
        rows.append({"name": f"{name}, TTA {tta} views", "images_per_s": run.fit.images_per_s,
                     **one_shot_accuracy(model, test, episodes, views=tta)})  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["protonet"])
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument(
        "--init", nargs="+", default=["scratch"], help="scratch and/or SSL run folders (a row each)"
    )
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--peers-python", help="python of a venv with easyfsl and sketchshot")
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--keep", type=Path, help="keep each run folder as KEEP/<method>-<init>")
    parser.add_argument("--tta", type=int, default=1, help="also score with N test-time views")
    args = parser.parse_args()
    overrides = {k: json.loads(v) if v[:1] in "0123456789-[{tf" else v
                 for k, v in (item.split("=", 1) for item in args.set)}  # fmt: skip
    test = held_out()
    rows = []
    for method in args.methods:
        for init in args.init:
            for row in run_ours(
                method, args.minutes, init, overrides, test, args.episodes, args.tta, args.keep
            ):
                rows.append(row)
                print(fmt(row), flush=True)
    if args.peers_python:
        rows.append(run_peer(args.peers_python, "easyfsl_protonet.py", args.minutes))
        print(fmt(rows[-1]), flush=True)
    title = f"{args.minutes:g} min per row"
    report(rows, title, RESULTS)


if __name__ == "__main__":
    main()
