"""Peers side by side, in one run: sketchshot's ProtoNet against easyfsl's
PrototypicalNetworks + TaskSampler, and sketchshot's SimCLR against lightly's NTXentLoss loop,
on the same conv4, Omniglot data, batch (60-way 1-shot 5-query episodes; 256 images) and time.

    python benchmarks/peers_side_by_side.py --peers-python /tmp/peers/bin/python \\
        [--minutes 5] [--set amp=bf16 compile=auto] [--threads N] [--only fewshot ssl]

The peers run in their own venv (never project dependencies; see ../shared/PEERS.md) through
``peers/easyfsl_protonet.py`` and ``peers/lightly_simclr.py``; sketchshot's rows through the
engine, as ``fewshot_omniglot.py`` and ``ssl_omniglot.py`` run them (``--set`` adds settings
to both of sketchshot's rows: its speed options). Every row is scored alike: 5-way and 20-way
1-shot accuracy on the held-out alphabets, 1000 episodes. The targets (issue 18): >= 1.5x
easyfsl's and >= 2x lightly's images/s, with equal or better accuracy at equal time.
Prints a table and the ratios; writes peers_side_by_side.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fewshot_omniglot  # noqa: E402
import ssl_omniglot  # noqa: E402
from machine import describe, header, write_json  # noqa: E402
from omniglot import fmt, held_out, run_peer  # noqa: E402

from sketchshot import compute  # noqa: E402


def compare(ours: dict, peer: dict, target: float) -> dict:
    """Speed ratio and accuracy differences (points) of ``ours`` over ``peer``."""
    return {
        "ours": ours["name"],
        "peer": peer["name"],
        "speed_ratio": ours["images_per_s"] / peer["images_per_s"],
        "speed_target": target,
        "accuracy_points": {k: 100 * (ours[k][0] - peer[k][0]) for k in ("5w1s", "20w1s")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers-python", required=True, help="python of the peers' venv")
    parser.add_argument("--minutes", type=float, default=5.0, help="training time per row")
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE",
        help="settings of sketchshot's rows, e.g. amp=bf16 compile=auto",
    )  # fmt: skip
    parser.add_argument("--only", nargs="+", default=["fewshot", "ssl"], choices=["fewshot", "ssl"])
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--threads", type=int, help="torch threads of every row")
    parser.add_argument("--out", type=Path, help="folder of peers_side_by_side.json")
    args = parser.parse_args()
    if args.threads:  # the peers' processes start torch with it too
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        compute.set_threads(args.threads)
    settings = {k: json.loads(v) if v[:1] in "0123456789-[{tf" else v
                for k, v in (item.split("=", 1) for item in args.set)}  # fmt: skip
    info = describe()
    print(header(info))
    test = held_out()
    rows, comparisons = [], []
    if "fewshot" in args.only:
        ours = fewshot_omniglot.run_ours("protonet", args.minutes, "scratch", settings, test,
                                         args.episodes, 1)[0]  # fmt: skip
        peer = run_peer(args.peers_python, "easyfsl_protonet.py", args.minutes)
        rows += [ours, peer]
        comparisons.append(compare(ours, peer, 1.5))
        print(fmt(ours), fmt(peer), sep="\n", flush=True)
    if "ssl" in args.only:
        ours = ssl_omniglot.run_ours("simclr", args.minutes, settings, test, args.episodes)
        peer = run_peer(args.peers_python, "lightly_simclr.py", args.minutes,
                        "--batch-size", "256")  # fmt: skip
        rows += [ours, peer]
        comparisons.append(compare(ours, peer, 2.0))
        print(fmt(ours), fmt(peer), sep="\n", flush=True)
    print()
    print("| run | images/s | 5-way 1-shot | 20-way 1-shot |")
    print("| --- | ---: | ---: | ---: |")
    print("\n".join(fmt(r) for r in rows))
    for c in comparisons:
        points = ", ".join(f"{k} {v:+.1f} points" for k, v in c["accuracy_points"].items())
        met = "met" if c["speed_ratio"] >= c["speed_target"] else "not met"
        print(f"{c['ours']} / {c['peer']}: {c['speed_ratio']:.2f}x images/s (target "
              f"{c['speed_target']:g}x: {met}); accuracy {points}")  # fmt: skip
    write_json(
        "peers_side_by_side",
        {"machine": info, "command": " ".join(sys.argv), "minutes": args.minutes,
         "settings": settings, "rows": rows, "comparisons": comparisons},
        args.out,
    )  # fmt: skip


if __name__ == "__main__":
    main()
