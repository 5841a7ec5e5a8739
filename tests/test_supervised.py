"""Supervised fine-tuning: losses against hand-computed values, mixup/cutmix targets, the EMA
update and what is saved, gradient accumulation in the one loop, augmentation presets, the
episode options it refuses, and one real run through the command line that the other
commands (evaluate, enroll, predict, info) then work with."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from typer.testing import CliRunner

from helpers import plain, torchrun, write_png
from sketchshot import engine
from sketchshot.cli import app
from sketchshot.config import (
    VIEW_PRESETS,
    OptimConfig,
    SupervisedSettings,
    ViewConfig,
    resolve_config,
    to_toml,
)
from sketchshot.data import load_dataset
from sketchshot.data.views import SketchAugment
from sketchshot.distributed import DistContext
from sketchshot.encoders import Encoder
from sketchshot.errors import ConfigError, UsageError
from sketchshot.methods.supervised import (
    LabelledBatch,
    Supervised,
    classification_metrics,
    cutmix,
    focal_loss,
    inverse_frequency_weights,
    mixup,
    soft_targets,
)
from sketchshot.training import BatchSource, LoopSettings, fit

SIZE = 8


class Pixels(Encoder):
    """A linear map of the pixels: no BatchNorm, so that split batches add up exactly."""

    def __init__(self, embedding_dim: int = 6) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.linear = nn.Linear(SIZE * SIZE, embedding_dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


def supervised(n_classes: int = 3, **settings: object) -> Supervised:
    torch.manual_seed(0)
    return Supervised(Pixels(), SupervisedSettings(n_classes=n_classes, **settings))


# ---------------------------------------------------------------- losses


def test_focal_loss_with_gamma_zero_is_cross_entropy_and_gamma_two_matches_by_hand():
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(7, 4, generator=g), torch.tensor([0, 1, 2, 3, 0, 1, 2])
    targets = soft_targets(labels, 4, smoothing=0.2)
    weight = torch.tensor([0.5, 1.0, 1.5, 1.0])
    assert torch.allclose(focal_loss(logits, targets, 0.0), F.cross_entropy(logits, targets))
    assert torch.allclose(
        focal_loss(logits, targets, 0.0, weight=weight),
        F.cross_entropy(logits, targets, weight=weight),
    )
    p_true = logits.softmax(1)[torch.arange(7), labels]  # one-hot targets: the paper's form
    by_hand = (-0.25 * (1 - p_true) ** 2 * p_true.log()).mean()
    assert torch.allclose(focal_loss(logits, soft_targets(labels, 4), 2.0, alpha=0.25), by_hand)
    assert focal_loss(logits, targets, 2.0) < F.cross_entropy(
        logits, targets
    )  # easy ones weigh less


def test_label_smoothing_and_combined_losses_by_hand():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    log_p = logits.log_softmax(1)[0]
    eps = 0.1
    by_hand = -(1 - eps + eps / 3) * log_p[0] - eps / 3 * (log_p[1] + log_p[2])
    method = supervised(label_smoothing=eps)
    targets = soft_targets(torch.tensor([0]), 3, eps)
    assert torch.allclose(targets, torch.tensor([[0.9 + 0.1 / 3, 0.1 / 3, 0.1 / 3]]))
    assert method.loss(logits, targets).item() == pytest.approx(by_hand.item(), abs=1e-6)
    assert method.loss(logits, targets).item() == pytest.approx(
        F.cross_entropy(logits, torch.tensor([0]), label_smoothing=eps).item(), abs=1e-6
    )
    combined = supervised(loss="combined", focal_weight=0.3, focal_gamma=2.0)
    expected = 0.3 * focal_loss(logits, targets, 2.0) + 0.7 * F.cross_entropy(logits, targets)
    assert torch.allclose(combined.loss(logits, targets), expected)


def test_auto_class_weights_are_inverse_frequency_with_mean_one_and_weigh_the_loss():
    weights = inverse_frequency_weights(torch.tensor([1, 2, 4]))
    assert torch.allclose(weights, torch.tensor([1.0, 0.5, 0.25]) / (1.75 / 3))
    assert weights.mean().item() == pytest.approx(1.0)
    torch.manual_seed(0)
    method = Supervised(Pixels(), SupervisedSettings(n_classes=3), class_weights=weights)
    logits, labels = torch.randn(4, 3), torch.tensor([0, 1, 2, 2])
    log_p = logits.log_softmax(1)[torch.arange(4), labels]
    expected = -(weights[labels] * log_p).mean()  # the batch mean of each image's w * ce
    assert torch.allclose(method.loss(logits, soft_targets(labels, 3)), expected)
    assert "class_weights" not in method.state_dict()  # a training choice, not the network's


def test_classification_metrics_accuracy_macro_f1_and_loss():
    logits = torch.eye(3)[[0, 0, 1, 2, 2, 2]] * 5  # predictions 0 0 1 2 2 2
    labels = torch.tensor([0, 1, 1, 2, 2, 0])
    m = classification_metrics(logits, labels)
    # per class F1 = 2 tp / (predicted + true): 2/(2+2), 2/(1+2), 4/(3+2)
    assert m["acc"] == pytest.approx(4 / 6)
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0.8) / 3)
    assert m["loss"] == pytest.approx(F.cross_entropy(logits, labels).item())


# ---------------------------------------------------------------- mixup and cutmix


def distinct_batch(b: int = 4, size: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Image i filled with the value i + 1 (so pixels tell their source), one class each."""
    images = torch.arange(1.0, b + 1).view(b, 1, 1, 1).expand(b, 1, size, size).clone()
    return images, soft_targets(torch.arange(b), b)


