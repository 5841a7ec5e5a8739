"""import-weights: a ResNet checkpoint from outside (a SimCLR repository's, torchvision's)
becomes a run folder that finetune, evaluate, enroll, predict, info and ``sketchshot.load``
take like a pretrain run; pickles need --trust-pickle; a backbone that does not fit is
refused with nothing written."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torchvision import models
from typer.testing import CliRunner

import sketchshot
from helpers import one_line_error, sketch_array, write_folder, write_png
from sketchshot import importing
from sketchshot.checkpoint import load_model
from sketchshot.cli import app
from sketchshot.cli.import_weights import RESNETS
from sketchshot.errors import CheckpointError
from sketchshot.importing import ImportConfig, ImportResult, import_weights

SIZE = 32  # image side of the imported runs, small to keep finetune and evaluate fast


def invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def simclr_resnet18() -> dict[str, torch.Tensor]:
    """A random ResNet-18 saved as SimCLR repositories save it: ``backbone.`` keys, with the
    projection MLP (Linear, ReLU, Linear) as ``backbone.fc``."""
    torch.manual_seed(0)
    net = models.resnet18(weights=None)
    net.fc = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 128))
    state = net.state_dict()
    state["bn1.running_mean"] = torch.randn(64)  # not the defaults, so a dropped one shows
    return {f"backbone.{k}": v for k, v in state.items()}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """The SimCLR checkpoint as such repositories save it: the state dict under 'state_dict'."""
    path = tmp_path_factory.mktemp("ckpt") / "simclr_stl10.pth.tar"
    torch.save({"epoch": 100, "arch": "resnet18", "state_dict": simclr_resnet18()}, path)
    return path


@pytest.fixture(scope="module")
def imported(checkpoint, tmp_path_factory) -> tuple[Path, dict]:
    """The checkpoint imported through the command line: (run folder, its --json output)."""
    run = tmp_path_factory.mktemp("imported") / "run"
    result = invoke(
        "import-weights", checkpoint, "--encoder", "resnet18", "--out", run,
        "--image-size", SIZE, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return run, json.loads(result.stdout)


def folded(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The encoder's ``net`` tensors the source should become: stem summed over RGB, no fc."""
    net = {k[len(prefix) :]: v for k, v in state.items() if not k.startswith(f"{prefix}fc.")}
    net["conv1.weight"] = net["conv1.weight"].sum(dim=1, keepdim=True)
    return net


def assert_encoder_is(run: Path, expected: dict[str, torch.Tensor]) -> None:
    method, _ = load_model(run)
    got = method.encoder.net.state_dict()
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


# ---------------------------------------------------------------- a SimCLR checkpoint


def test_a_simclr_checkpoint_becomes_an_ssl_run_with_the_folded_backbone(checkpoint, imported):
    run, payload = imported
    assert payload["prefix"] == "backbone." and payload["head"] == "kept"
    assert payload["tensors"] == 120
    assert sorted(p.name for p in run.iterdir()) == ["model.json", "model.safetensors"]
    assert_encoder_is(run, folded(simclr_resnet18(), "backbone."))
    card = json.loads((run / "model.json").read_text())
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert card["model"]["init"].startswith(f"imported from {checkpoint.name} (sha256 {digest})")
    assert (card["model"]["method"], card["model"]["kind"]) == ("simclr", "ssl")
    assert card["model"]["method_args"]["hidden_dim"] == 512
    assert card["model"]["method_args"]["projection_dim"] == 128
    assert card["preprocessing"]["image_size"] == SIZE


def test_info_shows_the_imported_run(checkpoint, imported):
    result = invoke("info", imported[0])
    assert result.exit_code == 0, result.output
    assert "simclr (ssl)" in result.stdout
    assert f"imported from {checkpoint.name}" in result.stdout
    assert "(verified)" in result.stdout


