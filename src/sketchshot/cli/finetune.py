"""``sketchshot finetune``: episodic N-way K-shot training of a few-shot classifier."""

from __future__ import annotations

from sketchshot.cli.options import DATA, MODEL, TRAINING, Flag
from sketchshot.cli.training import training_command

MODEL_FLAGS = (
    Flag("--method", "finetune.method", MODEL),
    Flag("--init", "finetune.init", MODEL),
    Flag("--encoder", "encoder.name", MODEL),
    Flag("--distance", "finetune.<method>.distance", MODEL),
    Flag("--attention", "finetune.<method>.attention", MODEL),
    Flag("--hidden-dim", "finetune.<method>.hidden_dim", MODEL),
    Flag("--freeze-encoder", "finetune.freeze_encoder", MODEL),
)
OWN_FLAGS = (
    Flag("--ways", "finetune.n_way", TRAINING),
    Flag("--shots", "finetune.n_shot", TRAINING),
    Flag("--queries", "finetune.n_query", TRAINING),
    Flag("--episodes", "finetune.episodes_per_epoch", TRAINING),
    Flag("--head-lr", "finetune.head_lr", TRAINING),
    Flag("--rotation-classes", "finetune.rotation_classes", DATA),
)


training_command(
    "finetune",
    MODEL_FLAGS,
    OWN_FLAGS,
    "Episodic N-way K-shot training of a few-shot classifier.",
)