def test_mixup_blends_images_and_targets_with_the_reversed_batch():
    images, targets = distinct_batch()
    mixed, mixed_targets = mixup(images, targets, 0.7)
    assert torch.allclose(mixed[0], torch.full_like(mixed[0], 0.7 * 1 + 0.3 * 4))
    assert torch.allclose(mixed_targets[0], torch.tensor([0.7, 0.0, 0.0, 0.3]))
    assert torch.allclose(mixed_targets.sum(1), torch.ones(4))


@pytest.mark.parametrize("seed", range(6))
def test_cutmix_targets_follow_the_pasted_area(seed):
    torch.manual_seed(seed)
    images, targets = distinct_batch(size=10)
    lam = 0.64  # a box of side 0.6: 36% of the area where it is not clipped
    mixed, mixed_targets = cutmix(images, targets, lam)
    for i in range(4):
        partner = 4 - i  # the reversed batch's value
        pasted = (mixed[i] == partner).float().mean().item()
        assert ((mixed[i] == i + 1) | (mixed[i] == partner)).all()
        assert 0 < pasted <= 0.36 + 1e-6  # clipped at the border, never larger
        assert mixed_targets[i, partner - 1].item() == pytest.approx(pasted)
        assert mixed_targets[i, i].item() == pytest.approx(1 - pasted)
    assert torch.equal(images, distinct_batch(size=10)[0])  # the input is left alone


def test_mix_p_zero_leaves_the_batch_and_cutmix_alone_only_pastes():
    images, targets = distinct_batch()
    same = supervised(n_classes=4, mixup_alpha=1.0, cutmix_alpha=1.0, mix_p=0.0)
    assert same.mixed(images, targets)[0] is images
    torch.manual_seed(3)
    cut = supervised(n_classes=4, cutmix_alpha=1.0)
    mixed, _ = cut.mixed(images, targets)
    values = set(mixed.unique().tolist())
    assert values <= {1.0, 2.0, 3.0, 4.0}  # pasted pixels, never blended ones


# ---------------------------------------------------------------- EMA


def test_ema_update_is_m_average_plus_one_minus_m_weights_with_a_warm_up():
    method = supervised(ema_decay=0.5)
    method.after_step(0.0)  # t = 0: m = 0, the average starts at the weights
    for key, value in method.head.state_dict().items():
        assert torch.equal(method.average.head.state_dict()[key], value)
    before = {k: v.clone() for k, v in method.average.state_dict().items()}
    with torch.no_grad():
        for p in method.parameters():
            if p.requires_grad:
                p.add_(1.0)
    method.after_step(0.1)  # t = 1: m = min(0.5, 1 / 11)
    m = 1 / 11
    online = {k: v for k, v in method.state_dict().items() if not k.startswith("average")}
    for key, value in method.average.state_dict().items():
        assert torch.allclose(value, m * before[key] + (1 - m) * online[key]), key
    method.average_updates.fill_(1000)  # t large: m = ema_decay
    before = {k: v.clone() for k, v in method.average.state_dict().items()}
    method.after_step(0.9)
    for key, value in method.average.state_dict().items():
        assert torch.allclose(value, 0.5 * before[key] + 0.5 * online[key]), key
    assert method.inference_model() is method.average
    assert supervised().inference_model() is not None
    assert all(not p.requires_grad for p in method.average.parameters())


