"""Models trained on Omniglot's pen strokes rendered by sketchshot's renderer (as they are,
and with views made on the strokes before rendering), side by side with the same runs on the
PNG archive of the same drawings: conv4 at 28x28, the same settings, seed and number of steps;
all scored on the same held-out episodes (5- and 20-way 1-shot, 1000 episodes, 95% CI) of the
PNGs of the alphabets found only in images_background_small2. ProtoNet (60-way, rotation
classes) and SimCLR (backbone features, cosine prototypes).

  python benchmarks/strokes_vs_png.py [--epochs 10] [--ssl-epochs 60] [--keep DIR]

Appends its tables to benchmarks/results/strokes_vs_png.md."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from omniglot import (  # noqa: E402
    OMNIGLOT,
    TRAIN_ZIP,
    fmt,
    held_out,
    one_shot_accuracy,
    report,
    section,
)

from sketchshot import engine  # noqa: E402
from sketchshot.config import Config, DataConfig  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "strokes_vs_png.md"
STROKES_ZIP = OMNIGLOT / "strokes_background_small1.zip"
# views on the strokes, chosen before measuring: motor noise and width change for both; the
# self-supervised views also drop strokes and draw partial characters (no labels to change)
FEWSHOT_STROKE_VIEWS = {"stroke_jitter": 0.03, "line_width_jitter": 0.3}
SSL_STROKE_VIEWS = {**FEWSHOT_STROKE_VIEWS, "stroke_drop": 0.1, "partial_p": 0.1}


def run(command: str, name: str, source: Path, settings: dict, test, args) -> dict:
    data = DataConfig(source=str(source), split_fractions=(1.0, 0.0, 0.0))
    method = "protonet" if command == "finetune" else "simclr"
    cfg = Config.model_validate({"data": data.model_dump(), command: section(method, settings)})
    with tempfile.TemporaryDirectory() as tmp:
        train = engine.finetune if command == "finetune" else engine.pretrain
        done = train(cfg, (args.keep or Path(tmp)) / f"{method}-{name}", quiet=True)
        model, _ = engine.load_model(done.run_dir)
    row = {"name": f"{name} ({done.fit.epochs} epochs)", "images_per_s": done.fit.images_per_s,
           **one_shot_accuracy(model.eval(), test, args.episodes)}  # fmt: skip
    print(fmt(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--epochs", type=int, default=10, help="ProtoNet epochs of 100 episodes (0: skip)"
    )
    parser.add_argument("--ssl-epochs", type=int, default=60, help="SimCLR epochs (0: skip)")
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--keep", type=Path, help="keep each run folder as KEEP/<name>")
    args = parser.parse_args()
    test = held_out()
    fewshot = {
        "n_way": 60, "n_shot": 1, "n_query": 5, "episodes_per_epoch": 100,
        "epochs": args.epochs, "val_episodes": 0, "strength": 1.0, "rotation_classes": True,
        "optim": {"schedule": "cosine", "lr": 1e-3},
    }  # fmt: skip
    sources = [
        ("PNG archive", TRAIN_ZIP, {}),
        ("strokes, our renderer", STROKES_ZIP, {}),
    ]
    if args.epochs:
        rows = [
            run("finetune", name, src, fewshot | extra, test, args)
            for name, src, extra in [*sources, ("strokes + stroke views", STROKES_ZIP,
                                                FEWSHOT_STROKE_VIEWS)]
        ]  # fmt: skip
        title = f"ProtoNet 60-way, rotations, {args.epochs} epochs x 100 episodes, strokes vs PNG"
        report(rows, title, RESULTS)
    if args.ssl_epochs:
        ssl = {"epochs": args.ssl_epochs, "batch_size": 256, "val_episodes": 0}
        rows = [
            run("pretrain", name, src, ssl | extra, test, args)
            for name, src, extra in [*sources, ("strokes + stroke views", STROKES_ZIP,
                                                SSL_STROKE_VIEWS)]
        ]  # fmt: skip
        report(rows, f"SimCLR, {args.ssl_epochs} epochs, strokes vs PNG", RESULTS)


if __name__ == "__main__":
    main()
