"""Self-supervised pretraining: BYOL's parts, SimCLR's per-view batches, unique-class batches,
exact resume after Ctrl-C, ImageNet initialisation through a local server, and DDP with two
processes on the CPU."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import models

from helpers import torchrun
from sketchshot.checkpoint import load_model
from sketchshot.config import OptimConfig
from sketchshot.data.batches import UniqueClassBatchSampler, shuffled_batches
from sketchshot.encoders import create_encoder
from sketchshot.errors import CheckpointError, ConfigError, TrainingInterrupted
from sketchshot.methods import create_method
from sketchshot.methods.ssl.base import TwoViews
from sketchshot.methods.ssl.byol import byol_loss, cosine_momentum, ema_update
from sketchshot.methods.ssl.simclr import nt_xent_loss
from sketchshot.training import BatchSource, LoopSettings, fit

TINY_TOML = """
[data.builtin]
n_classes = 24
n_drawers = 8
[pretrain]
batch_size = 32
val_episodes = 50
"""


def test_ema_update_is_the_convex_combination() -> None:
    torch.manual_seed(0)
    online, target = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    expected = [
        0.9 * t + 0.1 * o for t, o in zip(target.parameters(), online.parameters(), strict=True)
    ]
    ema_update(target, online, 0.9)
    for got, want in zip(target.parameters(), expected, strict=True):
        torch.testing.assert_close(got, want)


def test_byol_momentum_ramps_from_base_to_one() -> None:
    assert cosine_momentum(0.996, 0.0) == pytest.approx(0.996)
    assert cosine_momentum(0.996, 0.5) == pytest.approx(0.998)
    assert cosine_momentum(0.996, 1.0) == pytest.approx(1.0)


def test_byol_loss_values() -> None:
    z = torch.randn(5, 8)
    assert byol_loss(z, 3 * z).item() == pytest.approx(0.0, abs=1e-6)
    assert byol_loss(z, -z).item() == pytest.approx(4.0, abs=1e-5)


def test_byol_target_follows_online_by_ema_only() -> None:
    torch.manual_seed(0)
    byol = create_method("byol", create_encoder("conv4"), ema_decay=0.5, ema_cosine=False)
    before = [p.clone() for p in byol.target_encoder.parameters()]
    byol.training_step(TwoViews(*torch.rand(2, 8, 1, 28, 28)))["loss"].backward()
    assert all(p.grad is None for p in byol.target_encoder.parameters())
    byol.after_step(0.5)
    for old, new, online in zip(
        before, byol.target_encoder.parameters(), byol.encoder.parameters(), strict=True
    ):
        torch.testing.assert_close(new, 0.5 * old + 0.5 * online)


def test_simclr_normalises_each_view_by_its_own_batch() -> None:
    """The encoder sees the two views as two batches of B (per-view BatchNorm statistics,
    measured better on Omniglot than one batch of 2B), and the step equals that computation."""
    torch.manual_seed(0)
    simclr = create_method("simclr", create_encoder("conv4"), temperature=0.5)
    sizes: list[int] = []
    simclr.encoder.register_forward_hook(lambda _m, inputs, _o: sizes.append(len(inputs[0])))
    v1, v2 = torch.rand(2, 6, 1, 28, 28)
    loss = simclr.training_step(TwoViews(v1, v2))["loss"]
    assert sizes == [6, 6]
    z1, z2 = simclr.head(simclr.encoder(v1)), simclr.head(simclr.encoder(v2))
    torch.testing.assert_close(loss, nt_xent_loss(z1, z2, 0.5))
    joint = simclr.head(simclr.encoder(torch.cat([v1, v2]))).chunk(2)
    assert not torch.allclose(loss, nt_xent_loss(*joint, 0.5))


def test_unique_class_batches_have_distinct_classes_and_no_repeats() -> None:
    labels = torch.arange(12).repeat_interleave(5)  # 12 classes x 5 images
    sampler = UniqueClassBatchSampler(labels, batch_size=8)
    seen: list[int] = []
    for batch in sampler.batches(np.random.default_rng(0)):
        assert len(set(labels[batch].tolist())) == 8
        seen.extend(batch.tolist())
    assert len(seen) == len(set(seen)) >= 40
    rank0 = {i for b in sampler.batches(np.random.default_rng(1), 0, 2) for i in b}
    rank1 = {i for b in sampler.batches(np.random.default_rng(1), 1, 2) for i in b}
    assert rank0 and rank1 and not rank0 & rank1
    with pytest.raises(ConfigError, match="the data has 12"):
        UniqueClassBatchSampler(labels, batch_size=13)


def test_shuffled_batches_shard_the_epoch() -> None:
    shards = [
        np.concatenate(list(shuffled_batches(100, 10, np.random.default_rng(3), r, 2)))
        for r in (0, 1)
    ]
    assert len(shards[0]) == len(shards[1]) == 50
    assert sorted(np.concatenate(shards).tolist()) == list(range(100))


def _tiny_fit(run_dir: Path, interrupt_at: int | None = None, resume: bool = False):
    torch.manual_seed(0)
    method = create_method("simclr", create_encoder("conv4"), hidden_dim=32, projection_dim=16)
    calls = {"n": 0}

    def batches(rng: np.random.Generator):
        while True:
            calls["n"] += 1
            if interrupt_at is not None and calls["n"] == interrupt_at:
                raise KeyboardInterrupt
            yield torch.from_numpy(rng.random((16, 1, 28, 28), dtype=np.float32))

    # no validation, so no "best" swap at the end: the final weights are the last ones
    settings = LoopSettings(epochs=3, optim=OptimConfig(), seed=0, monitor="val_acc")
    source = BatchSource(batches, 3, views=lambda x: TwoViews(x, x.flip(-1)))
    fit(method, source, settings, run_dir, torch.device("cpu"), lambda *a: None,
        resume=resume, quiet=True)  # fmt: skip
    return method


def test_interrupted_run_resumes_to_identical_weights(tmp_path: Path) -> None:
    straight = _tiny_fit(tmp_path / "straight")
    with pytest.raises(TrainingInterrupted, match="--resume"):
        _tiny_fit(tmp_path / "cut", interrupt_at=6)  # mid-way through the second epoch
    state = json.loads((tmp_path / "cut" / "checkpoints" / "last.json").read_text())["loop"]
    assert (state["epoch"], state["step_in_epoch"]) == (1, 1)
    resumed = _tiny_fit(tmp_path / "cut", resume=True)
    for (name, a), b in zip(
        straight.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=name)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def _serve(folder: Path) -> http.server.ThreadingHTTPServer:
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_imagenet_init_downloads_caches_and_folds_the_stem(tmp_path, monkeypatch) -> None:
    from sketchshot.encoders import resnet

    torch.manual_seed(0)
    upstream = models.resnet18(weights=None).state_dict()  # stands in for the published file
    served = tmp_path / "served"
    served.mkdir()
    torch.save(upstream, served / "upstream.pth")
    name = f"resnet18-{hashlib.sha256((served / 'upstream.pth').read_bytes()).hexdigest()[:8]}.pth"
    (served / "upstream.pth").rename(served / name)  # named as torchvision names: with its hash
    server = _serve(served)
    url = f"http://127.0.0.1:{server.server_address[1]}/{name}"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setitem(resnet.IMAGENET_WEIGHTS, "resnet18", type("W", (), {"url": url}))
    try:
        encoder = create_encoder("resnet18")
        used = encoder.load_imagenet()
    finally:
        server.shutdown()
    assert used == tmp_path / "torch-home" / "hub" / "checkpoints" / name
    torch.testing.assert_close(
        encoder.net.conv1.weight, upstream["conv1.weight"].sum(dim=1, keepdim=True)
    )
    torch.testing.assert_close(
        encoder.net.layer4[1].conv2.weight, upstream["layer4.1.conv2.weight"]
    )
    again = create_encoder("resnet18")
    assert again.load_imagenet() == used  # from the cache: the server is gone
    torch.testing.assert_close(again.net.conv1.weight, encoder.net.conv1.weight)


def test_imagenet_init_offline_without_cache_says_what_to_do(tmp_path, monkeypatch) -> None:
    from sketchshot.encoders import resnet

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens
    url = f"http://127.0.0.1:{port}/resnet18-test.pth"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setitem(resnet.IMAGENET_WEIGHTS, "resnet18", type("W", (), {"url": url}))
    with pytest.raises(CheckpointError, match="put the file at"):
        create_encoder("resnet18").load_imagenet()
    with pytest.raises(ConfigError, match="resnet"):
        from sketchshot.encoders import initialise_encoder

        initialise_encoder(create_encoder("conv4"), "imagenet")


def test_torchrun_two_cpu_processes_train_and_save_a_loadable_model(tmp_path: Path) -> None:
    (tmp_path / "tiny.toml").write_text(TINY_TOML)
    args = ["pretrain", "--config", "tiny.toml", "--epochs", "4", "--lr", "0.003", "--out", "ddp",
            "--device", "cpu", "--json", "--quiet"]  # fmt: skip
    done = torchrun(args, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [x for x in done.stdout.splitlines() if x.startswith("{")]
    assert len(lines) == 1, done.stdout  # rank 0 alone reports
    epochs = [
        json.loads(x)
        for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
        if '"epoch_end"' in x
    ]
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4]
    assert epochs[-1]["loss"] < epochs[0]["loss"] - 0.05
    model, meta = load_model(tmp_path / "ddp")
    assert not any(k.startswith("module.") for k in model.state_dict())
    assert meta.metrics["steps"] == 4 * (24 * 8 * 9 // 10 // 64)


def test_every_encoder_builds_at_its_declared_default_size() -> None:
    from sketchshot.encoders import ENCODERS

    for name in ENCODERS.names():
        size = ENCODERS.get(name).default_image_size
        assert isinstance(size, int) and size >= 16, name


def test_unique_class_batches_give_every_rank_the_same_count() -> None:
    labels = torch.arange(10).repeat_interleave(3)
    sampler = UniqueClassBatchSampler(labels, batch_size=4)
    counts = [len(list(sampler.batches(np.random.default_rng(5), r, 3))) for r in range(3)]
    assert len(set(counts)) == 1 and counts[0] >= 1


def test_byol_target_starts_from_the_initialised_encoder(tmp_path: Path) -> None:
    from sketchshot import engine
    from sketchshot.config import resolve_config

    torch.manual_seed(3)
    weights = create_encoder("conv4").state_dict()
    from safetensors.torch import save_file

    save_file(weights, str(tmp_path / "enc.safetensors"))
    cfg = resolve_config(
        overrides={"pretrain.method": "byol", "pretrain.epochs": 1, "pretrain.batch_size": 16,
                   "pretrain.optim.lr": 1e-12, "pretrain.val_episodes": 0,
                   "encoder.init": str(tmp_path / "enc.safetensors"),
                   "data.builtin.n_classes": 6, "data.builtin.n_drawers": 3}
    )  # fmt: skip
    run = engine.pretrain(cfg, tmp_path / "byol", quiet=True)
    model, _ = engine.load_model(run.run_dir)
    key = "blocks.0.0.weight"
    torch.testing.assert_close(model.target_encoder.state_dict()[key], weights[key])


def test_an_unknown_device_is_a_usage_error() -> None:
    from sketchshot.distributed import resolve_device

    with pytest.raises(ConfigError, match="unknown device 'gpu'"):
        resolve_device("gpu")
