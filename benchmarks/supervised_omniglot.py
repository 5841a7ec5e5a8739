"""Supervised fine-tuning on an image-level split of Omniglot's small1 characters (the same
136 classes in train/val/test: 14/3/3 drawers each, seeded), side by side:

1. SimCLR pretraining on the train images, then supervised fine-tuning from it, plain and with
   mixup/cutmix + EMA + label smoothing, and from scratch: top-1, top-5, macro-F1 on the test
   images (the classifier protocol);
2. the kNN read-out of each encoder with train images as references and test images as
   queries: full (k=5), 1-shot (k=1) and 5-shot (k=3, 10 draws);
3. encoders at the same wall time, supervised from scratch: conv4 at 28, resnet18 and swin_t
   at 64.

  python benchmarks/supervised_omniglot.py [--epochs 30] [--minutes 3] [--ssl-minutes 5]
      [--simclr RUN] [--keep DIR] [--skip-encoders]

The fine-tuning runs of (1) train a fixed number of epochs (a busy machine changes their time,
not their result); the encoders of (3) train for the same minutes each.

Appends its tables to benchmarks/results/supervised_omniglot.md."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from omniglot import TRAIN_ZIP, section  # noqa: E402

from sketchshot import engine  # noqa: E402
from sketchshot.config import Config  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "supervised_omniglot.md"
DATA = {"source": str(TRAIN_ZIP), "split_by": "images", "split_fractions": (0.7, 0.15, 0.15)}
MIXED = {"mixup_alpha": 0.2, "cutmix_alpha": 1.0, "mix_p": 0.5, "ema_decay": 0.99,
         "label_smoothing": 0.1}  # fmt: skip


def config(command: str, method: str, settings: dict, encoder: str = "conv4", size=None):
    data = DATA | ({"image_size": size} if size else {})
    return Config.model_validate(
        {"data": data, "encoder": {"name": encoder}, command: section(method, settings)}
    )


def evaluate(run: Path, protocol: str) -> list:
    cfg = engine.saved_config(run).model_copy(update={"device": "cpu"})
    cfg = cfg.model_copy(update={"evaluate": cfg.evaluate.model_copy(
        update={"protocol": protocol, "split": "test", "draws": 10})})  # fmt: skip
    return engine.evaluate(cfg, run, quiet=True)


def row(name: str, run: Path, classifier: bool) -> dict:
    knn = evaluate(run, "knn")
    fit = engine.read_card(run).metrics
    out = {"name": name, "epochs": fit["epochs"], "images_per_s": fit["images_per_s"],
           "knn": [(f.accuracy, f.ci95) for f in knn.figures]}  # fmt: skip
    if classifier:
        c = evaluate(run, "classifier")
        out |= {"top1": (c.figures[0].accuracy, c.figures[0].ci95),
                "top5": c.figures[1].accuracy, "macro_f1": c.details["macro_f1"]}  # fmt: skip
    print(out, flush=True)
    return out


def pct(x: tuple[float, float] | float) -> str:
    if isinstance(x, tuple):
        return f"{100 * x[0]:.1f} ± {100 * x[1]:.1f}%"
    return f"{100 * x:.1f}%"


def table(rows: list[dict], title: str) -> str:
    head = (f"## {time.strftime('%Y-%m-%d %H:%M')}: {title}, {torch.get_num_threads()} threads, "
            f"torch {torch.__version__}")  # fmt: skip
    lines = [head, "", "| run | epochs | images/s | top-1 (test) | top-5 | macro-F1 | "
             "kNN full k=5 | kNN 1-shot k=1 | kNN 5-shot k=3 |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for r in rows:
        cls = [pct(r["top1"]), pct(r["top5"]), pct(r["macro_f1"])] if "top1" in r else ["-"] * 3
        lines.append(
            f"| {r['name']} | {r['epochs']} | {r['images_per_s']:.0f} | "
            + " | ".join(cls)
            + " | "
            + " | ".join(pct(k) for k in r["knn"])
            + " |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30, help="per fine-tuning run of (1)")
    parser.add_argument("--minutes", type=float, default=3.0, help="per encoder run of (3)")
    parser.add_argument("--simclr", type=Path, help="reuse this SimCLR run instead of training")
    parser.add_argument("--ssl-minutes", type=float, default=5.0)
    parser.add_argument("--keep", type=Path, help="keep each run folder under KEEP")
    parser.add_argument("--skip-encoders", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        long = {"epochs": 1000, "max_minutes": args.minutes}
        fixed = {"epochs": args.epochs}
        ssl = args.simclr or root / "simclr"
        if args.simclr is None:
            engine.pretrain(config("pretrain", "simclr", {
                "epochs": 1000, "max_minutes": args.ssl_minutes, "batch_size": 256,
                "val_episodes": 0}), ssl, quiet=True)  # fmt: skip
        minutes = engine.read_card(ssl).metrics["seconds"] / 60
        rows = [row(f"SimCLR ({minutes:.0f} min), encoder only", ssl, False)]
        runs = [
            ("supervised from SimCLR", {"init": str(ssl)}),
            ("supervised from SimCLR + mixup/cutmix, EMA, smoothing", {"init": str(ssl)} | MIXED),
            ("supervised from scratch", {}),
        ]
        for i, (name, extra) in enumerate(runs):
            out = root / f"supervised-{i}"
            engine.finetune(config("finetune", "supervised", fixed | extra), out, quiet=True)
            rows.append(row(name, out, True))
        text = table(rows, "conv4 at 28 px, small1 split by images 0.7/0.15/0.15")
        if not args.skip_encoders:
            enc_rows = []
            for encoder, size in (("conv4", 28), ("resnet18", 64), ("swin_t", 64)):
                out = root / f"encoder-{encoder}"
                cfg = config("finetune", "supervised", long, encoder, size)
                engine.finetune(cfg, out, quiet=True)
                enc_rows.append(row(f"{encoder} at {size} px ({args.minutes:g} min)", out, True))
            text += "\n" + table(enc_rows, "encoders, supervised from scratch, same wall time")
    print(text)
    RESULTS.parent.mkdir(exist_ok=True)
    with open(RESULTS, "a", encoding="utf-8") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
