"""``sketchshot sweep``: a grid of tiny pretraining runs end to end (folders, evaluation, the
results table), a list of fine-tuning runs, restarts that skip finished runs and resume an
interrupted one, and sweep files refused before anything trains."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers import one_line_error, plain
from sketchshot import engine
from sketchshot.cli import app
from sketchshot.errors import TrainingDiverged
from sketchshot.sweep import SweepOptions, check_folders, plan_sweep, run_folder_name, run_sweep
from sketchshot.sweep_results import figure_label, short_keys
from sketchshot.training import Trainer

# 12 glyph classes x 6 drawers: 6 to train on (36 images, 2 steps of 16 an epoch), 2 to
# validate, 4 to test; a narrow projection head.
TINY = """
seed = 1
device = "cpu"
"data.split_fractions" = [0.5, 0.17, 0.33]
data.builtin = { n_classes = 12, n_drawers = 6 }
"""
GRID = f"""
command = "pretrain"
title = "tiny temperature sweep"
out = "sweep"

[base]
{TINY}
"pretrain.epochs" = 2
"pretrain.batch_size" = 16
"pretrain.val_episodes" = 0
pretrain.simclr = {{ hidden_dim = 16, projection_dim = 8 }}

[grid]
"pretrain.simclr.temperature" = [0.1, 0.5]

