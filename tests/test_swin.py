"""swin_t: forward and backward at the sizes sketches use, windows fitted to the stages, drop
path in training only, gradient checkpointing with unchanged gradients, the card's arguments
round trip, torchvision's ImageNet weights folded to one channel (from a local file, through
the cache and hash check), and drop path or checkpointing refused by encoders without them."""

from __future__ import annotations

import hashlib
import inspect
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torchvision import models
from typer.testing import CliRunner

from sketchshot import engine
from sketchshot.checkpoint import load_model, save_model
from sketchshot.cli import app
from sketchshot.config import EncoderConfig, ProtoNetSettings, resolve_config
from sketchshot.encoders import create_encoder, encoder_arguments, initialise_encoder, resnet, swin
from sketchshot.errors import CheckpointError, ConfigError
from sketchshot.methods import create_method


def images(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 1, size, size, generator=torch.Generator().manual_seed(seed))


def blocks(encoder: nn.Module) -> list[nn.Module]:
    return [m for m in encoder.modules() if isinstance(m, swin.SwinTransformerBlock)]


@pytest.fixture(scope="module")
def swin64() -> swin.SwinT:
    """A swin_t at its default 64 px with the default settings (building one takes a while)."""
    torch.manual_seed(0)
    return create_encoder("swin_t")


@pytest.mark.parametrize("size", [64, 128, 224])
def test_forward_and_backward_at_sketch_sizes(size, swin64):
    encoder = swin64
    if size != 64:  # other windows, the same parameters: one state dict fits every size
        encoder = create_encoder("swin_t", image_size=size)
        encoder.load_state_dict(swin64.state_dict(), strict=True)
    encoder.zero_grad(set_to_none=True)
    out = encoder(images(2, size))
    assert out.shape == (2, encoder.embedding_dim) == (2, 768)
    assert torch.isfinite(out).all()
    out.pow(2).mean().backward()
    stem = encoder.net.features[0][0].weight
    assert stem.shape == (96, 1, 4, 4) and stem.grad.abs().sum() > 0
    last = blocks(encoder)[-1].mlp[-2].weight  # the last block's output projection
    assert last.grad.abs().sum() > 0


def test_windows_fit_the_stages_and_use_the_centre_of_the_bias_table(swin64):
    assert [swin.window_for(s) for s in swin.stage_sides(224)] == [7, 7, 7, 7]  # torchvision's
    assert [swin.window_for(s) for s in swin.stage_sides(128)] == [7, 6, 4, 4]
    assert swin.stage_sides(64) == [16, 8, 4, 2]
    assert swin64.windows == [6, 4, 4, 2]
    windows = [(b.attn.window_size[0], b.attn.shift_size[0]) for b in blocks(swin64)]
    assert windows == [(6, 0), (6, 3), (4, 0), (4, 2), *[(4, 0), (4, 2)] * 3, (2, 0), (2, 1)]
    # a window of 7 indexes the bias table as torchvision does
    upstream = swin.ShiftedWindowAttention(96, [7, 7], [0, 0], 3)
    assert torch.equal(swin.relative_position_index(7), upstream.relative_position_index)
    # a 4 x 4 window takes the biases of offsets -3..3 from the centre of the 13 x 13 table
    attn = blocks(swin64)[2].attn
    table = attn.relative_position_bias_table.view(13, 13, -1)
    bias = attn.get_relative_position_bias()[0]  # [heads, 16, 16]
    cells = [(y, x) for y in range(4) for x in range(4)]
    for i, (yi, xi) in enumerate(cells):
        for j, (yj, xj) in enumerate(cells):
            assert torch.equal(bias[:, i, j], table[yi - yj + 6, xi - xj + 6])
    # the index follows from the size and is not saved
    assert not any(k.endswith("relative_position_index") for k in swin64.state_dict())


def test_drop_path_acts_in_training_only():
    default = inspect.signature(swin.SwinT).parameters["drop_path"].default
    assert f"(swin_t {default})" in (EncoderConfig.model_fields["drop_path"].description or "")
    torch.manual_seed(0)
    encoder = create_encoder("swin_t", drop_path=0.5)
    rates = [b.stochastic_depth.p for b in blocks(encoder)]
    assert rates[0] == 0 and rates[-1] == pytest.approx(0.5) and rates == sorted(rates)
    x = images(4, 64)
    with torch.no_grad():
        assert not torch.allclose(encoder(x), encoder(x))  # other blocks dropped each call
        expected = encoder.eval()(x)
        for block in blocks(encoder):
            block.stochastic_depth.p = 0.0
        assert torch.equal(encoder.train()(x), expected)  # eval mode drops nothing


def test_grad_checkpointing_gives_the_same_gradients(swin64, monkeypatch):
    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return torch.utils.checkpoint.checkpoint(*args, **kwargs)

    monkeypatch.setattr(swin, "checkpoint", counted)
    x = images(2, 64)
    grads = []
    for checkpointing in (False, True):
        swin64.grad_checkpointing = checkpointing
        swin64.zero_grad(set_to_none=True)
        torch.manual_seed(1)  # the same drop-path draws in both
        swin64(x).pow(2).sum().backward()
        grads.append({n: p.grad for n, p in swin64.named_parameters()})
    assert len(calls) == 12  # every block, and only with checkpointing
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, atol=1e-5, rtol=1e-5, msg=name)
    with torch.no_grad():
        swin64(x)  # nothing to recompute without gradients
    swin64.grad_checkpointing = False
    assert len(calls) == 12


