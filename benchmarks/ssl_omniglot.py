"""Self-supervised pretraining on Omniglot without labels, then 1-shot nearest-prototype
(cosine) accuracy of the backbone features on unseen alphabets; optionally side by side with
lightly's SimCLR loop in its own venv, on the same encoder, data and time budget.

  python benchmarks/ssl_omniglot.py --methods simclr byol --minutes 15 \\
      --set byol.batch_size=64 byol.ema_decay=0.95 --peers-python /tmp/peers/bin/python

Prints a table and appends it to benchmarks/results/ssl_omniglot.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from omniglot import (  # noqa: E402
    fmt,
    held_out,
    one_shot_accuracy,
    report,
    run_peer,
    section,
    train_config,
)

from sketchshot import engine  # noqa: E402
from sketchshot.config import Config, flatten  # noqa: E402
from sketchshot.encoders import create_encoder  # noqa: E402
from sketchshot.methods import create_method  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "ssl_omniglot.md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["simclr", "byol"])
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="pretrain settings of every method, e.g. batch_size=64, or of one method, "
        "e.g. byol.ema_decay=0.95 or simclr.optim.schedule=constant",
    )
    parser.add_argument("--peers-python", help="python of a venv with lightly and sketchshot")
    parser.add_argument(
        "--peer-batch-sizes", nargs="+", type=int, default=[256], help="one lightly row each"
    )
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--keep", type=Path, help="keep each run folder as KEEP/<method>")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    settings = {k: json.loads(v) if v[:1] in "0123456789-[{tf" else v
                for k, v in (item.split("=", 1) for item in args.set)}  # fmt: skip
    test = held_out()
    rows = []
    torch.manual_seed(0)
    rows.append({"name": "random conv4 (no training)", "seconds": 0, "images_per_s": 0,
                 **one_shot_accuracy(create_method("simclr", create_encoder("conv4")).eval(),
                                     test, args.episodes)})  # fmt: skip
    for method in args.methods:
        overrides = method_overrides(settings, method, args.methods)
        rows.append(run_ours(method, args.minutes, overrides, test, args.episodes, args.keep))
        print(fmt(rows[-1]), flush=True)
    for batch_size in args.peer_batch_sizes if args.peers_python else []:
        rows.append(run_peer(args.peers_python, "lightly_simclr.py", args.minutes,
                             "--batch-size", str(batch_size)))  # fmt: skip
        print(fmt(rows[-1]), flush=True)
    title = f"{args.minutes:g} min per row"
    report(rows, title, RESULTS)


def method_overrides(settings: dict, method: str, methods: list[str]) -> dict:
    """Pretrain settings of one method from --set keys: ``key``, ``optim.key`` (every method)
    or ``method.key``, ``method.optim.key`` (that one only), as a nested dict."""
    overrides: dict = {}
    for key, value in settings.items():
        path = key.split(".")
        if path[0] in methods:
            if path[0] != method:
                continue
            path = path[1:]
        node = overrides
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return overrides


def run_ours(
    method: str, minutes: float, overrides: dict, test, episodes: int, keep: Path | None = None
) -> dict:
    pretrain = section(method, {"epochs": 1000, "max_minutes": minutes, "val_episodes": 0,
                                **overrides})  # fmt: skip
    cfg = Config.model_validate({"data": train_config().model_dump(), "pretrain": pretrain})
    with tempfile.TemporaryDirectory() as tmp:
        run = engine.pretrain(cfg, (keep or Path(tmp)) / method, quiet=True)
        model, _ = engine.load_model(run.run_dir)
    label = " ".join(f"{k}={v}" for k, v in flatten(overrides).items())
    return {"name": f"sketchshot {method} {label}".strip(), "seconds": run.fit.seconds,
            "images_per_s": run.fit.images_per_s,
            **one_shot_accuracy(model, test, episodes)}  # fmt: skip


if __name__ == "__main__":
    main()
