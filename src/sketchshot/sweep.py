"""Sweeps: one training command (``pretrain`` or ``finetune``) over a grid or a list of
settings, each run in its own folder, each evaluated once trained, into one results table.

A sweep file is TOML (``examples/sweep.toml`` annotates one)::

    command = "pretrain"              # or "finetune"
    out = "runs/sweep-temperature"    # the sweep folder, relative to this file
    config = "omniglot.toml"          # optional: a config file every run starts from
    data = "omniglot/small1.zip"      # optional: data.source of every run

    [base]                            # config keys every run gets (dotted, as in a config)
    "pretrain.epochs" = 5

    [grid]                            # key -> values: one run per combination
    "pretrain.simclr.temperature" = [0.1, 0.5]

    [[runs]]                          # and/or an explicit list (each crossed with the grid)
    name = "baseline"

    [evaluate]                        # how each run is evaluated: [evaluate] keys of a config
    protocol = "knn"
    [evaluate.data]                   # optional: other data than the runs trained on
    source = "omniglot/small2.zip"

Settings are the dotted keys of a config TOML; each run's config resolves as defaults <
``config`` < ``[base]`` < its ``[[runs]]`` entry < its grid values, and every run's config and
the evaluation are validated before anything trains. Paths in the file are relative to it.

In the sweep folder, ``sweep.json`` lists the runs; each run has its folder
``NNN-<settings>`` holding ``sweep-run.json`` (the settings it was planned with), the run
itself and ``evaluation.json``; ``results.md`` and ``results.csv`` are rewritten after each
run. Run again, a sweep skips finished runs, resumes an interrupted one (``--resume``'s
mechanism), evaluates a trained one whose evaluation is missing or was made with other
settings, and refuses a folder trained with other settings than the file now gives it.

Nothing here imports torch until a sweep is planned (the CLI reads the models for its
help)."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator
from rich.console import Console
from rich.markup import escape

from sketchshot.card import finite
from sketchshot.config import (
    Config,
    DataConfig,
    Device,
    EvaluateConfig,
    Frozen,
    flatten,
    read_toml,
    resolve_config,
)
from sketchshot.errors import ConfigError, TrainingDiverged, TrainingInterrupted
from sketchshot.sweep_results import (
    RESULTS_CSV,
    RESULTS_MD,
    RunRow,
    short_keys,
    value_text,
    write_results,
)

MANIFEST = "sweep.json"
RUN_FILE = "sweep-run.json"  # in a run folder: the settings it was planned with
EVALUATION_FILE = "evaluation.json"
FAILURE_FILE = "failure.json"  # a run that diverged: not retried until its folder is removed
MAX_NAME = 60  # characters of a run folder's name before it is cut and given a hash
# config keys whose values are paths (relative to the sweep file), and the words they also take
PATH_KEYS = {
    "data.source": ("builtin",),
    "encoder.init": ("random", "imagenet"),
    "finetune.init": ("scratch", "imagenet", "latest"),
}
DEFAULT_PROTOCOL = {"pretrain": "knn", "finetune": "episodes"}
States = Literal["new", "resume", "evaluate", "done", "failed"]


class SweepOptions(Frozen):
    """One ``sweep`` call: which sweep file, and what the command line changes of it."""

    config: Path = Field(Path("sweep.toml"), description="the sweep file (TOML)")
    out: Path | None = Field(
        None, description="sweep folder; none: the file's 'out', else runs/<file name>"
    )
    device: Device | None = Field(
        None, description="where every run computes: auto, cpu, cuda or mps; none: the runs' own"
    )
    dry_run: bool = Field(
        False, description="list the runs, their folders and states, and train nothing"
    )


class SweepFile(Frozen):
    """The sweep file as written (see the module's docstring)."""

    command: Literal["pretrain", "finetune"] = Field(..., description="the command each run is")
    title: str = Field("", description="heading of results.md; none: the file's name")
    out: str | None = Field(None, description="the sweep folder, relative to the file")
    config: str | None = Field(None, description="config file every run starts from")
    data: str | None = Field(None, description="data.source of every run")
    base: dict[str, Any] = Field({}, description="settings of every run (dotted keys)")
    grid: dict[str, Any] = Field({}, description="key -> list of values, one run per combination")
    runs: list[dict[str, Any]] = Field([], description="runs, each crossed with the grid")
    evaluate: dict[str, Any] = Field({}, description="[evaluate] keys, and [evaluate.data]")

    @field_validator("grid")
    @classmethod
    def _lists(cls, grid: dict[str, Any]) -> dict[str, Any]:
        for key, values in flatten(grid).items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"{key}: give a list of one or more values, e.g. [0.1, 0.5]")
        return grid


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep: its folder, the settings it sweeps and its resolved config."""

    index: int  # 1-based, in the order of the file
    label: str  # the [[runs]] entry's name, else its index ("003", as its folder starts)
    folder: Path
    settings: dict[str, Any]  # the keys this run sets beyond [base] (its entry and grid values)
    overrides: dict[str, Any]  # [base] and settings: what resolves its config
    config: Config
    config_file: dict[str, Any] | None  # what the sweep's config file holds, if it has one

    def planned(self) -> dict[str, Any]:
        """What this run was asked to be (``sweep-run.json``): the settings given to it, and
        the config file's. Not the resolved config: a new sketchshot with new defaults (or
        another --device) still resumes and skips the runs of an older one."""
        overrides = {k: v for k, v in self.overrides.items() if k != "device"}
        planned = {"settings": self.settings, "overrides": overrides,
                   "config_file": self.config_file}  # fmt: skip
        return json.loads(json.dumps(planned, default=str))  # as it reads back


@dataclass(frozen=True)
class Evaluation:
    """How every run of a sweep is evaluated: ``[evaluate]`` and, for other data than the
    runs trained on, ``[evaluate.data]``."""

    settings: EvaluateConfig
    data: DataConfig | None

    def as_dict(self) -> dict[str, Any]:
        data = self.data.model_dump(mode="json") if self.data is not None else None
        return {"evaluate": self.settings.model_dump(mode="json"), "data": data}


@dataclass(frozen=True)
class SweepPlan:
    file: Path
    command: Literal["pretrain", "finetune"]
    title: str
    out: Path
    swept: tuple[str, ...]  # the dotted keys that runs set beyond [base]: the table's columns
    runs: tuple[PlannedRun, ...]
    evaluation: Evaluation


# ---------------------------------------------------------------- reading and validating


def plan_sweep(options: SweepOptions) -> SweepPlan:
    """Read and validate the sweep file and every run's config and the evaluation (a
    ``ConfigError`` naming the file, the run and the key), before anything trains."""
    file = options.config
    raw = read_toml(file)
    try:
        spec = SweepFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{file}: {_problems(exc)}") from None
    here = file.parent
    base = {k: _relative(k, v, here) for k, v in flatten(spec.base).items()}
    if spec.data is not None:
        if "data.source" in base:
            raise ConfigError(f"{file}: data and [base] data.source both set the data; keep one")
        base["data.source"] = _relative("data.source", spec.data, here)
    if options.device is not None:
        base["device"] = options.device
    grid = {k: [_relative(k, v, here) for v in vs] for k, vs in flatten(spec.grid).items()}
    entries = [flatten(entry) for entry in spec.runs] or [{}]
    for where, keys in [("[base]", base), ("[grid]", grid)] + [
        (f"[[runs]] {i + 1}", entry) for i, entry in enumerate(entries)
    ]:
        _check_keys(file, where, keys, spec.command)
    config_file = beside(here, spec.config) if spec.config is not None else None
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"{file}: config file {config_file} not found")
    names = [str(e.get("name")) for e in entries if "name" in e]
    if len(set(names)) < len(names):
        raise ConfigError(f"{file}: two [[runs]] have the same name; names tell runs apart")
    clash = sorted({k for e in entries for k in e} & set(grid))
    if clash:
        raise ConfigError(f"{file}: {clash[0]} is set by both [[runs]] and [grid]; keep one")
    combos = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
    swept = tuple(dict.fromkeys([k for e in entries for k in e if k != "name"] + list(grid)))
    out = options.out or (
        beside(here, spec.out) if spec.out is not None else Path("runs") / f"sweep-{file.stem}"
    )
    config_tree = read_toml(config_file) if config_file is not None else None
    runs = []
    for entry, combo in itertools.product(entries, combos):
        index = len(runs) + 1
        own = {k: _relative(k, v, here) for k, v in entry.items() if k != "name"}
        settings = own | combo
        label = str(entry["name"]) if "name" in entry else ""
        folder = out / run_folder_name(index, label, settings, swept)
        overrides = base | settings
        try:
            config = resolve_config(config_file, overrides)
        except ConfigError as exc:
            # resolve_config names the command line as the origin of overrides; here it is
            # this run of the sweep file
            message = str(exc).replace("command line: ", "")
            raise ConfigError(f"{file}: run {folder.name}: {message}") from None
        runs.append(PlannedRun(index, label or f"{index:03d}", folder, settings, overrides, config,
                               config_tree))  # fmt: skip
    evaluation = plan_evaluation(file, spec, config_file, here)
    plan = SweepPlan(file, spec.command, spec.title or file.stem, out, swept, tuple(runs),
                     evaluation)  # fmt: skip
    check_evaluation(plan)
    return plan


def _problems(exc: ValidationError, where: str = "") -> str:
    """A pydantic error as one line: each problem with the key it is about."""
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        key = f"{where}{loc}" if loc else where.rstrip(".")
        if err["type"] == "extra_forbidden":
            out.append(f"unknown key '{key}'")
        else:
            out.append(f"{key}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(out)


def _relative(key: str, value: Any, here: Path) -> Any:
    """A path-valued setting as the file means it: relative to the sweep file's folder."""
    if key not in PATH_KEYS or not isinstance(value, str) or value in PATH_KEYS[key]:
        return value
    return str(beside(here, value))


