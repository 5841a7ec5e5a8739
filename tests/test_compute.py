"""The speed options: bf16 autocast only where the CPU has native bf16 (losses stay float32),
torch.compile of the training step (saved weights without the wrapper's prefix, a clean
fallback, the auto rule), thread settings, and encoders with BatchNorm folded for inference
that compute the same features."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file
from torch import nn

from helpers import model_spec, one_line_error, size_for
from sketchshot import compute, engine
from sketchshot.checkpoint import load_model, save_model
from sketchshot.config import Config, EmbedConfig, OptimConfig, PredictConfig, TrainingConfig
from sketchshot.data.glyphs import make_glyphs
from sketchshot.data.views import SketchAugment
from sketchshot.encoders import ENCODERS, create_encoder
from sketchshot.errors import ConfigError
from sketchshot.evaluation import embed
from sketchshot.methods import METHODS, create_method
from sketchshot.methods.pairwise import PairBatch
from sketchshot.methods.ssl.base import TwoViews
from sketchshot.methods.ssl.simclr import nt_xent_loss
from sketchshot.methods.supervised import LabelledBatch
from sketchshot.training import BatchSource, LoopSettings, fit

CPU = torch.device("cpu")
AVX2_ONLY = frozenset({"sse4_2", "avx", "avx2", "fma3"})

# ---------------------------------------------------------------- bf16: detection and refusal


@pytest.fixture
def flags(monkeypatch):
    """``flags(...)``: pretend the CPU has exactly these feature flags."""

    def pretend(*names: str) -> None:
        monkeypatch.setattr(compute, "cpu_flags", lambda: frozenset(names))

    return pretend


def test_cpuinfo_flags_are_read_from_the_flags_line():
    text = (
        "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\n"
        "flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\nbogomips\t: 4800.00\n"
    )
    assert compute.parse_cpuinfo(text) == {"fpu", "sse2", "avx2", "avx512f", "avx512_bf16",
                                           "avx512_vnni"}  # fmt: skip
    assert compute.parse_cpuinfo("processor\t: 0\n") == frozenset()


def test_this_machines_flags_agree_with_proc_cpuinfo(float32_cpu):
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo")
    from_file = compute.parse_cpuinfo(cpuinfo.read_text())
    for flag in compute.NATIVE_BF16_FLAGS:
        assert (flag in float32_cpu()) == (flag in from_file), flag


@pytest.mark.parametrize("native", ["avx512_bf16", "amx_bf16"])
def test_bf16_is_used_where_the_cpu_has_it_natively(flags, native):
    flags("avx2", "avx512f", native)
    assert compute.native_bf16()
    assert compute.autocast_dtype("bf16", CPU) is torch.bfloat16
    assert compute.autocast_dtype("auto", CPU) is torch.bfloat16
    assert compute.autocast_dtype("off", CPU) is None


def test_bf16_is_refused_on_a_cpu_without_it_and_auto_stays_float32(flags):
    flags(*AVX2_ONLY)
    assert not compute.native_bf16()
    with pytest.raises(ConfigError, match="no native bf16.*much slower"):
        compute.autocast_dtype("bf16", CPU)
    assert compute.autocast_dtype("auto", CPU) is None
    assert compute.autocast_dtype("off", CPU) is None


def test_fp16_is_for_cuda_only(flags):
    flags("avx512_bf16")
    with pytest.raises(ConfigError, match="fp16 is for CUDA"):
        compute.autocast_dtype("fp16", CPU)
    # other devices (MPS) ignore --amp, as the loop notes
    assert compute.autocast_dtype("bf16", torch.device("mps")) is None


def test_pretrain_amp_bf16_on_a_cpu_without_it_exits_2_in_one_line(cli, flags, monkeypatch):
    flags(*AVX2_ONLY)
    monkeypatch.setattr(engine, "load_splits", lambda *a: pytest.fail("data was read"))
    result = cli("pretrain", "--amp", "bf16", "--device", "cpu")
    assert result.exit_code == 2
    line = one_line_error(result)
    assert "--amp bf16" in line and "no native bf16" in line


def batch_for(method, size: int, tiny_episode):
    g = torch.Generator().manual_seed(0)
    images = lambda n: torch.rand(n, 1, size, size, generator=g)  # noqa: E731
    if method.kind == "ssl":
        return TwoViews(images(6), images(6))
    if method.kind == "supervised":
        return LabelledBatch(images(6), torch.tensor([0, 1, 2, 0, 1, 2]))
    if method.kind == "pairwise":
        return PairBatch(images(4), images(4), torch.tensor([1.0, 0.0, 0.5, 1.0]))
    return tiny_episode(n_way=3, n_shot=1, n_query=2, size=size)


@pytest.mark.parametrize("name", METHODS.names())
def test_every_loss_is_float32_under_bf16_autocast(name, tiny_episode):
    # the encoder runs in bf16; each method's scores and loss must not (bf16 keeps 8 bits)
    args = {"n_classes": 3} if name == "supervised" else {}
    method = create_method(name, create_encoder("conv4"), **args).train()
    batch = batch_for(method, 28, tiny_episode)
    with torch.autocast("cpu", torch.bfloat16):
        assert method.encoder(torch.rand(2, 1, 28, 28)).dtype == torch.bfloat16  # it is on
        out = method.training_step(batch)
    assert out["loss"].dtype == torch.float32
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in method.parameters())


def test_under_autocast_simclr_and_protonet_losses_are_float32_losses_of_the_embeddings(
    tiny_episode,
):
    torch.manual_seed(0)
    simclr = create_method("simclr", create_encoder("conv4"), temperature=0.1)
    views = TwoViews(torch.rand(16, 1, 28, 28), torch.rand(16, 1, 28, 28))
    with torch.autocast("cpu", torch.bfloat16):
        loss = simclr.training_step(views)["loss"]
        z1, z2 = (simclr.head(simclr.encoder(v)) for v in views)  # as the step makes them
        in_bf16 = nt_xent_loss(z1, z2, 0.1)
    assert z1.dtype == torch.bfloat16
    exact = nt_xent_loss(z1.float(), z2.float(), 0.1)
    torch.testing.assert_close(loss, exact, rtol=1e-6, atol=1e-6)
    assert (in_bf16.float() - exact).abs() > 1e-4  # what the float32 region saves

    protonet = create_method("protonet", create_encoder("conv4"))
    episode = tiny_episode(n_way=5, n_shot=2, n_query=3)
    with torch.autocast("cpu", torch.bfloat16):
        loss = protonet.training_step(episode)["loss"]
        support, query = protonet.embed_episode(episode)
    assert support.dtype == torch.bfloat16
    exact, _ = protonet.episode_loss(
        support.float(), episode.support_labels, query.float(), episode.query_labels, 5
    )
    torch.testing.assert_close(loss, exact, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- the training loop


STEPS, BATCH = 3, 16
AUGMENT = SketchAugment()
ARGS = {"hidden_dim": 32, "projection_dim": 16, "temperature": 0.5}


@pytest.fixture(scope="module")
def glyphs():
    return make_glyphs(12, 4, 28, seed=0)


def train(run_dir: Path, glyphs, steps: int = STEPS, epochs: int = 1, **settings):
    """A tiny SimCLR run through ``fit``; returns (method, result, the notes printed)."""
    torch.manual_seed(0)
    method = create_method("simclr", create_encoder("conv4"), **ARGS)
    spec = model_spec("simclr", "conv4", 28, **ARGS)

    def save(stem, metrics):
        card = {"model": spec, "preprocessing": {"image_size": 28}, "metrics": metrics}
        save_model(run_dir / stem, method, card)

    def batches(rng):
        order = torch.from_numpy(rng.permutation(len(glyphs)))
        for i in range(steps):
            start = (i * BATCH) % (len(glyphs) - BATCH)
            yield glyphs.floats(order[start : start + BATCH])

    source = BatchSource(batches, steps, views=lambda x: TwoViews(AUGMENT(x), AUGMENT(x)))
    loop = LoopSettings(epochs=epochs, optim=OptimConfig(lr=3e-3), seed=5, **settings)
    console = Console(file=io.StringIO(), width=200)
    result = fit(method, source, loop, run_dir, CPU, save, console=console)
    save("model", {"steps": result.steps})
    return method, result, console.file.getvalue()


def test_a_bf16_run_trains_float32_weights(tmp_path, glyphs, flags):
    flags("avx512_bf16")  # emulated where the CPU has no bf16: slower, not wrong
    method, result, notes = train(tmp_path / "r", glyphs, amp="bf16")
    assert result.steps == STEPS
    assert result.precision == "bfloat16"  # the card's metrics say what the encoder computed in
    assert all(p.dtype == torch.float32 for p in method.parameters())
    losses = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["loss"] > 0 for r in losses if "loss" in r)


@pytest.fixture
def eager_backend(monkeypatch):
    """torch.compile with dynamo alone (no C++ compiler, seconds instead of a minute)."""
    monkeypatch.setattr(compute, "COMPILE_BACKEND", "eager")
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def saved_keys(run_dir: Path) -> dict[str, set[str]]:
    return {
        "model": set(load_file(str(run_dir / "model.safetensors"))),
        "last": set(load_file(str(run_dir / "checkpoints" / "last.safetensors"))),
    }


def assert_plain_keys(run_dir: Path, method: nn.Module) -> None:
    keys = saved_keys(run_dir)
    assert keys["model"] == set(method.state_dict())
    assert not any("_orig_mod" in k for k in keys["model"] | keys["last"])
    loaded, _ = load_model(run_dir)  # strict: every key where the registry's model has it
    for k, v in method.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_compile_on_trains_through_the_wrapper_and_saves_plain_keys(tmp_path, glyphs, monkeypatch,
                                                                     eager_backend):  # fmt: skip
    wrapped = []
    real = compute.compiled
    monkeypatch.setattr(compute, "compiled", lambda m: wrapped.append(m) or real(m))
    method, result, notes = train(tmp_path / "r", glyphs, compile="on")
    assert wrapped == [method]  # the method itself was compiled (DDP's wrapper under torchrun)
    assert "--compile on: compiling the training step" in notes
    assert result.steps == STEPS
    assert_plain_keys(tmp_path / "r", method)


def test_a_failed_compile_falls_back_to_eager_with_one_note(tmp_path, glyphs, monkeypatch):
    def broken(gm, example_inputs):
        raise RuntimeError("no C++ compiler here\nand a long traceback")

    monkeypatch.setattr(compute, "COMPILE_BACKEND", broken)
    torch._dynamo.reset()
    try:
        method, result, notes = train(tmp_path / "r", glyphs, compile="on")
    finally:
        torch._dynamo.reset()
    assert result.steps == STEPS and result.stopped == "done"
    failed = [line for line in notes.splitlines() if "torch.compile failed" in line]
    assert len(failed) == 1 and "no C++ compiler here" in failed[0]
    assert "training on without it" in failed[0]
    assert_plain_keys(tmp_path / "r", method)


def test_compile_on_without_a_compiler_notes_it_and_trains(tmp_path, glyphs, monkeypatch):
    monkeypatch.setattr(compute.shutil, "which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    assert "no C++ compiler" in compute.compile_problem(CPU)
    monkeypatch.setattr(compute, "compiled", lambda m: pytest.fail("compiled anyway"))
    _, result, notes = train(tmp_path / "r", glyphs, compile="on")
    assert result.steps == STEPS
    assert "--compile on: no C++ compiler" in notes and "training without it" in notes


def test_the_auto_rule_weighs_the_rest_of_the_run():
    limit = compute.AUTO_COMPILE_SECONDS
    # the help says it in minutes, without importing torch
    assert f"{limit / 60:g} more minutes" in TrainingConfig.model_fields["compile"].description
    assert compute.should_compile(1.0, int(limit) + 1, None)
    assert not compute.should_compile(1.0, int(limit) - 1, None)
    assert not compute.should_compile(1.0, 10 * int(limit), limit / 2)  # a time limit is near
    assert compute.should_compile(0.5, 10 * int(limit), None)
    # then the compiled steps must beat the eager ones by AUTO_MIN_SPEEDUP
    assert compute.compiled_pays(1.0, 0.9) and not compute.compiled_pays(1.0, 0.97)


@pytest.mark.parametrize("long_enough", [True, False])
def test_compile_auto_decides_after_timing_eager_steps(tmp_path, glyphs, monkeypatch,
                                                       eager_backend, long_enough):  # fmt: skip
    monkeypatch.setattr(compute, "AUTO_COMPILE_SECONDS", 0.0 if long_enough else 1e9)
    decided = []
    real = compute.should_compile
    monkeypatch.setattr(compute, "should_compile", lambda *a: decided.append(a) or real(*a))
    steps = compute.AUTO_PROBE_STEPS + 3
    method, result, notes = train(tmp_path / "r", glyphs, steps=steps, compile="auto")
    assert result.steps == steps
    assert len(decided) == 1  # once, after the probe steps
    step_seconds, steps_left, seconds_left = decided[0]
    assert step_seconds > 0 and steps_left == steps - compute.AUTO_PROBE_STEPS - 1
    assert seconds_left is None
    assert ("--compile auto" in notes) == long_enough
    assert_plain_keys(tmp_path / "r", method)


@pytest.mark.parametrize("pays", [True, False])
def test_compile_auto_keeps_the_compiled_step_only_if_faster(tmp_path, glyphs, monkeypatch,
                                                             eager_backend, pays):  # fmt: skip
    monkeypatch.setattr(compute, "AUTO_COMPILE_SECONDS", 0.0)
    timings = []
    monkeypatch.setattr(compute, "compiled_pays", lambda *a: timings.append(a) or pays)
    steps = 2 * compute.AUTO_PROBE_STEPS + 4  # probe, compile, trial, then the rest
    method, result, notes = train(tmp_path / "r", glyphs, steps=steps, compile="auto")
    assert result.steps == steps
    assert len(timings) == 1  # decided once, after AUTO_PROBE_STEPS compiled steps
    eager, compiled = timings[0]
    assert eager > 0 and compiled > 0
    if pays:
        assert "; keeping it" in notes
    else:
        assert "not faster; training on without it" in notes
    assert_plain_keys(tmp_path / "r", method)


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("SKETCHSHOT_SLOW") != "1",
    reason="inductor compiles C++ (about a minute of CPU); set SKETCHSHOT_SLOW=1",
)
def test_a_really_compiled_run_trains_and_saves_plain_keys(tmp_path, glyphs):
    if compute.compile_problem(CPU):
        pytest.skip(compute.compile_problem(CPU))
    torch._dynamo.reset()
    try:
        method, result, notes = train(tmp_path / "r", glyphs, compile="on")
    finally:
        torch._dynamo.reset()
    assert "torch.compile failed" not in notes, notes
    assert result.steps == STEPS
    assert_plain_keys(tmp_path / "r", method)


# ---------------------------------------------------------------- threads


def test_set_threads_sets_torchs_threads_and_none_leaves_them():
    before = torch.get_num_threads()
    try:
        compute.set_threads(1)
        assert torch.get_num_threads() == 1
        compute.set_threads(None)
        assert torch.get_num_threads() == 1
        compute.set_threads(2)  # again: the inter-op pool is set once, and that is no error
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_threads_and_compile_reach_the_engine_from_every_command(cli, monkeypatch):
    seen: dict = {}

    def fake_run(cfg, out=None, resume=None, quiet=False, console=None):
        seen["train"] = cfg
        metrics = {"epochs": 1, "images_per_s": 1.0, "stopped": "done", "best": {}}
        return SimpleNamespace(run_dir=Path("r"), method="m", metrics=metrics)

    monkeypatch.setattr(engine, "pretrain", fake_run)
    monkeypatch.setattr(engine, "finetune", fake_run)
    result = cli("pretrain", "--threads", 1, "--compile", "auto", "--amp", "bf16")
    assert result.exit_code == 0, result.output
    cfg = seen["train"]
    assert (cfg.threads, cfg.pretrain.compile, cfg.pretrain.amp) == (1, "auto", "bf16")
    result = cli("finetune", "--threads", 2, "--compile", "on", "--amp", "auto")
    assert result.exit_code == 0, result.output
    cfg = seen["train"]
    assert (cfg.threads, cfg.finetune.compile, cfg.finetune.amp) == (2, "on", "auto")
    assert Config().pretrain.compile == "off" and Config().threads is None  # the defaults

    # evaluate starts from the model's config, but not from the threads it trained with
    monkeypatch.setattr(engine, "saved_config", lambda model: Config(threads=7))

    def fake_evaluate(cfg, model=None, quiet=False, console=None, **outputs):
        seen["evaluate"] = cfg
        return SimpleNamespace(as_dict=lambda: {})

    monkeypatch.setattr(engine, "evaluate", fake_evaluate)
    assert cli("evaluate", "--model", "m", "--json").exit_code == 0
    assert seen["evaluate"].threads is None
    assert cli("evaluate", "--model", "m", "--threads", 3, "--json").exit_code == 0
    assert seen["evaluate"].threads == 3

    def fake_embed(cfg, quiet=False, console=None):
        seen["embed"] = cfg
        raise ConfigError("stop here")

    def fake_predict(cfg, quiet=False, console=None, stdin=None):
        seen["predict"] = cfg
        return engine.PredictionRun("m", "b", ("a",), None, None, iter(()))

    monkeypatch.setattr(engine, "embed_source", fake_embed)
    monkeypatch.setattr(engine, "predict", fake_predict)
    cli("embed", "data", "--threads", 1)
    assert seen["embed"] == EmbedConfig(data="data", threads=1)
    assert cli("predict", "x.png", "--bank", "b", "--threads", 1, "--json").exit_code == 0
    assert seen["predict"] == PredictConfig(inputs=("x.png",), bank=Path("b"), threads=1)


def test_threads_below_one_are_refused(cli, monkeypatch):
    monkeypatch.setattr(engine, "pretrain", lambda *a, **k: pytest.fail("engine was called"))
    result = cli("pretrain", "--threads", 0)
    assert result.exit_code == 2
    assert "--threads" in one_line_error(result)


def test_the_engine_sets_the_threads_it_is_given(saved_model, tmp_path, monkeypatch):
    asked = []
    monkeypatch.setattr(compute, "set_threads", asked.append)
    folder = tmp_path / "images"
    from helpers import sketch_array, write_png

    write_png(folder / "a" / "0.png", sketch_array(0, 0))
    out = tmp_path / "e.npy"
    engine.embed_source(EmbedConfig(data=str(folder), model=saved_model, out=out, threads=1),
                        quiet=True)  # fmt: skip
    assert asked == [1]


# ---------------------------------------------------------------- BatchNorm folded


def with_running_statistics(encoder: nn.Module, seed: int = 0) -> nn.Module:
    """``encoder`` with BatchNorm statistics and affine parameters other than the initial ones,
    so that folding them has something to get wrong."""
    g = torch.Generator().manual_seed(seed)
    for m in encoder.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return encoder


@pytest.mark.parametrize("name", ENCODERS.names())
def test_folded_encoders_compute_the_same_features(name):
    size = size_for(name)
    torch.manual_seed(0)
    encoder = with_running_statistics(create_encoder(name, image_size=size)).train()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    x = torch.rand(3, 1, size, size, generator=torch.Generator().manual_seed(1))
    fast = compute.inference_encoder(encoder, CPU)
    assert encoder.training  # the encoder itself is left as it was
    assert all(torch.equal(v, encoder.state_dict()[k]) for k, v in before.items())
    with torch.no_grad():
        expected = encoder.eval()(x)
        got = fast(x)
    assert got.shape == expected.shape
    scale = expected.abs().max().clamp(min=1.0)
    assert (got - expected).abs().max() <= 1e-5 * scale, name
    # no BatchNorm after a convolution is left in the folded encoder
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())


def test_embed_folds_conv4_and_matches_the_plain_encoder_to_1e5():
    torch.manual_seed(0)
    method = create_method("protonet", with_running_statistics(create_encoder("conv4")))
    images = (torch.rand(40, 1, 28, 28) * 255).to(torch.uint8)
    folded = embed(method, images, CPU, batch_size=16)
    plain = embed(method, images, CPU, batch_size=16, encoder=method.encoder)
    assert (folded - plain).abs().max() <= 1e-5
    assert method.training  # embed leaves the mode as it found it
    assert any(isinstance(m, nn.BatchNorm2d) for m in method.encoder.modules())


def test_an_encoder_that_cannot_be_traced_is_used_as_it_is():
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:  # data-dependent: torch.fx cannot trace it
                x = x * 2
            return self.bn(self.conv(x)).flatten(1)

    encoder = Branchy()
    assert compute.inference_encoder(encoder, CPU) is encoder
