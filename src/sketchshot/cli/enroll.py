"""``sketchshot enroll``: encode support classes once into a class bank for ``predict``."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from sketchshot.cli.app import command
from sketchshot.cli.options import DEVICE, MODEL, THREADS, Flag, Given, Json, Quiet, Verbose
from sketchshot.cli.render import emit, note, stderr_console
from sketchshot.config import EnrollConfig

BANK = "Bank"
CALIBRATION = "Calibration"
FLAGS = (
    Flag("--support", "support", BANK, note="; only these images are encoded"),
    Flag("--bank", "bank", BANK, note=" (add --support classes, --remove, --calibrate)"),
    Flag("--out", "out", BANK, note=" (OUT.safetensors and OUT.json)"),
    Flag("--classes", "classes", BANK),
    Flag("--shots", "shots", BANK, note=" (the first by file name)"),
    Flag("--remove", "remove", BANK, note="; nothing is encoded again"),
    Flag("--replace", "replace", BANK, note=" (without it, such a clash is an error)"),
    Flag("--calibrate", "calibrate", CALIBRATION, note=" (leave-one-class-out episodes)"),
    Flag("--false-reject", "false_reject", CALIBRATION, note="; implies --calibrate"),
    Flag("--bundle", "bundle", BANK, note="; --bank BANK --bundle bundles an existing bank"),
    Flag("--model", "model", MODEL),
    DEVICE,
    THREADS,
)


@command(EnrollConfig(), FLAGS)
def enroll(
    given: Given, as_json: Json = False, quiet: Quiet = False, verbose: Verbose = False
) -> None:
    """Encode support classes once into a class bank for predict; add, remove, calibrate.

    A calibrated bank is calibrated again after classes are added or removed. A bank finds its
    model by the model's sha256: --model, else its own copy (--bundle), else a model beside it
    (model.json, or a run folder there), else the run folder it was encoded with."""
    cfg = given.model(EnrollConfig)
    from sketchshot import engine

    r = engine.enroll(cfg)

    def human(c: Console) -> None:
        changes = [f"added {len(r.added)}"] if r.added else []
        changes += [f"removed {len(r.removed)}"] if r.removed else []
        model = f"its own copy {r.bundled}" if r.bundled else r.model
        c.print(
            f"saved {escape(str(r.bank))}: {len(r.classes)} classes, "
            f"{sum(r.classes.values())} embeddings ({', '.join(changes) or 'unchanged'}); "
            f"model {escape(model)}"
        )
        t = r.threshold
        if t is not None:
            c.print(
                f"unknown below similarity {t['value']:.4f}: rejects "
                f"{100 * t['false_reject']:.1f}% of known and accepts "
                f"{100 * t['false_accept']:.1f}% of unknown drawings in "
                f"{t['episodes']} leave-one-class-out episodes"
            )

    emit(as_json, r.as_dict(), human)
    for text in () if quiet else r.notes:
        note(stderr_console(), text)