def beside(here: Path, path: str) -> Path:
    """``path`` as the sweep file in folder ``here`` means it (``../x`` stays short)."""
    return Path(path) if Path(path).is_absolute() else Path(os.path.normpath(here / path))


def _check_keys(file: Path, where: str, keys: Iterable[str], command: str) -> None:
    """Keys a sweep's runs cannot take: evaluation settings (they are [evaluate]'s) and the
    other command's section (the run would ignore it)."""
    other = "finetune" if command == "pretrain" else "pretrain"
    for key in keys:
        if key == "evaluate" or key.startswith("evaluate."):
            raise ConfigError(
                f"{file}: {where} {key}: evaluation settings go in the sweep's [evaluate] "
                "table, which evaluates every run alike"
            )
        if key.startswith(f"{other}."):
            raise ConfigError(f"{file}: {where} {key}: a {command} sweep does not read [{other}]")


def plan_evaluation(
    file: Path, spec: SweepFile, config_file: Path | None, here: Path
) -> Evaluation:
    """The evaluation of every run: EvaluateConfig defaults < the config file's [evaluate] <
    the sweep's [evaluate]; the protocol kNN for pretrain sweeps, episodes for finetune."""
    tree = dict(spec.evaluate)
    data = tree.pop("data", None)
    from_config = read_toml(config_file).get("evaluate", {}) if config_file is not None else {}
    tree = {**from_config, **tree}
    tree.setdefault("protocol", DEFAULT_PROTOCOL[spec.command])
    for key in ("runs", "episodes_in"):
        if isinstance(tree.get(key), str) and key in spec.evaluate:
            tree[key] = str(beside(here, tree[key]))
    try:
        settings = EvaluateConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(f"{file}: {_problems(exc, '[evaluate] ')}") from None
    if data is None:
        return Evaluation(settings, None)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{file}: [evaluate] data must be a table: [evaluate.data] source = ...")
    data = dict(data)
    if "source" in data:
        data["source"] = _relative("data.source", data["source"], here)
    try:
        return Evaluation(settings, DataConfig.model_validate(data))
    except ValidationError as exc:
        raise ConfigError(f"{file}: {_problems(exc, '[evaluate.data] ')}") from None


