"""Contract tests over every registry entry: every encoder and every method must keep them."""

from __future__ import annotations

import pytest
import torch

from helpers import model_spec, size_for
from sketchshot import config
from sketchshot.checkpoint import load_model, save_model
from sketchshot.encoders import ENCODERS, create_encoder
from sketchshot.errors import ConfigError
from sketchshot.methods import METHODS, create_method
from sketchshot.methods.pairwise import PairBatch
from sketchshot.methods.ssl.base import TwoViews
from sketchshot.methods.supervised import LabelledBatch
from sketchshot.registry import Registry

ENCODER_NAMES = ENCODERS.names()
METHOD_NAMES = METHODS.names()
# Small non-default arguments, so a save/load that drops them would be noticed.
METHOD_ARGS = {
    "simclr": {"hidden_dim": 32, "projection_dim": 16, "temperature": 0.3},
    "byol": {"hidden_dim": 32, "projection_dim": 16},
    # with an EMA: its average is saved in the full state and rebuilt on loading
    "supervised": {"n_classes": 3, "loss": "combined", "ema_decay": 0.9},
}


def test_the_registries_hold_what_the_config_offers():
    # the config (torch-free, read by the CLI for choices) and the registries name the same
    # encoders and methods, and every method's settings model is its own Settings
    assert set(config.ENCODER_NAMES) == set(ENCODER_NAMES)
    assert set(config.METHOD_SETTINGS) == set(METHOD_NAMES)
    for name in METHOD_NAMES:
        method = METHODS.get(name)
        assert method.Settings is config.METHOD_SETTINGS[name]
        section = config.PRETRAIN_METHODS if method.kind == "ssl" else config.FINETUNE_METHODS
        assert name in section


def images(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 1, size, size, generator=torch.Generator().manual_seed(seed))


def build(method_name: str, encoder_name: str):
    size = size_for(encoder_name)
    args = METHOD_ARGS.get(method_name, {})
    method = create_method(method_name, create_encoder(encoder_name, image_size=size), **args)
    return method, model_spec(method_name, encoder_name, size, **args), size


def training_batch(method, size: int, tiny_episode):
    if method.kind == "ssl":
        return TwoViews(images(6, size), images(6, size, seed=1))
    if method.kind == "supervised":
        return LabelledBatch(images(6, size), torch.tensor([0, 1, 2, 0, 1, 2]))
    if method.kind == "pairwise":
        return PairBatch(images(4, size), images(4, size, seed=1), torch.tensor([1, 0, 0.5, 1]))
    assert method.kind == "fewshot", method.kind
    return tiny_episode(n_way=3, n_shot=1, n_query=2, size=size)


@pytest.mark.parametrize("name", ENCODER_NAMES)
def test_encoder_output_shape_and_finite(name):
    size = size_for(name)
    encoder = create_encoder(name, image_size=size)
    assert isinstance(encoder.embedding_dim, int) and encoder.embedding_dim > 0
    for mode in (encoder.train, encoder.eval):
        mode()
        out = encoder(images(5, size))
        assert out.shape == (5, encoder.embedding_dim)
        assert torch.isfinite(out).all()
        assert out.std() > 0  # not a constant map


@pytest.mark.parametrize("name", ENCODER_NAMES)
def test_encoder_every_parameter_gets_a_gradient(name):
    size = size_for(name)
    encoder = create_encoder(name, image_size=size)
    encoder(images(4, size)).pow(2).mean().backward()
    for pname, p in encoder.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


# Every method is exercised on conv4 and every encoder inside ProtoNet (which adds no
# parameters of its own): each registry entry is covered without the full product, which
# would only repeat the encoder checks above at the cost of many large ResNets.


@pytest.mark.parametrize("method_name", METHOD_NAMES)
def test_method_training_step_reaches_every_parameter(method_name, tiny_episode):
    torch.manual_seed(0)
    method, _, size = build(method_name, "conv4")
    method.train()
    out = method.training_step(training_batch(method, size, tiny_episode))
    loss = out["loss"]
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert all(torch.isfinite(torch.as_tensor(v)) for v in out["metrics"].values())
    loss.backward()
    trainable = [(n, p) for n, p in method.named_parameters() if p.requires_grad]
    assert any(n.startswith("encoder.") for n, _ in trainable)
    for pname, p in trainable:
        assert p.grad is not None, f"{method_name}: {pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{method_name}: {pname}"
        assert p.grad.abs().sum() > 0, f"{method_name}: {pname} gradient is zero"
    for pname, p in method.named_parameters():  # frozen ones (an EMA target) stay untouched
        if not p.requires_grad:
            assert p.grad is None, pname


