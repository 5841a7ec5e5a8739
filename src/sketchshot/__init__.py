"""sketchshot: few-shot recognition of hand-drawn sketches.

    import sketchshot
    model = sketchshot.load("runs/finetune-protonet")
    features = model.embed(["cat.png", pil_image, numpy_array])  # float32 [3, D]
    rows = model.predict("query.png", {"cat": ["cat1.png"], "dog": ["dog1.png"]})

The names below are imported on first use, so that ``import sketchshot`` (and the CLI's
``--version``) stays free of torch."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0.dev0"

_EXPORTS = {
    "load": "sketchshot.api",
    "Model": "sketchshot.api",
    "ClassBank": "sketchshot.bank",
    "Prediction": "sketchshot.prediction",
    "ModelCard": "sketchshot.card",
    "Preprocessing": "sketchshot.card",
    "SketchshotError": "sketchshot.errors",
    "DataError": "sketchshot.errors",
    "CheckpointError": "sketchshot.errors",
    "ConfigError": "sketchshot.errors",
}
__all__ = [
    "CheckpointError",
    "ClassBank",
    "ConfigError",
    "DataError",
    "Model",
    "ModelCard",
    "Prediction",
    "Preprocessing",
    "SketchshotError",
    "__version__",
    "load",
]

if TYPE_CHECKING:
    from sketchshot.api import Model, load
    from sketchshot.bank import ClassBank
    from sketchshot.card import ModelCard, Preprocessing
    from sketchshot.errors import CheckpointError, ConfigError, DataError, SketchshotError
    from sketchshot.prediction import Prediction


def __getattr__(name: str) -> Any:
    """Import an exported name on first use (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'sketchshot' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
