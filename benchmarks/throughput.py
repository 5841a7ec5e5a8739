"""Training and evaluation throughput on this machine, side by side with the bare compute limit.

Run: python benchmarks/throughput.py [--seconds 20]

Prints images/s of (1) a bare Conv-4 forward+backward on random tensors (the compute limit),
(2) sketchshot's SimCLR steps (two views per image, augmentation included) and (3) ProtoNet
60-way 1-shot 5-query episodes, both through the real training loop, plus (4) evaluation
episodes/s on cached embeddings. Ratios to (1) are what to compare across machines.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from sketchshot import engine
from sketchshot.config import resolve_config
from sketchshot.data import load_dataset
from sketchshot.encoders import create_encoder
from sketchshot.evaluation import embed
from sketchshot.methods import create_method
from sketchshot.protocols.episodes import episodes_protocol


def bare_conv4(seconds: float, batch: int = 300, channels_last: bool = False) -> float:
    net = create_encoder("conv4")
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters())
    x = torch.rand(batch, 1, 28, 28)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        net(x).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
        done += batch
    return done / (time.perf_counter() - start)


def loop_rate(command: str, seconds: float, overrides: dict) -> float:
    cfg = resolve_config(overrides={**overrides, f"{command}.max_minutes": seconds / 60})
    with tempfile.TemporaryDirectory() as tmp:
        run = getattr(engine, command)(cfg, Path(tmp) / "run", quiet=True)
    return run.fit.images_per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="time per measurement")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    bare = bare_conv4(args.seconds)
    print(f"bare conv4 28px fwd+bwd, batch 300:       {bare:7.0f} images/s")
    bare_cl = bare_conv4(args.seconds, channels_last=True)
    print(f"  the same, channels-last weights:        {bare_cl:7.0f} images/s "
          f"({bare_cl / bare:.2f} x)")  # fmt: skip
    for channels_last in (False, True):
        simclr = loop_rate(
            "pretrain",
            args.seconds,
            {"pretrain.batch_size": 256, "pretrain.epochs": 100,
             "pretrain.channels_last": channels_last},
        )  # fmt: skip
        print(
            f"SimCLR loop, batch 256 (512 views){', channels-last' if channels_last else ''}: "
            f"{simclr:7.0f} images/s ({2 * simclr:.0f} views/s, {2 * simclr / bare:.2f} x bare)"
        )
    proto = loop_rate(
        "finetune",
        args.seconds,
        {"finetune.n_way": 60, "finetune.epochs": 100, "finetune.val_episodes": 0},
    )
    print(
        f"ProtoNet loop, 60-way 1-shot 5-query:     {proto:7.0f} images/s "
        f"({proto / bare:.2f} x bare)"
    )
    cfg = resolve_config()
    test = load_dataset(cfg.data, 28, "all")
    method = create_method("protonet", create_encoder("conv4")).eval()
    start = time.perf_counter()
    embeddings = embed(method, test.images, torch.device("cpu"))
    figure = episodes_protocol(method, embeddings, test, 5, 1, 15, 10_000, seed=0).figures[0]
    took = time.perf_counter() - start
    print(
        f"evaluate 10,000 5-way 1-shot episodes over {len(test)} images: {took:.1f} s "
        f"({10_000 / took:.0f} episodes/s, embedding pass included; acc {figure.accuracy:.3f})"
    )


if __name__ == "__main__":
    main()