def test_the_kept_head_computes_the_checkpoints_projection(imported):
    """SimCLR's head (Linear, BatchNorm, ReLU, Linear) holds the file's Linear(bias), ReLU,
    Linear: the same function in eval mode."""
    method, _ = load_model(imported[0])
    state = simclr_resnet18()
    x = torch.randn(4, 512)
    hidden = torch.relu(x @ state["backbone.fc.0.weight"].T + state["backbone.fc.0.bias"])
    expected = hidden @ state["backbone.fc.2.weight"].T + state["backbone.fc.2.bias"]
    torch.testing.assert_close(method.head(x), expected, rtol=1e-4, atol=1e-5)


def test_the_imported_run_embeds_evaluates_enrolls_and_predicts(imported, tmp_path):
    run = imported[0]
    model = sketchshot.load(run, device="cpu")
    assert model.embed(torch.rand(2, 1, SIZE, SIZE)).shape == (2, 512)
    data = write_folder(tmp_path / "data", {"a": 3, "b": 3, "c": 3})
    ev = invoke(
        "evaluate", "--model", run, "--data", data, "--ways", 3, "--queries", 2,
        "--episodes", 2, "--json", "--quiet", "--device", "cpu",
    )  # fmt: skip
    assert ev.exit_code == 0, ev.output
    assert json.loads(ev.stdout)["split"] == "all"  # it saw none of these classes
    bank = tmp_path / "bank"
    en = invoke("enroll", "--support", data, "--model", run, "--out", bank, "-q")
    assert en.exit_code == 0, en.output
    query = write_png(tmp_path / "q.png", sketch_array(1, 2))
    pr = invoke("predict", query, "--bank", bank, "--json", "--quiet", "--device", "cpu")
    assert pr.exit_code == 0, pr.output


