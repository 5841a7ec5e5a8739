"""``sketchshot data``: look at data before training on it (inspect), make it (COCO crops,
Omniglot's archives) and see what a source decodes to (render)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sketchshot.cli.app import app, command
from sketchshot.cli.options import Json, Quiet, Verbose, option
from sketchshot.cli.render import emit, note, stderr_console
from sketchshot.config import DataConfig
from sketchshot.download import BASE_URL_ENV, OMNIGLOT_SPLITS

data_app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(
    data_app,
    name="data",
    help="Look at data before training on it (inspect), make it (crop COCO boxes, download "
    "Omniglot) and see what a source decodes to (render).",
)
DATA = "Data"
OmniglotSplit = Literal[OMNIGLOT_SPLITS]  # type: ignore[valid-type]
OnError = Annotated[
    Literal["skip", "fail"],
    option(
        "--on-error",
        help="a bad box (outside its image, empty) or a missing image: fail, or skip it and "
        "name it in a note",
        default="fail",
        panel=DATA,
    ),
]


def _counts_table(
    counts: dict[str, int], title: str, unit: str = "images", key: str = "class"
) -> Table:
    table = Table(title=title)
    table.add_column(key)
    table.add_column(unit, justify="right")
    for name, n in counts.items():
        table.add_row(escape(name), str(n))
    table.add_row("[bold]total[/]", f"[bold]{sum(counts.values())}[/]")
    return table


def _notes(quiet: bool, lines: list[str]) -> None:
    if not quiet:
        console = stderr_console()
        for line in lines:
            note(console, line)


@command(on=data_app)
def crop(
    coco: Annotated[
        Path,
        option("--coco", help="COCO detection annotations (JSON)", default="required", panel=DATA),
    ],
    images: Annotated[
        Path,
        option(
            "--images",
            help="folder the annotations' file_name paths are under",
            default="required",
            panel=DATA,
        ),
    ],
    out: Annotated[
        Path,
        option(
            "--out",
            help="where to write OUT/<category>/<image stem>_<id>.png",
            default="required",
            panel=DATA,
        ),
    ],
    pad: Annotated[
        float,
        option(
            "--pad",
            help="padding around each box, as a fraction of its width and height",
            default="0.1",
            panel=DATA,
            min=0.0,
        ),
    ] = 0.1,
    min_size: Annotated[
        int,
        option(
            "--min-size",
            help="leave out boxes narrower or lower than this many pixels",
            default="0",
            panel=DATA,
            min=0,
        ),
    ] = 0,
    on_error: OnError = "fail",
    as_json: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Cut each annotated box of a COCO file (with padding) into class folders named by its
    category, ready for enroll, finetune or evaluate."""
    from sketchshot.data.coco import crop_coco

    result = crop_coco(coco, images, out, pad, min_size, on_error)
    lines = [f"skipped {s}" for s in result.skipped]
    if result.skipped:
        lines.append(f"skipped {len(result.skipped)} boxes (--on-error skip)")
    if result.too_small:
        lines.append(f"left out {result.too_small} boxes under --min-size {min_size} px")
    _notes(quiet or as_json, lines)

    def human(c: Console) -> None:
        c.print(_counts_table(result.counts, f"crops in {escape(result.out)}"), soft_wrap=False)

    emit(as_json, asdict(result) | {"written": result.written}, human)


Source = Annotated[
    str, typer.Argument(help="A data source: an image folder or a .zip of one.", show_default=False)
]


# Why the reader of each kind of source skips a file (the report's unsupported files).
NOT_READ = {
    "images": "not an image",
    "omniglot_strokes": "not a .txt stroke file",
    "quickdraw": "not .ndjson, .npy or .npz",
    "svg": "not an .svg",
}


