"""enroll and predict: class banks (create, add without re-encoding, remove, calibrate, refuse
another model) and streaming prediction (files, folders, globs, stdin; table, JSON lines, CSV;
unreadable files; reject threshold; batches)."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import sketchshot.bank as bank_module
from helpers import model_spec, one_line_error, plain, sketch_array, write_png
from sketchshot import engine
from sketchshot.bank import ClassBank, ModelRef, load_bank
from sketchshot.calibration import calibrate, pick_threshold
from sketchshot.card import with_card_digest
from sketchshot.checkpoint import load_model, save_model
from sketchshot.config import Config, EnrollConfig, PredictConfig
from sketchshot.encoders import create_encoder
from sketchshot.methods import METHODS, create_method
from sketchshot.prediction import BankScorer, predict_paths

SHAPES = [f"shape{i}" for i in range(5)]  # class i drawn as helpers.sketch_array(i, variant)


def write_classes(root: Path, classes: dict[str, tuple[int, range]]) -> Path:
    """``root/<name>/<variant>.png`` for ``{name: (shape index, variants)}``."""
    for name, (index, variants) in classes.items():
        for v in variants:
            write_png(root / name / f"{v:02d}.png", sketch_array(index, v))
    return root


def save_random_model(run: Path, seed: int, method: str = "protonet") -> Path:
    torch.manual_seed(seed)
    method_obj = create_method(method, create_encoder("conv4", image_size=28))
    save_model(
        run / "model",
        method_obj,
        {
            "model": model_spec(method, "conv4", 28),
            "preprocessing": {"image_size": 28, "invert": "auto", "mean": 0.5, "std": 0.5},
            "class_names": [],
            "config": Config().model_dump(mode="json"),
        },
    )
    return run


@pytest.fixture
def support(tmp_path) -> Path:
    """Five classes of four drawings each (variants 0-3), dark on white."""
    return write_classes(tmp_path / "support", {n: (i, range(4)) for i, n in enumerate(SHAPES)})


@pytest.fixture
def bank(saved_model, support, tmp_path) -> Path:
    engine.enroll(EnrollConfig(model=saved_model, support=support, out=tmp_path / "bank"))
    return tmp_path / "bank"


@pytest.fixture
def encoded(monkeypatch) -> list[int]:
    """Number of images each call of the bank's encoder pass embedded."""
    calls: list[int] = []
    real = bank_module.embed

    def counting(method, images, device, *args, **kwargs):
        calls.append(int(images.shape[0]))
        return real(method, images, device, *args, **kwargs)

    monkeypatch.setattr(bank_module, "embed", counting)
    return calls


def new_drawings(root: Path, variants=(10, 11, 12)) -> tuple[list[str], list[str]]:
    """Drawings of the five classes that are not in the support folder, and their classes."""
    paths, truths = [], []
    for i, name in enumerate(SHAPES):
        for v in variants:
            paths.append(str(write_png(root / f"{name}-{v}.png", sketch_array(i, v))))
            truths.append(name)
    return paths, truths


def json_rows(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines()]


# ---------------------------------------------------------------- enroll


