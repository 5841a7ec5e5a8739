"""``sketchshot embed``: every image's encoder features to safetensors, .npy + JSON or CSV,
in the source's order, equal to what the model computes."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from helpers import sketch_array, write_folder, write_png
from sketchshot import engine
from sketchshot.cli import app
from sketchshot.config import DataConfig
from sketchshot.data import load_source
from sketchshot.evaluation import embed


def invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


@pytest.fixture
def expected(saved_model, tmp_path):
    root = write_folder(tmp_path / "data", {"cup": 3, "hat": 2})
    method, card = engine.load_model(saved_model)
    dataset = load_source(str(root), 28, DataConfig(source=str(root)))
    return root, dataset, embed(method, dataset.images, torch.device("cpu")).numpy()


def test_safetensors_hold_embeddings_labels_paths_and_classes(saved_model, tmp_path, expected):
    root, dataset, features = expected
    out = tmp_path / "emb.safetensors"
    done = invoke("embed", root, "--model", saved_model, "--out", out, "--json", "--batch-size", 2)
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)
    assert (result["images"], result["dim"], result["classes"]) == (5, 64, 2)
    with safe_open(str(out), "pt") as f:
        np.testing.assert_allclose(f.get_tensor("embeddings").numpy(), features, atol=1e-5)
        assert f.get_tensor("labels").tolist() == [0, 0, 0, 1, 1]
        meta = {k: json.loads(v) for k, v in f.metadata().items()}
    assert meta["paths"] == list(dataset.sources) == ["cup/00.png", "cup/01.png", "cup/02.png",
                                                       "hat/00.png", "hat/01.png"]  # fmt: skip
    assert meta["classes"] == ["cup"] * 3 + ["hat"] * 2
    assert meta["model_sha256"] == result["model_sha256"]


def test_npy_with_its_json_and_csv_rows(saved_model, tmp_path, expected):
    root, _, features = expected
    assert invoke("embed", root, "--model", saved_model, "--out", tmp_path / "e.npy").exit_code == 0
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), features, atol=1e-5)
    about = json.loads((tmp_path / "e.json").read_text())
    assert about["classes"][3] == "hat" and about["paths"][0] == "cup/00.png"
    assert invoke("embed", root, "--model", saved_model, "--out", tmp_path / "e.csv").exit_code == 0
    rows = list(csv.reader((tmp_path / "e.csv").open()))
    assert rows[0][:3] == ["path", "class", "f0"] and len(rows[0]) == 2 + 64
    assert rows[4][:2] == ["hat/00.png", "hat"]
    np.testing.assert_allclose(np.array(rows[1][2:], dtype=float), features[0], atol=1e-5)


def test_unlabelled_images_and_a_bad_suffix(saved_model, tmp_path):
    flat = tmp_path / "flat"
    for i in range(3):
        write_png(flat / f"{i}.png", sketch_array(i, 0))
    done = invoke("embed", flat, "--model", saved_model, "--out", tmp_path / "u.csv", "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["classes"] == 0
    assert [r[1] for r in csv.reader((tmp_path / "u.csv").open())][1:] == ["", "", ""]
    done = invoke("embed", flat, "--model", saved_model, "--out", tmp_path / "u.txt")
    assert done.exit_code != 0 and "--out must end in .safetensors, .npy, .csv" in done.stderr
    assert not (tmp_path / "u.txt").exists() and "Traceback" not in done.output
