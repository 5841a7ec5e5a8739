"""The compute limit: forward+backward+Adam images/s of the bare encoders on random tensors in
memory, eager and with each speed option, and forward-only inference with BatchNorm folded.

    python benchmarks/compute_limit.py [--seconds 20] [--rounds 2] [--threads N]
        [--cases conv4:28:300 resnet18:64:128 ...] [--options eager channels_last bf16 ...]

Training options (each against ``eager``, plain NCHW float32, of the same case):
  channels_last  channels-last weights (the training loop's default)
  bf16           channels-last + bf16 autocast (only where the CPU has native bf16 or on CUDA;
                 --force-bf16 measures it anyway)
  compile        channels-last + torch.compile of forward and loss (inductor; the warm-up,
                 the first two steps, is reported apart and not in images/s)
  compile_bf16   both
Inference rows (eval mode, no gradients): ``plain`` (the encoder as it is) and ``folded``
(``sketchshot.compute.inference_encoder``: BatchNorm folded into the convolutions,
channels-last), what ``embed`` (evaluate, predict) uses.

Each row: a warm-up of two steps (timed: torch.compile's compilation), then steps until
``--seconds`` have passed (at least 3); images per CPU-s divides by this process's CPU time
(on a shared machine it stays near what the cores do alone). With ``--rounds N`` every row is
measured N times, in turn, and the best kept. Prints a table; writes compute_limit.json to
``--out`` (default benchmarks/results). A smoke test: ``--seconds 0.5 --cases conv4:28:64
--compile-backend eager``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, header, write_json  # noqa: E402

from sketchshot import compute  # noqa: E402
from sketchshot.encoders import create_encoder  # noqa: E402

CASES = ["conv4:28:300", "sketch_cnn:64:128", "resnet18:64:128", "swin_t:64:32", "swin_t:224:8"]
OPTIONS = ["eager", "channels_last", "bf16", "compile", "compile_bf16"]
SETTINGS = {  # option -> (channels-last, bf16 autocast, torch.compile)
    "eager": (False, False, False),
    "channels_last": (True, False, False),
    "bf16": (True, True, False),
    "compile": (True, False, True),
    "compile_bf16": (True, True, True),
}


class LossOf(nn.Module):
    """The encoder and a stand-in loss, one module: what the training loop compiles."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x).float().pow(2).mean()


def timed(step: Callable[[], None], batch: int, seconds: float, sync: Callable[[], None]):
    """(images/s, images per CPU-s, warm-up seconds of the first two steps, steps timed)."""
    start = time.perf_counter()
    step()
    step()
    sync()
    warmup = time.perf_counter() - start
    steps, start, cpu = 0, time.perf_counter(), time.process_time()
    while steps < 3 or time.perf_counter() - start < seconds:
        step()
        steps += 1
    sync()
    wall, used = time.perf_counter() - start, time.process_time() - cpu
    return steps * batch / wall, steps * batch / max(used, 1e-9), warmup, steps


def training_step(
    name: str,
    size: int,
    batch: int,
    device: torch.device,
    channels_last: bool = True,
    bf16: bool = False,
    compiled: bool = False,
) -> Callable[[], None]:
    """One forward+backward+Adam step of encoder ``name`` on a random batch, as an option
    (``SETTINGS``) runs it."""
    torch.manual_seed(0)
    model = LossOf(create_encoder(name, image_size=size)).to(device).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    run = compute.compiled(model) if compiled else model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.rand(batch, 1, size, size, device=device)

    def step() -> None:
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            loss = run(x)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def inference_step(
    name: str, size: int, batch: int, device: torch.device, option: str
) -> Callable[[], None]:
    torch.manual_seed(0)
    encoder = create_encoder(name, image_size=size).to(device).eval()
    run = compute.inference_encoder(encoder, device) if option == "folded" else encoder
    x = torch.rand(batch, 1, size, size, device=device)

    def step() -> None:
        with torch.no_grad():
            run(x)

    return step