[evaluate]
draws = 3
"""
FOLDERS = ["001-temperature=0.1", "002-temperature=0.5"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The runs here are tiny: on busy cores one thread trains them several times faster than
    a pool of threads that wait for each other (measured 3.7 s against 23 s for 4 runs)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> Path:
    """The grid sweep, run once through the command line: two runs of two epochs."""
    root = tmp_path_factory.mktemp("sweep")
    write(root / "sweep.toml", GRID)
    result = invoke("sweep", "--config", root / "sweep.toml", "--json", "--quiet")
    assert result.exit_code == 0, result.output
    (root / "first.json").write_text(result.stdout, encoding="utf-8")
    return root


def test_a_grid_sweep_trains_and_evaluates_each_run_in_its_own_folder(swept):
    out = swept / "sweep"  # relative to the sweep file, not to where it ran
    report = json.loads((swept / "first.json").read_text())
    assert report["trained"] == 2 and report["skipped"] == 0
    assert [Path(r["folder"]).name for r in report["runs"]] == FOLDERS
    for name, temperature in zip(FOLDERS, (0.1, 0.5), strict=True):
        run = out / name
        for file in ("model.json", "model.safetensors", "metrics.jsonl", "config.toml",
                     "evaluation.json", "sweep-run.json"):  # fmt: skip
            assert (run / file).is_file(), f"{run / file} missing"
        card = json.loads((run / "model.json").read_text())
        assert card["config"]["pretrain"]["simclr"]["temperature"] == temperature
        assert card["config"]["pretrain"]["epochs"] == 2
        evaluation = json.loads((run / "evaluation.json").read_text())["result"]
        assert evaluation["protocol"] == "knn" and evaluation["split"] == "test"
        assert evaluation["n_classes"] == 4
    manifest = json.loads((out / "sweep.json").read_text())
    assert [r["folder"] for r in manifest["runs"]] == FOLDERS
    assert {r["state"] for r in manifest["runs"]} == {"done"}


def test_the_results_table_has_the_settings_and_each_read_out_with_its_ci(swept):
    out = swept / "sweep"
    md = (out / "results.md").read_text()
    assert md.startswith("# tiny temperature sweep\n")
    lines = [x for x in md.splitlines() if x.startswith("| ")]
    heading = [c.strip() for c in lines[0].strip("|").split("|")]
    assert heading == ["run", "temperature", "kNN 1-shot, k=1", "kNN 5-shot, k=3",
                       "kNN 50% labelled, k=5", "train time"]  # fmt: skip
    rows = [[c.strip() for c in x.strip("|").split("|")] for x in lines[2:]]
    assert [r[:2] for r in rows] == [["001", "0.1"], ["002", "0.5"]]
    for row in rows:
        for cell in row[2:5]:  # the best of each column in bold
            bare = cell.removeprefix("**").removesuffix("**")
            assert re.fullmatch(r"\d+\.\d ± \d+\.\d%", bare), cell
    for column in (2, 3, 4):
        assert sum(r[column].startswith("**") for r in rows) >= 1
    assert "4-way kNN 1-shot, k=1 (chance 25.0%), over 3 repeats" in md
    with open(out / "results.csv", newline="", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    assert [r["folder"] for r in table] == FOLDERS
    assert [r["pretrain.simclr.temperature"] for r in table] == ["0.1", "0.5"]
    for r in table:
        assert r["state"] == "done" and r["epochs"] == "2" and float(r["train_seconds"]) > 0
        for read_out in ("kNN 1-shot, k=1", "kNN 5-shot, k=3", "kNN 50% labelled, k=5"):
            assert 0 <= float(r[read_out]) <= 1 and 0 <= float(r[f"{read_out} ci95"]) < 1
    # the table's figures are the evaluations' own
    evaluation = json.loads((out / FOLDERS[1] / "evaluation.json").read_text())["result"]
    one_shot = next(f for f in evaluation["figures"] if "1-shot" in f["name"])
    assert float(table[1]["kNN 1-shot, k=1"]) == pytest.approx(one_shot["accuracy"], abs=1e-6)


def test_a_restarted_sweep_skips_finished_runs(swept, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(engine, "pretrain", refuse)
    monkeypatch.setattr(engine, "evaluate", refuse)
    weights = [swept / "sweep" / f / "model.safetensors" for f in FOLDERS]
    before = [w.stat().st_mtime_ns for w in weights]
    result = invoke("sweep", "--config", swept / "sweep.toml", "--json", "--quiet")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["trained"], report["skipped"]) == (0, 2)
    assert [w.stat().st_mtime_ns for w in weights] == before


def test_other_evaluation_settings_evaluate_again_without_training(swept, monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise AssertionError("a trained run was trained again")

    monkeypatch.setattr(engine, "pretrain", refuse)
    text = GRID.replace("draws = 3", "draws = 2").replace('out = "sweep"', f'out = "{tmp_path}"')
    for name in FOLDERS:  # a copy of the trained runs, so that the module's stay as they were
        for file in (swept / "sweep" / name).rglob("*"):
            if file.is_file():
                target = tmp_path / name / file.relative_to(swept / "sweep" / name)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(file.read_bytes())
    plan = plan_sweep(SweepOptions(config=write(tmp_path / "again.toml", text)))
    assert set(check_folders(plan).values()) == {"evaluate"}
    result = run_sweep(plan, quiet=True)
    assert (result.trained, result.skipped) == (0, 0)
    assert all(f["repeats"] == 2 for r in result.rows for f in r.figures)


def test_a_folder_trained_with_other_settings_is_refused(swept):
    changed = GRID.replace('"pretrain.epochs" = 2', '"pretrain.epochs" = 3')
    result = invoke("sweep", "--config", write(swept / "changed.toml", changed), "--quiet")
    assert result.exit_code == 2
    text = one_line_error(result)
    assert "001-temperature=0.1 holds a run with other settings" in text
    assert "pretrain.epochs: 2 -> 3" in text
    write(swept / "extra.toml", "[evaluate]\nn_way = 3\n")  # any change to the config file
    with_file = GRID.replace('out = "sweep"', 'out = "sweep"\nconfig = "extra.toml"')
    result = invoke("sweep", "--config", write(swept / "with-file.toml", with_file), "--quiet")
    assert result.exit_code == 2 and "(the config file changed)" in one_line_error(result)


def test_dry_run_lists_the_runs_and_trains_nothing(swept, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = GRID.replace('out = "sweep"\n', "").replace(
        "[0.1, 0.5]", '[0.1, 0.5]\n"pretrain.optim.schedule" = ["cosine", "constant"]'
    )
    result = invoke("sweep", "--config", write(tmp_path / "plan.toml", text), "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["sweep"] == str(Path("runs") / "sweep-plan")  # the default sweep folder
    assert [Path(r["folder"]).name for r in report["runs"]] == [
        "001-temperature=0.1-schedule=cosine", "002-temperature=0.1-schedule=constant",
        "003-temperature=0.5-schedule=cosine", "004-temperature=0.5-schedule=constant",
    ]  # fmt: skip
    assert {r["state"] for r in report["runs"]} == {"new"}
    assert not (tmp_path / "runs").exists()
    done = invoke("sweep", "--config", swept / "sweep.toml", "--dry-run")
    assert done.exit_code == 0 and plain(done.stdout).count(" done ") == 2


# ---------------------------------------------------------------- an interrupted run


def test_an_interrupted_run_resumes_where_it_stopped(tmp_path, monkeypatch):
    """Ctrl-C in the second run's second epoch (the loop's own deferred interrupt): the sweep
    stops with the first run done; run again, it resumes the second through --resume's
    mechanism and trains the first no more."""
    sweep = write(tmp_path / "sweep.toml", GRID)
    step, calls = Trainer.step, {"n": 0}

    def interrupted(self, batches):
        out = step(self, batches)
        calls["n"] += 1
        if calls["n"] == 4 + 3:  # 2 steps an epoch: run 1 takes 4, run 2 stops after its 3rd
            self.interrupt.requested = True
        return out

    monkeypatch.setattr(Trainer, "step", interrupted)
    stopped = invoke("sweep", "--config", sweep, "--quiet")
    assert stopped.exit_code == 130
    said = one_line_error(stopped)
    assert "progress saved" in said and "run the same sweep again" in said
    assert "--resume" not in said  # that would train the run, and not evaluate it
    second = tmp_path / "sweep" / FOLDERS[1]
    assert not (second / "model.json").exists()
    saved = json.loads((second / "checkpoints" / "last.json").read_text())["loop"]
    assert (saved["epoch"], saved["step"]) == (1, 3)
    manifest = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert [r["state"] for r in manifest["runs"]] == ["done", "resume"]
    assert ",resume," in (tmp_path / "sweep" / "results.csv").read_text()
    assert "| 002 | 0.5 | interrupted |  |  |  |" in (tmp_path / "sweep" / "results.md").read_text()

    monkeypatch.setattr(Trainer, "step", step)
    trained, pretrain = [], engine.pretrain

    def spy(cfg, out=None, resume=None, **kwargs):
        trained.append((out, resume))
        return pretrain(cfg, out, resume, **kwargs)

    monkeypatch.setattr(engine, "pretrain", spy)
    result = run_sweep(plan_sweep(SweepOptions(config=sweep)), quiet=True)
    assert trained == [(None, second)]
    assert (result.trained, result.skipped) == (1, 1)
    records = [json.loads(x) for x in (second / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r.get("event") == "epoch_end"] == [1, 2]
    assert json.loads((second / "model.json").read_text())["metrics"]["steps"] == 4
    assert all(r.state == "done" and r.figures for r in result.rows)


def test_a_diverged_run_is_recorded_and_not_tried_again(tmp_path, monkeypatch):
    sweep = write(tmp_path / "sweep.toml", GRID)
    step = Trainer.step

    def diverging(self, batches):
        if self.method.settings.temperature == 0.5:  # the second run
            raise TrainingDiverged("training diverged: the loss became nan at step 0")
        return step(self, batches)

    monkeypatch.setattr(Trainer, "step", diverging)
    result = run_sweep(plan_sweep(SweepOptions(config=sweep)), quiet=True)
    assert [r.state for r in result.rows] == ["done", "failed"]
    md = (tmp_path / "sweep" / "results.md").read_text()
    assert "| 002 | 0.5 | diverged |" in md and "- 002: training diverged" in md
    monkeypatch.setattr(Trainer, "step", step)
    again = run_sweep(plan_sweep(SweepOptions(config=sweep)), quiet=True)
    assert (again.trained, again.skipped) == (0, 2)


# ---------------------------------------------------------------- a list of fine-tuning runs


def test_a_list_of_finetune_runs_is_evaluated_by_episodes(tmp_path):
    text = f"""