@pytest.mark.parametrize("method_name", METHOD_NAMES)
def test_method_score_shape(method_name):
    method, _, size = build(method_name, "conv4")
    method.eval()
    with torch.no_grad():
        emb = method.encoder(images(8, size))
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    logits = method.score(emb[:6], labels, emb[6:], 3)
    assert logits.shape == (2, 3)
    assert torch.isfinite(logits).all()
    if method_name in FIXED_METRIC_METHODS:
        # a query equal to a class's only support example scores highest for that class
        one_shot = method.score(emb[:3], torch.tensor([0, 1, 2]), emb[[2, 0, 1]], 3)
        assert one_shot.argmax(1).tolist() == [2, 0, 1]


# Methods that score by a fixed distance or similarity; the others (relation, siamese) learn
# their scorer, which an untrained head need not get right.
FIXED_METRIC_METHODS = {"simclr", "byol", "protonet", "matching"}


def assert_save_load_identical(method_name, encoder_name, tmp_path, tiny_episode):
    torch.manual_seed(1)
    method, spec, size = build(method_name, encoder_name)
    method.train()
    # one step in train mode moves the BatchNorm running statistics off their defaults
    method.training_step(training_batch(method, size, tiny_episode))["loss"].backward()
    method.eval()
    save_model(tmp_path / "model", method, {"model": spec, "preprocessing": {"image_size": size}})

    torch.manual_seed(2)  # the rebuilt model starts from other random weights
    loaded, meta = load_model(tmp_path / "model.json")
    assert not loaded.training
    assert type(loaded) is type(method)
    assert meta.model.model_dump() == spec
    x = images(4, size, seed=3)
    with torch.no_grad():
        emb = method.encoder(x)
        assert torch.equal(loaded.encoder(x), emb)
        labels = torch.tensor([0, 1])
        expected = method.score(emb[:2], labels, emb[2:], 2)
        assert torch.equal(loaded.score(emb[:2], labels, emb[2:], 2), expected)
    expected_state = method.state_dict()
    got = loaded.state_dict()
    assert got.keys() == expected_state.keys()
    for key, value in expected_state.items():
        assert torch.equal(got[key], value), key


@pytest.mark.parametrize("method_name", METHOD_NAMES)
def test_method_save_load_gives_identical_outputs(method_name, tmp_path, tiny_episode):
    assert_save_load_identical(method_name, "conv4", tmp_path, tiny_episode)


@pytest.mark.parametrize("encoder_name", ENCODER_NAMES)
def test_encoder_save_load_gives_identical_outputs(encoder_name, tmp_path, tiny_episode):
    assert_save_load_identical("protonet", encoder_name, tmp_path, tiny_episode)


def test_registry_refuses_a_duplicate_name():
    reg: Registry[object] = Registry("widget")
    reg.register("a")(lambda: 1)
    with pytest.raises(ValueError, match="widget 'a' is registered twice"):
        reg.register("a")(lambda: 2)
    assert reg.create("a") == 1  # the first entry is kept


@pytest.mark.parametrize("registry", [ENCODERS, METHODS])
def test_real_registries_refuse_re_registration(registry):
    name = registry.names()[0]
    original = registry.get(name)
    with pytest.raises(ValueError, match="registered twice"):
        registry.register(name)(lambda **kw: None)
    assert registry.get(name) is original


def test_unknown_encoder_lists_valid_names():
    with pytest.raises(ConfigError) as info:
        create_encoder("conv5", image_size=28)
    message = str(info.value)
    assert "'conv5'" in message
    for name in ENCODER_NAMES:
        assert name in message


def test_unknown_method_lists_valid_names():
    with pytest.raises(ConfigError) as info:
        create_method("byol2", create_encoder("conv4"))
    message = str(info.value)
    assert "'byol2'" in message
    for name in METHOD_NAMES:
        assert name in message
    assert ConfigError.exit_code == 2