def test_enroll_then_predict_labels_new_drawings(cli, saved_model, support, tmp_path):
    result = cli(
        "enroll", "--model", saved_model, "--support", support, "--out", tmp_path / "bank",
        "--json", "--device", "cpu",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["classes"] == dict.fromkeys(SHAPES, 4)
    assert summary["added"] == SHAPES and summary["threshold"] is None
    meta = json.loads((tmp_path / "bank.json").read_text(encoding="utf-8"))
    model = json.loads((saved_model / "model.json").read_text(encoding="utf-8"))
    assert meta["kind"] == "class_bank"
    assert meta["built_with"]["sha256"] == model["sha256"]
    assert meta["built_with"]["path"] == str(saved_model.resolve())
    assert [(c["name"], c["count"]) for c in meta["classes"]] == [(n, 4) for n in SHAPES]
    assert (meta["n_embeddings"], meta["embedding_dim"], meta["reject"]) == (20, 64, None)
    tensors = load_file(str(tmp_path / "bank.safetensors"))
    assert tensors["embeddings"].shape == (20, 64) and tensors["embeddings"].dtype == torch.float32
    assert tensors["labels"].tolist() == [c for c in range(5) for _ in range(4)]

    paths, truths = new_drawings(tmp_path / "q")
    result = cli("predict", *paths, "--bank", tmp_path / "bank", "--json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""  # no progress bar: stderr is not a terminal
    rows = json_rows(result)
    assert [r["path"] for r in rows] == paths
    # 15 of 15: the five shapes are far apart even for a randomly initialised conv4
    assert [r["label"] for r in rows] == truths
    for r in rows:
        assert r["best_class"] == r["label"] and r["error"] is None
        assert list(r["scores"]) == [r["label"], *list(r["scores"])[1:]] and len(r["scores"]) == 3
        assert abs(r["scores"][r["label"]] - r["confidence"]) < 1e-4 and 0.2 < r["confidence"] <= 1


def test_bank_predictions_equal_support_folder_predictions(saved_model, support, bank, tmp_path):
    paths, _ = new_drawings(tmp_path / "q")
    by_bank = list(engine.predict(PredictConfig(inputs=tuple(paths), bank=bank), quiet=True).rows)
    by_folder = engine.predict(
        PredictConfig(inputs=tuple(paths), support=support, model=saved_model), quiet=True
    )
    assert by_bank == list(by_folder.rows)  # exactly: the same embeddings, the same scores
    assert by_folder.classes_from == str(support) and by_folder.threshold is None


def test_adding_classes_encodes_only_them(saved_model, bank, tmp_path, encoded):
    before = load_bank(bank)
    extra = write_classes(tmp_path / "extra", {"aardvark": (5, range(3)), "zebra": (7, range(2))})
    result = engine.enroll(EnrollConfig(bank=bank, support=extra))
    assert encoded == [5]  # the two new classes' images, and nothing else
    assert result.added == ("aardvark", "zebra") and result.removed == ()
    after = load_bank(bank)
    assert after.class_names == ("aardvark", *SHAPES, "zebra")  # kept sorted
    assert after.counts() == [3, 4, 4, 4, 4, 4, 2]
    assert after.model == before.model
    for name in SHAPES:
        assert torch.equal(after.embeddings_of(name), before.embeddings_of(name)), name
    # and the bank labels the new classes' drawings
    paths = [str(write_png(tmp_path / f"q{i}.png", sketch_array(i, 9))) for i in (5, 7, 0)]
    rows = list(engine.predict(PredictConfig(inputs=tuple(paths), bank=bank), quiet=True).rows)
    assert [r.label for r in rows] == ["aardvark", "zebra", "shape0"]


def test_a_class_already_in_the_bank_needs_replace(cli, bank, tmp_path, encoded):
    before = load_bank(bank)
    redo = write_classes(tmp_path / "redo", {"shape0": (0, range(20, 23))})
    clash = cli("enroll", "--bank", bank, "--support", redo)
    assert clash.exit_code == 1
    line = one_line_error(clash)
    assert "1 class(es)" in line and "shape0" in line and "--replace" in line
    assert encoded == [] and load_bank(bank).counts() == before.counts()  # bank untouched

    result = cli("enroll", "--bank", bank, "--support", redo, "--replace", "--json")
    assert result.exit_code == 0, result.output
    assert encoded == [3]
    after = load_bank(bank)
    assert after.counts() == [3, 4, 4, 4, 4]
    assert not torch.equal(after.embeddings_of("shape0")[:3], before.embeddings_of("shape0")[:3])
    for name in SHAPES[1:]:
        assert torch.equal(after.embeddings_of(name), before.embeddings_of(name))


def test_removing_classes_encodes_nothing(cli, bank, tmp_path, encoded):
    before = load_bank(bank)
    out = tmp_path / "smaller"
    result = cli("enroll", "--bank", bank, "--remove", "shape1", "--remove", "shape[34]",
                 "--out", out, "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["removed"] == ["shape1", "shape3", "shape4"]
    assert encoded == []
    after = load_bank(out)
    assert after.class_names == ("shape0", "shape2") and after.counts() == [4, 4]
    for name in after.class_names:
        assert torch.equal(after.embeddings_of(name), before.embeddings_of(name))
    assert load_bank(bank).class_names == tuple(SHAPES)  # --out left the original alone

    missing = cli("enroll", "--bank", bank, "--remove", "nope")
    assert missing.exit_code == 1
    assert "no class of" in one_line_error(missing) and "'nope'" in missing.stderr
    everything = cli("enroll", "--bank", bank, "--remove", "shape*")
    assert everything.exit_code == 1
    assert "would remove every class" in one_line_error(everything)


def test_a_bank_refuses_another_model(cli, saved_model, bank, tmp_path):
    other = save_random_model(tmp_path / "other-run", seed=1)
    query = write_png(tmp_path / "q.png", sketch_array(0, 9))
    result = cli("predict", query, "--bank", bank, "--model", other)
    assert result.exit_code == 1
    line = one_line_error(result)
    assert "encoded with another model" in line and str(other) in line
    extra = write_classes(tmp_path / "extra", {"new": (7, range(2))})
    result = cli("enroll", "--bank", bank, "--support", extra, "--model", other)
    assert result.exit_code == 1
    assert "encoded with another model" in one_line_error(result)
    # the bank's own model is found from the bank
    assert cli("predict", query, "--bank", bank, "--json").exit_code == 0


def test_a_changed_bank_is_refused(cli, bank, tmp_path):
    weights = tmp_path / "bank.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    result = cli("predict", tmp_path / "q.png", "--bank", bank)
    assert result.exit_code == 1
    assert "sha256 does not match" in one_line_error(result)


def test_usage_errors_exit_2(cli, saved_model, support, bank, tmp_path):
    query = write_png(tmp_path / "q.png", sketch_array(0, 9))
    cases = [
        (("predict", "--bank", bank), "no images to label"),
        (("predict", query), "exactly one of --support DIR or --bank BANK"),
        (("predict", query, "--bank", bank, "--support", support), "exactly one of"),
        (("predict", query, "--bank", bank, "--json", "--csv"), "one of --json and --csv"),
        (("enroll", "--support", support, "--model", saved_model), "needs --out BANK"),
        (("enroll", "--support", support, "--model", saved_model, "--out", bank), "already holds"),
        (("enroll", "--bank", bank), "nothing to do"),
        (("enroll", "--remove", "shape0"), "needs --support DIR to create a bank"),
    ]
    for args, message in cases:
        result = cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert message in one_line_error(result), args


# ---------------------------------------------------------------- inputs and outputs


def test_files_folders_globs_and_stdin(cli, bank, tmp_path):
    a = [write_png(tmp_path / "q" / "a" / f"{i}.png", sketch_array(i, 9)) for i in (1, 0)]
    b = write_png(tmp_path / "q" / "b" / "deep" / "x.png", sketch_array(2, 9))
    (tmp_path / "q" / "b" / "notes.txt").write_text("not an image")
    write_png(tmp_path / "q" / "b" / ".hidden.png", sketch_array(3, 9))
    piped = [write_png(tmp_path / "piped" / f"{i}.png", sketch_array(i, 8)) for i in (4, 3)]
    stdin = f"{piped[0]}\n\n{piped[1]}\n"
    glob = str(tmp_path / "q" / "a" / "*.png")  # quoted: sketchshot expands it
    result = cli("predict", tmp_path / "q" / "b", glob, "-", "--bank", bank, "--json",
                 input=stdin)  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = json_rows(result)
    assert [r["path"] for r in rows] == [str(b), str(a[1]), str(a[0]), *map(str, piped)]
    assert [r["label"] for r in rows] == ["shape2", "shape0", "shape1", "shape4", "shape3"]

    recursive = cli("predict", str(tmp_path / "q" / "**" / "*.png"), "--bank", bank, "--json")
    assert [r["path"] for r in json_rows(recursive)] == [str(a[1]), str(a[0]), str(b)]


def test_csv_output_and_unreadable_files(cli, bank, tmp_path):
    good = write_png(tmp_path / "q" / "good.png", sketch_array(3, 9))
    broken = tmp_path / "q" / "broken.png"
    broken.write_bytes(np.random.default_rng(0).bytes(300))
    empty = tmp_path / "q" / "empty"
    empty.mkdir()
    nothing = str(tmp_path / "q" / "*.jpg")
    also_good = write_png(tmp_path / "q" / "also.png", sketch_array(1, 9))
    args = (good, broken, tmp_path / "missing.png", empty, nothing, also_good)
    result = cli("predict", *args, "--bank", bank, "--csv", "--top-k", 2)
    assert result.exit_code == 1
    assert plain(result.stderr).strip() == "error: 4 of 6 image(s) could not be read"
    reader = csv.DictReader(io.StringIO(result.stdout))
    assert reader.fieldnames == ["path", "label", "confidence", "similarity", "top1", "score1",
                                 "top2", "score2", "error"]  # fmt: skip
    rows = list(reader)
    assert [r["path"] for r in rows] == [str(a) for a in args]
    for row, label in ((rows[0], "shape3"), (rows[5], "shape1")):
        assert row["label"] == row["top1"] == label and row["error"] == ""
        assert abs(float(row["confidence"]) - float(row["score1"])) < 1e-4
        assert float(row["score1"]) >= float(row["score2"]) and row["top2"] != label
    errors = [r["error"] for r in rows[1:5]]
    assert "cannot read image" in errors[0] and "broken.png" in errors[0]
    assert errors[1] == f"no such file: {tmp_path / 'missing.png'}"
    assert errors[2] == f"no images in folder {empty}"
    assert errors[3] == f"no file matches {nothing}"
    assert all(
        r["label"] == r["confidence"] == r["similarity"] == r["top1"] == "" for r in rows[1:5]
    )
    assert all(-1 <= float(r["similarity"]) <= 1 for r in (rows[0], rows[5]))


def test_table_output(cli, bank, tmp_path):
    query = write_png(tmp_path / "q.png", sketch_array(4, 9))
    result = cli("predict", query, "--bank", bank)
    assert result.exit_code == 0, result.output
    text = plain(result.stdout)
    assert "shape4" in text and "5 classes from" in text and "bank.json" in text


def test_small_batches_give_the_same_rows_as_one_batch(saved_model, bank, tmp_path):
    paths, _ = new_drawings(tmp_path / "q", variants=(10,))
    broken = tmp_path / "q" / "broken.png"
    broken.write_bytes(b"not a png")
    paths = [*paths[:2], str(broken), *paths[2:], paths[0]]  # 7 paths, one unreadable
    method, meta = load_model(saved_model)
    scorer = BankScorer(method, load_bank(bank), torch.device("cpu"))
    seen: list[int] = []
    real = scorer.scores
    scorer.scores = lambda images: seen.append(len(images)) or real(images)
    done: list[int] = []
    small = list(predict_paths(scorer, paths, meta.preprocessing, 2, on_batch=done.append))
    assert done == [2, 2, 2, 1] and seen == [2, 1, 2, 1]  # never more than 2 images at once
    whole = list(predict_paths(scorer, paths, meta.preprocessing, 64))
    assert seen[4:] == [6]
    assert [r.path for r in small] == [r.path for r in whole] == paths
    assert [r.label for r in small] == [r.label for r in whole]
    assert small[2].error is not None and small[2].label is None
    for s, w in zip(small, whole, strict=True):
        assert s.confidence == pytest.approx(w.confidence, abs=1e-6)
        assert s.similarity == pytest.approx(w.similarity, abs=1e-4)


@pytest.mark.parametrize("method", [m for m in METHODS.names() if METHODS.get(m).kind == "fewshot"])
def test_every_few_shot_method_predicts_from_a_bank(method, support, tmp_path):
    run = save_random_model(tmp_path / method, seed=0, method=method)
    engine.enroll(EnrollConfig(model=run, support=support, out=tmp_path / "b"))
    paths, _ = new_drawings(tmp_path / "q", variants=(10,))
    rows = list(engine.predict(PredictConfig(inputs=tuple(paths), bank=tmp_path / "b")).rows)
    folder = engine.predict(PredictConfig(inputs=tuple(paths), support=support, model=run))
    assert rows == list(folder.rows)
    for r in rows:
        assert r.label in SHAPES and 0 < r.confidence <= 1
        assert sum(r.scores.values()) <= 1.0001 and len(r.scores) == 3


# ---------------------------------------------------------------- unknown classes


def test_reject_below_labels_dissimilar_sketches_unknown(cli, bank, tmp_path):
    paths, _ = new_drawings(tmp_path / "q", variants=(10, 11))
    plain_rows = json_rows(cli("predict", *paths, "--bank", bank, "--json"))
    similarities = sorted(r["similarity"] for r in plain_rows)
    cut = (similarities[4] + similarities[5]) / 2  # five rows below, five above
    result = cli("predict", *paths, "--bank", bank, "--json", "--reject-below", cut)
    assert result.exit_code == 0, result.output
    rows = json_rows(result)
    assert sum(r["label"] == "unknown" for r in rows) == 5
    for before, after in zip(plain_rows, rows, strict=True):
        assert after["best_class"] == before["label"]
        assert after["label"] == ("unknown" if before["similarity"] < cut else before["label"])
        assert after["scores"] == before["scores"]


def test_pick_threshold_rejects_at_most_the_target_share_of_known():
    known = np.linspace(0.50, 0.99, 20)
    unknown = np.array([0.30, 0.52, 0.60, 0.95])
    value, false_reject, false_accept = pick_threshold(known, unknown, 0.05)
    assert value == pytest.approx(known[1]) and false_reject == 0.05 and false_accept == 0.5
    value, false_reject, false_accept = pick_threshold(known, unknown, 0.0)
    assert value == 0.50 and false_reject == 0.0 and false_accept == 0.75
    value, false_reject, false_accept = pick_threshold(known, unknown, 0.5)
    assert value == pytest.approx(known[10]) and false_reject == 0.5 and false_accept == 0.25


def test_calibration_separates_held_out_classes_on_clustered_embeddings(saved_model):
    """Six tight clusters on orthogonal directions: a held-out drawing of a known class has
    similarity ~1 to its class mean; one of an unknown class ~0 to all five others."""
    _, meta = load_model(saved_model)
    g = torch.Generator().manual_seed(0)
    centres = torch.eye(64)[:6] * 3
    embeddings = centres.repeat_interleave(4, 0) + 0.01 * torch.randn(24, 64, generator=g)
    bank = ClassBank(
        embeddings, torch.arange(6).repeat_interleave(4), tuple("abcdef"), ("x",) * 6,
        ModelRef.of(meta), meta.preprocessing,
    )  # fmt: skip
    t = calibrate(bank, torch.device("cpu"))
    # 6 episodes, each with 5 known classes (one query each) and 4 drawings of the unknown one
    assert (t.episodes, t.known_queries, t.unknown_queries) == (6, 30, 24)
    assert 0.999 < t.value <= 1 and t.false_accept == 0.0 and t.false_reject <= 0.05
    assert t.statistic == "nearest_class_similarity" and t.target_false_reject == 0.05


def test_calibrated_threshold_is_stored_and_used(cli, bank, tmp_path):
    result = cli("enroll", "--bank", bank, "--calibrate", "--json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    reject = json.loads((tmp_path / "bank.json").read_text(encoding="utf-8"))["reject"]
    assert json.loads(result.stdout)["threshold"] == reject
    assert -1 <= reject["value"] <= 1 and reject["statistic"] == "nearest_class_similarity"
    # 5 episodes: 4 known queries each (one per other class), 4 drawings of the unknown class
    assert (reject["episodes"], reject["known_queries"], reject["unknown_queries"]) == (5, 20, 20)
    assert reject["target_false_reject"] == 0.05 and reject["false_reject"] <= 0.05
    assert 0 <= reject["false_accept"] <= 1

    paths, _ = new_drawings(tmp_path / "q")
    rows = json_rows(cli("predict", *paths, "--bank", bank, "--json"))
    for r in rows:
        assert r["label"] == ("unknown" if r["similarity"] < reject["value"] else r["best_class"])
    off = json_rows(cli("predict", *paths, "--bank", bank, "--json", "--reject-below", -1))
    assert all(r["label"] == r["best_class"] for r in off)
    table = plain(cli("predict", paths[0], "--bank", bank).stdout)
    assert f"unknown below similarity {reject['value']:.3f} (calibrated in" in table

    looser = cli("enroll", "--bank", bank, "--false-reject", 0.5, "--json")
    assert json.loads(looser.stdout)["threshold"]["target_false_reject"] == 0.5
    assert json.loads(looser.stdout)["threshold"]["value"] >= reject["value"]


def test_a_threshold_on_another_statistic_is_refused(cli, bank, tmp_path):
    assert cli("enroll", "--bank", bank, "--calibrate").exit_code == 0
    sidecar = tmp_path / "bank.json"
    meta = json.loads(sidecar.read_text(encoding="utf-8"))
    meta["reject"]["statistic"] = "max_probability"
    sidecar.write_text(json.dumps(with_card_digest(meta)), encoding="utf-8")  # consistent
    result = cli("predict", str(sidecar), "--bank", bank)
    assert result.exit_code == 1
    assert "calibrate it again with enroll --bank BANK --calibrate" in plain(result.stderr)


def test_a_calibrated_bank_is_recalibrated_after_a_change(cli, bank, tmp_path, encoded):
    assert cli("enroll", "--bank", bank, "--calibrate").exit_code == 0
    extra = write_classes(tmp_path / "extra", {"zebra": (6, range(3))})
    result = cli("enroll", "--bank", bank, "--support", extra, "--json")
    reject = json.loads(result.stdout)["threshold"]
    assert reject["episodes"] == 6 and reject["known_queries"] == 30
    assert encoded == [3]
    # down to two classes calibration is impossible: the threshold goes, with a note
    result = cli("enroll", "--bank", bank, "--remove", "shape[1-4]")
    assert result.exit_code == 0, result.output
    assert "reject threshold dropped" in plain(result.stderr)
    assert load_bank(bank).threshold is None


def test_calibration_needs_two_images_in_two_classes(cli, saved_model, tmp_path):
    one_each = write_classes(tmp_path / "one", {n: (i, range(1)) for i, n in enumerate(SHAPES)})
    result = cli("enroll", "--model", saved_model, "--support", one_each,
                 "--out", tmp_path / "b", "--calibrate")  # fmt: skip
    assert result.exit_code == 1
    line = one_line_error(result)
    assert "at least 3 classes, 2 of them with 2 or more images" in line
    assert not (tmp_path / "b.json").exists()


# ---------------------------------------------------------------- command line -> engine


def test_cli_builds_the_predict_and_enroll_configs(cli, monkeypatch, tmp_path):
    seen: dict = {}

    def fake_predict(cfg, quiet=False, console=None, stdin=None):
        seen["predict"], seen["quiet"] = cfg, quiet
        return engine.PredictionRun("m", "b", ("a",), None, None, iter(()))

    def fake_enroll(cfg):
        seen["enroll"] = cfg
        return engine.EnrollResult(Path("b.json"), "m", {"a": 1}, ("a",), (), None, (), 0.0)

    monkeypatch.setattr(engine, "predict", fake_predict)
    monkeypatch.setattr(engine, "enroll", fake_enroll)
    result = cli("predict", "x.png", "dir", "--bank", "b", "--top-k", 5, "--reject-below", 0.4,
                 "--batch-size", 32, "--json", "--quiet", "--device", "cpu")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert seen["predict"] == PredictConfig(
        inputs=("x.png", "dir"), bank=Path("b"), top_k=5, reject_below=0.4, batch_size=32,
        device="cpu",
    )  # fmt: skip
    assert seen["quiet"] is True
    result = cli("enroll", "--bank", "b", "--support", "s", "--classes", "Greek", "--shots", 2,
                 "--remove", "x", "--replace", "--false-reject", 0.1, "--out", "c")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert seen["enroll"] == EnrollConfig(
        bank=Path("b"), support=Path("s"), classes=("Greek",), shots=2, remove=("x",),
        replace=True, false_reject=0.1, out=Path("c"),
    )  # fmt: skip


def test_enroll_classes_and_shots_from_a_zip(cli, saved_model, tmp_path):
    folder = write_classes(
        tmp_path / "data" / "root",
        {"Greek/alpha": (0, range(5)), "Greek/beta": (1, range(5)), "Latin/a": (2, range(5))},
    )
    archive = shutil.make_archive(str(tmp_path / "data"), "zip", folder.parent)
    result = cli("enroll", "--model", saved_model, "--support", archive, "--classes", "Greek",
                 "--shots", 2, "--out", tmp_path / "greek", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["classes"] == {"Greek/alpha": 2, "Greek/beta": 2}
    sources = [c["source"] for c in json.loads((tmp_path / "greek.json").read_text())["classes"]]
    assert sources == [archive, archive]
