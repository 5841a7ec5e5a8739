"""Pairwise ranking on pairs built from Omniglot: which of two drawings of a character was
drawn with fewer strokes? Frozen (cached features) against end to end, and what the feature
cache saves.

Pairs: every drawing of ``images_background_small1.zip`` and ``small2.zip`` (242 characters x
20 drawers; Greek and Latin are in both, read once), its stroke count from the matching
``strokes_background_small*.zip`` file. For each character, up to ``--per-character`` pairs of
its drawings whose stroke counts differ (ties dropped), seeded; label 1 when a has fewer
strokes; a synthetic ``agreement`` = |difference| / (|difference| + 1) (0.5 for one stroke
apart, 0.67 for two) and ``reviewers`` (1 to 5, random). Group = character (242 groups): the
val and test characters are unseen, of alphabets seen in training; the same pairs grouped by
alphabet (8 groups: unseen alphabets) make a second CSV. Split 0.5 / 0.25 / 0.25 of the groups
(seed 0).

Runs (conv4 at 28 px unless said; Adam 1e-3, batch 64 pairs, best epoch by val log-loss):

1. a short SimCLR pretraining on small1 (``--ssl-minutes``; 0: start from scratch), the
   encoder that the pairwise runs start from;
2. frozen: the head on cached features of that encoder and the image statistics; run twice,
   the cache cold then warm (a new run folder, the same cache);
3. frozen with ``--min-agreement 0.6`` (pairs two or more strokes apart), and frozen on the
   pairs grouped by alphabet;
4. frozen on a ResNet-50's layer3 at 64 px with *random* weights (no ImageNet file can be
   downloaded here): a heavy extractor, for the cache's timing only (``--skip-resnet``);
5. end to end from the same encoder, ``--freeze none`` and ``--freeze partial``.

  python benchmarks/pairwise_omniglot.py [--per-character 24] [--frozen-epochs 30]
      [--e2e-epochs 5] [--ssl-minutes 2] [--keep DIR] [--skip-resnet]

Appends its table to benchmarks/results/pairwise_omniglot.md."""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from omniglot import OMNIGLOT, TRAIN_ZIP  # noqa: E402

from sketchshot import engine  # noqa: E402
from sketchshot.config import resolve_config  # noqa: E402
from sketchshot.data.vector.omniglot import parse_omniglot_strokes  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "pairwise_omniglot.md"
SPLIT = (0.5, 0.25, 0.25)


def drawings() -> dict[str, tuple[bytes, int]]:
    """``alphabet/character/id_drawer`` -> (the PNG's bytes, its number of strokes)."""
    strokes: dict[str, int] = {}
    for n in (1, 2):
        with zipfile.ZipFile(OMNIGLOT / f"strokes_background_small{n}.zip") as archive:
            for name in archive.namelist():
                if name.endswith(".txt") and "__MACOSX" not in name:
                    key = "/".join(name.split("/")[1:])[: -len(".txt")]
                    strokes[key] = len(parse_omniglot_strokes(archive.read(name).decode()))
    out = {}
    for n in (1, 2):
        with zipfile.ZipFile(OMNIGLOT / f"images_background_small{n}.zip") as archive:
            for name in archive.namelist():
                key = "/".join(name.split("/")[1:])[: -len(".png")]
                if name.endswith(".png") and key in strokes and key not in out:
                    out[key] = (archive.read(name), strokes[key])
    return out


def write_pairs(root: Path, per_character: int, seed: int = 0) -> tuple[Path, Path, dict]:
    """The images under ``root/images/``, ``root/pairs.csv`` (group: the character) and
    ``root/pairs-by-alphabet.csv`` (the same pairs, group: the alphabet); returns both CSVs
    and counts."""
    found = drawings()
    by_character: dict[str, list[str]] = {}
    for key, (data, _) in found.items():
        path = root / "images" / f"{key}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        by_character.setdefault(key.rsplit("/", 1)[0], []).append(key)
    rng = np.random.default_rng(seed)
    rows, ties = [], 0
    for character, keys in sorted(by_character.items()):
        candidates = []
        for a, b in itertools.combinations(sorted(keys), 2):
            if found[a][1] == found[b][1]:
                ties += 1
            else:
                candidates.append((a, b) if rng.random() < 0.5 else (b, a))
        chosen = rng.permutation(len(candidates))[:per_character]
        for i in sorted(chosen.tolist()):
            a, b = candidates[i]
            gap = abs(found[a][1] - found[b][1])
            fewer = int(found[a][1] < found[b][1])
            agreement, reviewers = round(gap / (gap + 1), 3), int(rng.integers(1, 6))
            rows.append([f"images/{a}.png", f"images/{b}.png", fewer, character, agreement,
                         reviewers])  # fmt: skip
    path, by_alphabet = root / "pairs.csv", root / "pairs-by-alphabet.csv"
    alphabets = [[*r[:3], r[3].split("/")[0], *r[4:]] for r in rows]
    for file, grouped in ((path, rows), (by_alphabet, alphabets)):
        with open(file, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["image_a", "image_b", "label", "group", "agreement", "reviewers"])
            writer.writerows(grouped)
    counts = {"images": len(found), "characters": len(by_character), "pairs": len(rows),
              "ties_dropped": ties, "a_fewer": sum(r[2] for r in rows)}  # fmt: skip
    return path, by_alphabet, counts


