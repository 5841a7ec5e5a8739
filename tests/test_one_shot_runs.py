"""Omniglot-style one-shot runs written by ``sketchshot data runs`` and read back by
``evaluate --runs``, and episodes drawn within one top-level group (``--within-groups``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from helpers import plain, sketch_array, write_folder, write_png
from sketchshot.cli import app
from sketchshot.data.episodes import EpisodeSampler, class_groups
from sketchshot.data.glyphs import make_glyphs
from sketchshot.errors import DataError
from sketchshot.protocols.omniglot_runs import draw_runs, drawers, read_runs, write_runs

runner = CliRunner()


def grouped_glyphs(groups: tuple[int, ...] = (6, 6, 4), n_drawers: int = 5):
    """Built-in glyphs named ``g<k>/glyph-NNN``: ``groups`` classes in each top-level group."""
    data = make_glyphs(sum(groups), n_drawers, 28)
    owner = np.repeat(np.arange(len(groups)), groups)
    names = tuple(f"g{owner[c]}/{name}" for c, name in enumerate(data.class_names))
    return dataclasses.replace(data, class_names=names)


def test_class_groups_are_top_level_folders_with_rotations_kept_in() -> None:
    names = ("Greek/alpha", "Greek/beta@rot90", "Latin/a", "loose")
    assert class_groups(names).tolist() == [0, 0, 1, 2]


def test_drawers_come_from_file_names_or_positions() -> None:
    data = grouped_glyphs()
    assert drawers(data)[:6].tolist() == [0, 1, 2, 3, 4, 0]  # builtin:.../drawer-NN
    omniglot = dataclasses.replace(
        data, sources=tuple(f"Greek/c{i // 5}/0394_{i % 5 + 11:02d}.png" for i in range(len(data)))
    )
    assert drawers(omniglot)[:6].tolist() == [11, 12, 13, 14, 15, 11]


def test_runs_stay_within_a_group_with_one_drawer_per_side() -> None:
    data = grouped_glyphs()
    runs = draw_runs(data, count=6, n_way=5, seed=3)
    by = drawers(data)
    groups = class_groups(data.class_names)
    assert [r.group for r in runs] == ["g0", "g1", "g2"] * 2
    for run in runs:
        assert run.n_way == (4 if run.group == "g2" else 5)  # the 4-class group gives all 4
        train_classes = data.labels[run.training].numpy()
        test_classes = data.labels[run.test].numpy()
        assert len(set(train_classes)) == run.n_way
        assert sorted(test_classes) == sorted(train_classes)  # each class queried once
        assert len(set(groups[train_classes])) == 1
        first, second = run.drawers
        assert first != second
        assert set(by[run.training]) == {first} and set(by[run.test]) == {second}
    again = draw_runs(data, count=6, n_way=5, seed=3)
    assert all(np.array_equal(a.test, b.test) for a, b in zip(runs, again, strict=True))
    other = draw_runs(data, count=6, n_way=5, seed=4)
    assert any(not np.array_equal(a.test, b.test) for a, b in zip(runs, other, strict=True))


def test_written_runs_read_back_with_their_answers(tmp_path: Path) -> None:
    data = grouped_glyphs()
    runs = draw_runs(data, count=3, n_way=5, seed=0)
    write_runs(data, tmp_path / "runs", runs)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["run01", "run02", "run03"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no leftovers
    read = read_runs(tmp_path / "runs", 28)
    for run, back in zip(runs, read, strict=True):
        assert back.training.shape == (run.n_way, 1, 28, 28)
        # the answer of each query is the training drawing of its class
        truth = data.labels[run.test].numpy()
        assert np.array_equal(data.labels[run.training].numpy()[back.answers], truth)
        # images survive the round trip (written dark on white, read back bright on dark)
        assert torch.equal(back.test, data.images[run.test])
    fitted = read_runs(tmp_path / "runs", 28, fit="ink")  # as a model with fit = "ink" reads
    for back, ink in zip(read, fitted, strict=True):
        assert np.array_equal(back.answers, ink.answers) and ink.test.shape == back.test.shape
        assert ink.test.float().mean() > back.test.float().mean()  # drawings fill the frame
    with pytest.raises(DataError, match="exists and is not an empty folder"):
        write_runs(data, tmp_path / "runs", runs)


def test_data_runs_command_and_evaluate_runs(tmp_path: Path, saved_model: Path) -> None:
    data_dir = tmp_path / "data"
    for c in range(8):
        for d in range(3):
            write_png(data_dir / f"A{c // 4}" / f"c{c}" / f"{c:04d}_{d + 1:02d}.png",
                      sketch_array(c, d))  # fmt: skip
    out = tmp_path / "runs"
    result = runner.invoke(
        app, ["data", "runs", str(data_dir), "--out", str(out), "--count", "4", "--ways", "3",
              "--image-size", "40", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert '"groups": {"A0": 2, "A1": 2}' in result.output
    assert len(list(out.glob("run*/test/*.png"))) == 12
    result = runner.invoke(app, ["evaluate", "--model", str(saved_model), "--runs", str(out)])
    assert result.exit_code == 0, result.output
    assert "3-way one-shot runs" in plain(result.output)
    assert "mean error rate" in plain(result.output)
    model = ["evaluate", "--model", str(saved_model)]
    shaped = runner.invoke(app, [*model, "--runs", str(out), "--shape-weight", "0.5", "--json"])
    assert shaped.exit_code == 0, shaped.output
    assert '"shape_weight": 0.5' in shaped.output and "shape match x0.5" in shaped.output
    both = runner.invoke(app, [*model, "--runs", str(out), "--align", "--shape-weight", "0.5",
                               "--tta", "2", "--json"])  # fmt: skip
    assert both.exit_code == 0, both.output
    assert '"align": true' in both.output and "aligned (elastic), shape match x0.5" in both.output
    assert '"warp": "elastic"' in both.output
    affine = runner.invoke(app, [*model, "--runs", str(out), "--align", "--warp", "affine"])
    assert affine.exit_code == 0 and "aligned (affine)" in plain(affine.output), affine.output
    alone = runner.invoke(app, [*model, "--runs", str(out), "--warp", "affine"])
    assert alone.exit_code != 0 and "add it" in plain(alone.output)
    for option in (["--shape-weight", "1"], ["--align"], ["--warp", "affine"]):
        knn = ["--protocol", "knn", "--data", str(data_dir), *option]
        refused = runner.invoke(app, [*model, *knn])
        assert refused.exit_code != 0 and option[0] in plain(refused.output)
    episodes = runner.invoke(app, [*model, "--data", str(data_dir), "--split", "all", "--ways",
                                   "3", "--shots", "2", "--queries", "1", "--episodes", "5",
                                   "--shape-weight", "0.5", "--align", "--json"])  # fmt: skip
    assert episodes.exit_code == 0, episodes.output
    assert (
        '"shape_weight": 0.5' in episodes.output
        and "aligned (elastic), shape match x0.5" in episodes.output
    )
    assert '"align": true' in episodes.output
    again = runner.invoke(app, ["data", "runs", str(data_dir), "--out", str(out)])
    assert again.exit_code != 0 and "not an empty folder" in plain(again.output)


def test_within_group_episodes_take_every_class_from_one_group() -> None:
    data = grouped_glyphs((6, 6, 3))
    groups = class_groups(data.class_names)
    sampler = EpisodeSampler(data.labels, 5, 1, 2, data.class_names, within_groups=1.0)
    assert sampler.left_out_groups == 1
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(50):
        episode = sampler.sample(rng)
        assert len(set(groups[episode.classes])) == 1
        seen.add(int(groups[episode.classes[0]]))
    assert seen == {0, 1}  # the 3-class group is too small for 5 ways
    mixed = EpisodeSampler(data.labels, 5, 1, 2, data.class_names, within_groups=0.0)
    spans = [len(set(groups[mixed.sample(rng).classes])) for _ in range(50)]
    assert max(spans) > 1
    with pytest.raises(DataError, match="need a group of 7 classes; the largest has 6"):
        EpisodeSampler(data.labels, 7, 1, 2, data.class_names, within_groups=1.0)


def test_evaluate_within_groups(tmp_path: Path, saved_model: Path) -> None:
    data = write_folder(tmp_path / "d", {f"A{c // 3}/c{c}": 4 for c in range(7)})
    args = ["evaluate", "--model", str(saved_model), "--data", str(data), "--split", "all",
            "--ways", "3", "--queries", "2", "--episodes", "20"]  # fmt: skip
    result = runner.invoke(app, [*args, "--within-groups"])
    assert result.exit_code == 0, result.output
    text = plain(result.output)
    assert "within one group" in text
    assert "left out: A2 (1)" in text
    knn = ["evaluate", "--model", str(saved_model), "--data", str(data), "--split", "all"]
    wrong = runner.invoke(app, [*knn, "--within-groups", "--protocol", "knn"])
    assert wrong.exit_code != 0
    assert "--within-groups does not apply to --protocol knn" in plain(wrong.output)


def test_conv4_width_is_an_encoder_setting_others_refuse() -> None:
    from sketchshot.config import EncoderConfig
    from sketchshot.encoders import create_encoder, encoder_arguments
    from sketchshot.errors import ConfigError

    args = encoder_arguments(EncoderConfig(name="conv4", width=96), 28)
    assert args == {"image_size": 28, "width": 96}
    encoder = create_encoder("conv4", **args)
    assert encoder.embedding_dim == 96
    assert encoder(torch.zeros(2, 1, 28, 28)).shape == (2, 96)
    with pytest.raises(ConfigError, match="encoder.width: resnet18 has no width setting"):
        encoder_arguments(EncoderConfig(name="resnet18", width=96), 32)
