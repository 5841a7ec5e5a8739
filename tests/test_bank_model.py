"""A class bank finds its model after the model or the bank moved: by ``--model`` (hash
checked), its bundled copy (``enroll --bundle``), a model beside it, or the run folder it
was encoded with; otherwise one line says where it looked. Banks written before ``bundled``
existed still load; ``sketchshot.load(bank)`` finds the model the same way."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import sketchshot
from helpers import model_spec, one_line_error, plain, sketch_array, write_folder, write_png
from sketchshot import engine
from sketchshot.bank import bundled_files, find_model, load_bank
from sketchshot.card import with_card_digest
from sketchshot.checkpoint import save_model
from sketchshot.config import EnrollConfig, PredictConfig
from sketchshot.encoders import create_encoder
from sketchshot.errors import CheckpointError
from sketchshot.methods import create_method

CLASSES = {"cup": 3, "hat": 3, "key": 3}


@pytest.fixture
def queries(tmp_path) -> list[str]:
    return [str(write_png(tmp_path / "q" / f"{c}{v}.png", sketch_array(c, v)))
            for c in range(3) for v in (7, 8)]  # fmt: skip


def labels(cli, bank: Path, queries: list[str], *args: object) -> list[dict]:
    """predict's rows (JSON lines) for ``queries`` against ``bank``."""
    result = cli("predict", *queries, "--bank", bank, "--json", "--device", "cpu", *args)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def enrolled(cli, saved_model: Path, tmp_path: Path, *args: object) -> Path:
    support = write_folder(tmp_path / "support", CLASSES)
    bank = tmp_path / "banks" / "bank"
    done = cli("enroll", "--model", saved_model, "--support", support, "--out", bank, *args)
    assert done.exit_code == 0, done.output
    return bank


def move_bank(bank: Path, to: Path) -> Path:
    """Move every ``BANK.*`` file (the bank, and its model where it carries one) to ``to``."""
    to.mkdir(parents=True, exist_ok=True)
    for path in bank.parent.glob(f"{bank.name}.*"):
        shutil.move(path, to / path.name)
    return to / bank.name


def test_a_moved_run_is_found_by_model_beside_the_bank_or_nowhere(
    cli, saved_model, tmp_path, queries
):
    bank = enrolled(cli, saved_model, tmp_path)
    before = labels(cli, bank, queries)
    moved = saved_model.rename(tmp_path / "elsewhere")

    lost = cli("predict", *queries, "--bank", bank)
    line = one_line_error(lost)
    assert lost.exit_code == 1 and "needs the model it was encoded with (protonet/conv4" in line
    assert f"encoded with, {saved_model}, is not there any more" in line
    assert "--model RUN" in line and "enroll --bundle" in line

    assert labels(cli, bank, queries, "--model", moved) == before  # given, and hash-checked
    shutil.copytree(moved, bank.parent / "model-run")  # a run folder beside the bank
    assert labels(cli, bank, queries) == before
    shutil.rmtree(bank.parent / "model-run")
    for name in ("model.json", "model.safetensors"):  # the model's files beside the bank
        shutil.copy(moved / name, bank.parent / name)
    assert labels(cli, bank, queries) == before
    assert (
        find_model(load_bank(bank).model, bank.with_suffix(".json")) == bank.parent / "model.json"
    )


def test_a_bundled_bank_carries_its_model(cli, saved_model, tmp_path, queries):
    bank = enrolled(cli, saved_model, tmp_path, "--bundle")
    card, weights = bundled_files(bank)
    assert card.name == "bank.model.json" and weights.is_file()
    meta = json.loads(bank.with_suffix(".json").read_text())
    assert meta["built_with"]["bundled"] == "bank.model.json"
    assert meta["built_with"]["path"] == str(saved_model.resolve())  # still recorded, as a hint
    before = labels(cli, bank, queries)

    shutil.rmtree(saved_model)  # the run is gone, and the bank goes somewhere else
    bank = move_bank(bank, tmp_path / "shipped")
    assert labels(cli, bank, queries) == before

    info = cli("info", bank.with_suffix(".json"))
    assert info.exit_code == 0 and "its own copy of the model, bank.model.json" in info.stdout
    unbundled = enrolled(cli, bank.with_suffix(".model.json"), tmp_path / "again")
    info = cli("info", unbundled.with_suffix(".json"), "--json")
    assert json.loads(info.stdout)["built_with"]["bundled"] is None
    shown = " ".join(plain(cli("info", unbundled.with_suffix(".json")).stdout).split())
    assert "bundled │ no: the model is found by --model" in shown

    # only the bank's two files moved: the error names the missing copy
    alone = tmp_path / "alone"
    alone.mkdir()
    for suffix in (".json", ".safetensors"):
        shutil.copy(bank.with_suffix(suffix), alone / f"bank{suffix}")
    line = one_line_error(cli("predict", *queries, "--bank", alone / "bank"))
    assert "its bundled copy bank.model.json is missing" in line


