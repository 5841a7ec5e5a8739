"""Checkpoints: safetensors beside a JSON sidecar, hash-checked, strictly loaded, no pickle."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import pytest
import torch

from helpers import model_spec
from sketchshot.card import with_card_digest
from sketchshot.checkpoint import (
    FORMAT_VERSION,
    atomic_write,
    load_model,
    load_training_state,
    save_model,
    save_training_state,
)
from sketchshot.encoders import create_encoder
from sketchshot.errors import CheckpointError
from sketchshot.methods import create_method
from sketchshot.methods.ssl.base import TwoViews

SIMCLR_ARGS = {"hidden_dim": 16, "projection_dim": 8, "temperature": 0.5}


def simclr(size: int = 28):
    return create_method("simclr", create_encoder("conv4", image_size=size), **SIMCLR_ARGS)


@pytest.fixture
def saved(tmp_path: Path):
    torch.manual_seed(0)
    method = simclr().eval()
    sidecar = {
        "model": model_spec("simclr", "conv4", 28, **SIMCLR_ARGS),
        "preprocessing": {"image_size": 28},
        "class_names": ["a"],
    }
    weights = save_model(tmp_path / "run" / "model", method, sidecar)
    return method, weights, tmp_path / "run" / "model.json"


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def write_json(path: Path, data: dict) -> None:
    """Rewrite a card as a tool that keeps it consistent would, with a fresh card_sha256, so
    that what the tests below reach is the check behind the digest (test_integrity.py has
    the edits the digest refuses)."""
    path.write_text(json.dumps(with_card_digest(data)), encoding="utf-8")


def test_round_trip_from_folder_weights_or_sidecar(saved):
    method, weights, sidecar = saved
    assert weights == sidecar.with_suffix(".safetensors")
    meta = read_json(sidecar)
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["weights"] == "model.safetensors"
    assert meta["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert meta["class_names"] == ["a"]
    x = torch.rand(3, 1, 28, 28)
    for path in (sidecar.parent, weights, sidecar):
        loaded, loaded_meta = load_model(path)
        assert loaded_meta.sha256 == meta["sha256"]
        with torch.no_grad():
            assert torch.equal(loaded.encoder(x), method.encoder(x))
        for key, value in method.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), key


def test_no_pickle_the_weights_are_plain_safetensors(saved):
    method, weights, _ = saved
    raw = weights.read_bytes()
    assert not raw.startswith(b"PK")  # torch.save's zip
    assert raw[:1] != b"\x80"  # a pickle protocol header
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_len])
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    state = method.state_dict()
    assert set(tensors) == set(state)
    end = 0
    for key, entry in tensors.items():
        assert entry["shape"] == list(state[key].shape), key
        end = max(end, entry["data_offsets"][1])
    assert len(raw) == 8 + header_len + end  # nothing hides after the tensors
    assert sorted(p.suffix for p in weights.parent.iterdir()) == [".json", ".safetensors"]


def test_tampered_weights_fail_the_hash(saved):
    _, weights, _ = saved
    raw = bytearray(weights.read_bytes())
    raw[-5] ^= 0x01  # one bit of one weight
    weights.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="sha256"):
        load_model(weights)


def test_wrong_format_version(saved):
    _, _, sidecar = saved
    meta = read_json(sidecar)
    write_json(sidecar, meta | {"format_version": FORMAT_VERSION + 1})
    with pytest.raises(CheckpointError, match="format version"):
        load_model(sidecar)
    write_json(sidecar, {k: v for k, v in meta.items() if k != "format_version"})
    with pytest.raises(CheckpointError, match="format version"):
        load_model(sidecar)


def test_sidecar_that_is_not_json(saved):
    _, _, sidecar = saved
    sidecar.write_text("{not json", encoding="utf-8")
    with pytest.raises(CheckpointError, match="not a valid JSON sidecar"):
        load_model(sidecar)


def test_sidecar_describing_another_shape_is_refused(saved):
    # the sidecar says 32 px, so the projection head expects 256 inputs, the weights hold 64
    _, _, sidecar = saved
    meta = read_json(sidecar)
    meta["model"]["encoder_args"]["image_size"] = 32
    write_json(sidecar, meta)
    with pytest.raises(CheckpointError, match="do not match the model in its sidecar"):
        load_model(sidecar)


def test_sidecar_with_other_method_args_is_refused(saved):
    _, _, sidecar = saved
    meta = read_json(sidecar)
    meta["model"]["method_args"]["hidden_dim"] = 17
    write_json(sidecar, meta)
    with pytest.raises(CheckpointError, match="do not match"):
        load_model(sidecar)


def test_weights_of_another_method_are_refused_even_with_their_hash(tmp_path, saved):
    _, _, sidecar = saved
    other = create_method("protonet", create_encoder("conv4"))
    other_weights = save_model(
        tmp_path / "other" / "model",
        other,
        {"model": model_spec("protonet", "conv4", 28), "preprocessing": {"image_size": 28}},
    )
    # swap in the other model's weights and their (valid) hash: the hash passes, the keys fail
    sidecar.with_suffix(".safetensors").write_bytes(other_weights.read_bytes())
    meta = read_json(sidecar)
    meta["sha256"] = read_json(other_weights.with_suffix(".json"))["sha256"]
    write_json(sidecar, meta)
    with pytest.raises(CheckpointError, match="do not match"):
        load_model(sidecar)


def test_unknown_names_and_missing_pieces(saved, tmp_path):
    _, weights, sidecar = saved
    meta = read_json(sidecar)
    meta["model"]["encoder"] = "conv9"
    write_json(sidecar, meta)
    with pytest.raises(CheckpointError, match="conv9"):
        load_model(sidecar)
    weights.unlink()
    with pytest.raises(CheckpointError, match="weights file missing"):
        load_model(sidecar)
    with pytest.raises(CheckpointError, match="no saved model"):
        load_model(tmp_path / "nowhere")


def train_steps(method, optimizer, steps: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        views = TwoViews(*torch.rand(2, 8, 1, 28, 28, generator=g))
        loss = method.training_step(views)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize("optimizer_name", ["adam", "sgd"])
def test_training_state_restores_weights_optimizer_and_rng(tmp_path, optimizer_name):
    def make_optimizer(params):
        if optimizer_name == "sgd":
            return torch.optim.SGD(params, lr=0.05, momentum=0.9)
        return torch.optim.Adam(params, lr=0.01)

    torch.manual_seed(0)
    method = simclr().train()
    optimizer = make_optimizer(method.parameters())
    train_steps(method, optimizer, 2, seed=1)
    loop = {"epoch": 1, "step": 2, "step_in_epoch": 0, "best": 4.5}
    save_training_state(tmp_path / "last", method, optimizer, loop)

    # what the uninterrupted run does next: one random draw, one more step (augmentation
    # views come from the global torch RNG)
    next_draw = torch.rand(4)
    train_steps(method, optimizer, 1, seed=2)
    expected_weights = {k: v.clone() for k, v in method.state_dict().items()}
    expected_optim = optimizer.state_dict()

    torch.manual_seed(123)  # another RNG state and other initial weights
    restored = simclr().train()
    restored_optimizer = make_optimizer(restored.parameters())
    assert load_training_state(tmp_path / "last", restored, restored_optimizer) == loop
    assert torch.equal(torch.rand(4), next_draw)
    train_steps(restored, restored_optimizer, 1, seed=2)
    for key, value in expected_weights.items():
        assert torch.equal(restored.state_dict()[key], value), key
    got_optim = restored_optimizer.state_dict()
    assert got_optim["param_groups"][0]["lr"] == expected_optim["param_groups"][0]["lr"]
    assert got_optim["state"].keys() == expected_optim["state"].keys()
    for idx, slots in expected_optim["state"].items():
        assert got_optim["state"][idx].keys() == slots.keys()
        for name, value in slots.items():
            assert torch.equal(
                torch.as_tensor(got_optim["state"][idx][name]), torch.as_tensor(value)
            )


def test_training_state_is_hash_checked(tmp_path):
    method = simclr()
    optimizer = torch.optim.Adam(method.parameters())
    save_training_state(tmp_path / "last", method, optimizer, {"epoch": 0})
    path = tmp_path / "last.safetensors"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="sha256"):
        load_training_state(tmp_path / "last", method, optimizer)
    with pytest.raises(CheckpointError, match="nothing to resume"):
        load_training_state(tmp_path / "missing", method, optimizer)


def test_a_sidecar_without_sha256_is_refused(saved_model):
    sidecar = saved_model / "model.json"
    meta = json.loads(sidecar.read_text())
    del meta["sha256"]
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="sha256: Field required"):
        load_model(saved_model)
    sidecar.write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="JSON object"):
        load_model(saved_model)


def test_atomic_write_respects_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "a.json", lambda p: p.write_text(json.dumps({"x": 1})))
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temporary left behind
