"""``sketchshot plot``: curves of several runs' metrics.jsonl side by side in one PNG, each run
in its own colour; clear errors for runs without metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from helpers import plain
from sketchshot.cli import app
from sketchshot.plots import (
    PALETTE,
    PANEL_H,
    PANEL_W,
    nice_ticks,
    read_records,
    series,
    tick_text,
)


def invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def fake_run(folder: Path, epochs: int, lr: float, val: bool = True, steps: int = 20) -> Path:
    """A run's metrics.jsonl as the training loop writes it: a record every 10 steps, one at
    each epoch's end (with val_acc where it validated). Runs of other ``lr`` learn at other
    speeds, so that their lines differ."""
    folder.mkdir(parents=True)
    speed = lr * 1000
    lines = []
    for epoch in range(epochs):
        for s in range(10, steps + 1, 10):
            step = epoch * steps + s
            lines.append({"step": step, "epoch": epoch, "loss": 3 / step**0.3, "lr": lr,
                          "pair_acc": 0.5, "images_per_s": 100.0})  # fmt: skip
        record = {"event": "epoch_end", "epoch": epoch + 1, "step": (epoch + 1) * steps,
                  "loss": 2.0 / (1 + speed * epoch), "lr": lr * (1 - epoch / epochs),
                  "pair_acc": 0.5}  # fmt: skip
        if val:
            record["val_acc"] = 0.4 + 0.05 * speed * epoch
        lines.append(record)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return folder


def colour_pixels(picture: Image.Image, colour: tuple[int, int, int]) -> int:
    pixels = np.asarray(picture.convert("RGB")).reshape(-1, 3)
    return int((pixels == np.array(colour)).all(axis=1).sum())


def test_two_runs_side_by_side_in_their_own_colours(tmp_path):
    probe = fake_run(tmp_path / "probe", epochs=5, lr=1e-3)
    scratch = fake_run(tmp_path / "scratch", epochs=8, lr=3e-4)
    out = tmp_path / "curves.png"
    result = invoke("plot", probe, scratch, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["panels"] == ["loss", "lr", "val_acc"]
    assert report["labels"] == ["probe", "scratch"]
    picture = Image.open(out)
    assert picture.format == "PNG"
    assert picture.width == 3 * PANEL_W and PANEL_H < picture.height < PANEL_H + 60
    first, second = colour_pixels(picture, PALETTE[0]), colour_pixels(picture, PALETTE[1])
    assert first > 300 and second > 300, (first, second)  # a line in each of three panels
    assert colour_pixels(picture, PALETTE[2]) == 0  # two runs, two colours
    # each panel has its own line of each run: the colours appear in every third of the width
    for panel in range(3):
        part = picture.crop((panel * PANEL_W, 0, (panel + 1) * PANEL_W, PANEL_H))
        assert colour_pixels(part, PALETTE[0]) > 50 and colour_pixels(part, PALETTE[1]) > 50


def test_chosen_metrics_by_step_with_labels(tmp_path):
    a = fake_run(tmp_path / "a", epochs=2, lr=1e-3, val=False)
    b = fake_run(tmp_path / "b", epochs=2, lr=1e-3, val=False)
    out = tmp_path / "steps.png"
    result = invoke("plot", a, b / "metrics.jsonl", "--x", "step", "--metrics", "loss",
                    "--metrics", "pair_acc", "--labels", "linear probe", "--labels",
                    "from scratch", "--out", out, "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["panels"] == ["loss", "pair_acc"] and report["x"] == "step"
    assert report["labels"] == ["linear probe", "from scratch"]
    assert Image.open(out).width == 2 * PANEL_W


def test_a_sweep_folder_plots_each_of_its_runs(tmp_path):
    for name in ("001-a", "002-b", "003-c"):
        fake_run(tmp_path / "sweep" / name, epochs=3, lr=1e-3)
    (tmp_path / "sweep" / "sweep.json").write_text(
        json.dumps({"runs": [{"folder": n} for n in ("001-a", "002-b", "003-c")]})
    )
    out = tmp_path / "sweep.png"
    result = invoke("plot", tmp_path / "sweep", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["labels"] == ["001-a", "002-b", "003-c"]
    assert colour_pixels(Image.open(out), PALETTE[2]) > 100


def test_series_by_epoch_and_by_step(tmp_path):
    records = read_records(fake_run(tmp_path / "r", epochs=3, lr=1e-3, steps=20))
    by_epoch = series(records, "loss", "epoch")
    assert by_epoch.xs == (1, 2, 3) and by_epoch.ys == pytest.approx((2.0, 1.0, 2 / 3))
    by_step = series(records, "loss", "step")
    assert by_step.xs == (10, 20, 30, 40, 50, 60)  # the step records, not the epoch means
    val = series(records, "val_acc", "step")
    assert val.xs == (20, 40, 60) and val.ys == pytest.approx((0.4, 0.45, 0.5))
    # a torn last line (a killed run) is left out; a step logged twice keeps its last value
    path = tmp_path / "r" / "metrics.jsonl"
    path.write_text(path.read_text() + json.dumps({"step": 60, "epoch": 2, "loss": 9.0}) + '\n{"st')
    assert series(read_records(tmp_path / "r"), "loss", "step").ys[-1] == 9.0


def test_ticks_are_round_and_cover_the_range():
    assert nice_ticks(0.0, 1.0) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert nice_ticks(1.0, 20.0, 6) == [5.0, 10.0, 15.0, 20.0]
    assert [tick_text(t, 0.25) for t in nice_ticks(0.0, 1.0)] == ["0", "0.25", "0.50", "0.75",
                                                                  "1.00"]  # fmt: skip
    assert tick_text(1e-4, 1e-4) == "0.0001" and tick_text(2e-5, 1e-5) == "2e-05"


def test_a_run_without_metrics_is_one_line_error(tmp_path):
    (tmp_path / "empty").mkdir()
    result = invoke("plot", tmp_path / "empty", "--out", tmp_path / "x.png")
    assert result.exit_code == 1
    text = plain(result.stderr).strip()
    assert text.startswith("error: ") and "\n" not in text
    assert "empty has no metrics.jsonl" in text
    missing = invoke("plot", tmp_path / "nowhere", "--out", tmp_path / "x.png")
    assert missing.exit_code == 1 and "nowhere not found" in plain(missing.stderr)
    run = fake_run(tmp_path / "run", epochs=1, lr=1e-3)
    unknown = invoke("plot", run, "--metrics", "val_f1", "--out", tmp_path / "x.png")
    assert unknown.exit_code == 2 and "--metrics val_f1: no run logged it" in plain(unknown.stderr)
    jpeg = invoke("plot", run, "--out", tmp_path / "x.jpg")
    assert jpeg.exit_code == 2 and "name it FILE.png" in plain(jpeg.stderr)
    labels = invoke("plot", run, "--labels", "a", "--labels", "b", "--out", tmp_path / "x.png")
    assert labels.exit_code == 2 and "--labels gives 2 names for 1 runs" in plain(labels.stderr)
    nothing = invoke("plot", "--out", tmp_path / "x.png")
    assert nothing.exit_code == 2 and "plot needs at least one RUN folder" in plain(nothing.stderr)
    assert not (tmp_path / "x.png").exists()