def test_a_model_saved_as_its_average_loads_strictly_with_the_average_as_its_weights():
    method = supervised(ema_decay=0.9)
    method.after_step(0.0)
    with torch.no_grad():
        method.head.weight.add_(1.0)
    exported = method.inference_model().state_dict()
    assert not any(k.startswith("average") for k in exported)
    loaded = supervised(ema_decay=0.9)
    loaded.load_state_dict(exported, strict=True)
    assert torch.equal(loaded.head.weight, method.average.head.weight)
    assert torch.equal(loaded.average.head.weight, method.average.head.weight)
    with pytest.raises(RuntimeError, match="Missing"):  # still strict about the network
        loaded.load_state_dict({k: v for k, v in exported.items() if k != "head.bias"})


# ---------------------------------------------------------------- the loop


def one_step(batches: list[LabelledBatch], accumulate: int, tmp: Path) -> dict[str, torch.Tensor]:
    method = supervised()
    optim = OptimConfig(optimizer="sgd", lr=0.5, momentum=0.0, schedule="constant")
    settings = LoopSettings(
        epochs=1, optim=optim, seed=0, channels_last=False, accumulate=accumulate
    )
    source = BatchSource(lambda rng: iter(batches), len(batches))
    result = fit(method, source, settings, tmp, torch.device("cpu"), lambda *a: None, quiet=True)
    assert result.steps == 1
    return method.state_dict()


def test_accumulating_two_batches_is_one_step_of_the_double_batch(tmp_path):
    g = torch.Generator().manual_seed(1)
    images, labels = torch.rand(8, 1, SIZE, SIZE, generator=g), torch.tensor([0, 1, 2] * 2 + [0, 1])
    halves = [LabelledBatch(images[:4], labels[:4]), LabelledBatch(images[4:], labels[4:])]
    split = one_step(halves, 2, tmp_path / "split")
    whole = one_step([LabelledBatch(images, labels)], 1, tmp_path / "whole")
    start = supervised().state_dict()
    for key, value in whole.items():
        assert torch.allclose(split[key], value, atol=1e-5), key
        assert not torch.allclose(value, start[key]), key  # the step did move it


# ---------------------------------------------------------------- views


def test_severity_presets_set_the_view_defaults_and_explicit_fields_win():
    augments = {s: vars(SketchAugment.from_config(ViewConfig(severity=s))) for s in VIEW_PRESETS}
    drawn = {
        tuple((k, v) for k, v in a.items() if not k.startswith("_")) for a in augments.values()
    }
    assert len(drawn) == 3
    assert augments["aggressive"]["elastic"] > 0 and augments["aggressive"]["cutout_p"] > 0
    assert augments["light"]["erase_p"] == 0 and augments["moderate"]["erase_p"] > 0
    assert ViewConfig(severity="moderate", erase_p=0.05).erase_p == 0.05
    # through the config: the preset replaces the section's defaults, the options still win
    cfg = resolve_config(None, {"pretrain.views.severity": "light", "pretrain.views.erase_p": 0.2})
    assert (cfg.pretrain.views.crop, cfg.pretrain.views.erase_p) == (1.0, 0.2)  # not 0.6
    again = resolve_config(None, {}, base=cfg)  # a resumed run keeps what was resolved
    assert again.pretrain.views == cfg.pretrain.views


def test_elastic_distortion_keeps_shape_and_range_and_moves_strokes_a_little():
    x = torch.zeros(4, 1, 28, 28)
    x[:, :, 8:20, 13:15] = 1.0  # a bar
    elastic = SketchAugment(1.0, rotation=0, scale=0, shear=0, translate=0, thickness_p=0,
                            erase_p=0, elastic=0.04)  # fmt: skip
    torch.manual_seed(0)
    y = elastic(x)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    assert not torch.allclose(y[0], x[0]) and not torch.allclose(y[0], y[1])  # per sample
    # the bar bends but stays about as long and about where it was (std 0.04 x 28 px)
    assert ((y.sum((1, 2, 3)) / x.sum((1, 2, 3)) - 1).abs() < 0.5).all()
    centre_x = (y * torch.arange(28.0)).sum((1, 2, 3)) / y.sum((1, 2, 3))
    assert ((centre_x - 13.5).abs() < 3).all()
    cut = SketchAugment(1.0, rotation=0, scale=0, shear=0, translate=0, thickness_p=0,
                        erase_p=0, cutout_p=1.0)  # fmt: skip
    blanked = (cut(torch.ones(8, 1, 28, 28)) == 0).float().mean((1, 2, 3))
    assert (blanked > 0).all() and (blanked <= 0.0625 + 1e-6).all()  # a quarter-side square