def check_evaluation(plan: SweepPlan) -> None:
    """Refuse, before training, an evaluation that would fail after it: settings a protocol
    cannot take, or the runs' own data with no test split to evaluate on (as the engine's
    ``evaluation_split`` would decide once a run is trained)."""
    from sketchshot.data.splits import splits_images
    from sketchshot.protocols.run import check_settings

    e = plan.evaluation.settings
    try:
        check_settings(e)
    except ConfigError as exc:
        raise ConfigError(f"{plan.file}: [evaluate] {exc}") from None
    if plan.evaluation.data is not None or e.split != "auto" or e.protocol == "runs":
        return
    for run in plan.runs:
        data = run.config.data
        explicit = data.train_classes or data.val_classes or data.test_classes
        held = data.test_classes or (not explicit and data.split_fractions[2] > 0)
        if not held and not splits_images(data):
            raise ConfigError(
                f"{plan.file}: run {run.folder.name} holds no test split out of its data: give "
                "[evaluate.data] (other data to evaluate on), [evaluate] split, or "
                "data.split_fractions with a test share"
            )


def run_folder_name(
    index: int, label: str, settings: Mapping[str, Any], swept: tuple[str, ...]
) -> str:
    """``003-temperature=0.5-schedule=constant``: the index, then the run's name or its
    settings by their short names; cut with a hash past MAX_NAME characters."""
    short = short_keys(swept)
    text = label or "-".join(f"{short[k]}={value_text(v)}" for k, v in settings.items()) or "base"
    text = re.sub(r"[^A-Za-z0-9._=+,-]+", "_", text)
    if len(text) > MAX_NAME:
        digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        text = f"{text[: MAX_NAME - 9]}-{digest}"
    return f"{index:03d}-{text}"


