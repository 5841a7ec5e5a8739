"""ProtoNet trained on Omniglot's pen strokes rendered by sketchshot's renderer, side by side
with the same run on the PNG archive of the same drawings: conv4 at 28x28, the same settings,
seed and number of steps; both scored on the same held-out episodes (5- and 20-way 1-shot,
1000 episodes, 95% CI) of the PNGs of the alphabets found only in images_background_small2.

  python benchmarks/strokes_vs_png.py [--epochs 10] [--keep DIR]

Appends its table to benchmarks/results/strokes_vs_png.md."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from omniglot import OMNIGLOT, TRAIN_ZIP, held_out, one_shot_accuracy, report, section  # noqa: E402

from sketchshot import engine  # noqa: E402
from sketchshot.config import Config, DataConfig  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "strokes_vs_png.md"
STROKES_ZIP = OMNIGLOT / "strokes_background_small1.zip"


def run(name: str, source: Path, epochs: int, test, episodes: int, keep: Path | None) -> dict:
    finetune = section("protonet", {
        "n_way": 60, "n_shot": 1, "n_query": 5, "episodes_per_epoch": 100, "epochs": epochs,
        "val_episodes": 0, "strength": 1.0, "rotation_classes": True,
        "optim": {"schedule": "cosine", "lr": 1e-3},
    })  # fmt: skip
    data = DataConfig(source=str(source), split_fractions=(1.0, 0.0, 0.0))
    cfg = Config.model_validate({"data": data.model_dump(), "finetune": finetune})
    with tempfile.TemporaryDirectory() as tmp:
        run = engine.finetune(cfg, (keep or Path(tmp)) / name, quiet=True)
        model, _ = engine.load_model(run.run_dir)
    return {"name": f"{name} ({run.fit.epochs} epochs x 100 episodes)",
            "images_per_s": run.fit.images_per_s,
            **one_shot_accuracy(model, test, episodes)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--keep", type=Path, help="keep each run folder as KEEP/<name>")
    args = parser.parse_args()
    test = held_out()
    rows = [
        run("PNG archive", TRAIN_ZIP, args.epochs, test, args.episodes, args.keep),
        run("strokes, our renderer", STROKES_ZIP, args.epochs, test, args.episodes, args.keep),
    ]
    report(rows, f"ProtoNet 60-way, rotations, {args.epochs} epochs, strokes vs PNG", RESULTS)


if __name__ == "__main__":
    main()
