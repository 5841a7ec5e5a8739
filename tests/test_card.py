"""Typed cards: what model.json and BANK.json hold, 0.1 cards still loading, and the run
assembly's visible decisions (what is held out, which split evaluate reads)."""

from __future__ import annotations

import json

import pytest

from helpers import write_folder
from sketchshot import engine
from sketchshot.card import FORMAT_VERSION, BankCard, ModelCard
from sketchshot.checkpoint import load_model, read_card
from sketchshot.config import (
    BYOLSettings,
    Config,
    EnrollConfig,
    ProtoNetSettings,
    resolve_config,
)
from sketchshot.data import load_splits
from sketchshot.errors import CheckpointError, DataError


def test_a_card_is_typed_and_round_trips(saved_model):
    card = read_card(saved_model)
    assert isinstance(card, ModelCard) and card.format_version == FORMAT_VERSION
    assert card.file == saved_model / "model.json"
    assert card.model.settings() == ProtoNetSettings()
    assert card.preprocessing.image_size == 28 and card.model.image_size == 28
    assert card.run_config() == Config()
    again = ModelCard.model_validate(json.loads(card.to_json()))
    assert again.model_dump() == card.model_dump()  # (the file it was read from aside)


def test_a_card_written_by_sketchshot_0_1_still_loads(saved_model):
    """Format 1 saved view settings as model arguments and method keys flat in the config."""
    sidecar = saved_model / "model.json"
    data = json.loads(sidecar.read_text())
    data["format_version"], data["sketchshot_version"] = 1, "0.1.0"
    data["model"]["method_args"] = {"distance": "euclidean", "augment_strength": 0.5}
    old_config = dict(data["config"])
    pretrain = dict(old_config["pretrain"])
    pretrain.pop("simclr"), pretrain.pop("views")
    pretrain.update(method="byol", temperature=0.2, hidden_dim=64, ema_decay=0.9, crop=0.5)
    old_config["pretrain"] = pretrain
    data["config"] = old_config
    sidecar.write_text(json.dumps(data))
    method, card = load_model(saved_model)
    assert card.model.method_args == {"distance": "euclidean"}
    cfg = card.run_config()
    assert cfg.pretrain.method == BYOLSettings(hidden_dim=64, ema_decay=0.9)
    assert cfg.pretrain.views.crop == 0.5
    assert method.training is False


def test_info_checks_the_hash_and_refuses_a_bank(saved_model, tmp_path):
    card = engine.info(saved_model)
    assert len(card.sha256) == 64
    weights = saved_model / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-3] ^= 1
    weights.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="sha256 does not match"):
        engine.info(saved_model)
    # a bank is a bank: its card, hash checked, and never taken for a model
    support = write_folder(tmp_path / "support", {"a": 2, "b": 2})
    weights.write_bytes(bytes(raw[:-3] + bytes([raw[-3] ^ 1]) + raw[-2:]))  # undo the damage
    engine.enroll(EnrollConfig(model=saved_model, support=support, out=tmp_path / "bank"))
    card = engine.info(tmp_path / "bank")
    assert isinstance(card, BankCard) and [c.name for c in card.classes] == ["a", "b"]
    with pytest.raises(CheckpointError, match="is a class bank, not a model"):
        load_model(tmp_path / "bank.json")


TINY = {
    "data.builtin.n_classes": 20,
    "data.builtin.n_drawers": 4,
    "pretrain.epochs": 1,
    "pretrain.batch_size": 16,
    "pretrain.val_episodes": 5,
    "pretrain.<method>.hidden_dim": 16,
    "pretrain.<method>.projection_dim": 8,
    "device": "cpu",
}


def test_training_says_what_it_holds_out_and_evaluate_picks_the_split(tmp_path, capsys):
    from rich.console import Console

    console = Console(stderr=True, width=400)
    run = engine.pretrain(resolve_config(overrides=TINY), tmp_path / "pre", console=console)
    said = capsys.readouterr().err
    # the default holds out 10% of the classes to validate, and nothing to test
    assert (
        "holding out 2 classes to validate each epoch and keep the best weights "
        "(--split-fractions 0.9 0.1 0): training on 18 of the 20 classes of builtin glyphs"
    ) in said
    assert "--split-fractions 1 0 0 trains on all" in said
    assert len(read_card(run.run_dir).class_names) == 18
    # evaluate: no test split of the training data, so it says what to do instead
    cfg = engine.saved_config(run.run_dir)
    with pytest.raises(DataError, match="no test split held out"):
        engine.evaluate(cfg, run.run_dir, quiet=True)
    # other data is read whole
    other = cfg.model_copy(update={"data": cfg.data.model_copy(update={"source": "elsewhere"})})
    assert engine.evaluation_split(other, read_card(run.run_dir)).split == "all"
    everything = Config().data.model_copy(update={"split_fractions": (1, 0, 0)})
    assert engine.held_out_note(everything, load_splits(everything, 16)).startswith(
        "training on all 150 classes of builtin glyphs"
    )
    with_test = Config().data.model_copy(update={"split_fractions": (0.7, 0.1, 0.2)})
    assert engine.held_out_note(with_test, load_splits(with_test, 16)).startswith(
        "holding out 15 classes to validate each epoch and keep the best weights, and 30 for "
        "evaluate's test split (--split-fractions 0.7 0.1 0.2): training on 105 of the 150"
    )