def pretrain(root: Path, minutes: float) -> Path:
    cfg = resolve_config(None, {
        "data.source": str(TRAIN_ZIP), "data.split_fractions": (1.0, 0.0, 0.0),
        "pretrain.method": "simclr", "pretrain.max_minutes": minutes, "pretrain.epochs": 1000,
        "pretrain.<method>.temperature": 0.5, "device": "cpu",
    })  # fmt: skip
    return engine.pretrain(cfg, root / "simclr", quiet=True).run_dir


def finetune(name: str, out: Path, options: dict) -> dict:
    """One pairwise run; its results.json with its wall time and name."""
    cfg = resolve_config(None, {"finetune.method": "pairwise", "device": "cpu",
                                "data.split_fractions": SPLIT, **options})  # fmt: skip
    start = time.perf_counter()
    run = engine.finetune(cfg, out, quiet=True).run_dir
    wall = time.perf_counter() - start
    r = json.loads((run / "results.json").read_text())
    r |= {"name": name, "wall": wall}
    brief = {s: (round(v["accuracy"], 3), round(v["log_loss"], 3)) for s, v in r["splits"].items()}
    print(name, brief, f"{wall:.0f} s", r["feature_cache"], flush=True)
    return r


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def row(r: dict) -> str:
    test, val = r["splits"]["test"], r["splits"]["val"]
    ci = f" ± {100 * test['ci95']:.1f}" if test.get("ci95") is not None else ""
    cache = r["feature_cache"]
    features = (f"{cache['seconds']:.1f} s ({cache['computed']} computed, {cache['cached']} "
                "cached)") if cache else "-"  # fmt: skip
    return (
        f"| {r['name']} | {pct(test['accuracy'])}{ci} | {test['log_loss']:.3f} | "
        f"{pct(val['accuracy'])} | {val['log_loss']:.3f} | {r['best'].get('epoch')} of "
        f"{r['epochs']} | {r['seconds_per_epoch']:.2f} | {features} | {r['wall']:.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-character", type=int, default=24)
    parser.add_argument("--frozen-epochs", type=int, default=30)
    parser.add_argument("--e2e-epochs", type=int, default=5)
    parser.add_argument("--ssl-minutes", type=float, default=2.0)
    parser.add_argument("--keep", type=Path, help="keep the data and runs here")
    parser.add_argument("--skip-resnet", action="store_true")
    parser.add_argument("--results", type=Path, default=RESULTS, help="markdown to append to")
    args = parser.parse_args()
    torch.set_num_threads(2)
    root = args.keep or Path(tempfile.mkdtemp(prefix="pairwise-omniglot-"))
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    pairs, by_alphabet, counts = write_pairs(root / "data", args.per_character)
    print(counts, flush=True)
    init = pretrain(root, args.ssl_minutes) if args.ssl_minutes > 0 else None
    base = {"data.pairs": str(pairs), "finetune.patience": 5,
            "finetune.init": str(init) if init else "scratch"}  # fmt: skip
    cache = root / "feature-cache"
    frozen = base | {"finetune.freeze_encoder": True, "finetune.epochs": args.frozen_epochs,
                     "finetune.<method>.feature_cache": str(cache),
                     "finetune.<method>.features": ("encoder", "stats")}  # fmt: skip
    runs = {
        "cache cold": ("frozen-cold", {}),
        "cache warm": ("frozen-warm", {}),
        "--min-agreement 0.6": ("frozen-agree", {"data.min_agreement": 0.6}),
        "grouped by alphabet": ("frozen-alphabets", {"data.pairs": str(by_alphabet)}),
    }
    rows = [
        finetune(f"frozen, encoder + stats, {name}", root / folder, frozen | options)
        for name, (folder, options) in runs.items()
    ]
    if not args.skip_resnet:
        from safetensors.torch import save_file
        from torchvision import models

        weights = root / "resnet50-random.safetensors"
        torch.manual_seed(0)
        save_file({k: v.contiguous() for k, v in models.resnet50().state_dict().items()},
                  str(weights))  # fmt: skip
        resnet = frozen | {"finetune.init": "scratch", "data.image_size": 64,
                           "finetune.<method>.features": ("resnet50-layer3", "stats"),
                           "finetune.<method>.resnet_weights": str(weights)}  # fmt: skip
        for state in ("cold", "warm"):
            name = f"frozen, random resnet50-layer3 + stats at 64 px, cache {state}"
            rows.append(finetune(name, root / f"resnet-{state}", resnet))
    e2e = base | {"finetune.epochs": args.e2e_epochs}
    for freeze in ("none", "partial"):
        rows.append(finetune(f"end to end, --freeze {freeze}", root / f"e2e-{freeze}",
                             e2e | {"finetune.<method>.freeze": freeze}))  # fmt: skip
    minutes = (time.perf_counter() - started) / 60
    write_results(args.results, rows, counts, args, init, minutes)


