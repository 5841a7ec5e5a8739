"""Small shared fixtures: the CLI, tiny episodes and a saved model. Plain helpers are in
helpers.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from helpers import model_spec


@pytest.fixture(scope="session", autouse=True)
def float32_cpu() -> Iterator[Callable[[], frozenset[str]]]:
    """The suite computes in float32 on every CPU: ``--amp auto`` (the default) would pick bf16
    on CPUs with native bf16 and float32 on the others, and CI's machines are of both kinds,
    while the tiny trainings' thresholds are float32's. Tests of bf16 pretend their CPU's flags
    (``flags`` in test_compute.py). Yields the machine's own ``cpu_flags``."""
    from sketchshot import compute

    real = compute.cpu_flags
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(compute, "cpu_flags", lambda: real() - set(compute.NATIVE_BF16_FLAGS))
        yield real


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., object]:
    """``cli(*args, input=None)``: the app invoked in-process from an empty working folder, on
    a 200-column terminal."""
    from typer.testing import CliRunner

    from sketchshot.cli import app

    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def invoke(*args: object, input: str | None = None):
        return runner.invoke(app, [str(a) for a in args], input=input, env={"COLUMNS": "200"})

    return invoke


@pytest.fixture
def tiny_episode() -> Callable[..., object]:
    """``tiny_episode(n_way, n_shot, n_query, size)``: an ``Episode`` of random images in [0, 1]."""
    from sketchshot.data.episodes import Episode

    def make(n_way: int = 3, n_shot: int = 2, n_query: int = 2, size: int = 28):
        g = torch.Generator().manual_seed(0)
        return Episode(
            support=torch.rand(n_way * n_shot, 1, size, size, generator=g),
            support_labels=torch.arange(n_way).repeat_interleave(n_shot),
            query=torch.rand(n_way * n_query, 1, size, size, generator=g),
            query_labels=torch.arange(n_way).repeat_interleave(n_query),
            n_way=n_way,
        )

    return make


@pytest.fixture
def saved_model(tmp_path: Path) -> Path:
    """A randomly initialised ProtoNet/conv4 at 28 px, saved as a run folder with a full sidecar."""
    from sketchshot.checkpoint import save_model
    from sketchshot.config import Config
    from sketchshot.encoders import create_encoder
    from sketchshot.methods import create_method

    torch.manual_seed(0)
    spec = model_spec("protonet", "conv4", 28)
    method = create_method("protonet", create_encoder("conv4", image_size=28))
    run = tmp_path / "model-run"
    save_model(
        run / "model",
        method,
        {
            "model": spec,
            "preprocessing": {"image_size": 28, "invert": "auto", "mean": 0.5, "std": 0.5},
            "class_names": [],
            "config": Config().model_dump(mode="json"),
        },
    )
    return run
