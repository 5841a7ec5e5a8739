"""Read speed and peak memory of a 100,000-drawing QuickDraw ``.ndjson`` file, with and
without ``--max-per-class``: each case runs in a fresh process (so that its peak RSS is its
own) through ``load_dataset``, which reads the file lazily, renders each drawing once at 28 px
and keeps the images as uint8.

    python benchmarks/quickdraw_read.py [--drawings 100000] [--out DIR]

The file is synthetic (random 3-8 strokes of 5-20 points, QuickDraw's simplified format, 0-255
coordinates), written once into a temporary folder; prints a markdown table."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CASE = """
import json, resource, sys, time
from sketchshot.config import DataConfig
from sketchshot.data import load_dataset
path, cap = sys.argv[1], (int(sys.argv[2]) or None)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # torch and co. imported
start = time.perf_counter()
data = load_dataset(DataConfig(source=path, split_fractions=(1, 0, 0), max_per_class=cap), 28)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"drawings": len(data), "seconds": seconds, "peak_mib": peak,
                  "before_mib": before}))
"""


def write_ndjson(path: Path, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            strokes = []
            for _ in range(int(rng.integers(3, 9))):
                k = int(rng.integers(5, 21))
                xy = rng.integers(0, 256, (2, k)).tolist()
                strokes.append(xy)
            record = {"word": "doodle", "key_id": str(i), "recognized": True,
                      "countrycode": "NL", "drawing": strokes}  # fmt: skip
            f.write(json.dumps(record) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drawings", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "doodle.ndjson"
        start = time.perf_counter()
        write_ndjson(path, args.drawings)
        size = path.stat().st_size / 2**20
        print(f"wrote {args.drawings} drawings, {size:.0f} MiB, in "
              f"{time.perf_counter() - start:.0f} s", flush=True)  # fmt: skip
        print("| --max-per-class | drawings read | seconds | drawings/s | peak RSS (MiB) | "
              "of which reading |")  # fmt: skip
        print("| --- | --- | --- | --- | --- | --- |")
        for cap in (1000, 10_000, 0):
            out = subprocess.run([sys.executable, "-c", CASE, str(path), str(cap)],
                                 capture_output=True, text=True, check=True)  # fmt: skip
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rate = r["drawings"] / r["seconds"]
            print(f"| {cap or 'none'} | {r['drawings']} | {r['seconds']:.2f} | {rate:,.0f} | "
                  f"{r['peak_mib']:.0f} | {r['peak_mib'] - r['before_mib']:.0f} |",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