# ---------------------------------------------------------------- state of the runs


def run_state(run: PlannedRun, evaluation: Evaluation) -> States:
    """What a run needs: nothing (done, or failed), its evaluation, to resume, or to start."""
    folder = run.folder
    if (folder / FAILURE_FILE).is_file():
        return "failed"
    if (folder / "model.json").is_file():
        saved = _read_json(folder / EVALUATION_FILE)
        if saved is not None and saved.get("evaluation") == evaluation.as_dict():
            return "done"
        return "evaluate"
    if (folder / "checkpoints" / "last.json").is_file():
        return "resume"
    return "new"


def check_folders(plan: SweepPlan) -> dict[int, States]:
    """Each run's state; a ``ConfigError`` for a folder that holds a run planned with other
    settings (the sweep file changed): its results would be another run's."""
    states = {}
    for run in plan.runs:
        state = run_state(run, plan.evaluation)
        saved, planned = _read_json(run.folder / RUN_FILE), run.planned()
        if state != "new" and saved is not None and not _same(saved, planned):
            changed = _changed(saved.get("overrides", {}), planned["overrides"])
            raise ConfigError(
                f"{run.folder} holds a run with other settings than {plan.file} now gives it "
                f"({changed or 'the config file changed'}); move it away, or set another "
                "sweep folder (out, --out)"
            )
        states[run.index] = state
    return states


def _same(saved: Mapping[str, Any], planned: Mapping[str, Any]) -> bool:
    keys = ("overrides", "config_file")
    return all(saved.get(k) == planned[k] for k in keys)


def _changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    keys = [k for k in dict.fromkeys([*old, *new]) if old.get(k) != new.get(k)]
    return ", ".join(f"{k}: {old.get(k, '-')} -> {new.get(k, '-')}" for k in keys[:3])


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, payload: Any) -> None:
    from sketchshot.checkpoint import atomic_write

    text = json.dumps(finite(payload), indent=2, default=str) + "\n"
    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


