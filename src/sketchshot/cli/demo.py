"""``sketchshot demo``: the whole pipeline on built-in glyphs, in one command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sketchshot.cli.app import command
from sketchshot.cli.options import OUTPUT, RUN_FLAGS, Given, Json, Quiet, Verbose, option
from sketchshot.cli.render import emit, stderr_console
from sketchshot.config import Config
from sketchshot.errors import ConfigError

DEMO_OUT = Path("sketchshot-demo")
DemoOut = Annotated[
    Path,
    option(
        "--out", help="folder for the demo's runs and files", default=str(DEMO_OUT), panel=OUTPUT
    ),
]


@command(Config(), RUN_FLAGS)
def demo(
    given: Given,
    out: DemoOut = DEMO_OUT,
    as_json: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Pretrain, finetune, evaluate and predict on the built-in glyphs; prints the accuracy.

    Takes about half a minute on a quiet machine, several minutes on a loaded one."""
    from sketchshot.demo import DEMO_SETTINGS, run_demo

    if (out / "pretrain").exists() or (out / "finetune").exists():
        raise ConfigError(f"{out} already holds a demo; remove it or choose another --out")
    cfg = given.config(None, overrides={**DEMO_SETTINGS, **given.values})
    r = run_demo(out, cfg, quiet=quiet, console=stderr_console())
    payload = {
        "out": str(r.out),
        "seconds": round(r.seconds, 1),
        "evaluation": r.evaluation,
        "evaluation_pretrained_only": r.evaluation_pretrained,
        "predictions": r.predictions,
        "predict_accuracy": r.predict_accuracy,
    }

    def human(c: Console) -> None:
        table = Table("image", "predicted", "confidence", "truth")
        for p in r.predictions:
            ok = "green" if p["label"] == p["truth"] else "red"
            table.add_row(
                escape(Path(p["path"]).name),
                f"[{ok}]{escape(p['label'])}[/]",
                f"{p['confidence']:.3f}",
                escape(p["truth"]),
            )
        c.print(table, soft_wrap=False)
        e, ep = r.evaluation, r.evaluation_pretrained
        c.print(
            f"self-supervised encoder alone: {100 * ep['accuracy']:.1f}% ± {100 * ep['ci95']:.1f}%"
        )
        c.print(
            f"[bold]demo done in {r.seconds:.0f} s: {e['n_way']}-way {e['n_shot']}-shot "
            f"accuracy on unseen glyph classes {100 * e['accuracy']:.1f}% ± "
            f"{100 * e['ci95']:.1f}% (chance {100 / e['n_way']:.0f}%)[/]"
        )
        c.print(
            escape(
                f"runs in {r.out}/pretrain and {r.out}/finetune; try 'sketchshot predict --model "
                f"{r.out}/finetune --support {r.out}/predict/support {r.out}/predict/queries/*.png'"
            )
        )

    emit(as_json, payload, human)
