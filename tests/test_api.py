"""The Python API: ``sketchshot.load`` + ``Model.embed`` / ``enroll`` / ``predict`` on paths,
PIL images, numpy arrays and tensors; lazy top-level exports; the example script."""

from __future__ import annotations

import dataclasses
import json
import re
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sketchshot
from helpers import sketch_array, write_folder, write_png
from sketchshot import engine
from sketchshot.bank import load_bank, save_bank
from sketchshot.card import with_card_digest
from sketchshot.config import PredictConfig
from sketchshot.errors import CheckpointError, DataError
from sketchshot.evaluation import one_thread

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def model(saved_model):
    return sketchshot.load(saved_model, device="cpu")


def test_import_stays_free_of_torch_and_exports_resolve():
    code = "import sketchshot, sys; assert 'torch' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    for name in sketchshot.__all__:
        assert getattr(sketchshot, name) is not None
    assert sketchshot.Model.__module__ == "sketchshot.api"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        sketchshot.nope  # noqa: B018


def test_readme_lists_every_export():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Python API", 1)[1].split("\n## ", 1)[0]
    missing = [n for n in sketchshot.__all__ if f"`{n}`" not in section]
    assert not missing, f"README's Python API section does not name {missing}"


def test_load_rebuilds_the_model_and_its_preprocessing(model, saved_model):
    assert model.image_size == 28 and model.preprocessing.invert == "auto"
    assert model.card.file == saved_model / "model.json" and model.class_names == ()
    assert not model.method.training
    assert "protonet/conv4" in repr(model)
    with pytest.raises(CheckpointError, match="no saved model"):
        sketchshot.load(saved_model / "missing", device="cpu")


def test_every_input_kind_gives_the_embedding_of_the_file(model, tmp_path):
    """The same drawing as a file, PIL images (grey, RGBA, 16-bit), arrays (uint8, uint16,
    float, RGB) and tensors (uint8, float) embeds identically; a dark-on-white scan as its
    bright-on-dark negative (invert=auto)."""
    scan = sketch_array(2, 0, size=40)  # dark strokes on white, not the model's 28 px
    path = write_png(tmp_path / "scan.png", scan)
    pixels = model.preprocess(path)
    assert pixels.dtype == torch.uint8 and pixels.shape == (1, 1, 28, 28)
    assert pixels.float().mean() < 127.5  # inverted: strokes bright on dark
    inputs = [
        str(path),
        Image.open(path),
        Image.fromarray(scan).convert("RGBA"),
        Image.fromarray(scan.astype(np.uint16) * 257),
        scan,
        scan.astype(np.float32) / 255,
        np.repeat(scan[..., None], 3, axis=2),
        255 - scan,  # the negative: already bright on dark, so not inverted again
        pixels[0],  # [1, S, S] uint8
        pixels.float() / 255,  # [1, 1, S, S] float in [0, 1]
    ]
    assert torch.equal(model.preprocess(inputs), pixels.expand(len(inputs), 1, 28, 28))
    features = model.embed(inputs)
    assert features.shape == (len(inputs), 64) and features.device.type == "cpu"
    assert not features.requires_grad
    assert torch.equal(features, features[:1].expand_as(features))
    alone = model.embed(scan)  # one image, not in a list (another batch: float rounding)
    assert alone.shape == (1, 64) and torch.allclose(alone, features[:1], atol=1e-6)