# ---------------------------------------------------------------- running


@dataclass
class SweepResult:
    plan: SweepPlan
    rows: list[RunRow]
    evaluated_on: dict[str, Any]  # data, split, classes and images of the first evaluation
    trained: int  # runs trained (or resumed) in this call
    skipped: int  # runs already done
    seconds: float

    @property
    def results_md(self) -> Path:
        return self.plan.out / RESULTS_MD

    @property
    def results_csv(self) -> Path:
        return self.plan.out / RESULTS_CSV

    def as_dict(self) -> dict[str, Any]:
        return finite(
            {
                "sweep": str(self.plan.out),
                "file": str(self.plan.file),
                "command": self.plan.command,
                "runs": [r.as_dict(self.plan.swept) for r in self.rows],
                "evaluated_on": self.evaluated_on,
                "trained": self.trained,
                "skipped": self.skipped,
                "results": [str(self.results_md), str(self.results_csv)],
                "seconds": round(self.seconds, 1),
            }
        )


def rows_of(plan: SweepPlan, states: Mapping[int, States]) -> list[RunRow]:
    """The table's rows as the run folders hold them now."""
    rows = []
    for run in plan.runs:
        row = RunRow(run, states[run.index])
        card = _read_json(run.folder / "model.json")
        if card is not None:
            metrics = card.get("metrics", {})
            row.train_seconds, row.epochs = metrics.get("seconds"), metrics.get("epochs")
        saved = _read_json(run.folder / EVALUATION_FILE)
        if row.state == "done" and saved is not None:
            row.figures = saved["result"]["figures"]
        failure = _read_json(run.folder / FAILURE_FILE)
        if row.state == "failed" and failure is not None:
            row.note = failure.get("error", "failed")
        rows.append(row)
    return rows


def run_sweep(plan: SweepPlan, quiet: bool = False, console: Console | None = None) -> SweepResult:
    """Train and evaluate every run that is not done, one after another in this process; the
    manifest and the results table are rewritten after each. Ctrl-C stops the run under way
    as training does (its progress saved); running the sweep again resumes it."""
    from sketchshot.progress import progress_bar

    start = time.perf_counter()
    console = console or Console(stderr=True)
    states = check_folders(plan)
    plan.out.mkdir(parents=True, exist_ok=True)
    write_manifest(plan, states)
    skipped = sum(s in ("done", "failed") for s in states.values())
    trained, evaluated_on = 0, _evaluated_on(plan)
    write_results(plan, rows_of(plan, states), evaluated_on)
    todo = [r for r in plan.runs if states[r.index] not in ("done", "failed")]
    # the runs' own progress bars nest under this one where rich can nest live displays
    bar = progress_bar(console, disable=quiet or not nested_live(), status=True)
    with bar:
        task = bar.add_task("sweep", total=len(plan.runs), completed=skipped, status="")
        for n, run in enumerate(todo, 1):
            state = states[run.index]
            if not quiet:
                done, where = len(plan.runs) - len(todo) + n - 1, escape(str(run.folder))
                console.print(
                    f"[bold]sweep[/] run {run.index} of {len(plan.runs)}: {where} "
                    f"({_DOING[state]}; {done} done, {len(todo) - n} left after it)",
                    highlight=False,
                    soft_wrap=True,
                )
            bar.update(task, status=f"{run.folder.name}: {_DOING[state]}")
            try:
                if state in ("new", "resume"):
                    train(plan, run, state, quiet, console)
                    trained += 1
                evaluated = evaluate(plan, run)
                evaluated_on = evaluated_on or evaluated
            except TrainingDiverged as exc:
                _write_json(run.folder / FAILURE_FILE, {"error": str(exc)})
                if not quiet:
                    console.print(f"[yellow]note:[/] {escape(f'{run.folder.name}: {exc}')}")
            except TrainingInterrupted as exc:
                # the loop's own hint (--resume RUN) would train the run but not evaluate it
                said = str(exc).split("; continue with --resume")[0]
                raise TrainingInterrupted(
                    f"{said} (run {run.folder.name} of the sweep); run the same sweep again to "
                    "go on from there: finished runs are skipped"
                ) from None
            finally:  # an interrupted run's state as its folder now says ("resume")
                states[run.index] = run_state(run, plan.evaluation)
                write_manifest(plan, states)
                write_results(plan, rows_of(plan, states), evaluated_on)
            bar.advance(task)
        bar.update(task, status="")
    rows = rows_of(plan, states)
    return SweepResult(plan, rows, evaluated_on, trained, skipped, time.perf_counter() - start)


