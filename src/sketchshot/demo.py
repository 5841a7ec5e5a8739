"""``sketchshot demo``: pretrain -> finetune -> evaluate -> predict on the built-in glyphs."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from rich.console import Console

from sketchshot import engine
from sketchshot.config import Config, PredictConfig, resolve_config
from sketchshot.data import load_dataset

DEMO_SETTINGS = {
    "data.split_fractions": (0.7, 0.1, 0.2),  # test classes for "accuracy on unseen classes"
    "pretrain.epochs": 6,
    "pretrain.batch_size": 128,
    "finetune.epochs": 6,
    "finetune.episodes_per_epoch": 60,
    "finetune.n_way": 20,
    "finetune.val_episodes": 100,
}


@dataclass
class DemoResult:
    out: Path
    pretrain_seconds: float
    finetune_seconds: float
    evaluation: dict[str, Any]
    evaluation_pretrained: dict[str, Any]
    predictions: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def predict_accuracy(self) -> float:
        right = [p["label"] == p["truth"] for p in self.predictions]
        return sum(right) / max(1, len(right))


def write_support_and_queries(
    cfg: Config, out: Path, n_classes: int = 5
) -> tuple[Path, list[Path], list[str]]:
    """Write one support PNG per test class and one query PNG each, as a user would have them."""
    test = load_dataset(cfg.data, 28, "test")
    support_dir, query_dir = out / "support", out / "queries"
    queries, truths = [], []
    for c, name in enumerate(test.class_names[:n_classes]):
        index = (test.labels == c).nonzero().flatten()
        (support_dir / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(test.images[index[0], 0].numpy()).save(support_dir / name / "example.png")
        query_dir.mkdir(parents=True, exist_ok=True)
        path = query_dir / f"query-{c + 1:02d}.png"
        Image.fromarray(255 - test.images[index[1], 0].numpy()).save(path)  # dark on white
        queries.append(path)
        truths.append(name)
    return support_dir, queries, truths


def run_demo(
    out: Path, cfg: Config | None = None, quiet: bool = False, console: Console | None = None
) -> DemoResult:
    console = console or Console(stderr=True)
    start = time.perf_counter()
    cfg = cfg or resolve_config(overrides=DEMO_SETTINGS)
    pre = engine.pretrain(cfg, out / "pretrain", quiet=quiet, console=console)
    ft_cfg = resolve_config(overrides={"finetune.init": str(pre.run_dir)}, base=cfg)
    fin = engine.finetune(ft_cfg, out / "finetune", quiet=quiet, console=console)
    ev_pre = engine.evaluate(cfg, pre.run_dir)
    ev = engine.evaluate(cfg, fin.run_dir)
    support, queries, truths = write_support_and_queries(cfg, out / "predict")
    request = PredictConfig(
        inputs=tuple(str(q) for q in queries),
        model=fin.run_dir,
        support=support,
        device=cfg.device,
        threads=cfg.threads,
    )
    preds = engine.predict(request, quiet=True).rows
    rows = [p.as_dict() | {"truth": t} for p, t in zip(preds, truths, strict=True)]
    return DemoResult(
        out,
        pre.fit.seconds,
        fin.fit.seconds,
        ev.as_dict(),
        ev_pre.as_dict(),
        rows,
        time.perf_counter() - start,
    )
