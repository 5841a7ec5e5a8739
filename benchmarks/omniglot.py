"""Shared Omniglot protocol of the benchmarks: train on images_background_small1.zip, test on
the alphabets found only in images_background_small2.zip, conv4 at 28x28.

Both sketchshot's benchmarks and the peers' scripts (run in their own venv with sketchshot
installed beside them) read data and score episodes through this module, so that the only
difference between two rows of a table is the training loop."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import torch

from sketchshot.config import METHOD_SETTINGS, DataConfig, ViewConfig
from sketchshot.data import SketchDataset, load_dataset
from sketchshot.evaluation import embed, score_episodes
from sketchshot.methods import Method

OMNIGLOT = Path(
    os.environ.get("OMNIGLOT", Path(__file__).resolve().parents[2] / "shared" / "data" / "omniglot")
)
TRAIN_ZIP = OMNIGLOT / "images_background_small1.zip"
TEST_ZIP = OMNIGLOT / "images_background_small2.zip"
SEEN_ALPHABETS = ("Greek", "Latin")  # in both archives: not held out


def train_config() -> DataConfig:
    """Every character of small1, all in the train split (labels unused by SSL)."""
    return DataConfig(source=str(TRAIN_ZIP), split_fractions=(1.0, 0.0, 0.0))


def section(method: str, settings: dict) -> dict:
    """A [pretrain] or [finetune] section in the config's shape from flat benchmark settings:
    the method's own keys go under its name, view keys under ``views``."""
    out: dict = {"method": method}
    for key, value in settings.items():
        if key in METHOD_SETTINGS[method].model_fields:
            out.setdefault(method, {})[key] = value
        elif key in ViewConfig.model_fields:
            out.setdefault("views", {})[key] = value
        else:
            out[key] = value
    return out


def held_out(image_size: int = 28, fit: str = "page") -> SketchDataset:
    """Japanese (katakana), Sanskrit and Tagalog: 106 characters x 20 drawers."""
    cfg = DataConfig(source=str(TEST_ZIP), exclude_classes=SEEN_ALPHABETS, fit=fit)
    return load_dataset(cfg, image_size, "all")


def one_shot_accuracy(
    method: Method, test: SketchDataset, episodes: int = 1000, seed: int = 0, views: int = 1
) -> dict[str, tuple[float, float]]:
    """5-way and 20-way 1-shot (15 queries) accuracy with 95% CI, through ``method.score``
    on embeddings computed once (averaged over ``views`` test-time views when > 1); no
    episodes: nothing (a speed-only row)."""
    if episodes == 0:
        return {}
    emb = embed(method, test.images, torch.device("cpu"), views=views)
    out = {}
    for n_way in (5, 20):
        s = score_episodes(method, emb, test.labels, n_way, 1, 15, episodes, seed)
        out[f"{n_way}w1s"] = (s.mean, s.ci95)
    return out


def fmt(row: dict) -> str:
    """One markdown table row: name, images/s, 5-way and 20-way 1-shot with 95% CI."""

    def acc(key: str) -> str:
        mean, ci = row[key]
        return f"{100 * mean:.1f} ± {100 * ci:.1f}%"

    return f"| {row['name']} | {row['images_per_s']:.0f} | {acc('5w1s')} | {acc('20w1s')} |"


def run_peer(python: str, script: str, minutes: float, *args: str) -> dict:
    """One row from a peer's script in its own venv (``peers/SCRIPT``), for ``minutes``."""
    done = subprocess.run(
        [python, str(Path(__file__).parent / "peers" / script), "--minutes", str(minutes),
         *args],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(rows: list[dict], title: str, results: Path) -> None:
    """Print the table, headed by the time, threads and torch version, and append it to
    ``results``."""
    title = (
        f"{time.strftime('%Y-%m-%d %H:%M')}: {title}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    table = [f"## {title}", "", "| run | images/s | 5-way 1-shot | 20-way 1-shot |",
             "| --- | ---: | ---: | ---: |", *(fmt(r) for r in rows), ""]  # fmt: skip
    print("\n".join(table))
    results.parent.mkdir(exist_ok=True)
    with open(results, "a", encoding="utf-8") as f:
        f.write("\n".join(table) + "\n")