_DOING = {"new": "training", "resume": "resuming", "evaluate": "evaluating"}


def nested_live() -> bool:
    """Whether rich can show a live display inside another (rich 14.1 and later): the sweep's
    bar above each run's own."""
    from importlib.metadata import version

    numbers = [int(n) for n in re.findall(r"\d+", version("rich"))[:2]]
    return tuple(numbers) >= (14, 1)


def train(plan: SweepPlan, run: PlannedRun, state: States, quiet: bool, console: Console) -> None:
    """Train ``run`` into its folder through the engine's command of the sweep, or resume it
    where it stopped."""
    from sketchshot import engine

    command: Callable[..., Any] = getattr(engine, plan.command)
    if state == "new":
        _write_json(run.folder / RUN_FILE, run.planned())
        command(run.config, out=run.folder, quiet=quiet, console=console)
    else:
        command(run.config, resume=run.folder, quiet=quiet, console=console)


def evaluate(plan: SweepPlan, run: PlannedRun) -> dict[str, Any]:
    """Evaluate the trained ``run`` as the sweep says (the model's own data and config, or
    ``[evaluate.data]``), into ``evaluation.json``; returns what it was evaluated on."""
    from sketchshot import engine

    e = plan.evaluation
    cfg = engine.saved_config(run.folder)
    update: dict[str, Any] = {"evaluate": e.settings, "device": run.config.device}
    if e.data is not None:
        update["data"] = e.data
    result = engine.evaluate(cfg.model_copy(update=update), run.folder, quiet=True)
    _write_json(
        run.folder / EVALUATION_FILE, {"evaluation": e.as_dict(), "result": result.as_dict()}
    )
    return {"data": result.data, "split": result.split, "n_classes": result.n_classes,
            "n_images": result.n_images, "protocol": result.protocol}  # fmt: skip


def _evaluated_on(plan: SweepPlan) -> dict[str, Any]:
    """What the evaluations already made were made on (from the first one)."""
    for run in plan.runs:
        saved = _read_json(run.folder / EVALUATION_FILE)
        if saved is not None and saved.get("evaluation") == plan.evaluation.as_dict():
            r = saved["result"]
            keys = ("data", "split", "n_classes", "n_images", "protocol")
            return {k: r.get(k) for k in keys}
    return {}


def write_manifest(plan: SweepPlan, states: Mapping[int, States]) -> None:
    """``sweep.json``: the file, the command, the evaluation and every run's folder,
    settings and state."""
    _write_json(
        plan.out / MANIFEST,
        {
            "file": str(plan.file),
            "command": plan.command,
            "swept": list(plan.swept),
            "evaluation": plan.evaluation.as_dict(),
            "runs": [
                {
                    "index": r.index,
                    "label": r.label,
                    "folder": r.folder.name,
                    "settings": r.settings,
                    "state": states[r.index],
                }
                for r in plan.runs
            ],
        },
    )


def run_folders(sweep: Path) -> list[Path]:
    """The run folders a sweep folder's ``sweep.json`` lists, in its order."""
    manifest = _read_json(sweep / MANIFEST) or {}
    return [sweep / r["folder"] for r in manifest.get("runs", []) if "folder" in r]
