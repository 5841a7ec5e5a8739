"""Scaling: pretraining time and peak memory against the number of images, on the built-in
glyphs (1k, 10k, 100k images) and a generated 100,000-drawing QuickDraw ``.ndjson`` file.

    python benchmarks/scaling.py [--sizes 1000 10000 100000] [--quickdraw 100000]
        [--epochs 1] [--batch-size 256] [--method simclr] [--threads N]

Each case runs ``engine.pretrain`` (conv4 at 28 px, every image in the train split, no
validation) in a fresh process, so that its peak RSS is its own: "setup s" is the data (glyphs
generated and rendered, or the file read and every drawing rendered once) and the model,
"train s" the epochs, "peak MiB" the process's peak RSS and "of which data and run" that less
the peak after importing torch and sketchshot. Linear time: the seconds per 1,000 images stay
flat down the table; bounded memory: the growth is about the images themselves (28 x 28 bytes
each, 75 MiB for 100,000) plus a constant. The QuickDraw file is synthetic (random 3-8 strokes
of 5-20 points, QuickDraw's simplified format), written once into a temporary folder.
Prints a table; writes scaling.json. A smoke test: ``--sizes 500 1000 --quickdraw 1000
--batch-size 64``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, header, write_json  # noqa: E402
from quickdraw_read import write_ndjson  # noqa: E402

CASE = """
import json, resource, sys, tempfile, time
from pathlib import Path
from sketchshot import compute, engine
from sketchshot.config import Config
spec = json.loads(sys.argv[1])
compute.set_threads(spec["threads"])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # torch and co. imported
cfg = Config.model_validate(spec["config"])
with tempfile.TemporaryDirectory() as tmp:
    start = time.perf_counter()
    run = engine.pretrain(cfg, Path(tmp) / "run", quiet=True)
    total = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"total_s": total, "train_s": run.fit.seconds, "setup_s": total - run.fit.seconds,
                  "steps": run.fit.steps, "images_per_s": run.fit.images_per_s,
                  "peak_mib": peak, "before_mib": before}))
"""


def pretrain_config(data: dict, args: argparse.Namespace) -> dict:
    return {
        "data": {"split_fractions": [1.0, 0.0, 0.0], "image_size": 28, **data},
        "pretrain": {"method": args.method, "batch_size": args.batch_size,
                     "epochs": args.epochs, "val_episodes": 0},
    }  # fmt: skip


def run_case(name: str, n: int, config: dict, threads: int | None) -> dict:
    spec = json.dumps({"config": config, "threads": threads})
    done = subprocess.run(
        [sys.executable, "-c", CASE, spec], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"{name}: the case failed:\n{done.stderr}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    row = {"case": name, "images": n, **out}
    row["growth_mib"] = out["peak_mib"] - out["before_mib"]
    row["setup_s_per_1k"] = 1000 * out["setup_s"] / n
    row["train_s_per_1k"] = 1000 * out["train_s"] / (n * max(1, config["pretrain"]["epochs"]))
    print(
        f"{name:24} {n:7} images: setup {out['setup_s']:7.1f} s, train {out['train_s']:7.1f} s "
        f"({out['images_per_s']:.0f} images/s), peak {out['peak_mib']:.0f} MiB "
        f"(+{row['growth_mib']:.0f})",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="*", type=int, default=[1000, 10_000, 100_000],
                        help="built-in images (20 drawers per class)")  # fmt: skip
    parser.add_argument("--quickdraw", type=int, default=100_000, help="drawings; 0: none")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--method", default="simclr")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--out", type=Path, help="folder of scaling.json")
    args = parser.parse_args()
    info = describe()
    print(header(info))
    rows = []
    for n in args.sizes:
        data = {"source": "builtin", "builtin": {"n_classes": max(2, n // 20), "n_drawers": 20}}
        rows.append(run_case("built-in glyphs", n, pretrain_config(data, args), args.threads))
    if args.quickdraw:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "doodle.ndjson"
            write_ndjson(path, args.quickdraw)
            config = pretrain_config({"source": str(path)}, args)
            rows.append(run_case("QuickDraw .ndjson", args.quickdraw, config, args.threads))
    print()
    print("| data | images | setup s | per 1k | train s | per 1k | images/s | peak MiB | growth |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['case']} | {r['images']} | {r['setup_s']:.1f} | {r['setup_s_per_1k']:.2f} | "
              f"{r['train_s']:.1f} | {r['train_s_per_1k']:.2f} | {r['images_per_s']:.0f} | "
              f"{r['peak_mib']:.0f} | {r['growth_mib']:.0f} |")  # fmt: skip
    write_json(
        "scaling",
        {"machine": info, "command": " ".join(sys.argv), "epochs": args.epochs,
         "batch_size": args.batch_size, "method": args.method, "rows": rows},
        args.out,
    )  # fmt: skip


if __name__ == "__main__":
    main()