def test_card_keeps_drop_path_not_checkpointing_and_reloads(tmp_path):
    config = EncoderConfig(name="swin_t", drop_path=0.3, grad_checkpointing=True)
    args = encoder_arguments(config, 64)
    assert args == {"image_size": 64, "drop_path": 0.3, "grad_checkpointing": True}
    torch.manual_seed(0)
    method = create_method("protonet", create_encoder("swin_t", **args)).eval()
    spec = engine.model_spec(ProtoNetSettings(), "swin_t", 64, "random", args)
    assert spec.encoder_args == {"image_size": 64, "drop_path": 0.3}
    card = {"model": spec.model_dump(), "preprocessing": {"image_size": 64}}
    save_model(tmp_path / "model", method, card)
    torch.manual_seed(1)
    loaded, meta = load_model(tmp_path / "model.json")
    assert meta.model.encoder_args == {"image_size": 64, "drop_path": 0.3}
    assert loaded.encoder.drop_path == 0.3 and not loaded.encoder.grad_checkpointing
    x = images(2, 64, seed=2)
    with torch.no_grad():
        assert torch.equal(loaded.encoder(x), method.encoder(x))


def test_imagenet_weights_fold_to_one_channel_from_a_local_file(tmp_path, monkeypatch):
    torch.manual_seed(0)
    upstream = models.swin_t(weights=None).eval()  # stands in for the published file
    saved = tmp_path / "upstream.pth"
    torch.save(upstream.state_dict(), saved)
    name = f"swin_t-{hashlib.sha256(saved.read_bytes()).hexdigest()[:8]}.pth"
    cache = tmp_path / "torch-home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    saved.rename(cache / name)  # cached under its published name: no download
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    url = f"http://127.0.0.1:9/{name}"  # nothing listens: a download would fail
    monkeypatch.setitem(resnet.IMAGENET_WEIGHTS, "swin_t", SimpleNamespace(url=url))

    encoder = create_encoder("swin_t", image_size=224).eval()
    assert initialise_encoder(encoder, "imagenet") == str(cache / name)
    # at 224 px the windows are torchvision's: a grey image gives what the RGB model gives for
    # it repeated in R, G and B
    upstream.head = nn.Identity()
    x = images(1, 224)
    with torch.no_grad():
        expected = upstream(x.expand(-1, 3, -1, -1))
        torch.testing.assert_close(encoder.features(x), expected, atol=1e-4, rtol=1e-4)
    stem = upstream.state_dict()["features.0.0.weight"]
    torch.testing.assert_close(encoder.net.features[0][0].weight, stem.sum(dim=1, keepdim=True))
    # a damaged copy is refused, found in the cache or passed as a path
    (cache / name).write_bytes(b"a damaged copy")
    for init in ("imagenet", str(cache / name)):
        with pytest.raises(CheckpointError, match="published hash"):
            initialise_encoder(encoder, init)


def test_encoders_without_the_settings_refuse_them(monkeypatch, tmp_path):
    with pytest.raises(ConfigError, match=r"conv4 has no drop path .*swin_t"):
        encoder_arguments(EncoderConfig(name="conv4", drop_path=0.1), 28)
    with pytest.raises(ConfigError, match="resnet18 has no gradient checkpointing"):
        encoder_arguments(EncoderConfig(name="resnet18", grad_checkpointing=True), 64)
    assert encoder_arguments(EncoderConfig(), 28) == {"image_size": 28}
    # a run refuses them before reading any data
    monkeypatch.setattr(engine, "load_splits", lambda *a: pytest.fail("data was read"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="conv4 has no drop path"):
        engine.pretrain(resolve_config(overrides={"encoder.drop_path": 0.1}))
    result = CliRunner().invoke(app, ["finetune", "--drop-path", "0.1", "--quiet"])
    assert result.exit_code == 2
    assert "conv4 has no drop path" in result.output


@pytest.mark.parametrize("command", ["pretrain", "finetune"])
def test_the_options_reach_the_config(command, monkeypatch, tmp_path):
    calls = []

    def run(cfg, out=None, resume=None, quiet=False, console=None):
        calls.append(cfg)
        metrics = {"epochs": 1, "images_per_s": 1.0, "stopped": "done", "best": {}}
        return SimpleNamespace(run_dir=Path("fake-run"), method="protonet", metrics=metrics)

    monkeypatch.setattr(engine, command, run)
    monkeypatch.chdir(tmp_path)
    args = [command, "--encoder", "swin_t", "--drop-path", "0.2", "--grad-checkpointing", "-q"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    expected = EncoderConfig(name="swin_t", drop_path=0.2, grad_checkpointing=True)
    assert calls[0].encoder == expected