command = "finetune"

[base]
{TINY}
"finetune.epochs" = 1
"finetune.episodes_per_epoch" = 3
"finetune.n_way" = 3
"finetune.val_episodes" = 0

[[runs]]
name = "protonet"

[[runs]]
name = "cosine protonet"
finetune.protonet.distance = "cosine"
"finetune.optim.lr" = 0.002

[evaluate]
n_way = 3
n_query = 3
episodes = 20
"""
    sweep = write(tmp_path / "finetune.toml", text)
    result = run_sweep(plan_sweep(SweepOptions(config=sweep, out=tmp_path / "ft")), quiet=True)
    assert [r.run.folder.name for r in result.rows] == ["001-protonet", "002-cosine_protonet"]
    md = (tmp_path / "ft" / "results.md").read_text()
    assert "| run | distance | lr | 1-shot, 3 queries | train time |" in md
    assert "| protonet | euclidean | 0.001 |" in md  # the settings each run resolved to
    assert "| cosine protonet | cosine | 0.002 |" in md
    assert all(r.figures[0]["n_way"] == 3 and r.figures[0]["repeats"] == 20 for r in result.rows)


# ---------------------------------------------------------------- refused before training


BAD = [
    ("tempo = 1\n" + GRID, "unknown key 'tempo'"),
    (GRID.replace("[0.1, 0.5]", "0.1"), "give a list of one or more values"),
    (GRID.replace("simclr.temperature", "simclr.temprature"),
     "unknown key 'pretrain.simclr.temprature'"),
    (GRID.replace("[0.1, 0.5]", "[0.1, -1.0]"),
     "run 002-temperature=-1.0: pretrain.simclr.temperature: Input should be greater than 0"),
    (GRID.replace('"pretrain.simclr.temperature"', '"pretrain.temperature"'),
     "it is a setting of simclr, under [pretrain.simclr]"),
    (GRID.replace("[grid]", '"evaluate.draws" = 4\n[grid]'),
     "[base] evaluate.draws: evaluation settings go in the sweep's [evaluate] table"),
    (GRID.replace("[grid]", '"finetune.epochs" = 4\n[grid]'),
     "a pretrain sweep does not read [finetune]"),
    (GRID.replace("draws = 3", 'protocol = "knn"\ndraws = 0'),
     "[evaluate] draws: Input should be greater than or equal to 1"),
    (GRID.replace("[0.5, 0.17, 0.33]", "[0.9, 0.1, 0.0]"), "holds no test split out of its data"),
    (GRID.replace('command = "pretrain"', 'command = "evaluate"'), "command: Input should be"),
]  # fmt: skip


@pytest.mark.parametrize("text, message", BAD, ids=[m[:30] for _, m in BAD])
def test_a_bad_sweep_file_is_one_line_naming_the_key_before_any_training(
    tmp_path, monkeypatch, text, message
):
    def refuse(*args, **kwargs):
        raise AssertionError("trained before the sweep file was checked")

    monkeypatch.setattr(engine, "pretrain", refuse)
    result = invoke("sweep", "--config", write(tmp_path / "bad.toml", text), "--quiet")
    assert result.exit_code == 2, result.output
    text = one_line_error(result)
    assert message in text and "bad.toml" in text, text
    assert not (tmp_path / "sweep").exists()


def test_a_missing_sweep_file_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("sweep")
    assert result.exit_code == 2
    assert "config file not found: sweep.toml" in one_line_error(result)


# ---------------------------------------------------------------- names


def test_run_folder_names_are_stable_readable_and_short():
    keys = ("pretrain.simclr.temperature", "pretrain.optim.weight_decay", "finetune.optim.lr")
    assert short_keys(keys) == dict(zip(keys, ("temperature", "weight_decay", "lr"), strict=True))
    clash = short_keys(["pretrain.views.strength", "finetune.views.strength"])
    assert clash == {"pretrain.views.strength": "pretrain.views.strength",
                     "finetune.views.strength": "finetune.views.strength"}  # fmt: skip
    settings = {"pretrain.simclr.temperature": 0.5, "pretrain.optim.weight_decay": 1e-05}
    assert run_folder_name(3, "", settings, keys) == "003-temperature=0.5-weight_decay=1e-05"
    assert run_folder_name(12, "high temp/2", {}, keys) == "012-high_temp_2"
    assert run_folder_name(1, "", {}, keys) == "001-base"
    long = run_folder_name(1, "x" * 200, {}, keys)
    assert len(long) == 4 + 60 and long == run_folder_name(1, "x" * 200, {}, keys)
    assert figure_label("106-way kNN 1-shot, k=1 (chance 0.9%)") == "kNN 1-shot, k=1"


def test_the_annotated_example_is_a_valid_sweep():
    example = Path(__file__).resolve().parents[1] / "examples" / "sweep.toml"
    plan = plan_sweep(SweepOptions(config=example))
    assert [r.folder.name for r in plan.runs] == [
        "001-temperature=0.1-schedule=cosine", "002-temperature=0.1-schedule=constant",
        "003-temperature=0.5-schedule=cosine", "004-temperature=0.5-schedule=constant",
    ]  # fmt: skip
    assert plan.runs[3].config.pretrain.optim.schedule == "constant"
    assert plan.runs[3].config.pretrain.optim.weight_decay == 1e-4
    assert plan.evaluation.settings.protocol == "knn"


def test_paths_in_the_sweep_file_are_relative_to_it(tmp_path):
    (tmp_path / "sub").mkdir()
    text = GRID.replace("[base]", '[base]\n"data.source" = "sketches.zip"').replace(
        "draws = 3", 'draws = 3\n[evaluate.data]\nsource = "other"'
    )
    write(tmp_path / "sub" / "sweep.toml", text)
    plan = plan_sweep(SweepOptions(config=tmp_path / "sub" / "sweep.toml"))
    assert plan.out == tmp_path / "sub" / "sweep"
    assert {r.config.data.source for r in plan.runs} == {str(tmp_path / "sub" / "sketches.zip")}
    assert plan.evaluation.data.source == str(tmp_path / "sub" / "other")
