"""Forward+backward images/s of swin_t beside resnet18 and conv4 at 64 px (batch 32) and
224 px (batch 8) on this machine's CPU; swin_t also with gradient checkpointing, and at 64 px
with torchvision's own windows (7, padded) to show what fitting them to the stages saves.

    python benchmarks/swin_throughput.py [--seconds 5] [--rounds 1] [--threads N] [--out DIR]

Each row: the encoder in training mode on random sketches, one warm-up step that also counts
"saved MiB", what autograd keeps for the backward pass (the tensors the forward saves, through a
saved-tensors hook; checkpointing also keeps each block's input, not counted), the memory that
gradient checkpointing trades for recomputation; then steps until ``--seconds`` have passed
(at least 3). "images per CPU-s" divides by the process's CPU time instead of the wall time:
on a shared machine, with one thread, it stays near what the core does alone (two threads
that other processes interrupt wait for each other and inflate it). With ``--rounds N`` every
row is measured N times, in turn, and the best kept: on a shared machine, the round that other
work disturbed least. Writes swin_throughput.md to ``--out`` (default benchmarks/results)."""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from pathlib import Path

import torch
from torch import nn

from sketchshot.encoders import create_encoder

CASES = [  # (encoder, image size, batch, constructor arguments, note)
    ("conv4", 64, 32, {}, ""),
    ("resnet18", 64, 32, {}, ""),
    ("swin_t", 64, 32, {}, "windows 6-4-4-2"),
    ("swin_t", 64, 32, {"grad_checkpointing": True}, "gradient checkpointing"),
    ("swin_t", 64, 32, {"torchvision_windows": True}, "torchvision's windows: 7, padded"),
    ("conv4", 224, 8, {}, ""),
    ("resnet18", 224, 8, {}, ""),
    ("swin_t", 224, 8, {}, "windows 7-7-7-7"),
    ("swin_t", 224, 8, {"grad_checkpointing": True}, "gradient checkpointing"),
]


def build(name: str, size: int, args: dict) -> nn.Module:
    args = dict(args)
    if not args.pop("torchvision_windows", False):
        return create_encoder(name, image_size=size, **args)
    # built for 224 px, whose windows are 7 in every stage, and fed smaller images: torchvision
    # pads each stage to a multiple of 7
    return create_encoder(name, image_size=224, **args)


def saved_mib(encoder: nn.Module, x: torch.Tensor) -> float:
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = encoder(x).pow(2).mean()
    loss.backward()
    return total / 2**20


def images_per_s(encoder: nn.Module, x: torch.Tensor, seconds: float) -> tuple[float, float]:
    """Images per second of wall time and per second of this process's CPU time."""

    def step() -> None:
        encoder(x).pow(2).mean().backward()
        encoder.zero_grad(set_to_none=True)

    steps, start, cpu = 0, time.perf_counter(), time.process_time()
    while steps < 3 or time.perf_counter() - start < seconds:
        step()
        steps += 1
    done = steps * len(x)
    return done / (time.perf_counter() - start), done / (time.process_time() - cpu)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="timed seconds per row")
    parser.add_argument("--rounds", type=int, default=1, help="measure each row N times")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    header = (
        f"{datetime.date.today()}, {cpu_model()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__} (threads: {torch.get_num_threads()}), Python "
        f"{platform.python_version()}; load average {load:.1f} at the start"
    )
    print(header)
    best: dict[int, tuple[float, float, float]] = {}
    for round in range(args.rounds):
        for i, (name, size, batch, kwargs, note) in enumerate(CASES):
            torch.manual_seed(0)
            encoder = build(name, size, kwargs).train()
            x = torch.rand(batch, 1, size, size)
            saved = saved_mib(encoder, x)  # and the warm-up
            rate, per_cpu = images_per_s(encoder, x, args.seconds)
            best[i] = max(best.get(i, (0.0, 0.0, 0.0)), (rate, per_cpu, saved))
            print(
                f"round {round + 1}: {name:9} {size:3} px batch {batch:2}  {rate:7.1f} images/s"
                f"  {per_cpu:7.1f} per CPU-s  {saved:5.0f} MiB  {note}"
            )
    rows = [(*CASES[i][:3], CASES[i][4], *best[i]) for i in range(len(CASES))]
    lines = [
        "# swin_t training throughput on the CPU",
        "",
        f"`python benchmarks/swin_throughput.py` ({header}).",
        "Forward+backward of the encoder alone in training mode on random 1-channel images, one",
        f"warm-up step, then at least 3 steps and {args.seconds:g} s, the best of "
        f"{args.rounds} round(s); images per CPU-s: divided by the process's CPU time; saved MiB:",
        "the tensors autograd keeps for the backward pass of one step.",
        "",
        "| encoder | size | batch | images/s | images per CPU-s | saved MiB | note |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *(
            f"| {n} | {s} | {b} | {r:.1f} | {c:.1f} | {m:.0f} | {note} |"
            for n, s, b, note, r, c, m in rows
        ),
        "",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "swin_throughput.md").write_text("\n".join(lines), encoding="utf-8")


if __name__ == "__main__":
    main()