def write_results(path: Path, rows: list[dict], counts: dict, args, init, minutes: float) -> None:
    by = {r["name"]: r for r in rows}
    cold, warm = (
        by["frozen, encoder + stats, cache cold"],
        by["frozen, encoder + stats, cache warm"],
    )
    e2e = by["end to end, --freeze none"]
    lines = [
        f"## {time.strftime('%Y-%m-%d %H:%M')}: {counts['pairs']} pairs of {counts['images']} "
        f"drawings, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"{minutes:.1f} minutes in all",
        "",
        f"`python benchmarks/pairwise_omniglot.py --per-character {args.per_character} "
        f"--frozen-epochs {args.frozen_epochs} --e2e-epochs {args.e2e_epochs} --ssl-minutes "
        f"{args.ssl_minutes:g}`; {counts['characters']} characters, {counts['ties_dropped']} "
        f"tied pairs dropped, label 1 (a has fewer strokes) in {counts['a_fewer']} pairs; "
        f"encoder: {'SimCLR, ' + str(args.ssl_minutes) + ' min on small1' if init else 'scratch'}"
        ". Splits of the characters: "
        + ", ".join(f"{s} {c['pairs']} pairs / {c['groups']}" for s, c in cold["splits"].items())
        + ".",
        "",
        "| run | test accuracy (95% CI) | test log-loss | val accuracy | val log-loss | best "
        "epoch | s / epoch | features (cache) | wall s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
        *(row(r) for r in rows),
        "",
        f"- Feature cache, encoder + stats: {cold['feature_cache']['seconds']:.1f} s cold, "
        f"{warm['feature_cache']['seconds']:.1f} s warm "
        f"({cold['feature_cache']['seconds'] / max(warm['feature_cache']['seconds'], 1e-9):.1f}x);"
        f" whole run {cold['wall']:.0f} s against {warm['wall']:.0f} s.",
    ]
    if "frozen, random resnet50-layer3 + stats at 64 px, cache cold" in by:
        rc = by["frozen, random resnet50-layer3 + stats at 64 px, cache cold"]
        rw = by["frozen, random resnet50-layer3 + stats at 64 px, cache warm"]
        lines.append(
            f"- Feature cache, ResNet-50 layer3 at 64 px: {rc['feature_cache']['seconds']:.1f} s "
            f"cold, {rw['feature_cache']['seconds']:.1f} s warm "
            f"({rc['feature_cache']['seconds'] / max(rw['feature_cache']['seconds'], 1e-9):.0f}x)"
            f"; whole run {rc['wall']:.0f} s against {rw['wall']:.0f} s."
        )
    lines.append(
        f"- Time per epoch: frozen {warm['seconds_per_epoch']:.2f} s, end to end "
        f"{e2e['seconds_per_epoch']:.1f} s "
        f"({e2e['seconds_per_epoch'] / max(warm['seconds_per_epoch'], 1e-9):.0f}x)."
    )
    text = "\n".join(lines) + "\n\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text("# Pairwise ranking on Omniglot: fewer strokes\n\n" + __doc__ + "\n\n")
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
