"""``sketchshot finetune``: episodic N-way K-shot training of a few-shot classifier,
supervised training of a classifier over the train classes (``--method supervised``), or
pairwise ranking on labelled pairs of images (``--method pairwise``)."""

from __future__ import annotations

from sketchshot.cli.options import DATA, MODEL, RUN, TRAINING, VIEWS, Flag
from sketchshot.cli.training import training_command

MODEL_FLAGS = (
    Flag("--method", "finetune.method", MODEL),
    Flag("--init", "finetune.init", MODEL),
    Flag("--encoder", "encoder.name", MODEL),
    Flag("--distance", "finetune.<method>.distance", MODEL),
    Flag("--attention", "finetune.<method>.attention", MODEL),
    Flag("--hidden-dim", "finetune.<method>.hidden_dim", MODEL),
    Flag("--freeze-encoder", "finetune.freeze_encoder", MODEL),
    # pairwise
    Flag("--features", "finetune.<method>.features", MODEL),
    Flag("--freeze", "finetune.<method>.freeze", MODEL),
    Flag("--dropout", "finetune.<method>.dropout", MODEL),
    Flag("--resnet-weights", "finetune.<method>.resnet_weights", MODEL),
)
OWN_FLAGS = (
    Flag("--ways", "finetune.n_way", TRAINING),
    Flag("--shots", "finetune.n_shot", TRAINING),
    Flag("--queries", "finetune.n_query", TRAINING),
    Flag("--episodes", "finetune.episodes_per_epoch", TRAINING),
    Flag("--head-lr", "finetune.head_lr", TRAINING),
    Flag("--rotation-classes", "finetune.rotation_classes", DATA),
    Flag("--mirror-classes", "finetune.mirror_classes", DATA),
    Flag("--within-groups-p", "finetune.within_groups_p", TRAINING),
    # supervised
    Flag("--batch-size", "finetune.<method>.batch_size", TRAINING),
    Flag("--loss", "finetune.<method>.loss", TRAINING),
    Flag("--label-smoothing", "finetune.<method>.label_smoothing", TRAINING),
    Flag("--focal-gamma", "finetune.<method>.focal_gamma", TRAINING),
    Flag("--focal-alpha", "finetune.<method>.focal_alpha", TRAINING),
    Flag("--focal-weight", "finetune.<method>.focal_weight", TRAINING),
    Flag("--class-weights", "finetune.<method>.class_weights", TRAINING),
    Flag("--ema-decay", "finetune.<method>.ema_decay", TRAINING),
    Flag("--best-metric", "finetune.<method>.best_metric", TRAINING),
    Flag("--mixup-alpha", "finetune.<method>.mixup_alpha", VIEWS),
    Flag("--cutmix-alpha", "finetune.<method>.cutmix_alpha", VIEWS),
    Flag("--mix-p", "finetune.<method>.mix_p", VIEWS),
    Flag("--switch-p", "finetune.<method>.switch_p", VIEWS),
    # pairwise
    Flag("--pairs", "data.pairs", DATA),
    Flag("--min-agreement", "data.min_agreement", DATA),
    Flag("--min-reviewers", "data.min_reviewers", DATA),
    Flag("--feature-cache", "finetune.<method>.feature_cache", RUN),
)


training_command(
    "finetune",
    MODEL_FLAGS,
    OWN_FLAGS,
    "Episodic N-way K-shot training of a few-shot classifier, (--method supervised) "
    "training of a classifier over the train classes on batches of images, or (--method "
    "pairwise) a ranker of labelled pairs (--pairs CSV) that gives P(a preferred over b): "
    "end to end, or with --freeze-encoder on features computed once and cached.",
)
