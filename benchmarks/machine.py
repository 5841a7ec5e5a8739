"""What every speed benchmark records about the machine it ran on (date, CPU model and the flags
that decide the fast paths, cores, threads, torch, load), and where it writes its JSON."""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path
from typing import Any

import torch

from sketchshot import compute

RESULTS = Path(__file__).resolve().parent / "results"
# the CPU flags that decide which kernels run: AVX2 / AVX-512 convolutions, native bf16
SHOWN_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe() -> dict[str, Any]:
    """The machine and settings of this run, as every result file starts."""
    flags = compute.cpu_flags()
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "flags": [f for f in SHOWN_FLAGS if f in flags],
        "native_bf16": compute.native_bf16(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "load_average": round(os.getloadavg()[0], 2),
    }


def header(info: dict[str, Any]) -> str:
    flags = " ".join(info["flags"]) or "none of " + " ".join(SHOWN_FLAGS)
    return (
        f"{info['date']}, {info['cpu']}, {info['cores']} cores ({flags}), torch "
        f"{info['torch']}, {info['threads']} threads, load average {info['load_average']} "
        "at the start"
    )


def write_json(name: str, payload: dict[str, Any], out: Path | None = None) -> Path:
    """``payload`` as ``OUT/NAME.json`` (default benchmarks/results); returns the path."""
    folder = out or RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path}")
    return path