def test_finetune_starts_from_the_imported_run(imported, tmp_path):
    run, ft = imported[0], tmp_path / "ft"
    tiny = tmp_path / "tiny.toml"
    tiny.write_text("[data.builtin]\nn_classes = 10\nn_drawers = 4\n", encoding="utf-8")
    result = invoke(
        "finetune", "--init", run, "--config", tiny, "--split-fractions", 1, 0, 0,
        "--epochs", 1, "--episodes", 1, "--ways", 3, "--queries", 2, "--out", ft,
        "--quiet", "--device", "cpu",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    card = json.loads((ft / "model.json").read_text())
    assert card["model"]["init"] == str(run)
    assert card["model"]["encoder"] == "resnet18"
    assert card["preprocessing"]["image_size"] == SIZE


def test_finetune_init_with_a_checkpoint_file_says_to_import_it_first(checkpoint, tmp_path):
    result = invoke("finetune", "--init", checkpoint, "--out", tmp_path / "ft")
    assert result.exit_code == 2
    assert f"sketchshot import-weights {checkpoint}" in one_line_error(result)
    assert not (tmp_path / "ft").exists()


# ---------------------------------------------------------------- other shapes of checkpoint


def test_a_torchvision_state_dict_imports_without_prefix_and_a_fresh_head(tmp_path):
    torch.manual_seed(1)
    state = models.resnet18(weights=None).state_dict()  # fc: a 1000-way classifier
    torch.save(state, tmp_path / "resnet18.pth")
    r = import_weights(
        ImportConfig(source=tmp_path / "resnet18.pth", encoder="resnet18", out=tmp_path / "run")
    )
    assert (r.prefix, r.head, r.image_size) == ("", "fresh", 64)
    assert any("fc (fc.weight, fc.bias)" in n and "freshly initialised" in n for n in r.notes)
    assert_encoder_is(r.run_dir, folded(state, ""))


def test_pickled_objects_are_refused_unless_trusted(tmp_path):
    path = tmp_path / "lightning.ckpt"
    torch.save(
        {"hyper_parameters": argparse.Namespace(lr=0.1), "state_dict": simclr_resnet18()}, path
    )
    refused = invoke("import-weights", path, "--encoder", "resnet18", "--out", tmp_path / "no")
    assert refused.exit_code == 1
    line = one_line_error(refused)
    assert "--trust-pickle" in line and "argparse.Namespace" in line
    assert not (tmp_path / "no").exists()
    trusted = invoke(
        "import-weights", path, "--encoder", "resnet18", "--out", tmp_path / "yes",
        "--trust-pickle", "--image-size", SIZE, "-q",
    )  # fmt: skip
    assert trusted.exit_code == 0, trusted.output
    assert (tmp_path / "yes" / "model.json").is_file()


def test_resnet50_weights_into_resnet18_are_refused_with_nothing_written(tmp_path):
    torch.save(models.resnet50(weights=None).state_dict(), tmp_path / "r50.pth")
    result = invoke("import-weights", tmp_path / "r50.pth", "--encoder", "resnet18", "--out",
                    tmp_path / "run")  # fmt: skip
    assert result.exit_code == 1
    line = one_line_error(result)
    assert "does not fit resnet18" in line and "pass --encoder resnet50" in line
    assert not (tmp_path / "run").exists()


def test_several_backbones_need_a_prefix(tmp_path):
    """A BYOL-style file holds an online and a target network: which one is the user's call."""
    state = {k.replace("backbone.", "online.encoder."): v for k, v in simclr_resnet18().items()}
    state |= {k.replace("online.", "target."): v for k, v in state.items()}
    save_file = tmp_path / "byol.pt"
    torch.save({"model": state}, save_file)
    with pytest.raises(CheckpointError, match="2 backbones.*--prefix"):
        import_weights(ImportConfig(source=save_file, encoder="resnet18", out=tmp_path / "no"))
    assert not (tmp_path / "no").exists()
    r = import_weights(
        ImportConfig(source=save_file, encoder="resnet18", out=tmp_path / "run",
                     prefix="target.encoder", image_size=SIZE)
    )  # fmt: skip
    assert r.prefix == "target.encoder." and r.head == "kept"
    assert any("keys outside the backbone left out: online.encoder." in n for n in r.notes)


def test_nothing_that_maps_is_refused(tmp_path):
    torch.save({"weight": torch.zeros(3, 3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="no ResNet backbone found"):
        import_weights(
            ImportConfig(source=tmp_path / "other.pt", encoder="resnet18", out=tmp_path / "no")
        )
    assert not (tmp_path / "no").exists()


# ---------------------------------------------------------------- the command line


def test_the_cli_hands_its_options_to_the_engine(monkeypatch, tmp_path):
    calls = []

    def fake(cfg: ImportConfig) -> ImportResult:
        calls.append(cfg)
        return ImportResult(tmp_path, "resnet34", "simclr", 48, "f", "0" * 64, "e.", 1, "kept", ())

    monkeypatch.setattr(importing, "import_weights", fake)
    result = invoke(
        "import-weights", tmp_path / "f.pt", "--encoder", "resnet34", "--prefix", "encoder",
        "--image-size", 48, "--trust-pickle", "--out", tmp_path / "run",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert calls == [
        ImportConfig(
            source=tmp_path / "f.pt", encoder="resnet34", out=tmp_path / "run",
            prefix="encoder", image_size=48, trust_pickle=True,
        )
    ]  # fmt: skip
    bad = invoke("import-weights", tmp_path / "f.pt", "--encoder", "resnet34", "--image-size", 4)
    assert bad.exit_code == 2 and "--image-size" in one_line_error(bad)


def test_the_encoder_choices_are_the_importable_encoders():
    assert list(RESNETS) == importing.importable()


def test_a_run_saved_by_import_loads_its_tensors_strictly(imported):
    """The weights file holds exactly SimCLR's state (no stray keys from the checkpoint)."""
    method, _ = load_model(imported[0])
    assert load_file(str(imported[0] / "model.safetensors")).keys() == method.state_dict().keys()