def skipped(option: str, device: torch.device, force_bf16: bool) -> str | None:
    """Why an option is not measured on this machine (None: it is)."""
    _, bf16, compiled = SETTINGS[option]
    if bf16 and device.type == "cpu" and not compute.native_bf16() and not force_bf16:
        return "no native bf16 on this CPU (--force-bf16 measures it anyway)"
    if compiled and compute.compile_problem(device):
        return compute.compile_problem(device)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="timed seconds per row")
    parser.add_argument("--rounds", type=int, default=1, help="measure each row N times")
    parser.add_argument("--cases", nargs="+", default=CASES, metavar="ENCODER:SIZE:BATCH")
    parser.add_argument("--options", nargs="+", default=OPTIONS, choices=OPTIONS)
    parser.add_argument("--no-inference", action="store_true", help="training rows only")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--force-bf16", action="store_true")
    parser.add_argument("--compile-backend", default="inductor", help="eager: a quick smoke")
    parser.add_argument("--out", type=Path, help="folder of compute_limit.json")
    args = parser.parse_args()
    compute.set_threads(args.threads)
    compute.COMPILE_BACKEND = args.compile_backend
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    info = describe()
    print(header(info))
    plan = []  # (mode, encoder, size, batch, option)
    for case in args.cases:
        name, size, batch = case.split(":")
        for option in args.options:
            plan.append(("train", name, int(size), int(batch), option))
        for option in () if args.no_inference else ("plain", "folded"):
            plan.append(("inference", name, int(size), int(batch), option))
    best: dict[int, dict] = {}
    for round in range(args.rounds):
        for i, (mode, name, size, batch, option) in enumerate(plan):
            why = skipped(option, device, args.force_bf16) if mode == "train" else None
            if why:
                best[i] = {"skipped": why}
                continue
            if mode == "train":
                step = training_step(name, size, batch, device, *SETTINGS[option])
            else:
                step = inference_step(name, size, batch, device, option)
            torch._dynamo.reset()
            rate, per_cpu, warmup, steps = timed(step, batch, args.seconds, sync)
            row = {"images_per_s": rate, "images_per_cpu_s": per_cpu, "warmup_s": warmup,
                   "steps": steps}  # fmt: skip
            if rate > best.get(i, {}).get("images_per_s", 0.0):
                best[i] = row
            print(
                f"round {round + 1}: {mode:9} {name:10} {size:3} px batch {batch:3} "
                f"{option:13} {rate:8.1f} images/s {per_cpu:8.1f} per CPU-s  "
                f"warm-up {warmup:6.1f} s",
                flush=True,
            )
    rows = []
    for i, (mode, name, size, batch, option) in enumerate(plan):
        base = next(
            (best[j] for j, p in enumerate(plan)
             if p[:4] == (mode, name, size, batch) and p[4] in ("eager", "plain")),
            {},
        )  # fmt: skip
        row = {"mode": mode, "encoder": name, "size": size, "batch": batch, "option": option,
               **best[i]}  # fmt: skip
        if "images_per_s" in row and base.get("images_per_s"):
            row["ratio"] = row["images_per_s"] / base["images_per_s"]
        rows.append(row)
    print()
    print("| mode | encoder | size | batch | option | images/s | per CPU-s | x eager | warm-up s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        if "skipped" in r:
            figures = f"skipped: {r['skipped']} | | | |"
        else:
            figures = (f"{r['images_per_s']:.0f} | {r['images_per_cpu_s']:.0f} | "
                       f"{r.get('ratio', float('nan')):.2f} | {r['warmup_s']:.1f} |")  # fmt: skip
        print(f"| {r['mode']} | {r['encoder']} | {r['size']} | {r['batch']} | {r['option']} | "
              f"{figures}")  # fmt: skip
    write_json(
        "compute_limit",
        {"machine": info, "command": " ".join(sys.argv), "seconds": args.seconds,
         "rounds": args.rounds, "compile_backend": args.compile_backend, "rows": rows},
        args.out,
    )  # fmt: skip


if __name__ == "__main__":
    main()