@command(name="inspect", on=data_app)
def inspect_data(
    path: Annotated[
        Path,
        typer.Argument(
            help="A data source: an image folder ROOT/<class>/*.png or a .zip of one, Omniglot "
            "stroke files (folder or .zip), QuickDraw files (.ndjson/.npy/.npz, or a folder of "
            "them) or SVG class folders.",
            show_default=False,
        ),
    ],
    max_per_class: Annotated[
        int | None,
        option(
            "--max-per-class",
            help="read at most this many drawings of each class of a vector source (QuickDraw "
            "files hold ~100,000); image folders are read whole",
            default="none",
            panel=DATA,
            min=1,
        ),
    ] = None,
    trust_npz: Annotated[
        bool,
        option(
            "--trust-npz",
            help=DataConfig.model_fields["trust_npz"].description,
            default="off",
            panel=DATA,
        ),
    ] = False,
    as_json: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Classes and their counts, imbalance, image sizes or strokes per drawing, what the reader
    refuses (unreadable or blank images, bad records) and why, exact duplicates across classes,
    and files the reader skips."""
    from sketchshot.data.inspect import inspect_source

    found = inspect_source(path, max_per_class, trust_npz)
    payload = asdict(found) | {"n_images": found.n_images, "imbalance": found.imbalance}
    unit = "images" if found.kind == "images" else "drawings"

    def human(c: Console) -> None:
        what = "" if found.labelled else " (unlabelled: images outside class folders)"
        title = f"{escape(found.source)} ({found.kind}){what}"
        c.print(_counts_table(found.counts, title, unit), soft_wrap=False)
        ratio = f"{found.imbalance:.2f}" if found.imbalance is not None else "n/a"
        c.print(
            f"{len(found.counts)} classes, {found.n_images} {unit}, imbalance (max/min) {ratio}"
        )
        if found.sizes:
            c.print("sizes: " + ", ".join(f"{k} ({n})" for k, n in found.sizes.items()))
        for name, spread in (("strokes", found.strokes), ("points", found.points)):
            if spread is not None:
                c.print(
                    f"{name} per drawing: min {spread.min}, median {spread.median:g}, "
                    f"max {spread.max}"
                )
        for p, why in found.unreadable.items():
            c.print(f"[red]unreadable[/] {escape(p)}: {escape(why)}")
        for same in found.duplicates:
            c.print(f"[yellow]duplicate across classes[/] {escape(', '.join(same))}")
        for p in found.unsupported:
            c.print(f"[dim]skipped ({NOT_READ[found.kind]})[/] {escape(p)}")

    emit(as_json, payload, human)


@command(name="render", on=data_app)
def render_data(
    source: Source,
    out: Annotated[
        Path,
        option(
            "--out",
            help="folder to write OUT/<class>/<name>.png into",
            default="required",
            panel=DATA,
        ),
    ],
    image_size: Annotated[
        int,
        option(
            "--image-size",
            help="side of the written images in pixels",
            default="64",
            panel=DATA,
            min=8,
            max=512,
        ),
    ] = 64,
    as_json: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Write what a data source decodes to as PNG class folders (dark strokes on white), to
    look at."""
    from sketchshot.data.rendering import render_source

    counts = render_source(source, out, image_size)

    def human(c: Console) -> None:
        c.print(_counts_table(counts, f"rendered into {escape(str(out))}"), soft_wrap=False)

    emit(as_json, {"out": str(out), "image_size": image_size, "counts": counts}, human)


@command(on=data_app)
def download(
    dataset: Annotated[
        Literal["omniglot"], typer.Argument(help="The dataset.", show_default=False)
    ],
    split: Annotated[
        OmniglotSplit,
        option("--split", help="which archive", default="required", panel=DATA),
    ],
    to: Annotated[
        Path, option("--to", help="folder to put the archive in", default="required", panel=DATA)
    ],
    base_url: Annotated[
        str | None,
        option(
            "--base-url",
            help=f"server to fetch from (or ${BASE_URL_ENV})",
            default="the upstream GitHub repository",
            panel=DATA,
        ),
    ] = None,
    sha256: Annotated[
        str | None,
        option(
            "--sha256",
            help="expected sha256 (the small archives' are known)",
            default="none",
            panel=DATA,
        ),
    ] = None,
    as_json: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Fetch an upstream Omniglot archive, resuming a broken download and refusing a file whose
    sha256 is wrong; read it with --data DIR/<archive>.zip."""
    from sketchshot.download import download_omniglot
    from sketchshot.progress import progress_bar

    with progress_bar(stderr_console(), disable=quiet or as_json) as bar:
        task = bar.add_task(f"omniglot {split}", total=None)

        def advance(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        got = download_omniglot(split, to, base_url, sha256, advance)
    if not got.verified:
        _notes(
            quiet or as_json,
            [
                f"sha256 {got.sha256} not verified: no known hash for this "
                "archive (pass --sha256 to check it)"
            ],
        )

    def human(c: Console) -> None:
        check = "verified" if got.verified else "not verified"
        resumed = f", resumed from byte {got.resumed_from}" if got.resumed_from else ""
        c.print(f"{got.path}: {got.size} bytes{resumed}, sha256 {got.sha256} ({check})")

    emit(as_json, asdict(got), human)


@command(name="runs", on=data_app)
def make_runs_command(
    source: Source,
    out: Annotated[
        Path,
        option("--out", help="new folder to write runNN/ into", default="required", panel=DATA),
    ],
    count: Annotated[
        int, option("--count", help="number of runs", default="40", panel=DATA, min=1)
    ] = 40,
    ways: Annotated[
        int,
        option(
            "--ways",
            help="classes per run (a smaller group gives all of its classes)",
            default="20",
            panel=DATA,
            min=2,
        ),
    ] = 20,
    classes: Annotated[
        list[str] | None,
        option(
            "--classes",
            help="only these classes or top-level groups (globs, e.g. 'Sanskrit')",
            default="all",
            panel=DATA,
        ),
    ] = None,
    exclude_classes: Annotated[
        list[str] | None,
        option(
            "--exclude-classes",
            help="leave out these classes or top-level groups (globs)",
            default="none",
            panel=DATA,
        ),
    ] = None,
    image_size: Annotated[
        int,
        option(
            "--image-size",
            help="side of the written images in pixels (Omniglot's are 105)",
            default="105",
            panel=DATA,
            min=8,
            max=512,
        ),
    ] = 105,
    seed: Annotated[
        int,
        option("--seed", help="seed of the draw of classes and drawers", default="0", panel=DATA),
    ] = 0,
    as_json: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Write one-shot classification runs in Omniglot's layout (runNN/training, runNN/test,
    class_labels.txt), for 'evaluate --runs': each run within one top-level group (an
    alphabet), one drawing per class by one drawer to learn from and one by another drawer to
    classify, as in Lake et al. (2015)."""
    from sketchshot.protocols.omniglot_runs import make_runs

    runs = make_runs(
        source, out, count, ways, seed, tuple(classes or ()), tuple(exclude_classes or ()),
        image_size,
    )  # fmt: skip
    groups: dict[str, int] = {}
    for run in runs:
        groups[run.group] = groups.get(run.group, 0) + 1
    summary = {
        "out": str(out),
        "runs": len(runs),
        "groups": groups,
        "ways": sorted({run.n_way for run in runs}),
    }

    def human(c: Console) -> None:
        c.print(_counts_table(groups, f"{len(runs)} runs in {escape(str(out))}", "runs", "group"))

    emit(as_json, summary, human)
