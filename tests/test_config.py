"""Configuration: defaults < TOML file < command line, errors that name their origin, frozen
values, and TOML written back that reads as the same config."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from sketchshot.config import (
    BYOLSettings,
    Config,
    MatchingSettings,
    ViewConfig,
    nest,
    resolve_config,
    to_toml,
)
from sketchshot.errors import ConfigError, UsageError


def write(tmp_path: Path, text: str, name: str = "run.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults():
    cfg = resolve_config()
    assert cfg == Config()
    assert cfg.data.source == "builtin"
    assert (cfg.pretrain.method.name, cfg.finetune.method.name) == ("simclr", "protonet")
    assert cfg.finetune.optim.schedule == "step"  # the section's own default, not OptimConfig's
    assert cfg.pretrain.optim.schedule == "cosine"


def test_file_overrides_defaults_and_keeps_the_rest(tmp_path):
    path = write(
        tmp_path,
        """
seed = 3
[pretrain]
epochs = 7
[pretrain.optim]
lr = 0.05
[data.builtin]
n_classes = 30
""",
    )
    cfg = resolve_config(path)
    assert cfg.seed == 3
    assert cfg.pretrain.epochs == 7
    assert cfg.pretrain.optim.lr == 0.05
    assert cfg.data.builtin.n_classes == 30
    # untouched neighbours keep their defaults, also inside a table the file names
    defaults = Config()
    assert cfg.pretrain.batch_size == defaults.pretrain.batch_size
    assert cfg.pretrain.optim.schedule == defaults.pretrain.optim.schedule
    assert cfg.data.builtin.n_drawers == defaults.data.builtin.n_drawers
    assert cfg.finetune == defaults.finetune


def test_command_line_overrides_file(tmp_path):
    path = write(tmp_path, "seed = 3\n[pretrain]\nepochs = 7\nbatch_size = 32\n")
    cfg = resolve_config(path, {"pretrain.epochs": 2, "seed": None, "data.classes": ("a*",)})
    assert cfg.pretrain.epochs == 2  # command line wins
    assert cfg.pretrain.batch_size == 32  # file value kept
    assert cfg.seed == 3  # an option not given (None) does not override
    assert cfg.data.classes == ("a*",)


def test_finetune_lr_on_command_line_keeps_the_finetune_schedule():
    cfg = resolve_config(overrides={"finetune.optim.lr": 0.002})
    assert cfg.finetune.optim.lr == 0.002
    assert cfg.finetune.optim == Config().finetune.optim.model_copy(update={"lr": 0.002})


def test_finetune_lr_in_file_keeps_the_finetune_schedule(tmp_path):
    cfg = resolve_config(write(tmp_path, "[finetune.optim]\nlr = 0.002\n"))
    assert cfg.finetune.optim.schedule == "step"


def test_overrides_without_file_and_base_layer():
    base = resolve_config(overrides={"pretrain.epochs": 4, "seed": 9})
    cfg = resolve_config(overrides={"seed": 1}, base=base)
    assert cfg.pretrain.epochs == 4
    assert cfg.seed == 1


def test_nest_drops_none_and_nests_dots():
    assert nest({"a.b.c": 1, "a.d": None, "e": 2}) == {"a": {"b": {"c": 1}}, "e": 2}


def test_misspelt_key_in_file_names_key_and_file(tmp_path):
    path = write(tmp_path, "[pretrain]\nepocs = 3\n")
    with pytest.raises(ConfigError) as info:
        resolve_config(path)
    message = str(info.value)
    assert "pretrain.epocs" in message
    assert str(path) in message
    assert info.value.exit_code == 2


def test_misspelt_section_in_file(tmp_path):
    path = write(tmp_path, "[pretrian]\nepochs = 3\n")
    with pytest.raises(ConfigError, match=r"unknown key 'pretrian'") as info:
        resolve_config(path)
    assert str(path) in str(info.value)


def test_bad_value_in_file_names_field_and_file(tmp_path):
    path = write(tmp_path, "[finetune]\nn_way = 1\n")
    with pytest.raises(ConfigError) as info:
        resolve_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: finetune.n_way:")
    assert "greater than or equal to 2" in message


def test_bad_value_on_command_line_says_command_line(tmp_path):
    path = write(tmp_path, "[pretrain]\nepochs = 5\n")
    with pytest.raises(ConfigError) as info:
        resolve_config(path, {"pretrain.epochs": 0})
    message = str(info.value)
    assert message.startswith("command line: pretrain.epochs:")
    assert str(path) not in message


def test_bad_choice_lists_the_problem():
    with pytest.raises(ConfigError, match="command line: device:"):
        resolve_config(overrides={"device": "tpu"})


def test_split_fractions_must_sum_to_one():
    with pytest.raises(ConfigError, match="sum to 1"):
        resolve_config(overrides={"data.split_fractions": (0.5, 0.5, 0.5)})
    cfg = resolve_config(overrides={"data.split_fractions": (0.5, 0.25, 0.25)})
    assert cfg.data.split_fractions == (0.5, 0.25, 0.25)


def test_bad_fractions_in_file_are_blamed_on_the_file_not_the_command_line(tmp_path):
    path = write(tmp_path, "[data]\nsplit_fractions = [0.5, 0.5, 0.5]\n")
    with pytest.raises(ConfigError) as info:
        resolve_config(path, {"data.source": "builtin"})
    assert str(info.value).startswith(f"{path}:")


def test_several_problems_are_all_reported(tmp_path):
    path = write(tmp_path, "[pretrain]\nepocs = 3\nbatch_size = 1\n")
    with pytest.raises(ConfigError) as info:
        resolve_config(path)
    assert "pretrain.epocs" in str(info.value)
    assert "pretrain.batch_size" in str(info.value)


def test_missing_and_invalid_toml_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        resolve_config(tmp_path / "nope.toml")
    bad = write(tmp_path, "[pretrain\nepochs = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        resolve_config(bad)
    assert str(bad) in str(info.value)


def test_config_is_frozen():
    cfg = resolve_config()
    with pytest.raises(ValidationError):
        cfg.seed = 5
    with pytest.raises(ValidationError):
        cfg.pretrain.epochs = 5
    assert cfg == Config()
    assert hash(cfg) == hash(resolve_config())  # usable as a cache key


def test_to_toml_round_trips(tmp_path):
    cfg = resolve_config(
        overrides={
            "seed": -3,
            "device": "cpu",
            "data.source": 'C:\\sketches\\"quoted" folder\nwith a newline\tand a tab é ✓',
            "data.image_size": 32,
            "data.classes": ("Greek", "Latin/*"),
            "data.split_fractions": (0.5, 0.25, 0.25),
            "data.builtin.n_classes": 12,
            "encoder.name": "resnet18",
            "pretrain.optim.lr": 1e-5,
            "pretrain.max_minutes": 2.5,
            "finetune.optim.grad_clip": 1.0,
            "finetune.optim.optimizer": "sgd",
            "evaluate.split": "val",
        }
    )
    text = to_toml(cfg)
    path = write(tmp_path, text, "config.toml")
    assert resolve_config(path) == cfg
    # and the defaults survive the trip too, including None values that TOML cannot hold
    default_path = write(tmp_path, to_toml(Config()), "default.toml")
    assert resolve_config(default_path) == Config()


def test_method_settings_come_from_their_own_section(tmp_path):
    path = write(tmp_path, '[pretrain]\nmethod = "byol"\n[pretrain.byol]\nema_decay = 0.95\n')
    cfg = resolve_config(path)
    assert cfg.pretrain.method == BYOLSettings(ema_decay=0.95)
    # each method's defaults live in its settings: BYOL's widths are BYOL's, not SimCLR's
    assert cfg.pretrain.method.hidden_dim == BYOLSettings().hidden_dim
    # the command line reaches the chosen method's settings through "<method>"
    cfg = resolve_config(
        overrides={"finetune.method": "matching", "finetune.<method>.hidden_dim": 64}
    )
    assert cfg.finetune.method == MatchingSettings(hidden_dim=64)
    # and the saved shape reads back: [finetune] method = "matching" + [finetune.matching]
    text = to_toml(cfg)
    assert '[finetune.matching]\nattention = "cosine"\nhidden_dim = 64' in text
    assert resolve_config(write(tmp_path, text, "back.toml")) == cfg


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"pretrain.method": "byol", "pretrain.<method>.temperature": 0.1},
            "--temperature does not apply to pretrain method 'byol' (only to simclr)",
        ),
        (
            {"finetune.method": "protonet", "finetune.<method>.attention": "mlp"},
            "--attention does not apply to finetune method 'protonet' (only to matching)",
        ),
        (
            {"finetune.<method>.hidden_dim": 8},  # protonet by default
            "--hidden-dim does not apply to finetune method 'protonet' (only to matching, "
            "relation, siamese, pairwise)",
        ),
    ],
)
def test_a_setting_of_another_method_is_a_usage_error(overrides, message):
    names = {k: "--" + k.rsplit(".", 1)[1].replace("_", "-") for k in overrides}
    with pytest.raises(UsageError) as info:
        resolve_config(overrides=overrides, names=names)
    assert str(info.value) == message
    assert info.value.exit_code == 2


def test_a_section_of_another_method_in_a_file_is_refused(tmp_path):
    path = write(tmp_path, '[pretrain]\nmethod = "byol"\n[pretrain.simclr]\ntemperature = 0.1\n')
    mismatch = r"\[pretrain.simclr\] does not apply to pretrain method 'byol'"
    with pytest.raises(UsageError, match=mismatch):
        resolve_config(path)
    # a 0.1-style flat key says where it belongs now
    path = write(tmp_path, "[pretrain]\ntemperature = 0.1\n", "flat.toml")
    with pytest.raises(ConfigError, match=r"it is a setting of simclr, under \[pretrain.simclr\]"):
        resolve_config(path)
    with pytest.raises(ConfigError, match=r"choose one of: simclr, byol"):
        resolve_config(overrides={"pretrain.method": "moco"})


def test_views_are_data_side_settings():
    cfg = Config()
    assert cfg.pretrain.views == ViewConfig(strength=1.0, crop=0.6)
    assert cfg.finetune.views == ViewConfig(strength=0.5, crop=1.0)
    assert "strength" not in cfg.pretrain.method.arguments()
    cfg = resolve_config(overrides={"pretrain.views.thickness_p": 0.5})
    assert cfg.pretrain.views.thickness_p == 0.5


def test_a_config_path_that_is_a_folder_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="is a folder; pass a .toml file"):
        resolve_config(tmp_path)