def test_bundled_weights_that_were_changed_are_refused(cli, saved_model, tmp_path, queries):
    bank = enrolled(cli, saved_model, tmp_path, "--bundle")
    shutil.rmtree(saved_model)
    weights = bundled_files(bank)[1]
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    line = one_line_error(cli("predict", *queries, "--bank", bank))
    assert "bank.model.safetensors: sha256 does not match its sidecar" in line


def test_model_is_checked_before_the_bundled_copy(cli, saved_model, tmp_path, queries):
    bank = enrolled(cli, saved_model, tmp_path, "--bundle")
    torch.manual_seed(1)
    other = tmp_path / "other"
    save_model(
        other / "model",
        create_method("protonet", create_encoder("conv4", image_size=28)),
        {"model": model_spec("protonet", "conv4", 28), "preprocessing": {"image_size": 28}},
    )
    line = one_line_error(cli("predict", *queries, "--bank", bank, "--model", other))
    assert "encoded with another model" in line and str(other) in line


def test_bundle_an_existing_bank_and_keep_the_bundle_through_changes(cli, saved_model, tmp_path):
    bank = enrolled(cli, saved_model, tmp_path)
    assert not bundled_files(bank)[0].exists()
    done = cli("enroll", "--bank", bank, "--bundle", "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["bundled"] == "bank.model.json"
    assert load_bank(bank).model.bundled == "bank.model.json"

    # a change written elsewhere carries its own copy; the model is not needed at its old place
    shutil.rmtree(saved_model)
    out = tmp_path / "smaller"
    done = cli("enroll", "--bank", bank, "--remove", "hat", "--out", out)
    assert done.exit_code == 0, done.output
    assert "its own copy smaller.model.json" in plain(done.stdout)
    assert load_bank(out).model.bundled == "smaller.model.json" and bundled_files(out)[1].is_file()
    extra = write_folder(tmp_path / "extra", {"sun": 2})
    done = cli("enroll", "--bank", out, "--support", extra)  # encodes with the bundled model
    assert done.exit_code == 0, done.output
    assert load_bank(out).class_names == ("cup", "key", "sun")


def test_a_bank_written_before_bundling_still_loads_and_finds_its_model(
    cli, saved_model, tmp_path, queries
):
    bank = enrolled(cli, saved_model, tmp_path)
    before = labels(cli, bank, queries)
    sidecar = bank.with_suffix(".json")
    data = json.loads(sidecar.read_text())
    del data["built_with"]["bundled"]  # as sketchshot wrote banks before this field
    sidecar.write_text(json.dumps(with_card_digest(data), indent=2))
    assert load_bank(bank).model.bundled is None
    assert labels(cli, bank, queries) == before  # at its recorded path
    moved = saved_model.rename(tmp_path / "banks" / "renamed-run")  # now beside the bank
    assert labels(cli, bank, queries) == before
    assert find_model(load_bank(bank).model, sidecar) == moved / "model.json"


def test_the_python_api_loads_a_bank_with_its_model(saved_model, tmp_path, queries):
    support = write_folder(tmp_path / "support", CLASSES)
    bank = tmp_path / "bank"
    engine.enroll(EnrollConfig(model=saved_model, support=support, out=bank, bundle=True))
    cfg = PredictConfig(inputs=tuple(queries), bank=bank, device="cpu")
    expected = [row.as_dict() for row in engine.predict(cfg, quiet=True).rows]
    moved = saved_model.rename(tmp_path / "moved-run")
    shipped = move_bank(bank, tmp_path / "shipped")

    model = sketchshot.load(shipped, device="cpu")  # the bundled copy
    assert model.bank is not None and model.card.sha256 == load_bank(shipped).model.sha256
    assert [row.as_dict() for row in model.predict(queries)] == expected
    for suffix in (".model.json", ".model.safetensors"):
        shipped.with_suffix(suffix).unlink()
    with pytest.raises(CheckpointError, match="bundled copy bank.model.json is missing"):
        sketchshot.load(shipped, device="cpu")
    model = sketchshot.load(shipped.with_suffix(".json"), device="cpu", model=moved)
    assert [row.as_dict() for row in model.predict(queries)] == expected
    with pytest.raises(sketchshot.ConfigError, match="predict needs classes"):
        sketchshot.load(moved, device="cpu").predict(queries)