# ---------------------------------------------------------------- config


def test_episode_options_are_refused_for_supervised_but_saved_defaults_pass(tmp_path):
    names = {"finetune.n_way": "--ways"}
    with pytest.raises(UsageError, match="--ways does not apply to finetune method 'supervised'"):
        resolve_config(None, {"finetune.method": "supervised", "finetune.n_way": 5}, names=names)
    cfg = resolve_config(None, {"finetune.method": "supervised"})
    saved = tmp_path / "config.toml"
    saved.write_text(to_toml(cfg), encoding="utf-8")  # every field, episodes' defaults too
    assert resolve_config(saved) == cfg
    saved.write_text(to_toml(cfg).replace("n_way = 20", "n_way = 5"), encoding="utf-8")
    with pytest.raises(UsageError, match="finetune.n_way does not apply"):
        resolve_config(saved)
    # and the supervised settings are refused for an episodic method
    with pytest.raises(UsageError, match="only to supervised"):
        resolve_config(None, {"finetune.<method>.mixup_alpha": 0.2})


def test_the_engine_builds_a_head_over_the_train_classes_and_batches_of_images(monkeypatch):
    jobs = []
    monkeypatch.setattr(engine, "train_run", lambda job, *args, **kwargs: jobs.append(job))
    base = {"data.builtin.n_classes": 4, "data.builtin.n_drawers": 10, "data.split_fractions":
            (0.75, 0.25, 0.0), "finetune.method": "supervised"}  # fmt: skip
    options = {"finetune.<method>.batch_size": 8, "finetune.<method>.class_weights": "auto"}
    engine.finetune(resolve_config(None, base | options))
    job = jobs[0]
    assert job.method.kind == "supervised" and job.method.head.out_features == 3
    assert job.cfg.finetune.method.n_classes == 3 and job.model.method_args["n_classes"] == 3
    weights = inverse_frequency_weights(job.train.counts())
    assert torch.equal(job.method.class_weights, weights)
    source = job.batches(DistContext(0, 1, torch.device("cpu")))
    assert source.steps_per_epoch == 30 // 8
    batch = next(source.batches(np.random.default_rng(0)))
    assert batch.images.shape == (8, 1, 28, 28) and batch.labels.shape == (8,)
    assert source.views(batch).images.shape == (8, 1, 28, 28)
    frozen = {"finetune.freeze_encoder": True, "finetune.<method>.cutmix_alpha": 1.0}
    with pytest.raises(ConfigError, match="--cutmix-alpha"):
        engine.finetune(resolve_config(None, base | frozen))
    with pytest.raises(ConfigError, match="differs from the 3 classes"):
        engine.finetune(resolve_config(None, base | {"finetune.<method>.n_classes": 5}))


# ---------------------------------------------------------------- end to end

# 5 glyph classes x 12 drawers, each class's drawings split 9 train / 3 val
CONFIG = """
[data]
split_by = "images"
split_fractions = [0.75, 0.25, 0.0]

[data.builtin]
n_classes = 5
n_drawers = 12

[finetune]
val_every = 3  # once, at the end: the best epoch is the last, whose average is in last
"""


