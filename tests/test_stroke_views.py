"""Views made on the strokes before rendering: motor noise, stroke dropout, partial drawings,
line-width change; drawings kept through splits and rotations; training on them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sketchshot.cli import app
from sketchshot.config import DataConfig, ViewConfig
from sketchshot.data import load_dataset
from sketchshot.data.dataset import rotated, with_mirrors, with_rotations
from sketchshot.data.vector.render import render
from sketchshot.data.vector.stroke_views import StrokeViews
from sketchshot.errors import ConfigError

# an L and a dot: no symmetry, so a wrong rotation shows
L_SHAPE = [
    np.array([[0, 0], [0, 10], [6, 10]], dtype=np.float32),
    np.array([[5, 2], [5.5, 2.5]], dtype=np.float32),
]
THREE_STROKES = [np.array([[i, 0], [i, 9]], dtype=np.float32) for i in (0, 4, 8)]


@pytest.mark.parametrize("quarters", [0, 1, 2, 3])
def test_rotated_drawings_render_as_rot90_of_the_image(quarters):
    image = torch.from_numpy(render(L_SHAPE, 32)).view(1, 1, 32, 32)
    expected = torch.rot90(image, quarters, dims=(2, 3))[0, 0].float()
    got = torch.from_numpy(render(rotated(L_SHAPE, quarters), 32)).float()
    # of 255, over the picture (quarter turns differ by the renderer's sub-pixel rounding):
    assert (got - expected).abs().mean().item() < 6.0
    other = torch.rot90(image, quarters + 1, dims=(2, 3))[0, 0].float()
    assert (got - other).abs().mean().item() > 20.0


def test_no_views_leave_the_strokes_as_they_are():
    views = StrokeViews()
    assert not views.active
    out = views.strokes(THREE_STROKES, np.random.default_rng(0))
    assert all(np.array_equal(a, b) for a, b in zip(out, THREE_STROKES, strict=True))


def test_jitter_moves_each_stroke_by_about_its_fraction_of_the_size():
    views = StrokeViews(jitter=0.05)
    rng = np.random.default_rng(0)
    moves = []
    for _ in range(200):
        out = views.strokes(THREE_STROKES, rng)
        moves += [float((a - b).std()) for a, b in zip(out, THREE_STROKES, strict=True)]
        assert [len(s) for s in out] == [2, 2, 2]
    # the offsets' spread over many draws: sqrt(2) * 0.05 * 9 (a shift plus a bend, each sigma)
    all_moves = np.concatenate(
        [(views.strokes(THREE_STROKES, rng)[0] - THREE_STROKES[0]).ravel() for _ in range(500)]
    )
    assert all_moves.std() == pytest.approx(np.sqrt(2) * 0.05 * 9, rel=0.1)
    assert np.mean(moves) > 0


def test_dropout_and_partial_drawings_keep_strokes_in_order_and_never_none():
    rng = np.random.default_rng(1)
    dropped = [len(StrokeViews(drop=0.5).strokes(THREE_STROKES, rng)) for _ in range(400)]
    assert min(dropped) == 1 and max(dropped) == 3
    assert np.mean(dropped) == pytest.approx(1.5 + 0.5 * 2 / 3 * 0.5 * 3, abs=0.25)
    for _ in range(50):
        out = StrokeViews(partial=1.0).strokes(THREE_STROKES, rng)
        assert len(out) == 2  # first k strokes, k from ceil(3/2) = 2 to 2
        assert np.array_equal(out[0], THREE_STROKES[0])


def test_views_are_reproducible_from_the_seed_and_change_the_picture():
    views = StrokeViews(jitter=0.03, drop=0.2, partial=0.2, width=0.3)
    a = views.render(THREE_STROKES, 28, 0.045, np.random.default_rng(5))
    b = views.render(THREE_STROKES, 28, 0.045, np.random.default_rng(5))
    c = views.render(THREE_STROKES, 28, 0.045, np.random.default_rng(6))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_from_config_scales_with_the_view_strength():
    views = ViewConfig(strength=0.5, stroke_jitter=0.04, stroke_drop=0.2, line_width_jitter=0.4)
    assert views.on_strokes and not ViewConfig().on_strokes
    assert StrokeViews.from_config(views) == StrokeViews(jitter=0.02, drop=0.1, width=0.2)
    assert not ViewConfig(strength=0, stroke_jitter=0.1).on_strokes


def write_strokes(root, classes: int = 6, drawers: int = 4):
    """Omniglot stroke files of ``classes`` characters in two alphabets."""
    for c in range(classes):
        for d in range(drawers):
            lines = ["START"]
            for s in range(1 + c % 3):
                lines += [f"{s * 3 + d * 0.3},{-c},0", f"{s * 3 + c},{-9 - d * 0.2},10", "BREAK"]
            path = root / f"alpha{c % 2}" / f"char{c}" / f"{c}_{d}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(lines) + "\n")
    return root


def test_drawings_follow_the_images_through_splits_and_rotations(tmp_path):
    source = write_strokes(tmp_path / "strokes")
    cfg = DataConfig(source=str(source), split_fractions=(0.5, 0.5, 0.0))
    train = load_dataset(cfg, 28, "train")
    assert train.drawings is not None and len(train.drawings) == len(train) == 12
    rng = np.random.default_rng(0)
    index = np.arange(len(train))
    assert torch.equal(train.rendered(index, StrokeViews(), rng), train.images)
    turned = with_rotations(train.first_per_class(2))
    assert len(turned.drawings) == len(turned) == 24
    again = turned.rendered(np.arange(len(turned)), StrokeViews(), rng)
    assert (again.float() - turned.images.float()).abs().mean() < 6.0
    flipped = with_mirrors(train.first_per_class(2))
    again = flipped.rendered(np.arange(len(flipped)), StrokeViews(), rng)
    assert (again.float() - flipped.images.float()).abs().mean() < 6.0
    assert (again[6:].float() - again[:6].flip(3).float()).abs().mean() < 6.0


def test_quickdraw_filters_and_their_refusal_elsewhere(tmp_path):
    quick = tmp_path / "cat.ndjson"
    rows = [
        {"word": "cat", "recognized": r, "countrycode": c, "drawing": [[[0, 9], [0, 9]]]}
        for r, c in [(True, "US"), (False, "US"), (True, "DE"), (True, "DE")]
    ]
    quick.write_text("\n".join(json.dumps(r) for r in rows))
    base = {"source": str(quick), "split_fractions": (1, 0, 0)}
    assert len(load_dataset(DataConfig(**base, recognized="yes"), 28)) == 3
    assert len(load_dataset(DataConfig(**base, recognized="no"), 28)) == 1
    assert len(load_dataset(DataConfig(**base, countries=("DE",), recognized="yes"), 28)) == 2
    strokes = write_strokes(tmp_path / "strokes")
    with pytest.raises(ConfigError, match="QuickDraw"):
        load_dataset(DataConfig(source=str(strokes), countries=("US",)), 28)


def invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def test_pretrain_and_finetune_train_on_views_of_the_strokes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = write_strokes(tmp_path / "strokes")
    views = ["--stroke-jitter", "0.03", "--stroke-drop", "0.2", "--partial-p", "0.3"]
    common = ["--data", source, "--epochs", "1", "--quiet", "--split-fractions", "1", "0", "0"]
    done = invoke("pretrain", *common, "--batch-size", "8", *views, "--out", tmp_path / "ssl")
    assert done.exit_code == 0, done.output
    done = invoke(
        "finetune", *common, "--ways", "3", "--shots", "1", "--queries", "1", "--episodes", "3",
        "--rotation-classes", *views, "--line-width-jitter", "0.3", "--out", tmp_path / "fs",
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    config = (tmp_path / "fs" / "config.toml").read_text()
    assert "stroke_jitter = 0.03" in config and "line_width_jitter = 0.3" in config


def test_views_on_strokes_are_refused_for_images():
    done = invoke("pretrain", "--epochs", "1", "--stroke-jitter", "0.02", "--quiet")
    assert done.exit_code != 0
    assert "work on strokes" in done.stderr and "Traceback" not in done.output
