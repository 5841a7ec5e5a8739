"""Fault injection: a process killed at any write point of a save, and a full disk.

A kill is simulated by making the Nth write point (``os.replace``, ``os.unlink``, a file's
``write_bytes``/``write_text``, which writes half its data first) raise ``Killed``, a
``BaseException`` as a dying process never reaches ``except Exception``; after it every write
point raises too, as nothing a dead process does reaches the disk. A fresh load must then give
the previous pair or the new one, each whole (its sidecar with its own tensors)."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from helpers import model_spec, plain
from sketchshot.bank import ClassBank, load_bank, save_bank
from sketchshot.card import ModelRef, Preprocessing
from sketchshot.checkpoint import load_model, load_training_state, save_model, save_training_state
from sketchshot.cli import app
from sketchshot.encoders import create_encoder
from sketchshot.errors import CheckpointError, DiskFull
from sketchshot.methods import create_method

TAGS = ("old", "new", "newer")


class Killed(BaseException):
    """The process died here."""


class WritePoints:
    """Counts write points and fails the ``at``-th (1-based) with ``fault()``; with ``dead``,
    every later one fails too (a killed process writes nothing more)."""

    def __init__(self, at: int | None, fault: Callable[[], BaseException], dead: bool) -> None:
        self.at, self.fault, self.dead = at, fault, dead
        self.count, self.failed = 0, False

    def fails_now(self) -> bool:
        if self.failed and self.dead:
            return True
        self.count += 1
        self.failed = self.failed or self.count == self.at
        return self.count == self.at


@contextmanager
def write_points(
    at: int | None = None, fault: Callable[[], BaseException] = Killed, dead: bool = True
) -> Iterator[WritePoints]:
    points = WritePoints(at, fault, dead)
    replace, unlink = os.replace, os.unlink
    write_bytes, write_text = Path.write_bytes, Path.write_text

    def on(operation: Callable, *args, **kwargs):
        if points.fails_now():
            raise points.fault()
        return operation(*args, **kwargs)

    def torn(write: Callable, path: Path, data, *args, **kwargs):
        if points.fails_now():
            write(path, data[: len(data) // 2], *args, **kwargs)
            raise points.fault()
        return write(path, data, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "replace", lambda *a, **k: on(replace, *a, **k))
        mp.setattr(os, "unlink", lambda *a, **k: on(unlink, *a, **k))
        mp.setattr(Path, "write_bytes", lambda p, d: torn(write_bytes, p, d))
        mp.setattr(Path, "write_text", lambda p, d, *a, **k: torn(write_text, p, d, *a, **k))
        yield points


def no_space() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# ------------------------------------------------------------------- the three kinds of pair


def protonet(tag: str):
    torch.manual_seed(TAGS.index(tag))
    return create_method("protonet", create_encoder("conv4", image_size=28))


EXPECTED = {tag: protonet(tag).state_dict() for tag in TAGS}


def same_weights(state: dict[str, torch.Tensor], tag: str) -> bool:
    return all(torch.equal(state[k], v) for k, v in EXPECTED[tag].items())


@dataclass(frozen=True)
class Pair:
    """How to save the pair of version ``tag`` in a folder, and which version loads there
    (``load`` fails unless the sidecar and its tensors are of one version)."""

    save: Callable[[Path, str], object]
    load: Callable[[Path], str]
    files: tuple[str, ...]


def save_model_pair(folder: Path, tag: str) -> None:
    card = {
        "model": model_spec("protonet", "conv4", 28),
        "preprocessing": {"image_size": 28},
        "class_names": list(TAGS[: TAGS.index(tag) + 1]),
        "metrics": {"tag": tag},
    }
    save_model(folder / "model", protonet(tag), card)


def load_model_pair(folder: Path) -> str:
    model, card = load_model(folder)
    tag = card.metrics["tag"]
    assert same_weights(model.state_dict(), tag)
    return tag


def bank_of(tag: str) -> ClassBank:
    n = TAGS.index(tag) + 2  # as enroll --bank adds a class each time
    return ClassBank(
        embeddings=torch.arange(n * 3 * 4, dtype=torch.float32).reshape(n * 3, 4) + n,
        labels=torch.arange(n).repeat_interleave(3),
        class_names=tuple(f"class{i}" for i in range(n)),
        class_sources=("support",) * n,
        model=ModelRef(path="model", sha256="0" * 64, method="protonet", encoder="conv4"),
        preprocessing=Preprocessing(image_size=28),
    )


def save_bank_pair(folder: Path, tag: str) -> None:
    save_bank(bank_of(tag), folder / "bank")


def load_bank_pair(folder: Path) -> str:
    bank = load_bank(folder / "bank")
    tag = TAGS[len(bank.class_names) - 2]
    assert torch.equal(bank.embeddings, bank_of(tag).embeddings)
    return tag


def save_state_pair(folder: Path, tag: str) -> None:
    method = protonet(tag)
    optimizer = torch.optim.SGD(method.parameters(), lr=0.1, momentum=0.9)
    save_training_state(folder / "last", method, optimizer, {"epoch": TAGS.index(tag)})


def load_state_pair(folder: Path) -> str:
    method = protonet("old")
    optimizer = torch.optim.SGD(method.parameters(), lr=0.1, momentum=0.9)
    tag = TAGS[load_training_state(folder / "last", method, optimizer)["epoch"]]
    assert same_weights(method.state_dict(), tag)
    return tag


PAIRS = {
    "model": Pair(save_model_pair, load_model_pair, ("model.json", "model.safetensors")),
    "bank": Pair(save_bank_pair, load_bank_pair, ("bank.json", "bank.safetensors")),
    "training_state": Pair(save_state_pair, load_state_pair, ("last.json", "last.safetensors")),
}


def loads(pair: Pair, folder: Path) -> str | None:
    """The version that loads in ``folder``, None when there is no pair at all."""
    try:
        return pair.load(folder)
    except CheckpointError as exc:
        assert "missing" in str(exc) or "no " in str(exc), exc  # absent, not corrupt
        return None


def save_killed_at(pair: Pair, folder: Path, tag: str, at: int) -> bool:
    """Save ``tag`` and kill the process at write point ``at``; False if the save finished
    before that point."""
    with write_points(at) as points:
        try:
            pair.save(folder, tag)
        except Killed:
            return True
    assert not points.failed
    return False


def write_point_count(pair: Pair, folder: Path, tag: str) -> int:
    with write_points() as points:
        pair.save(folder, tag)
    return points.count


# ----------------------------------------------------------------------------- kills


@pytest.mark.parametrize("kind", PAIRS)
def test_a_kill_at_any_write_point_leaves_the_old_or_the_new_pair(kind, tmp_path):
    pair = PAIRS[kind]
    pair.save(tmp_path / "count", "old")
    n = write_point_count(pair, tmp_path / "count", "new")
    assert n >= 5  # weights written, renamed; sidecar written, renamed (commit); weights moved
    seen = []
    for at in range(1, n + 1):
        folder = tmp_path / f"kill{at}"
        pair.save(folder, "old")
        assert save_killed_at(pair, folder, "new", at)
        seen.append(pair.load(folder))
        # the next save settles what the killed one left, and leaves nothing else behind
        pair.save(folder, "newer")
        assert pair.load(folder) == "newer"
        assert sorted(os.listdir(folder)) == sorted(pair.files)
    # the old pair up to the commit, the new one after it: both sides were hit
    assert seen == sorted(seen, key=TAGS.index) and set(seen) == {"old", "new"}, seen


@pytest.mark.parametrize("kind", PAIRS)
def test_a_kill_during_the_first_save_leaves_the_new_pair_or_none(kind, tmp_path):
    pair = PAIRS[kind]
    n = write_point_count(pair, tmp_path / "count", "old")
    seen = []
    for at in range(1, n + 1):
        folder = tmp_path / f"kill{at}"
        assert save_killed_at(pair, folder, "old", at)
        seen.append(loads(pair, folder))
    assert seen[0] is None and seen[-1] == "old", seen


@pytest.mark.parametrize("kind", PAIRS)
def test_a_second_kill_before_the_first_is_settled_still_leaves_a_whole_pair(kind, tmp_path):
    pair = PAIRS[kind]
    pair.save(tmp_path / "count", "old")
    n = write_point_count(pair, tmp_path / "count", "new")
    for first in range(1, n + 1):
        second = 1
        while True:
            folder = tmp_path / f"kill{first}-{second}"
            pair.save(folder, "old")
            save_killed_at(pair, folder, "new", first)
            before = pair.load(folder)
            killed = save_killed_at(pair, folder, "newer", second)
            assert pair.load(folder) in (before, "newer")
            if not killed:
                break
            second += 1


def test_pending_weights_that_fail_their_hash_are_refused(tmp_path):
    """The fallback is as strict as the pair: the new sidecar is committed, its weights are
    still pending, and someone changed them."""
    pair = PAIRS["model"]
    at = 1
    while True:  # the first write point after which the new pair loads
        folder = tmp_path / f"kill{at}"
        pair.save(folder, "old")
        save_killed_at(pair, folder, "new", at)
        if pair.load(folder) == "new":
            break
        at += 1
    (pending,) = (p for p in folder.iterdir() if p.name.startswith(".model.safetensors."))
    data = bytearray(pending.read_bytes())
    data[-1] ^= 0xFF
    pending.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256 does not match"):
        load_model(folder)


# ------------------------------------------------------------------------- a full disk


@pytest.mark.parametrize("kind", PAIRS)
def test_a_full_disk_at_any_write_point_keeps_a_whole_pair(kind, tmp_path):
    pair = PAIRS[kind]
    pair.save(tmp_path / "count", "old")
    n = write_point_count(pair, tmp_path / "count", "new")
    for at in range(1, n + 1):
        folder = tmp_path / f"full{at}"
        pair.save(folder, "old")
        with write_points(at, no_space, dead=False), pytest.raises(DiskFull) as caught:
            pair.save(folder, "new")
        message = str(caught.value)
        assert "no space left" in message and "\n" not in message
        assert any(f"{folder / name}:" in message for name in pair.files)  # users see it
        assert pair.load(folder) in ("old", "new")
        pair.save(folder, "newer")
        assert pair.load(folder) == "newer"
        assert sorted(os.listdir(folder)) == sorted(pair.files)


TINY = """
[data.builtin]
n_classes = 12
n_drawers = 4
[pretrain]
batch_size = 16
val_episodes = 2
[pretrain.simclr]
hidden_dim = 16
projection_dim = 8
"""


@contextmanager
def full_disk_at(stem: str, nth: int) -> Iterator[None]:
    """The ``nth`` write of ``stem.safetensors`` (under any folder) finds the disk full, half
    written."""
    write_bytes, seen = Path.write_bytes, []

    def write(path: Path, data: bytes) -> int:
        if path.name.lstrip(".").startswith(f"{stem}.safetensors."):
            seen.append(path)
            if len(seen) == nth:
                write_bytes(path, data[: len(data) // 2])
                raise no_space()
        return write_bytes(path, data)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Path, "write_bytes", write)
        yield
    assert len(seen) >= nth, f"{stem} was written {len(seen)} times"


def pretrain(tmp_path: Path, *args: object):
    common = ["--config", tmp_path / "tiny.toml", "--image-size", 28, "--quiet", "--device", "cpu"]
    result = CliRunner().invoke(app, ["pretrain", *map(str, args), *map(str, common)])
    return result.exit_code, plain(result.output)


def epochs_logged(run: Path) -> list[int]:
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(x)["epoch"] for x in lines if '"epoch_end"' in x]


@pytest.mark.parametrize(
    ("stem", "nth", "then"),
    [
        ("last", 1, "start again with --out"),  # epoch 1: no last yet; best.* was written
        ("last", 2, "continue with --resume"),  # epoch 2: last of epoch 1 stays
        ("model", 1, "continue with --resume"),  # the final model: last of epoch 2 stays
    ],
)
def test_a_full_disk_during_training_is_one_line_and_the_folder_goes_on(stem, nth, then, tmp_path):
    (tmp_path / "tiny.toml").write_text(TINY, encoding="utf-8")
    run = tmp_path / "run"
    with full_disk_at(stem, nth):
        code, output = pretrain(tmp_path, "--epochs", 2, "--out", run)
    assert code == 1
    lines = output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in output, output
    assert "no space left" in lines[0] and f"{stem}.safetensors" in lines[0], lines[0]
    assert then in lines[0], lines[0]
    assert not (run / "model.json").exists()

    if then.startswith("start"):
        assert (run / "checkpoints" / "best.json").exists()  # what blocked the folder before
        code, output = pretrain(tmp_path, "--epochs", 2, "--out", run)
        assert code == 0, output
        assert epochs_logged(run) == [1, 2]  # the stopped attempt's records are gone
    else:
        code, output = pretrain(tmp_path, "--resume", run)
        assert code == 0, output
    card = json.loads((run / "model.json").read_text(encoding="utf-8"))
    assert card["metrics"]["epochs"] == 2
    load_model(run)
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]


def test_a_folder_with_a_resumable_run_still_blocks_out(tmp_path):
    (tmp_path / "tiny.toml").write_text(TINY, encoding="utf-8")
    run = tmp_path / "run"
    with full_disk_at("model", 1):
        assert pretrain(tmp_path, "--epochs", 1, "--out", run)[0] == 1
    code, output = pretrain(tmp_path, "--epochs", 1, "--out", run)
    assert code == 2 and "already holds a run" in output
