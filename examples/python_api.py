"""Use sketchshot from Python: the same engine the CLI calls, with a typed config.

Run: python examples/python_api.py  (about a minute on 2 CPU cores)
"""

from pathlib import Path

from sketchshot import engine
from sketchshot.config import resolve_config

out = Path("runs/api-example")
cfg = resolve_config(
    overrides={
        "data.builtin.n_classes": 60,
        "finetune.epochs": 3,
        "finetune.episodes_per_epoch": 40,
        "finetune.n_way": 10,
    }
)
run = engine.finetune(cfg, out / "protonet")
result = engine.evaluate(cfg, run.run_dir)
print(f"5-way 1-shot on unseen glyphs: {100 * result.accuracy:.1f}% ± {100 * result.ci95:.1f}%")
