"""The ``sketchshot`` command: each command module parses its options (generated from the
config, see ``options``), builds a frozen config, calls one engine function and renders.

torch is imported only inside commands, so ``sketchshot --help`` answers at once."""

from __future__ import annotations

from sketchshot.cli import (  # noqa: F401
    data,
    demo,
    embed,
    enroll,
    ensemble,
    evaluate,
    export,
    finetune,
    import_weights,
    info,
    plot,
    predict,
    pretrain,
    sweep,
)
from sketchshot.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    app()
