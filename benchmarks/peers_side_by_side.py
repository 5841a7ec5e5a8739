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

The speed ratio is measured apart from the accuracy rows, in ``--speed-rounds`` rounds of
``--speed-seconds`` each, ours and the peer's in turn (ours, peer, peer, ours, ...): a shared
machine's speed drifts by tens of percent over minutes, and rows minutes apart would measure
the drift. The headline ratio is the median over rounds of ours / the peer's run beside it;
the accuracy rows' own images/s are printed too. Prints a table and the ratios; writes
peers_side_by_side.json. A smoke test: ``--minutes 0.05 --episodes 20 --speed-rounds 1
--speed-seconds 3``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fewshot_omniglot  # noqa: E402
import ssl_omniglot  # noqa: E402
from machine import describe, header, write_json  # noqa: E402
from omniglot import fmt, held_out, run_peer  # noqa: E402

from sketchshot import compute  # noqa: E402


def speed_rounds(ours, peer, rounds: int) -> list[tuple[float, float]]:
    """(ours, peer) images/s of ``rounds`` short runs each, in the order ours, peer, peer,
    ours, ours, peer, ... so that a drift of the machine's speed falls on both alike."""
    pairs = []
    for i in range(rounds):
        if i % 2 == 0:
            a = ours()
            b = peer()
        else:
            b = peer()
            a = ours()
        pairs.append((a, b))
        print(f"  speed round {i + 1}: ours {a:.0f}, peer {b:.0f} images/s: {a / b:.2f}x",
              flush=True)  # fmt: skip
    return pairs


def compare(ours: dict, peer: dict, target: float, rounds: list[tuple[float, float]]) -> dict:
    """Speed ratio (the median over the speed rounds; the accuracy rows' own ratio beside it)
    and accuracy differences (points) of ``ours`` over ``peer``."""
    return {
        "ours": ours["name"],
        "peer": peer["name"],
        "speed_rounds": rounds,
        "speed_ratio": statistics.median(a / b for a, b in rounds),
        "rows_speed_ratio": ours["images_per_s"] / peer["images_per_s"],
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
    parser.add_argument("--speed-rounds", type=int, default=4, help="interleaved speed runs")
    parser.add_argument("--speed-seconds", type=float, default=45.0, help="per speed run")
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
    fast = args.speed_seconds / 60
    if "fewshot" in args.only:
        rounds = speed_rounds(
            lambda: fewshot_omniglot.run_ours("protonet", fast, "scratch", settings, test, 0, 1)[0][
                "images_per_s"
            ],
            lambda: run_peer(args.peers_python, "easyfsl_protonet.py", fast, "--no-eval")[
                "images_per_s"
            ],
            args.speed_rounds,
        )
        ours = fewshot_omniglot.run_ours("protonet", args.minutes, "scratch", settings, test,
                                         args.episodes, 1)[0]  # fmt: skip
        peer = run_peer(args.peers_python, "easyfsl_protonet.py", args.minutes)
        rows += [ours, peer]
        comparisons.append(compare(ours, peer, 1.5, rounds))
        print(fmt(ours), fmt(peer), sep="\n", flush=True)
    if "ssl" in args.only:
        lightly = ("--batch-size", "256")
        rounds = speed_rounds(
            lambda: ssl_omniglot.run_ours("simclr", fast, settings, test, 0)["images_per_s"],
            lambda: run_peer(args.peers_python, "lightly_simclr.py", fast, *lightly, "--no-eval")[
                "images_per_s"
            ],  # fmt: skip
            args.speed_rounds,
        )
        ours = ssl_omniglot.run_ours("simclr", args.minutes, settings, test, args.episodes)
        peer = run_peer(args.peers_python, "lightly_simclr.py", args.minutes, *lightly)
        rows += [ours, peer]
        comparisons.append(compare(ours, peer, 2.0, rounds))
        print(fmt(ours), fmt(peer), sep="\n", flush=True)
    print()
    print("| run | images/s | 5-way 1-shot | 20-way 1-shot |")
    print("| --- | ---: | ---: | ---: |")
    print("\n".join(fmt(r) for r in rows))
    for c in comparisons:
        points = ", ".join(f"{k} {v:+.1f} points" for k, v in c["accuracy_points"].items())
        met = "met" if c["speed_ratio"] >= c["speed_target"] else "not met"
        print(f"{c['ours']} / {c['peer']}: {c['speed_ratio']:.2f}x images/s over "
              f"{len(c['speed_rounds'])} interleaved rounds (target {c['speed_target']:g}x: "
              f"{met}; the accuracy rows: {c['rows_speed_ratio']:.2f}x); accuracy "
              f"{points}")  # fmt: skip
    write_json(
        "peers_side_by_side",
        {"machine": info, "command": " ".join(sys.argv), "minutes": args.minutes,
         "speed_seconds": args.speed_seconds, "settings": settings, "rows": rows,
         "comparisons": comparisons},
        args.out,
    )  # fmt: skip


if __name__ == "__main__":
    main()
