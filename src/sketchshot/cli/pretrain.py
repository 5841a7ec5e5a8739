"""``sketchshot pretrain``: self-supervised pretraining of an encoder."""

from __future__ import annotations

from sketchshot.cli.options import MODEL, TRAINING, Flag
from sketchshot.cli.training import training_command

MODEL_FLAGS = (
    Flag("--method", "pretrain.method", MODEL),
    Flag("--encoder", "encoder.name", MODEL),
    Flag("--init", "encoder.init", MODEL),
    Flag("--temperature", "pretrain.<method>.temperature", MODEL),
    Flag("--ema-decay", "pretrain.<method>.ema_decay", MODEL),
    Flag("--hidden-dim", "pretrain.<method>.hidden_dim", MODEL),
    Flag("--projection-dim", "pretrain.<method>.projection_dim", MODEL),
)
OWN_FLAGS = (
    Flag("--batch-size", "pretrain.batch_size", TRAINING),
    Flag("--unique-class-batches", "pretrain.unique_class_batches", TRAINING),
)


training_command(
    "pretrain",
    MODEL_FLAGS,
    OWN_FLAGS,
    "Self-supervised pretraining of an encoder on unlabelled sketches (train split).",
)
