"""What loading trusts is hash-checked: a card's fields (``card_sha256``), a bank's classes,
``--resume``'s ``last`` and ``best``, torchvision's ImageNet weights; ``info`` says so."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import threading
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from helpers import model_spec, plain
from sketchshot.bank import ClassBank, load_bank, save_bank
from sketchshot.card import ModelRef, Preprocessing, with_card_digest
from sketchshot.checkpoint import load_model, read_card, save_model
from sketchshot.cli import app
from sketchshot.config import OptimConfig
from sketchshot.encoders import create_encoder, resnet
from sketchshot.errors import CheckpointError
from sketchshot.methods import create_method
from sketchshot.methods.ssl.base import TwoViews
from sketchshot.training import BatchSource, LoopSettings, fit


def read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def write(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data), encoding="utf-8")


# ---------------------------------------------------------------- model cards


def test_the_card_digest_covers_what_loading_trusts(saved_model):
    sidecar = saved_model / "model.json"
    data = read(sidecar)
    assert data["card_sha256"] == with_card_digest(data)["card_sha256"]
    assert read_card(saved_model).covered
    write(sidecar, data)  # the layout of the JSON is not part of it
    load_model(saved_model)
    edits = {
        "image_size": lambda d: d["preprocessing"].update(image_size=32),
        "invert": lambda d: d["preprocessing"].update(invert="yes"),
        "class_names": lambda d: d.update(class_names=["cat"]),
        "method_args": lambda d: d["model"]["method_args"].update(distance="cosine"),
        "config": lambda d: d["config"].update(seed=1),
    }
    for name, edit in edits.items():
        edited = json.loads(json.dumps(data))
        edit(edited)
        write(sidecar, edited)
        with pytest.raises(CheckpointError, match="card_sha256 does not match its fields"):
            print("edited:", name)  # named in the report when nothing is raised
            load_model(saved_model)
    write(sidecar, {k: v for k, v in data.items() if k != "card_sha256"})
    with pytest.raises(CheckpointError, match="no card_sha256"):
        load_model(saved_model)


V1 = {"format_version": 1, "sketchshot_version": "0.1.0"}  # what sketchshot 0.1 wrote


def test_a_format_1_card_has_no_digest_and_loads_uncovered(saved_model):
    sidecar = saved_model / "model.json"
    data = {k: v for k, v in read(sidecar).items() if k != "card_sha256"}
    # a card relabelled as version 1 by hand does not escape the check of its fields
    write(sidecar, data | {"format_version": 1})
    with pytest.raises(CheckpointError, match="only 0.1 wrote that version"):
        load_model(saved_model)
    write(sidecar, data | V1)
    _, card = load_model(saved_model)
    assert not card.covered and card.card_sha256 is None
    # and its weights are still hash-checked
    weights = saved_model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    with pytest.raises(CheckpointError, match="sha256 does not match"):
        load_model(saved_model)


# ---------------------------------------------------------------- class banks


def make_bank(path: Path) -> Path:
    bank = ClassBank(
        embeddings=torch.arange(12, dtype=torch.float32).reshape(4, 3),
        labels=torch.tensor([0, 0, 1, 1]),
        class_names=("cat", "dog"),
        class_sources=("support", "support"),
        model=ModelRef(path="/m", sha256="0" * 64, method="protonet", encoder="conv4"),
        preprocessing=Preprocessing(image_size=28),
    )
    return save_bank(bank, path)


def test_a_bank_card_covers_its_classes_and_preprocessing(tmp_path):
    sidecar = make_bank(tmp_path / "bank")
    assert load_bank(tmp_path / "bank").class_names == ("cat", "dog")
    data = read(sidecar)
    edits = [
        lambda d: d["classes"][0].update(name="lion"),  # same count: only the digest sees it
        lambda d: d["preprocessing"].update(image_size=64),
        lambda d: d["built_with"].update(sha256="1" * 64),
        lambda d: d["reject"] is None and d.update(reject={"value": -1.0}),
    ]
    for edit in edits:
        edited = json.loads(json.dumps(data))
        edit(edited)
        write(sidecar, edited)
        with pytest.raises(CheckpointError, match="card_sha256 does not match"):
            load_bank(tmp_path / "bank")
    write(sidecar, {k: v for k, v in data.items() if k != "card_sha256"})
    with pytest.raises(CheckpointError, match="no card_sha256"):
        load_bank(tmp_path / "bank")


# ---------------------------------------------------------------- --resume: last and best

ARGS = {"hidden_dim": 16, "projection_dim": 8}


def tiny_run(run_dir: Path, epochs: int, resume: bool = False):
    """SimCLR on random images, 2 steps an epoch, ``best`` by training loss."""
    torch.manual_seed(0)
    method = create_method("simclr", create_encoder("conv4"), **ARGS)
    spec = model_spec("simclr", "conv4", 28, **ARGS)

    def save(stem, metrics):
        card = {"model": spec, "preprocessing": {"image_size": 28}, "metrics": metrics}
        save_model(run_dir / stem, method, card)

    def batches(rng):
        for _ in range(2):
            yield torch.from_numpy(rng.random((8, 1, 28, 28), dtype="float32"))

    settings = LoopSettings(epochs=epochs, optim=OptimConfig(), seed=0)
    source = BatchSource(batches, 2, views=lambda x: TwoViews(x, x.flip(-1)))
    return fit(method, source, settings, run_dir, torch.device("cpu"), save,
               resume=resume, quiet=True)  # fmt: skip


@pytest.fixture
def one_epoch(tmp_path) -> Path:
    tiny_run(tmp_path / "run", epochs=1)
    ckpt = tmp_path / "run" / "checkpoints"
    assert {p.name for p in ckpt.iterdir()} >= {"last.json", "best.json", "best.safetensors"}
    return tmp_path / "run"


def test_resume_requires_the_sha256_of_last(one_epoch):
    last = one_epoch / "checkpoints" / "last.json"
    data = read(last)
    write(last, with_card_digest({k: v for k, v in data.items() if k != "sha256"}))
    with pytest.raises(CheckpointError, match="sha256 of its weights"):
        tiny_run(one_epoch, epochs=2, resume=True)


def test_resume_refuses_edited_counters_of_last(one_epoch):
    last = one_epoch / "checkpoints" / "last.json"
    data = read(last)
    data["loop"]["step"] = 0  # the learning-rate schedule would start again
    write(last, data)
    with pytest.raises(CheckpointError, match="card_sha256 does not match"):
        tiny_run(one_epoch, epochs=2, resume=True)
    write(last, {k: v for k, v in read(last).items() if k != "card_sha256"})
    with pytest.raises(CheckpointError, match="no card_sha256"):
        tiny_run(one_epoch, epochs=2, resume=True)


def test_resume_checks_best(one_epoch):
    best = one_epoch / "checkpoints" / "best.safetensors"
    good = best.read_bytes()
    best.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # one bit of one weight
    with pytest.raises(CheckpointError, match="best.safetensors: sha256 does not match"):
        tiny_run(one_epoch, epochs=2, resume=True)
    best.write_bytes(good)
    sidecar = best.with_suffix(".json")
    write(sidecar, {k: v for k, v in read(sidecar).items() if k != "sha256"})
    with pytest.raises(CheckpointError, match="sha256: Field required"):
        tiny_run(one_epoch, epochs=2, resume=True)


def test_resume_of_an_intact_run_still_works(one_epoch):
    assert tiny_run(one_epoch, epochs=2, resume=True).epochs == 2


# ---------------------------------------------------------------- ImageNet weights


def test_torchvision_publishes_a_hash_in_every_weights_name():
    for arch, weights in resnet.IMAGENET_WEIGHTS.items():
        found = resnet.HASH_IN_NAME.search(weights.url.rsplit("/", 1)[-1])
        assert found is not None and len(found.group(1)) >= 8, arch


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def test_imagenet_weights_that_fail_their_published_hash_are_refused(tmp_path, monkeypatch):
    served = tmp_path / "served"
    served.mkdir()
    good = b"torchvision's file"
    name = f"resnet18-{hashlib.sha256(good).hexdigest()[:8]}.pth"
    (served / name).write_bytes(b"something else")  # what a broken mirror or proxy sends
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(served))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/{name}"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    monkeypatch.setitem(resnet.IMAGENET_WEIGHTS, "resnet18", type("W", (), {"url": url}))
    encoder = create_encoder("resnet18")
    try:
        with pytest.raises(CheckpointError, match="does not match torchvision's published hash"):
            encoder.load_imagenet()
    finally:
        server.shutdown()
    cache = tmp_path / "home" / "hub" / "checkpoints"
    assert list(cache.iterdir()) == []  # nothing kept
    # found in the cache, or passed under the published name: checked the same way
    for path in (cache / name, tmp_path / name):
        path.write_bytes(b"a damaged copy")
        with pytest.raises(CheckpointError, match=f"{path}: sha256 .* published hash"):
            encoder.load_imagenet(path if path.parent == tmp_path else None)


# ---------------------------------------------------------------- info


def cli(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def test_info_says_what_it_verified(saved_model):
    table = plain(cli("info", saved_model).stdout)
    sha = read(saved_model / "model.json")["sha256"]
    assert f"{sha} (verified)" in table and "verified (card_sha256)" in table
    as_json = json.loads(cli("info", saved_model, "--json").stdout)
    assert as_json["verified"] == ["sha256", "card_sha256"]
    sidecar = saved_model / "model.json"
    data = read(sidecar)
    write(sidecar, {k: v for k, v in data.items() if k != "card_sha256"} | V1)
    assert "not covered" in plain(cli("info", saved_model).stdout)
    data["preprocessing"]["image_size"] = 64
    write(sidecar, data)
    refused = cli("info", saved_model)
    assert refused.exit_code == 1 and "card_sha256 does not match" in plain(refused.stderr)