def test_a_model_fitted_to_ink_decodes_files_and_images_that_way(saved_model, tmp_path):
    """preprocessing.fit = "ink" in the card: every path and image is cropped to its drawing,
    as training decoded its data, so a drawing in a page's corner preprocesses like the same
    drawing centred; a page-fit model sees two different pictures."""
    card = saved_model / "model.json"
    page = sketchshot.load(saved_model, device="cpu")
    data = json.loads(card.read_text(encoding="utf-8"))
    data["preprocessing"]["fit"] = "ink"
    card.write_text(json.dumps(with_card_digest(data), indent=2), encoding="utf-8")
    ink = sketchshot.load(saved_model, device="cpu")
    assert ink.preprocessing.fit == "ink" and page.preprocessing.fit == "page"
    drawing = sketch_array(1, 0, size=40)
    corner = np.full((120, 120), 255, np.uint8)
    corner[:40, 80:] = drawing  # the same drawing, small, in the top-right corner of a page
    path = write_png(tmp_path / "corner.png", corner)
    for m, alike in ((ink, True), (page, False)):
        centred, cornered, file = m.preprocess(
            [drawing, Image.fromarray(corner), str(path)]
        ).float()
        assert torch.equal(cornered, file)
        close = (centred - cornered).abs().mean() < 0.3 * centred.mean()
        assert bool(close) is alike


def test_bad_inputs_are_domain_errors(model, tmp_path):
    with pytest.raises(DataError, match=r"\[N, 1, 28, 28\]"):
        model.embed(torch.zeros(2, 3, 28, 28))
    with pytest.raises(DataError, match=r"float in \[0, 1\]"):
        model.embed(torch.full((28, 28), 255.0))
    with pytest.raises(DataError, match="not an image"):
        model.embed([sketch_array(0, 0), 3.5])
    with pytest.raises(DataError, match="blank"):
        model.embed(np.zeros((28, 28), np.uint8))
    with pytest.raises(DataError, match="no such file"):
        model.embed(tmp_path / "missing.png")
    with pytest.raises(DataError, match="no images"):
        model.embed([])


def test_predict_against_a_folder_equals_the_engine(model, saved_model, tmp_path):
    support = write_folder(tmp_path / "support", {"a": 2, "b": 2, "c": 2})
    queries = [str(write_png(tmp_path / "q" / f"{c}{v}.png", sketch_array(c, v)))
               for c in range(3) for v in (5, 6)]  # fmt: skip
    cfg = PredictConfig(inputs=tuple(queries), model=saved_model, support=support, device="cpu")
    expected = [row.as_dict() for row in engine.predict(cfg, quiet=True).rows]
    rows = model.predict(queries, support)
    assert [row.as_dict() for row in rows] == expected
    assert [row.label for row in rows] == ["a", "a", "b", "b", "c", "c"]  # a random conv4 will do

    # the same support as a dict of arrays in memory, and as a bank on disk
    in_memory = {name: [sketch_array(i, v) for v in range(2)] for i, name in enumerate("abc")}
    assert [r.as_dict() for r in model.predict(queries, in_memory)] == expected
    save_bank(model.enroll(support), tmp_path / "bank")
    assert [r.as_dict() for r in model.predict(queries, tmp_path / "bank")] == expected
    assert [r.as_dict() for r in model.predict(queries, load_bank(tmp_path / "bank"))] == expected

    pil = model.predict(Image.open(queries[0]), support, top_k=1, reject_below=1.0)
    assert pil[0].path == "<image 0>" and pil[0].label == "unknown"
    assert pil[0].best_class == "a" and list(pil[0].scores) == ["a"]
    assert model.predict([], support) == []


def test_predict_refuses_a_bank_of_another_model(model):
    bank = model.enroll({"a": sketch_array(0, 0), "b": sketch_array(1, 0)})
    bank = dataclasses.replace(bank, model=bank.model.model_copy(update={"sha256": "0" * 64}))
    with pytest.raises(CheckpointError, match="encoded with another model"):
        model.predict(sketch_array(0, 1), bank)
    with pytest.raises(DataError, match="at least one image"):
        model.enroll({"a": sketch_array(0, 0), "b": []})


def test_the_example_script_runs(capsys):
    with one_thread():  # tiny tensors: on busy cores, a thread pool waits on itself (10x)
        runpy.run_path(str(ROOT / "examples" / "python_api.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "give the same features: True" in out
    right, total = map(int, re.search(r"(\d+)/(\d+) right", out).groups())
    assert total == 20 and right / total > 0.5  # 4-way: chance is 0.25
