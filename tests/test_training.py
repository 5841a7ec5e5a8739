"""The training loop: schedules, and resuming after Ctrl-C lands on the very same weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import model_spec
from sketchshot.checkpoint import save_model
from sketchshot.config import OptimConfig
from sketchshot.data.glyphs import make_glyphs
from sketchshot.data.views import SketchAugment
from sketchshot.encoders import create_encoder
from sketchshot.errors import TrainingInterrupted
from sketchshot.methods import create_method
from sketchshot.methods.ssl.base import TwoViews
from sketchshot.training import BatchSource, LoopSettings, fit, lr_factor


def test_lr_factor_warmup_then_cosine_to_near_zero():
    cfg = OptimConfig(schedule="cosine", warmup_epochs=1)
    steps, total = 10, 50
    assert [lr_factor(cfg, s, steps, total) for s in range(10)] == pytest.approx(
        [(s + 1) / 10 for s in range(10)]
    )
    assert lr_factor(cfg, 10, steps, total) == pytest.approx(1.0)
    assert lr_factor(cfg, 30, steps, total) == pytest.approx(0.001 + 0.999 * 0.5)  # halfway
    assert lr_factor(cfg, 50, steps, total) == pytest.approx(0.001)
    values = [lr_factor(cfg, s, steps, total) for s in range(10, 51)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_lr_factor_step_and_constant():
    cfg = OptimConfig(schedule="step", step_size=2, gamma=0.5)
    by_epoch = [lr_factor(cfg, epoch * 4, 4, 40) for epoch in range(6)]
    assert by_epoch == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    assert lr_factor(OptimConfig(schedule="constant"), 37, 4, 40) == 1.0


STEPS, BATCH = 3, 16
AUGMENT = SketchAugment()


def two_views(images: torch.Tensor) -> TwoViews:
    return TwoViews(AUGMENT(images), AUGMENT(images))


ARGS = {"hidden_dim": 32, "projection_dim": 16, "temperature": 0.5}


@pytest.fixture(scope="module")
def images():
    return make_glyphs(12, 4, 28, seed=0)


def batches_of(images, interrupt_at: int | None = None):
    """Epoch batches drawn from the loop's generator; raises KeyboardInterrupt (as Ctrl-C
    would) when the loop asks for batch number ``interrupt_at`` of the run."""
    asked = {"n": 0}

    def batches(rng):
        order = torch.from_numpy(rng.permutation(len(images)))
        for i in range(STEPS):
            asked["n"] += 1
            if asked["n"] == interrupt_at:
                raise KeyboardInterrupt
            yield images.floats(order[i * BATCH : (i + 1) * BATCH])

    return batches


def run(run_dir: Path, images, resume: bool = False, interrupt_at: int | None = None):
    method = create_method("simclr", create_encoder("conv4"), **ARGS)
    spec = model_spec("simclr", "conv4", 28, **ARGS)

    def save(stem, metrics):
        card = {"model": spec, "preprocessing": {"image_size": 28}, "metrics": metrics}
        save_model(run_dir / stem, method, card)

    settings = LoopSettings(epochs=2, optim=OptimConfig(lr=3e-3), seed=5)
    source = BatchSource(batches_of(images, interrupt_at), STEPS, views=two_views)
    result = fit(
        method, source, settings, run_dir, torch.device("cpu"), save, resume=resume, quiet=True
    )
    return method, result


def last_state(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "checkpoints" / "last.safetensors"))


def test_resume_after_ctrl_c_mid_epoch_matches_an_uninterrupted_run(tmp_path, images):
    # with best-by-loss tracking on, so the resumed run must also pick up best.safetensors
    # to hand back the same (best) weights, and the optimiser state must match too
    torch.manual_seed(0)
    straight, result = run(tmp_path / "straight", images)
    assert result.epochs == 2 and result.steps == 2 * STEPS and result.stopped == "done"

    torch.manual_seed(0)
    with pytest.raises(TrainingInterrupted, match="--resume"):
        run(tmp_path / "split", images, interrupt_at=STEPS + 2)  # epoch 2, after its 1st step
    saved = json.loads((tmp_path / "split" / "checkpoints" / "last.json").read_text())
    assert saved["loop"]["epoch"] == 1 and saved["loop"]["step_in_epoch"] == 1
    assert saved["loop"]["step"] == STEPS + 1

    torch.manual_seed(123)  # other initial weights and RNG: all must come from the checkpoint
    resumed, result = run(tmp_path / "split", images, resume=True)
    assert result.epochs == 2 and result.steps == 2 * STEPS

    a, b = last_state(tmp_path / "straight"), last_state(tmp_path / "split")
    assert a.keys() == b.keys()
    for key in a:
        if key.startswith(("model/", "optim/")):
            assert torch.allclose(a[key], b[key], rtol=0, atol=1e-6), key
    for key, value in straight.state_dict().items():  # and the weights handed back
        assert torch.allclose(resumed.state_dict()[key], value, rtol=0, atol=1e-6), key


def test_training_changes_the_weights_and_logs_each_epoch(tmp_path, images):
    torch.manual_seed(0)
    before = create_method("simclr", create_encoder("conv4"), **ARGS).state_dict()
    torch.manual_seed(0)
    _, result = run(tmp_path / "r", images)
    after = last_state(tmp_path / "r")
    changed = [k for k, v in before.items() if not torch.equal(after[f"model/{k}"], v)]
    assert any(k.startswith("encoder.") for k in changed)
    assert any(k.startswith("head.") for k in changed)
    records = [
        json.loads(line)
        for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
        if '"epoch_end"' in line
    ]
    assert [r["epoch"] for r in records] == [1, 2]
    assert [r["step"] for r in records] == [STEPS, 2 * STEPS]
    assert all(r["loss"] > 0 for r in records)
    assert result.best["epoch"] in (1, 2)
    assert (tmp_path / "r" / "checkpoints" / "best.safetensors").is_file()
