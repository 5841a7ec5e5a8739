"""Ctrl-C (a real SIGINT) stops training at a step boundary: ``--resume`` then lands on the very
weights of a run never stopped, and the resumed epoch's record averages all of its steps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sketchshot import engine
from sketchshot.config import OptimConfig, resolve_config
from sketchshot.encoders import create_encoder
from sketchshot.errors import TrainingInterrupted
from sketchshot.methods import create_method
from sketchshot.methods.ssl.base import TwoViews
from sketchshot.training import BatchSource, LoopSettings, fit

# 18 training classes x 8 drawers, batches of 16: 9 steps an epoch, about 0.2 s
TINY = """
seed = 3
[data.builtin]
n_classes = 20
n_drawers = 8
[pretrain]
epochs = 2
batch_size = 16
val_episodes = 10
amp = "off"  # float32 in the child process too (the suite's own CPU flags are patched)
[pretrain.simclr]
hidden_dim = 32
projection_dim = 16
"""
STEPS = 9

# The CLI in a process that sends itself SIGINT from inside optimiser step N, once the
# parameters have moved: the moment at which a Ctrl-C used to save half a step.
SIGINT_IN_STEP = """
import os, signal, sys
import torch
from sketchshot.cli import main

n, calls, step = int(sys.argv[1]), [0], torch.optim.Adam.step
def stepped(self, *args, **kwargs):
    out = step(self, *args, **kwargs)
    calls[0] += 1
    if calls[0] == n:
        os.kill(os.getpid(), signal.SIGINT)
    return out
torch.optim.Adam.step = stepped
sys.argv = ["sketchshot", *sys.argv[2:]]
main()
"""


def epoch_records(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [r for r in map(json.loads, lines) if r.get("event") == "epoch_end"]


def saved_loop(run: Path) -> dict:
    return json.loads((run / "checkpoints" / "last.json").read_text())["loop"]


def test_sigint_in_an_optimizer_step_then_resume_is_exact(tmp_path):
    (tmp_path / "tiny.toml").write_text(TINY)
    cut = subprocess.Popen(
        [sys.executable, "-c", SIGINT_IN_STEP, str(STEPS + 3), "pretrain", "--config",
         "tiny.toml", "--out", "cut", "--device", "cpu", "--quiet"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    cfg = resolve_config(tmp_path / "tiny.toml", overrides={"device": "cpu"})
    engine.pretrain(cfg, tmp_path / "straight", quiet=True)  # meanwhile, never stopped
    _, err = cut.communicate(timeout=120)
    assert cut.returncode == 130, err[-2000:]
    assert "interrupted; progress saved" in err and "Traceback" not in err
    # saved after the step that was under way, with counters that say so
    loop = saved_loop(tmp_path / "cut")
    assert (loop["epoch"], loop["step_in_epoch"], loop["step"]) == (1, 3, STEPS + 3)
    assert loop["summed"] == 3 and set(loop["sums"]) >= {"loss", "lr"}

    engine.pretrain(cfg, resume=tmp_path / "cut", quiet=True)
    a = load_file(str(tmp_path / "straight" / "checkpoints" / "last.safetensors"))
    b = load_file(str(tmp_path / "cut" / "checkpoints" / "last.safetensors"))
    assert a.keys() == b.keys() and any(k.startswith("optim/") for k in a)
    for key in a:
        if key.startswith(("model/", "optim/")):
            assert torch.allclose(a[key], b[key], rtol=0, atol=1e-6), key
    straight, resumed = epoch_records(tmp_path / "straight"), epoch_records(tmp_path / "cut")
    assert [r["epoch"] for r in resumed] == [1, 2]
    for want, got in zip(straight, resumed, strict=True):
        assert {k: v for k, v in got.items() if k != "seconds"} == {
            k: v for k, v in want.items() if k != "seconds"
        }


# ---------------------------------------------------------------- the loop, in this process

ARGS = {"hidden_dim": 32, "projection_dim": 16}


def tiny_fit(run_dir: Path, sigints: dict[int, int] | None = None, resume: bool = False):
    """Two epochs of 3 SimCLR steps on random images; ``sigints`` maps a step (1-based) to the
    number of SIGINTs this process sends itself while making that step's views, that is in
    the middle of the step."""
    torch.manual_seed(0)
    method = create_method("simclr", create_encoder("conv4"), **ARGS)
    made = {"n": 0}

    def batches(rng):
        for _ in range(3):
            yield torch.from_numpy(rng.random((8, 1, 28, 28), dtype="float32"))

    def views(x: torch.Tensor) -> TwoViews:
        made["n"] += 1
        for _ in range((sigints or {}).get(made["n"], 0)):
            os.kill(os.getpid(), signal.SIGINT)
        return TwoViews(x + 0.1 * torch.rand_like(x), x.flip(-1))

    settings = LoopSettings(epochs=2, optim=OptimConfig(), seed=0)
    source = BatchSource(batches, 3, views=views)
    fit(method, source, settings, run_dir, torch.device("cpu"), lambda *a: None,
        resume=resume, quiet=True)  # fmt: skip
    return method


def test_one_sigint_stops_after_the_step_and_restores_the_handler(tmp_path):
    straight = tiny_fit(tmp_path / "straight")
    with pytest.raises(TrainingInterrupted, match="progress saved"):
        tiny_fit(tmp_path / "cut", sigints={5: 1})
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    loop = saved_loop(tmp_path / "cut")
    assert (loop["epoch"], loop["step_in_epoch"], loop["step"], loop["summed"]) == (1, 2, 5, 2)
    resumed = tiny_fit(tmp_path / "cut", resume=True)
    for (name, a), b in zip(
        straight.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        assert torch.allclose(a, b, rtol=0, atol=1e-6), name
    a, b = epoch_records(tmp_path / "straight"), epoch_records(tmp_path / "cut")
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    assert [r["lr"] for r in a] == [r["lr"] for r in b]


def test_a_second_sigint_stops_at_once_and_saves_nothing_half_done(tmp_path):
    with pytest.raises(TrainingInterrupted, match="in the middle of a step"):
        tiny_fit(tmp_path / "cut", sigints={5: 2})
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    # last is still the one written at the end of epoch 1, not the step cut in two
    loop = saved_loop(tmp_path / "cut")
    assert (loop["epoch"], loop["step_in_epoch"], loop["step"]) == (1, 0, 3)
    with pytest.raises(TrainingInterrupted, match="nothing was saved"):
        tiny_fit(tmp_path / "early", sigints={2: 2})
    assert not (tmp_path / "early" / "checkpoints" / "last.json").exists()