def invoke(*args: object):
    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("supervised")
    (root / "config.toml").write_text(CONFIG, encoding="utf-8")
    out = invoke(
        "finetune", "--method", "supervised", "--config", root / "config.toml", "--epochs", 3,
        "--batch-size", 9, "--ema-decay", 0.9, "--label-smoothing", 0.1,
        "--class-weights", "auto", "--severity", "light", "--out", root / "run", "--quiet",
        "--json", "--device", "cpu",
    )  # fmt: skip
    payload = json.loads(out.stdout)
    assert payload["epochs"] == 3 and payload["steps"] == 3 * (45 // 9)
    # chance is 0.2; validated once, at the end, with the average's weights (this run: 0.87)
    assert payload["best"]["val_acc"] > 0.5
    return root / "run"


def test_the_saved_model_holds_the_average_and_the_card_says_so(run):
    card = json.loads((run / "model.json").read_text(encoding="utf-8"))
    assert card["model"]["kind"] == "supervised"
    assert card["model"]["method_args"]["n_classes"] == 5
    assert card["metrics"]["weights"] == "ema"
    assert card["class_names"] == [f"glyph-{i:03d}" for i in range(5)]
    saved = load_file(run / "model.safetensors")
    last = load_file(run / "checkpoints" / "last.safetensors")  # both, to resume from
    assert saved.keys() == {k[len("model/average.") :] for k in last if "/average." in k}
    for key, value in saved.items():
        assert torch.equal(value, last[f"model/average.{key}"]), key
    assert not torch.equal(saved["head.weight"], last["model/head.weight"])
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    ends = [r for r in records if r.get("event") == "epoch_end"]
    assert {"val_acc", "val_macro_f1", "val_loss"} <= ends[-1].keys()


def test_evaluate_enroll_predict_and_info_work_on_a_supervised_model(run, tmp_path):
    knn = json.loads(invoke("evaluate", "--model", run, "--protocol", "knn", "--split", "val",
                            "--json", "--device", "cpu", "--quiet").stdout)  # fmt: skip
    assert knn["n_classes"] == 5 and knn["accuracy"] > 0.5
    data = load_dataset(resolve_config(run / "config.toml").data, 28)
    support, queries, truths = tmp_path / "support", [], []
    for c, name in enumerate(data.class_names):
        drawings = (data.labels == c).nonzero().flatten().tolist()
        for d in drawings[:3]:
            write_png(support / name / f"{d}.png", data.images[d, 0].numpy())
        for d in drawings[3:6]:
            queries.append(write_png(tmp_path / "queries" / f"{c}-{d}.png",
                                     255 - data.images[d, 0].numpy()))  # fmt: skip
            truths.append(name)
    invoke("enroll", "--model", run, "--support", support, "--out", tmp_path / "bank",
           "--device", "cpu", "--json")  # fmt: skip
    result = invoke("predict", *queries, "--bank", tmp_path / "bank", "--json", "--device", "cpu")
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    right = sum(r["label"] == t for r, t in zip(rows, truths, strict=True))
    assert right >= 9  # of 15 queries, 5 classes: chance 3
    info = invoke("info", run)
    assert "supervised (supervised)" in plain(info.stdout)
    assert "exponential moving average" in plain(info.stdout)


def test_evaluate_scores_the_supervised_head_as_a_classifier(run, tmp_path):
    picture = tmp_path / "confusion.png"
    done = invoke("evaluate", "--model", run, "--protocol", "classifier", "--split", "val",
                  "--tta", 2, "--save-confusion", picture, "--json", "--device", "cpu",
                  "--quiet")  # fmt: skip
    result = json.loads(done.stdout)
    top1, top_k = result["figures"]
    assert top1["name"].startswith("5-way classifier top-1") and "top-5" in top_k["name"]
    assert 0.5 < top1["accuracy"] <= top_k["accuracy"] == 1.0  # top-5 of 5 classes
    assert result["tta"] == 2 and 0.4 < result["details"]["macro_f1"] <= 1
    assert set(result["details"]["per_class"]) == set(result["per_class"])
    assert picture.stat().st_size > 1000
    table = plain(invoke("evaluate", "--model", run, "--protocol", "classifier", "--split",
                         "val", "--device", "cpu").stdout)  # fmt: skip
    assert "macro-F1" in table and "lowest F1" in table


def test_an_episode_option_for_supervised_is_a_one_line_usage_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["finetune", "--method", "supervised", "--ways", "5"])
    assert result.exit_code == 2
    text = plain(result.stderr).strip()
    assert text.startswith("error: --ways does not apply to finetune method 'supervised'")
    assert "\n" not in text


def test_torchrun_two_cpu_processes_train_a_supervised_classifier(tmp_path: Path) -> None:
    (tmp_path / "tiny.toml").write_text("[data.builtin]\nn_classes = 8\nn_drawers = 10\n")
    args = ["finetune", "--method", "supervised", "--split-by", "images", "--split-fractions",
            "0.8", "0.2", "0", "--batch-size", "8", "--accumulate", "2", "--ema-decay", "0.9",
            "--epochs", "2", "--out", "ddp", "--device", "cpu", "--json", "--quiet",
            "--config", "tiny.toml"]  # fmt: skip
    done = torchrun(args, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len([x for x in done.stdout.splitlines() if x.startswith("{")]) == 1  # rank 0
    records = [json.loads(x) for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r.get("event") == "epoch_end"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert all(0 <= e["val_acc"] <= 1 and 0 <= e["val_macro_f1"] <= 1 for e in epochs)
    model, card = engine.load_model(tmp_path / "ddp")
    # 64 train images, 2 ranks of 32, batches of 8, 2 per optimiser step: 2 steps an epoch
    assert card.metrics["steps"] == 2 * 2
    assert card.metrics["weights"] == "ema"
