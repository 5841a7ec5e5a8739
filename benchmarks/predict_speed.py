"""Prediction speed: images/s of ``sketchshot predict`` on 10,000 PNG files against a class
bank, and its start-up time, each as a user runs it (a fresh ``python -m sketchshot`` process).

    python benchmarks/predict_speed.py [--files 10000] [--model RUN] [--batch-size 256]
        [--threads N] [--repeats 3]

Writes ``--files`` dark-on-white PNGs of the built-in glyphs (64 px; 100 classes) and a support
folder of 5 of those classes (5 drawings each) into a temporary folder, enrolls the support
into a bank with the model (default: a randomly initialised conv4 ProtoNet at 28 px; speed
does not depend on the weights), then times, best of ``--repeats``:

  cli start-up     ``sketchshot --version`` (Python, the CLI, no torch)
  predict 1 file   ``sketchshot predict --bank BANK one.png``: torch, the model, the bank
  predict N files  ``sketchshot predict --bank BANK FOLDER --json``, rows to /dev/null

images/s = N / (predict N files - predict 1 file): the steady rate once started; end to end
= N / predict N files. Prints the figures; writes predict_speed.json. A smoke test:
``--files 300 --repeats 1``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, header, write_json  # noqa: E402

from sketchshot import engine  # noqa: E402
from sketchshot.checkpoint import save_model  # noqa: E402
from sketchshot.config import Config, EnrollConfig, ProtoNetSettings  # noqa: E402
from sketchshot.data.glyphs import make_glyphs  # noqa: E402
from sketchshot.encoders import create_encoder  # noqa: E402
from sketchshot.methods import create_method  # noqa: E402
from sketchshot.runs import model_spec  # noqa: E402

CLASSES = 100


def random_model(folder: Path) -> Path:
    """A randomly initialised conv4 ProtoNet at 28 px, saved as a run folder."""
    method = create_method("protonet", create_encoder("conv4", image_size=28))
    save_model(
        folder / "model",
        method,
        {
            "model": model_spec(ProtoNetSettings(), "conv4", 28, "random"),
            "preprocessing": {"image_size": 28, "invert": "auto"},
            "class_names": [],
            "config": Config().model_dump(mode="json"),
        },
    )
    return folder


def write_pngs(root: Path, files: int) -> tuple[Path, Path]:
    """``files`` query PNGs in ROOT/queries and 5 classes x 5 in ROOT/support/<class>/."""
    drawers = max(1, -(-files // CLASSES))
    glyphs = make_glyphs(CLASSES, drawers + 5, 64, seed=1)
    pages = 255 - glyphs.images[:, 0].numpy().astype(np.uint8)  # dark strokes on white
    labels = glyphs.labels.numpy()
    queries, support = root / "queries", root / "support"
    queries.mkdir(parents=True)
    written = 0
    for i in range(len(pages)):
        c, d = int(labels[i]), i % (drawers + 5)
        if d < 5:
            if c < 5:
                (support / f"glyph-{c}").mkdir(parents=True, exist_ok=True)
                Image.fromarray(pages[i]).save(support / f"glyph-{c}" / f"{d}.png")
        elif written < files:
            Image.fromarray(pages[i]).save(queries / f"{written:06d}.png")
            written += 1
    return queries, support


def best_time(command: list[str], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--model", type=Path, help="run folder (default: a random conv4)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, help="--threads of predict (default: torch's)")
    parser.add_argument("--repeats", type=int, default=3, help="best of N runs of each")
    parser.add_argument("--out", type=Path, help="folder of predict_speed.json")
    args = parser.parse_args()
    info = describe()
    print(header(info))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        queries, support = write_pngs(root, args.files)
        print(f"wrote {args.files} PNGs in {time.perf_counter() - start:.1f} s", flush=True)
        model = args.model or random_model(root / "model")
        bank = root / "bank"
        engine.enroll(EnrollConfig(model=model, support=support, out=bank))
        cli = [sys.executable, "-m", "sketchshot"]
        options = ["--batch-size", str(args.batch_size)]
        options += ["--threads", str(args.threads)] if args.threads else []
        one = sorted(queries.iterdir())[0]
        cli_start = best_time([*cli, "--version"], args.repeats)
        one_file = best_time([*cli, "predict", "--bank", str(bank), str(one), *options],
                             args.repeats)  # fmt: skip
        all_files = best_time(
            [*cli, "predict", "--bank", str(bank), str(queries), "--json", *options],
            args.repeats,
        )
    steady = args.files / max(all_files - one_file, 1e-9)
    figures = {"files": args.files, "cli_start_s": cli_start, "predict_one_s": one_file,
               "predict_all_s": all_files, "images_per_s": steady,
               "end_to_end_images_per_s": args.files / all_files}  # fmt: skip
    print(f"cli start-up (sketchshot --version): {cli_start:6.2f} s")
    print(f"predict 1 file (start-up):           {one_file:6.2f} s")
    print(f"predict {args.files} files:               {all_files:6.2f} s")
    print(
        f"images/s once started: {steady:.0f}; end to end: {figures['end_to_end_images_per_s']:.0f}"
    )
    write_json(
        "predict_speed",
        {"machine": info, "command": " ".join(sys.argv), "model": str(args.model or "random conv4"),
         "batch_size": args.batch_size, "threads": args.threads, **figures},
        args.out,
    )  # fmt: skip


if __name__ == "__main__":
    main()
