"""Help generated from the config cannot drift: every registered method and encoder is a shown
choice, every shown default is the config's, panels group the options; and output survives
pipes: nothing is wrapped or cut at 80 columns when stdout is not a terminal, and NO_COLOR
keeps progress bars (without colour) on a terminal."""

from __future__ import annotations

import functools
import json
import os
import pty
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from helpers import plain
from sketchshot import engine
from sketchshot.cli import app
from sketchshot.cli.app import OPTION_TABLES
from sketchshot.config import (
    ENCODER_NAMES,
    FINETUNE_METHODS,
    METHOD,
    PRETRAIN_METHODS,
    SECTION_METHODS,
    MethodSettings,
)
from sketchshot.errors import DataError

# every command, a sub-group's as "data crop"
COMMANDS = sorted(
    f"{name} {sub}" if hasattr(group, "commands") else name
    for name, group in get_command(app).commands.items()
    for sub in getattr(group, "commands", {None: None})
)
SHA = "0123456789abcdef" * 4  # 64 hex digits
LONG = "runs/" + "a-rather-long-folder-name-" * 6 + "end"  # well past 80 columns


@pytest.fixture
def cli(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def invoke(*args: object, columns: int = 80, **env: str):
        return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": str(columns), **env})

    return invoke


@functools.cache
def help_rows(command: str) -> dict[str, str]:
    """Option -> its row of ``--help``, drawn so wide that no row wraps."""
    result = CliRunner().invoke(app, [*command.split(), "--help"], env={"COLUMNS": "1000"})
    assert result.exit_code == 0, result.output
    rows = {}
    for line in plain(result.output).splitlines():
        found = re.match(r"│ (--[\w-]+)", line)
        if found:
            rows[found.group(1)] = line
    return rows


# ---------------------------------------------------------------- choices and defaults


@pytest.mark.parametrize(
    "command, names",
    [
        ("pretrain", [*PRETRAIN_METHODS, *ENCODER_NAMES]),
        ("finetune", [*FINETUNE_METHODS, *ENCODER_NAMES]),
    ],
)
def test_every_registered_method_and_encoder_is_a_shown_choice(cli, command, names):
    rows = help_rows(command)
    methods = {"pretrain": PRETRAIN_METHODS, "finetune": FINETUNE_METHODS}[command]
    assert f"<{'|'.join(methods)}>" in rows["--method"]
    assert f"<{'|'.join(ENCODER_NAMES)}>" in rows["--encoder"]
    for name in names:
        assert name in rows["--method"] + rows["--encoder"]


def expected_default(root, key: str) -> str:
    """The config's default for ``key``, written as a user would type it (independently of
    the CLI's own formatting)."""

    def typed(value) -> str:
        if value is None or value == ():
            return "none"
        if isinstance(value, bool):
            return "on" if value else "off"
        if isinstance(value, MethodSettings):
            return value.name
        if isinstance(value, tuple):
            return " ".join(typed(v) for v in value)
        return str(value)

    *parents, leaf = key.split(".")
    if METHOD in parents:
        methods = SECTION_METHODS[parents[0]]
        return ", ".join(
            f"{name} {typed(getattr(cls(), leaf))}"
            for name, cls in methods.items()
            if leaf in cls.model_fields
        )
    node = root
    for part in key.split("."):
        node = getattr(node, part)
    return typed(node)


TABLE = [
    pytest.param(command, root, flag, id=f"{command} {flag.flag}")
    for command, (root, flags) in sorted(OPTION_TABLES.items())
    for flag in flags
]


def test_the_option_tables_cover_every_config_command():
    assert set(OPTION_TABLES) == {c for c in COMMANDS if " " not in c} - {"info"}


@pytest.mark.parametrize("command, root, flag", TABLE)
def test_every_shown_default_is_the_configs(cli, command, root, flag):
    row = help_rows(command)[flag.flag]
    shown = re.findall(r"\[default: ([^\]]*)\]", row)
    expected = flag.default if flag.default is not None else expected_default(root, flag.key)
    assert shown == [expected], row


def test_a_sections_own_defaults_are_shown(cli):
    """Pretraining crops to 0.6 and fine-tuning steps its schedule, unlike the field defaults
    of ViewConfig and OptimConfig: each command shows its section's."""
    pre, fine = help_rows("pretrain"), help_rows("finetune")
    assert "[default: 0.6]" in pre["--crop"]
    assert "[default: cosine]" in pre["--schedule"] and "[default: step]" in fine["--schedule"]
    assert "[default: 1.0]" in pre["--augment-strength"]
    assert "[default: 0.5]" in fine["--augment-strength"]
    assert "[default: simclr 512, byol 512]" in pre["--hidden-dim"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_shows_a_default_and_quiet_verbose_and_h_exist(cli, command):
    rows = help_rows(command)
    for option, row in rows.items():
        if option != "--help":
            assert "[default: " in row, row
    assert {"--quiet", "--verbose", "--help"} <= set(rows)
    short = cli(*command.split(), "-h", columns=1000)
    assert short.exit_code == 0 and plain(short.output) == plain(
        cli(*command.split(), "--help", columns=1000).output
    )


def test_root_help_has_h_and_shell_completion(cli):
    result = cli("-h")
    assert result.exit_code == 0
    shown = plain(result.output)
    assert "--install-completion" in shown and "--show-completion" in shown
    for command in COMMANDS:
        assert command.split()[0] in shown


@pytest.mark.parametrize(
    "command, panels",
    [
        ("pretrain", ["Model", "Data", "Training", "Views (augmentation)", "Run", "Output"]),
        ("finetune", ["Model", "Data", "Training", "Views (augmentation)", "Run", "Output"]),
        ("evaluate", ["Evaluation", "Data", "Run", "Model", "Output"]),
        ("predict", ["Arguments", "Model", "Labels", "Run", "Output"]),
        ("enroll", ["Bank", "Calibration", "Model", "Run", "Output"]),
    ],
)
def test_help_groups_options_in_panels(cli, command, panels):
    shown = plain(cli(command, "--help", columns=120).output)
    titles = [t for t in re.findall(r"╭─ (.+?) ─", shown) if t != "Options"]  # -h only
    assert titles == panels


# ---------------------------------------------------------------- errors


def test_verbose_adds_the_traceback_to_the_one_line_error(cli, monkeypatch):
    def broken(*args, **kwargs):
        raise DataError("no images under here")

    monkeypatch.setattr(engine, "pretrain", broken)
    quiet = cli("pretrain", "--quiet")
    assert quiet.exit_code == 1
    assert plain(quiet.stderr).strip() == "error: no images under here"
    loud = cli("pretrain", "-q", "-v")
    assert loud.exit_code == 1
    text = plain(loud.stderr)
    assert "Traceback" in text and "DataError" in text
    assert text.strip().splitlines()[-1] == "error: no images under here"


# ---------------------------------------------------------------- output into pipes


def model_card() -> dict:
    return {
        "format_version": 2,
        "sketchshot_version": "0.2.0",
        "model": {
            "method": "protonet",
            "kind": "fewshot",
            "method_args": {"distance": "cosine"},
            "encoder": "conv4",
            "encoder_args": {"image_size": 28},
            "init": LONG,
        },
        "preprocessing": {"image_size": 28, "invert": "auto", "mean": 0.5, "std": 0.5},
        "class_names": ["a", "b"],
        "data": {"origin": LONG, "images": 10},
        "metrics": {"best": {"epoch": 3, "val_acc": 0.75}},
        "sha256": SHA,
    }


def card_as_pydantic() -> object:
    from sketchshot.card import ModelCard

    return ModelCard.model_validate(model_card())


@pytest.mark.parametrize("make", [model_card, card_as_pydantic], ids=["dict", "ModelCard"])
def test_info_into_a_pipe_keeps_the_hash_and_paths_whole(cli, monkeypatch, make):
    monkeypatch.setattr(engine, "info", lambda model: make())
    result = cli("info", "run")
    assert result.exit_code == 0, result.output
    lines = plain(result.stdout).splitlines()
    assert any(SHA in line for line in lines)
    assert any(LONG in line for line in lines)
    assert "protonet (fewshot)" in result.stdout and "2 from " + LONG in result.stdout
    as_json = json.loads(cli("info", "run", "--json").stdout)
    assert as_json["sha256"] == SHA and as_json["model"]["method"] == "protonet"


def test_info_on_a_bank_says_it_is_a_bank(cli, saved_model, tmp_path):
    from helpers import write_folder
    from sketchshot.config import EnrollConfig

    support = write_folder(tmp_path / "support", {"a": 5, "b": 5, "c": 5})
    engine.enroll(EnrollConfig(model=saved_model, support=support, out=tmp_path / "bank"))
    for named in ("bank", "bank.json", "bank.safetensors"):
        result = cli("info", str(tmp_path / named))
        assert result.exit_code == 0, result.output
        assert "None" not in result.stdout
        assert "3 classes, 15 embeddings of 64 dimensions" in result.stdout
        assert "(verified)" in result.stdout


def test_predict_table_into_a_file_is_not_folded(cli, monkeypatch):
    row = SimpleNamespace(
        path=LONG + ".png",
        label="cat",
        best_class="cat",
        confidence=0.9,
        similarity=0.8,
        scores={"cat": 0.9, "dog": 0.1},
        error=None,
    )
    run = SimpleNamespace(
        class_names=("cat", "dog"),
        classes_from=LONG,
        threshold=None,
        threshold_from=None,
        rows=iter([row]),
    )
    monkeypatch.setattr(engine, "predict", lambda cfg, **kwargs: run)
    result = cli("predict", "q.png", "--bank", "b")
    assert result.exit_code == 0, result.output
    lines = plain(result.stdout).splitlines()
    assert any(LONG + ".png" in line and "cat 0.90, dog 0.10" in line for line in lines)
    assert f"2 classes from {LONG}" in lines


def test_demo_into_a_log_keeps_the_suggested_command_whole(cli, monkeypatch, tmp_path):
    import sketchshot.demo

    figures = {"accuracy": 0.9, "ci95": 0.01, "n_way": 5, "n_shot": 1}
    out = tmp_path / LONG

    def run_demo(out, cfg, quiet=False, console=None):
        return SimpleNamespace(
            out=out,
            seconds=3.0,
            evaluation=figures,
            evaluation_pretrained=figures,
            predictions=[],
            predict_accuracy=1.0,
        )

    monkeypatch.setattr(sketchshot.demo, "run_demo", run_demo)
    result = cli("demo", "--out", out)
    assert result.exit_code == 0, result.output
    command = (
        f"'sketchshot predict --model {out}/finetune --support {out}/predict/support "
        f"{out}/predict/queries/*.png'"
    )
    assert any(line.endswith(command) for line in plain(result.stdout).splitlines())


def run_on_a_terminal(code: str, **env: str) -> str:
    """Run ``code`` with stdout and stderr on a pseudo-terminal 100 columns wide, with no
    colour settings inherited but ``env``; what the terminal got."""
    colour = ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")
    inherited = {k: v for k, v in os.environ.items() if k not in colour}
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=follower,
        stderr=follower,
        env={**inherited, "TERM": "xterm-256color", "COLUMNS": "100", **env},
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    proc.wait(timeout=60)
    os.close(leader)
    assert proc.returncode == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode(errors="replace")


PROGRESS = """
import time
from rich.progress import BarColumn, Progress, TextColumn
from sketchshot.cli.render import stderr_console
with Progress(TextColumn("[bold]train"), BarColumn(), console=stderr_console()) as bar:
    task = bar.add_task("train", total=4)
    for _ in range(4):
        time.sleep(0.05)
        bar.advance(task)
"""


def colours(text: str) -> set[str]:
    """The SGR colour parameters (30-38, 40-48, 90-107) in ``text``."""
    found = set()
    for params in re.findall(r"\x1b\[([0-9;]*)m", text):
        for p in params.split(";"):
            if p and (30 <= int(p) <= 48 or 90 <= int(p) <= 107):
                found.add(p)
    return found


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_no_color_keeps_the_progress_bar_without_colour():
    coloured = run_on_a_terminal(PROGRESS)
    assert "━" in coloured and colours(coloured), "a terminal should get a coloured bar"
    plain_bar = run_on_a_terminal(PROGRESS, NO_COLOR="1")
    assert "━" in plain_bar, "NO_COLOR must keep the bar"
    assert not colours(plain_bar), "NO_COLOR must drop the colours"


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_stdout_fits_a_terminal_and_is_unbounded_elsewhere():
    code = (
        "import sys\n"
        "from sketchshot.cli.render import stdout_console\n"
        "console = stdout_console()\n"
        "console.print(f'width {console.width}')\n"
        f"console.print('saved {LONG}/model.safetensors (3 of 20 epochs)')\n"
    )
    on_terminal = run_on_a_terminal(code)
    assert "width 100" in on_terminal
    # a line longer than the terminal is left for the terminal to wrap: it copies whole
    assert f"saved {LONG}/model.safetensors (3 of 20 epochs)" in on_terminal
    piped = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "80"},
        check=True,
    )
    assert int(piped.stdout.split()[1]) > 10_000
    assert f"saved {LONG}/model.safetensors (3 of 20 epochs)\n" in piped.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_help_at_80_columns_cuts_no_option_name(command):
    result = CliRunner().invoke(app, [*command.split(), "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0
    assert "…" not in result.output, result.output
