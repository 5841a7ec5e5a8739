"""The command line: options map onto the config the engine receives, errors are one line with
the right exit code, help is complete, and --help does not pay for importing torch."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from typer.main import get_command

import sketchshot
from helpers import one_line_error, plain, sketch_array, write_folder, write_png
from sketchshot import engine
from sketchshot.cli import app
from sketchshot.config import (
    PRETRAIN_METHODS,
    BuiltinDataConfig,
    Config,
    DataConfig,
    EncoderConfig,
    EvaluateConfig,
    FinetuneConfig,
    OptimConfig,
    PretrainConfig,
    ViewConfig,
)

COMMON_TRAIN = {
    "--method", "--encoder", "--data", "--image-size", "--classes", "--exclude-classes",
    "--train-classes", "--val-classes", "--test-classes", "--split-fractions", "--split-by",
    "--subsample",
    "--small-classes", "--epochs", "--lr", "--augment-strength", "--stroke-jitter",
    "--stroke-drop", "--partial-p", "--line-width-jitter", "--recognized", "--countries",
    "--max-minutes", "--resume", "--config", "--out", "--seed", "--device",
    "--json", "--quiet", "--verbose", "--weight-decay", "--optimizer", "--schedule",
    "--warmup-epochs", "--checkpoint-every", "--patience", "--val-episodes", "--val-ways", "--amp",
    "--no-channels-last", "--accumulate", "--clip-grad", "--severity", "--elastic", "--cutout-p",
    "--encoder-width", "--compile", "--threads",
}  # fmt: skip
EVALUATE = {
    "--model", "--ways", "--shots", "--queries", "--episodes", "--split", "--data", "--classes",
    "--exclude-classes", "--config", "--seed", "--device", "--json", "--protocol",
    "--episodes-in", "--episodes-out", "--draws", "--labelled-fraction", "--runs", "--tta",
    "--save-grid", "--save-confusion", "--quiet", "--verbose", "--within-groups",
    "--pairs", "--min-agreement", "--min-reviewers", "--threads",
}  # fmt: skip
DOCUMENTED = {
    "pretrain": COMMON_TRAIN | {
        "--batch-size", "--temperature", "--ema-decay", "--hidden-dim", "--projection-dim",
        "--init", "--unique-class-batches", "--crop", "--flip", "--thickness-p", "--erase-p",
    },
    "finetune": COMMON_TRAIN | {
        "--init", "--ways", "--shots", "--queries", "--episodes", "--distance", "--attention",
        "--hidden-dim", "--rotation-classes", "--freeze-encoder", "--head-lr",
        "--batch-size", "--loss", "--label-smoothing", "--focal-gamma", "--focal-alpha",
        "--focal-weight", "--class-weights", "--ema-decay", "--best-metric", "--mixup-alpha",
        "--cutmix-alpha", "--mix-p", "--switch-p", "--crop", "--flip", "--thickness-p",
        "--erase-p", "--within-groups-p",
        "--pairs", "--min-agreement", "--min-reviewers", "--features", "--freeze", "--dropout",
        "--resnet-weights", "--feature-cache",
    },
    "evaluate": EVALUATE,
    "enroll": {
        "--support", "--bank", "--out", "--model", "--classes", "--shots", "--remove",
        "--replace", "--calibrate", "--false-reject", "--bundle", "--device", "--json", "--quiet",
        "--verbose", "--threads",
    },
    "predict": {
        "images", "--support", "--bank", "--model", "--top-k", "--reject-below", "--json",
        "--csv", "--batch-size", "--device", "--quiet", "--verbose", "--pairs", "--threads",
    },
    "embed": {
        "data", "--out", "--model", "--batch-size", "--device", "--threads", "--json", "--quiet",
        "--verbose",
    },
    "info": {"model", "--json", "--quiet", "--verbose"},
    "export": {"run", "--format", "--out", "--force", "--json", "--quiet", "--verbose"},
    "ensemble": {"runs", "--out", "--json", "--quiet", "--verbose"},
    "demo": {"--out", "--seed", "--device", "--threads", "--json", "--quiet", "--verbose"},
    "sweep": {"--config", "--out", "--device", "--dry-run", "--json", "--quiet", "--verbose"},
    "plot": {"runs", "--out", "--x", "--metrics", "--labels", "--json", "--quiet", "--verbose"},
}  # fmt: skip


# ---------------------------------------------------------------- version, help, import cost


def test_version(cli):
    result = cli("--version")
    assert result.exit_code == 0
    assert result.stdout == f"sketchshot {sketchshot.__version__}\n"


def flat(text: str) -> str:
    """Help text with box drawing removed and whitespace collapsed, so wrapping is ignored."""
    return " ".join(re.sub(r"[│╭╮╰╯─┃━]", " ", plain(text)).split())


@pytest.mark.parametrize("command", [None, *DOCUMENTED])
def test_help_exits_zero_and_every_option_has_help(cli, command):
    result = cli(*([command] if command else []), "--help")
    assert result.exit_code == 0, result.output
    shown = flat(result.output)
    group = get_command(app)
    cmd = group if command is None else group.commands[command]
    assert cmd.help or command is None
    params = [p for p in cmd.params if p.name != "help"]
    if command is None:
        for name, sub in group.commands.items():
            assert name in shown
            assert sub.help and sub.help.split()[0] in shown
    for param in params:
        help_text = plain_markup(getattr(param, "help", None) or "").strip()
        assert help_text, f"{command} {param.opts} has no help text"
        words = help_text.split("[")[0].split()[:4]  # its first words, before any [default]
        assert " ".join(words) in shown, f"{command} {param.opts}: help not shown"
        for opt in param.opts if param.param_type_name == "option" else []:
            assert opt in shown


@pytest.mark.parametrize("command", DOCUMENTED)
def test_documented_options_exist(command):
    cmd = get_command(app).commands[command]
    names = set()
    for param in cmd.params:
        names.update(param.opts if param.param_type_name == "option" else [param.name])
    missing = DOCUMENTED[command] - names
    assert not missing, f"{command} lacks {sorted(missing)}"


def plain_markup(text: str) -> str:
    """Help as rich prints it: escaped brackets (``\\[data]``) lose their backslash."""
    return text.replace("\\[", "[")


def test_help_shows_bracketed_text(cli):
    shown = flat(cli("pretrain", "--help").output)
    assert "[data], [encoder], [pretrain], [finetune], [evaluate]" in shown
    assert "(simclr only). [default: simclr 0.2]" in shown  # --temperature


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_importing_the_cli_and_asking_for_help_does_not_import_torch():
    code = (
        "import sys\n"
        "import sketchshot.cli\n"
        "assert 'torch' not in sys.modules, 'import sketchshot.cli imported torch'\n"
        "try:\n"
        "    sketchshot.cli.app(['pretrain', '--help'])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code in (0, None), exc.code\n"
        "assert 'torch' not in sys.modules, 'pretrain --help imported torch'\n"
        "print('ok')\n"
    )
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("ok")


def test_python_dash_m_runs_the_cli():
    proc = subprocess.run(
        [sys.executable, "-m", "sketchshot", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"sketchshot {sketchshot.__version__}"


# ---------------------------------------------------------------- options -> config


def fake_run(calls: list, method: str, stopped: str = "done"):
    def run(cfg, out=None, resume=None, quiet=False, console=None):
        calls.append(SimpleNamespace(cfg=cfg, out=out, resume=resume, quiet=quiet))
        return SimpleNamespace(
            run_dir=Path("fake-run"),
            method=method,
            metrics={"epochs": 3, "images_per_s": 1.0, "stopped": stopped, "best": {}},
        )

    return run


def test_pretrain_options_beat_the_config_file(cli, monkeypatch, tmp_path):
    calls: list = []
    monkeypatch.setattr(engine, "pretrain", fake_run(calls, "simclr"))
    config = tmp_path / "run.toml"
    config.write_text(
        "seed = 1\n"
        "[data.builtin]\nn_classes = 30\n"
        "[pretrain]\nepochs = 9\nbatch_size = 32\n"
        "[pretrain.optim]\nlr = 0.5\nweight_decay = 0.01\n",
        encoding="utf-8",
    )
    result = cli(
        "pretrain", "--method", "simclr", "--epochs", 3, "--lr", 0.01, "--data", "builtin",
        "--seed", 7, "--config", config, "--out", tmp_path / "out", "--quiet", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(calls) == 1
    expected = Config(
        seed=7,
        data=DataConfig(source="builtin", builtin=BuiltinDataConfig(n_classes=30)),
        pretrain=PretrainConfig(
            method="simclr",
            epochs=3,
            batch_size=32,
            optim=OptimConfig(lr=0.01, weight_decay=0.01),
        ),
    )
    assert calls[0].cfg == expected
    assert calls[0].out == tmp_path / "out"
    assert calls[0].resume is None
    assert calls[0].quiet is True
    summary = json.loads(result.stdout)
    assert summary == {
        "run": "fake-run", "method": "simclr", "epochs": 3, "images_per_s": 1.0,
        "stopped": "done", "best": {},
    }  # fmt: skip


def test_method_settings_reach_the_chosen_method(cli, monkeypatch):
    calls: list = []
    monkeypatch.setattr(engine, "pretrain", fake_run(calls, "byol"))
    args = ("pretrain", "--method", "byol", "--ema-decay", 0.95, "--hidden-dim", 256)
    result = cli(*args, "--crop", 0.8, "--flip", "--weight-decay", 0.01, "--patience", 2,
                 "--no-channels-last")  # fmt: skip
    assert result.exit_code == 0, result.output
    p = calls[0].cfg.pretrain
    assert (p.method.name, p.method.ema_decay, p.method.hidden_dim) == ("byol", 0.95, 256)
    assert p.method.projection_dim == 128  # BYOL's own default, not another method's
    assert p.views == ViewConfig(crop=0.8, flip=True)
    assert p.channels_last is False  # the switch turns it off
    assert (p.optim.weight_decay, p.patience) == (0.01, 2)
    calls.clear()
    monkeypatch.setattr(engine, "finetune", fake_run(calls, "matching"))
    result = cli("finetune", "--method", "matching", "--attention", "mlp", "--val-ways", 3)
    assert result.exit_code == 0, result.output
    f = calls[0].cfg.finetune
    assert (f.method.name, f.method.attention, f.val_ways) == ("matching", "mlp", 3)


@pytest.mark.parametrize(
    "args, line",
    [
        (
            ("pretrain", "--method", "byol", "--temperature", 0.1),
            "error: --temperature does not apply to pretrain method 'byol' (only to simclr)",
        ),
        (
            ("finetune", "--method", "protonet", "--attention", "mlp"),
            "error: --attention does not apply to finetune method 'protonet' (only to matching)",
        ),
        (
            ("finetune", "--hidden-dim", 64),  # the default method, protonet, has no head
            "error: --hidden-dim does not apply to finetune method 'protonet' (only to "
            "matching, relation, siamese, pairwise)",
        ),
    ],
)
def test_an_option_of_another_method_exits_2_naming_it(cli, monkeypatch, args, line):
    for name in ("pretrain", "finetune"):
        monkeypatch.setattr(engine, name, lambda *a, **k: pytest.fail("engine was called"))
    result = cli(*args)
    assert result.exit_code == 2
    assert one_line_error(result) == line


def test_a_run_stopped_by_max_minutes_says_so(cli, monkeypatch):
    monkeypatch.setattr(engine, "finetune", fake_run([], "protonet", stopped="time"))
    result = cli("finetune", "--max-minutes", 1.5, "--epochs", 20)
    assert result.exit_code == 0, result.output
    assert "3 of 20 epochs" in result.stdout
    assert "stopped by --max-minutes 1.5" in result.stdout
    monkeypatch.setattr(engine, "finetune", fake_run([], "protonet"))
    assert "stopped" not in cli("finetune").stdout


def test_finetune_options_map_onto_the_finetune_section(cli, monkeypatch):
    calls: list = []
    monkeypatch.setattr(engine, "finetune", fake_run(calls, "protonet"))
    result = cli(
        "finetune", "--ways", 7, "--shots", 2, "--queries", 3, "--episodes", 11, "--epochs", 4,
        "--init", "runs/pre", "--classes", "Greek", "--classes", "Latin/*",
        "--exclude-classes", "Greek/character01", "--val-classes", "Latin",
        "--split-fractions", 0.5, 0.25, 0.25, "--augment-strength", 0, "--max-minutes", 1.5,
        "--encoder", "resnet18", "--image-size", 32, "--device", "cpu",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    expected = Config(
        device="cpu",
        encoder=EncoderConfig(name="resnet18"),
        data=DataConfig(
            image_size=32,
            classes=("Greek", "Latin/*"),
            exclude_classes=("Greek/character01",),
            val_classes=("Latin",),
            split_fractions=(0.5, 0.25, 0.25),
        ),
        finetune=FinetuneConfig(
            init="runs/pre",
            n_way=7,
            n_shot=2,
            n_query=3,
            episodes_per_epoch=11,
            epochs=4,
            views=ViewConfig(strength=0.0),
            max_minutes=1.5,
        ),
    )
    assert calls[0].cfg == expected
    assert calls[0].quiet is False


def test_evaluate_starts_from_the_models_config(cli, monkeypatch):
    saved = Config(seed=4, data=DataConfig(classes=("Greek",), builtin=BuiltinDataConfig(seed=3)))
    seen: list = []
    monkeypatch.setattr(engine, "saved_config", lambda model: saved)

    def fake_evaluate(cfg, model=None, quiet=False, console=None, **outputs):
        seen.append((cfg, model))
        return SimpleNamespace(as_dict=lambda: {"accuracy": 0.5})

    monkeypatch.setattr(engine, "evaluate", fake_evaluate)
    args = ("evaluate", "--model", "m", "--ways", 10, "--shots", 2, "--queries", 3)
    result = cli(*args, "--episodes", 50, "--split", "val", "--json")
    assert result.exit_code == 0, result.output
    cfg, model = seen[0]
    assert model == Path("m")
    assert cfg.data == saved.data and cfg.seed == 4
    assert cfg.evaluate == EvaluateConfig(n_way=10, n_shot=2, n_query=3, episodes=50, split="val")
    assert json.loads(result.stdout) == {"accuracy": 0.5}
    # a new --data starts from default data settings, not the model's filters
    result = cli("evaluate", "--model", "m", "--data", "other.zip", "--json")
    assert result.exit_code == 0, result.output
    assert seen[1][0].data == DataConfig(source="other.zip")


def test_misspelt_key_in_config_exits_2_naming_key_and_file(cli, monkeypatch, tmp_path):
    monkeypatch.setattr(engine, "pretrain", lambda *a, **k: pytest.fail("engine was called"))
    config = tmp_path / "bad.toml"
    config.write_text("[pretrain]\nepocs = 3\n", encoding="utf-8")
    result = cli("pretrain", "--config", config)
    assert result.exit_code == 2
    line = one_line_error(result)
    assert "pretrain.epocs" in line
    assert str(config) in line


def test_bad_option_value_names_the_command_line(cli, monkeypatch):
    monkeypatch.setattr(engine, "pretrain", lambda *a, **k: pytest.fail("engine was called"))
    result = cli("pretrain", "--epochs", 0)
    assert result.exit_code == 2
    assert "command line: --epochs" in one_line_error(result)


def test_resume_of_a_folder_that_is_not_a_run(cli, monkeypatch, tmp_path):
    monkeypatch.setattr(engine, "finetune", lambda *a, **k: pytest.fail("engine was called"))
    (tmp_path / "not-a-run").mkdir()
    result = cli("finetune", "--resume", tmp_path / "not-a-run")
    assert result.exit_code == 2
    assert "no config.toml there" in one_line_error(result)


@pytest.mark.parametrize("method", ["simclrr", "protonet"])  # misspelt, of the wrong kind
def test_unknown_method_lists_the_valid_names(cli, method):
    result = cli("pretrain", "--method", method, "--quiet")
    assert result.exit_code == 2
    shown = flat(result.stderr)
    assert f"'{method}' is not one of" in shown
    for name in PRETRAIN_METHODS:
        assert f"'{name}'" in shown


# ---------------------------------------------------------------- errors from real runs


def test_evaluate_missing_model_folder(cli, tmp_path):
    result = cli("evaluate", "--model", tmp_path / "no-such-run")
    assert result.exit_code == 1
    assert "no-such-run" in one_line_error(result)


def test_error_messages_keep_square_brackets(cli, tmp_path):
    result = cli("evaluate", "--model", tmp_path / "run[exp1]")
    assert result.exit_code == 1
    assert "run[exp1]" in one_line_error(result)
    result = cli("evaluate", "--model", tmp_path / "[/x]")
    assert result.exit_code == 1
    assert "[/x]" in one_line_error(result)


def test_evaluate_tampered_weights(cli, saved_model):
    weights = saved_model / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    weights.write_bytes(bytes(raw))
    result = cli("evaluate", "--model", saved_model, "--episodes", 5, "--device", "cpu")
    assert result.exit_code == 1
    assert "sha256" in one_line_error(result)


def reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def test_evaluate_on_a_folder(cli, saved_model, tmp_path):
    data = write_folder(tmp_path / "data", {"a": 3, "b": 3, "c": 3})
    args = ("evaluate", "--model", saved_model, "--data", data, "--split", "all", "--ways", 3)
    result = cli(*args, "--shots", 1, "--queries", 2, "--episodes", 20, "--json")
    assert result.exit_code == 0, result.output
    r = json.loads(result.stdout, parse_constant=reject_constant)
    assert (r["n_classes"], r["n_images"], r["episodes"]) == (3, 9, 20)
    assert r["data"] == str(data) and r["split"] == "all"
    assert 0 <= r["accuracy"] <= 1 and r["ci95"] >= 0


def test_evaluate_json_is_valid_json_with_one_episode(cli, saved_model, tmp_path):
    data = write_folder(tmp_path / "data", {"a": 2, "b": 2})
    args = ("evaluate", "--model", saved_model, "--data", data, "--split", "all", "--ways", 2)
    result = cli(*args, "--shots", 1, "--queries", 1, "--episodes", 1, "--json")
    assert result.exit_code == 0, result.output
    json.loads(result.stdout, parse_constant=reject_constant)


def test_info_json_and_table(cli, saved_model):
    result = cli("info", saved_model, "--json")
    assert result.exit_code == 0, result.output
    meta = json.loads(result.stdout)
    assert meta["model"]["method"] == "protonet"
    assert meta["sha256"] == json.loads((saved_model / "model.json").read_text())["sha256"]
    assert "_sidecar" not in meta
    table = cli("info", saved_model)
    assert table.exit_code == 0
    assert meta["sha256"] in plain(table.stdout)
    missing = cli("info", saved_model / "nope")
    assert missing.exit_code == 1
    one_line_error(missing)


@pytest.fixture
def support(tmp_path) -> Path:
    """One example per class, dark on white; class i drawn as helpers.sketch_array(i, 0)."""
    return write_folder(tmp_path / "support", {"apple": 1, "bus": 1, "cat": 1})


def test_predict_labels_copies_of_support_images_correctly(cli, saved_model, support, tmp_path):
    queries = [write_png(tmp_path / "q" / f"{c}.png", sketch_array(c, 0)) for c in (2, 0, 1)]
    result = cli("predict", *queries, "--support", support, "--model", saved_model, "--json")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["path"] for r in rows] == [str(q) for q in queries]
    assert [r["label"] for r in rows] == ["cat", "apple", "bus"]
    for row in rows:
        assert row["error"] is None
        assert 0 < row["confidence"] <= 1
        assert list(row["scores"])[0] == row["label"]
        values = list(row["scores"].values())
        assert values == sorted(values, reverse=True) and sum(values) <= 1.0001


def test_predict_reports_a_broken_image_and_labels_the_rest(cli, saved_model, support, tmp_path):
    good1 = write_png(tmp_path / "q" / "one.png", sketch_array(0, 3))
    broken = tmp_path / "q" / "broken.png"
    broken.write_bytes(np.random.default_rng(0).bytes(200))
    good2 = write_png(tmp_path / "q" / "two.png", sketch_array(1, 3))
    missing = tmp_path / "q" / "missing.png"
    args = ("predict", good1, broken, good2, missing, "--support", support)
    result = cli(*args, "--model", saved_model, "--json", "--top-k", 2)
    assert result.exit_code == 1
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["path"] for r in rows] == [str(good1), str(broken), str(good2), str(missing)]
    for row in (rows[0], rows[2]):
        assert row["label"] in {"apple", "bus", "cat"} and row["error"] is None
        assert len(row["scores"]) == 2
    assert rows[1]["label"] is None and "broken.png" in rows[1]["error"]
    assert rows[3]["label"] is None and "missing.png" in rows[3]["error"]
    assert "2 of 4 image(s) could not be read" in plain(result.stderr)
    assert "Traceback" not in result.output


def test_predict_top_k_zero_does_not_crash(cli, saved_model, support, tmp_path):
    query = write_png(tmp_path / "q.png", sketch_array(0, 1))
    result = cli("predict", query, "--support", support, "--model", saved_model, "--top-k", 0)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output


def test_finetune_names_a_class_with_too_few_images(cli, tmp_path):
    data = write_folder(tmp_path / "data", {"a": 6, "b": 6, "c": 6, "d": 6, "tiny": 2})
    out = tmp_path / "ft"
    result = cli(
        "finetune", "--data", data, "--split-fractions", 1, 0, 0, "--ways", 3, "--epochs", 1,
        "--episodes", 1, "--out", out, "--quiet", "--device", "cpu",
    )  # fmt: skip
    assert result.exit_code == 1
    line = one_line_error(result)
    assert "'tiny' (2)" in line
    assert "'a'" not in line
    assert not out.exists()  # nothing half-written


# ---------------------------------------------------------------- the demo (slow)


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("SKETCHSHOT_SLOW") != "1",
    reason="the whole demo (half a minute to minutes); set SKETCHSHOT_SLOW=1",
)
def test_demo_end_to_end(cli, tmp_path):
    out = tmp_path / "demo"
    result = cli("demo", "--out", out, "--json", "--quiet", "--device", "cpu")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["evaluation"]["n_way"] == 5
    assert payload["evaluation"]["accuracy"] > 0.8
    assert payload["predict_accuracy"] >= 0.6
    assert (out / "pretrain" / "model.json").is_file()
    assert (out / "finetune" / "model.json").is_file()
    again = cli("demo", "--out", out, "--quiet")
    assert again.exit_code == 2
    assert "already holds a demo" in one_line_error(again)
