"""Pairwise ranking (``finetune --method pairwise``): the pairs CSV (paths, filters, one-line
errors), the split by group, the antisymmetric head and RankNet's loss by hand, what
``--freeze partial`` trains, the image statistics, the feature cache (a second run encodes
nothing), ResNet-50 feature sets from a local weights file, and real runs through the command
line, frozen and end to end, that learn a preference ("a has more ink than b") on generated
glyphs, then evaluate and predict on pairs."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from typer.testing import CliRunner

from helpers import one_line_error, plain
from sketchshot import engine
from sketchshot.card import Preprocessing
from sketchshot.cli import app
from sketchshot.config import DataConfig, PairwiseSettings, resolve_config
from sketchshot.data.glyphs import make_glyphs
from sketchshot.data.pairs import read_pairs, split_counts, split_pairs
from sketchshot.encoders import create_encoder
from sketchshot.encoders.base import last_stage
from sketchshot.encoders.feature_sets import FeatureStack, ResNet50Stages, image_stats
from sketchshot.errors import ConfigError, DataError, UsageError
from sketchshot.feature_cache import FeatureCache, state_digest
from sketchshot.methods import create_method
from sketchshot.methods.pairwise import PairBatch, pair_accuracy, pairwise_loss
from sketchshot.ranking import CachedFeatures

HEADER = ["image_a", "image_b", "label", "group", "agreement", "reviewers"]


def write_csv(path: Path, rows: list[list[object]], header: list[str] = HEADER) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_ink_pairs(root: Path, n_classes: int = 24, n_drawers: int = 6, per_class: int = 20):
    """Generated glyphs as dark-on-white PNGs under ``root/img/``, and ``root/pairs.csv``:
    pairs of drawings of one glyph (its group), label 1 when a has more ink than b (drawers
    differ in stroke width), with agreement and reviewers columns."""
    glyphs = make_glyphs(n_classes, n_drawers, 28, seed=1)
    ink = glyphs.images.float().mean(dim=(1, 2, 3)).numpy()
    names = []
    for i in range(len(glyphs)):
        name = f"img/{glyphs.class_names[int(glyphs.labels[i])]}/{i:03d}.png"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(255 - glyphs.images[i, 0].numpy()).save(root / name)
        names.append(name)
    rng = np.random.default_rng(0)
    rows = []
    for c in range(n_classes):
        members = np.flatnonzero(glyphs.labels.numpy() == c)
        for _ in range(per_class):
            i, j = rng.choice(members, 2, replace=False)
            agreement, reviewers = round(float(rng.uniform(0.5, 1)), 2), int(rng.integers(1, 6))
            label = int(ink[i] > ink[j])
            rows.append([names[i], names[j], label, glyphs.class_names[c], agreement, reviewers])
    return write_csv(root / "pairs.csv", rows)


def invoke(*args: object, code: int = 0):
    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    assert result.exit_code == code, result.output
    return result


# ---------------------------------------------------------------- the pairs CSV


@pytest.fixture
def few(tmp_path) -> Path:
    """Four images a.png..d.png in tmp/imgs and nothing else."""
    for name, value in zip("abcd", (40, 80, 120, 160), strict=True):
        (tmp_path / "imgs").mkdir(exist_ok=True)
        picture = np.full((20, 20), 255, dtype=np.uint8)
        picture[5:15, 5 : 5 + value // 20] = 0
        Image.fromarray(picture).save(tmp_path / "imgs" / f"{name}.png")
    return tmp_path


def test_pairs_are_read_relative_to_the_csv_and_filtered(few, tmp_path):
    rows = [["../imgs/a.png", "../imgs/b.png", 1, "g1", 0.9, 5],
            ["../imgs/b.png", "../imgs/c.png", 0.25, "g1", 0.6, 3],
            [str(few / "imgs" / "c.png"), "../imgs/d.png", 0, "g2", 0.8, 1],
            ["../imgs/a.png", "../imgs/d.png", 0.5, "g2", 0.95, 4]]  # fmt: skip
    path = write_csv(tmp_path / "lists" / "pairs.csv", rows)
    table = read_pairs(path)
    assert len(table) == 4 and len(table.images) == 4
    assert table.names[:2] == ("../imgs/a.png", "../imgs/b.png")
    assert all(p.is_file() for p in table.images)
    assert table.labels.tolist() == [1.0, 0.25, 0.0, 0.5]
    assert table.groups == ("g1", "g1", "g2", "g2") and table.lines.tolist() == [2, 3, 4, 5]
    kept = read_pairs(path, min_agreement=0.7, min_reviewers=2)
    assert kept.lines.tolist() == [2, 5]  # line 3: agreement 0.6; line 4: 1 reviewer
    assert kept.dropped == {"--min-agreement": 1, "--min-reviewers": 1}
    assert len(kept.images) == 3  # c.png is named only by pairs that were left out
    unlabelled = read_pairs(write_csv(tmp_path / "u.csv", [["imgs/a.png", "imgs/b.png"]],
                                      ["image_b", "image_a"]), labelled=False)  # fmt: skip
    assert unlabelled.labels is None and unlabelled.names == ("imgs/b.png", "imgs/a.png")


@pytest.mark.parametrize(
    "header, row, options, error, message",
    [
        (["image_a", "label"], ["imgs/a.png", 1], {}, DataError,
         "no image_b column (the header must name image_a, image_b, label"),
        (HEADER[:3], ["imgs/a.png", "imgs/b.png", "yes"], {}, DataError,
         "pairs.csv line 2: label 'yes' is not a number"),
        (HEADER[:3], ["imgs/a.png", "imgs/b.png", 2], {}, DataError,
         "pairs.csv line 2: label 2 is outside [0, 1]"),
        (HEADER[:3], ["imgs/a.png", "imgs/nope.png", 1], {}, DataError,
         "1 image(s) named in"),
        (HEADER[:3], ["imgs/a.png", "imgs/b.png", 1], {"min_agreement": 0.5}, ConfigError,
         "--min-agreement needs the agreement column"),
        (HEADER[:3], ["imgs/a.png", "imgs/b.png", 1], {"min_reviewers": 2}, ConfigError,
         "--min-reviewers needs the reviewers column"),
        (HEADER, ["imgs/a.png", "imgs/b.png", 1, "g", 0.3, 2], {"min_agreement": 0.5},
         DataError, "the filters left out all 1"),
        (HEADER, ["imgs/a.png", "imgs/b.png", 1, "g", "high", 2], {"min_agreement": 0.5},
         DataError, "line 2: agreement 'high' is not a number"),
    ],
)  # fmt: skip
def test_a_bad_pairs_csv_is_one_error_that_names_the_problem(
    few, header, row, options, error, message
):
    path = write_csv(few / "pairs.csv", [row], header)
    with pytest.raises(error) as info:
        read_pairs(path, **options)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_bad_pairs_csv_exits_non_zero_with_one_line_and_no_traceback(few, monkeypatch):
    monkeypatch.chdir(few)
    path = write_csv(few / "pairs.csv", [["imgs/a.png", "imgs/missing.png", 1]], HEADER[:3])
    result = invoke("finetune", "--method", "pairwise", "--pairs", path, code=1)
    assert "missing.png" in one_line_error(result)
    result = invoke("finetune", "--method", "pairwise", "--pairs", path, "--min-agreement", 0.5,
                    code=2)  # fmt: skip
    assert "needs the agreement column" in one_line_error(result)


def test_the_split_keeps_groups_apart_and_without_groups_images(tmp_path):
    root = tmp_path / "data"
    path = write_ink_pairs(root, n_classes=10, n_drawers=4, per_class=5)
    table = read_pairs(path)
    cfg = DataConfig(split_fractions=(0.6, 0.2, 0.2), split_seed=3)
    splits = split_pairs(table, cfg)
    groups = {s: {table.groups[i] for i in ix.tolist()} for s, ix in splits.items()}
    assert [len(groups[s]) for s in ("train", "val", "test")] == [6, 2, 2]
    assert not (groups["train"] & groups["val"] or groups["train"] & groups["test"]
                or groups["val"] & groups["test"])  # fmt: skip
    assert sorted(np.concatenate(list(splits.values())).tolist()) == list(range(len(table)))
    again = split_pairs(table, cfg)  # seeded: the same split every time
    assert all(np.array_equal(splits[s], again[s]) for s in splits)
    val = {"pairs": 10, "images": len(table.images_of(splits["val"])), "groups": 2}
    assert split_counts(table, splits)["val"] == val
    # without a group column, pairs that share an image are one group: no image in two splits
    with open(path, newline="") as f:
        rows = [r[:3] for r in csv.reader(f)][1:]
    ungrouped = read_pairs(write_csv(root / "ungrouped.csv", rows, HEADER[:3]))
    assert ungrouped.grouped_by.startswith("pairs connected by shared images")
    parts = split_pairs(ungrouped, cfg)
    seen = [set(ungrouped.images_of(ix).tolist()) for ix in parts.values() if len(ix)]
    assert len(seen) == 3 and sum(len(s) for s in seen) == len(set().union(*seen))
    # --subsample keeps a seeded share of the groups, before the split
    half = split_pairs(table, DataConfig(split_fractions=(0.6, 0.2, 0.2), subsample=0.5))
    assert sum(len(ix) for ix in half.values()) == 25


# ---------------------------------------------------------------- the method


def ranker(**settings: object):
    torch.manual_seed(0)
    encoder = create_encoder("conv4", image_size=28)
    return create_method("pairwise", encoder, PairwiseSettings(**settings))


def test_the_head_is_antisymmetric_and_its_loss_is_ranknets_by_hand():
    method = ranker(features=("encoder", "stats"))
    a, b = torch.rand(5, 1, 28, 28), torch.rand(5, 1, 28, 28)
    method.train()
    for _ in range(3):  # move the BatchNorm statistics off their defaults
        method.training_step(PairBatch(a, b, torch.ones(5)))["loss"].backward()
    method.eval()
    with torch.no_grad():
        ab, ba = method.logits(a, b), method.logits(b, a)
    assert ab.shape == (5,) and ab.abs().min() > 0
    assert torch.allclose(ab, -ba, atol=1e-6)
    assert torch.allclose(ab.sigmoid() + ba.sigmoid(), torch.ones(5))
    logits, targets = torch.tensor([2.0, -1.0, 0.5, 0.0]), torch.tensor([1.0, 0.0, 0.25, 0.5])
    by_hand = -(targets * F.logsigmoid(logits) + (1 - targets) * F.logsigmoid(-logits)).mean()
    assert torch.allclose(pairwise_loss(logits, targets), by_hand)
    # the tie (0.5) is not counted; 0.25 is a preference for b, which the logit 0.5 gets wrong
    assert pair_accuracy(logits, targets) == (2, 3)


@pytest.mark.parametrize(
    "encoder, trained",
    [("conv4", ["blocks.3"]), ("resnet18", ["net.layer4"]),
     ("sketch_cnn", ["blocks.3", "projection"])],
)  # fmt: skip
def test_freeze_partial_trains_only_the_last_stage_and_frozen_norms_stay_put(encoder, trained):
    model = create_encoder(encoder, image_size=32)
    names = {id(m): n for n, m in model.named_modules()}
    assert [names[id(m)] for m in last_stage(model)] == trained
    method = create_method("pairwise", model, PairwiseSettings(freeze="partial"))
    training = {n for n, p in method.encoder.sketch.named_parameters() if p.requires_grad}
    assert training and all(any(n.startswith(t + ".") for t in trained) for n in training)
    assert any(not p.requires_grad for p in method.encoder.sketch.parameters())
    method.train()
    norms = [m for m in method.encoder.sketch.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert any(m.training for m in norms) and any(not m.training for m in norms)
    for m in norms:  # a frozen norm keeps its statistics
        assert m.training == any(p.requires_grad for p in m.parameters())
    full = create_method("pairwise", create_encoder(encoder, image_size=32),
                         PairwiseSettings(freeze="full"))  # fmt: skip
    assert not any(p.requires_grad for p in full.encoder.parameters())
    assert all(p.requires_grad for p in full.head.parameters())


def test_image_statistics_by_hand():
    x = torch.zeros(2, 1, 8, 8)
    x[0, 0, :, :4] = 1.0  # left half ink
    stats = image_stats(x)
    assert stats.shape == (2, 4)
    sharpness, brightness, contrast, ink = stats[0].tolist()
    assert brightness == pytest.approx(0.5) and ink == pytest.approx(0.5)
    assert contrast == pytest.approx(torch.tensor([0.0] * 32 + [1.0] * 32).std().item())
    # the 6 x 6 Laplacian: -1 in the ink column at the edge, +1 in the blank one beside it
    lap = torch.zeros(6, 6)
    lap[:, 2], lap[:, 3] = -1.0, 1.0
    assert sharpness == pytest.approx(lap.flatten().var().item())
    assert stats[1].tolist() == [0.0, 0.0, 0.0, 0.0]


# ---------------------------------------------------------------- the feature cache


class Counted(torch.nn.Module):
    """Counts the images a module's forward sees."""

    def __init__(self) -> None:
        super().__init__()
        self.images = 0

    def hook(self, module, inputs, output) -> None:
        self.images += inputs[0].shape[0]


def cached(stack: FeatureStack, paths, root: Path) -> CachedFeatures:
    from rich.console import Console

    pre = Preprocessing(image_size=28, invert="auto")
    return CachedFeatures(stack, paths, pre, FeatureCache(root), Console(stderr=True), quiet=True)


def test_a_second_run_reads_the_features_from_the_cache_and_encodes_nothing(tmp_path):
    table = read_pairs(write_ink_pairs(tmp_path / "data", n_classes=3, n_drawers=4, per_class=4))
    cpu = torch.device("cpu")
    method = ranker(features=("encoder",))
    counter = Counted()
    method.encoder.sketch.register_forward_hook(counter.hook)
    first = cached(method.encoder, table.images, tmp_path / "cache")
    features, n = first.get(cpu), len(table.images)
    assert features.shape == (n, 64) and counter.images == n
    assert first.report["computed"] == n and first.report["cached"] == 0
    second = cached(method.encoder, table.images, tmp_path / "cache")  # a new run, same cache
    assert torch.equal(second.get(cpu), features) and counter.images == n  # nothing encoded
    assert second.report == second.report | {"cached": n, "computed": 0}
    # adding a feature set computes only that set: the encoder's features come from the cache
    both = ranker(features=("stats", "encoder"))
    both.encoder.sketch.load_state_dict(method.encoder.sketch.state_dict())
    both.encoder.sketch.register_forward_hook(counter.hook)
    combined = cached(both.encoder, table.images, tmp_path / "cache").get(cpu)
    assert combined.shape == (n, 68) and counter.images == n
    assert torch.equal(combined[:, 4:], features)
    # other weights are another key: encoded again, the first ones' features left as they were
    other = ranker(features=("encoder",))
    torch.nn.init.normal_(other.encoder.sketch.blocks[0][0].weight)
    other.encoder.sketch.register_forward_hook(counter.hook)
    assert not torch.equal(cached(other.encoder, table.images, tmp_path / "cache").get(cpu),
                           features)  # fmt: skip
    assert counter.images == 2 * n
    shards = sorted(p.parent.name for p in (tmp_path / "cache").rglob("*.safetensors"))
    assert len(shards) == 3 and len(set(shards)) == 3  # encoder twice (two weights), stats


def test_resnet50_feature_sets_load_a_local_weights_file_and_hash_only_what_they_use(tmp_path):
    from safetensors.torch import save_file
    from torchvision import models

    torch.manual_seed(0)
    state = models.resnet50(weights=None).state_dict()
    weights = tmp_path / "resnet50-local.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(weights))
    stages = ResNet50Stages((3,))
    assert stages.load_imagenet(str(weights)) == weights
    folded = state["conv1.weight"].sum(dim=1, keepdim=True)
    assert torch.equal(stages.stem[0].weight, folded)
    assert torch.equal(stages.layers[2][0].conv1.weight, state["layer3.0.conv1.weight"])
    assert len(stages.layers) == 3  # layer4 is not kept when only layer3 is asked for
    both = FeatureStack(("resnet50-layer4", "stats", "resnet50-layer3"), create_encoder("conv4"))
    both.resnet.load_imagenet(str(weights))
    assert both.sketch is None and both.embedding_dim == 2048 + 4 + 1024
    assert not any(p.requires_grad for p in both.parameters())
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        out = both.eval()(x)
        alone = stages.eval()(x)[3]
    assert out.shape == (2, 3076) and torch.allclose(out[:, -1024:], alone, atol=1e-5)
    # layer3's features depend on the same weights in both: one cache key for them
    layer3, layer4 = (state_digest(both.depends_on(f"resnet50-layer{n}")) for n in (3, 4))
    assert layer3 == state_digest(stages.modules_up_to(3)) and layer4 != layer3


# ---------------------------------------------------------------- the command line


def test_pairwise_options_map_onto_the_config_and_others_are_refused(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    seen = []

    def fake(cfg, *args, **kwargs):
        seen.append(cfg)
        raise SystemExit(0)

    monkeypatch.setattr(engine, "finetune", fake)
    invoke("finetune", "--method", "pairwise", "--pairs", "p.csv", "--min-agreement", 0.7,
           "--min-reviewers", 2, "--features", "encoder", "--features", "stats", "--freeze",
           "partial", "--dropout", 0.3, "--hidden-dim", 64, "--batch-size", 8,
           "--feature-cache", "fc", "--resnet-weights", "r.pth", "--patience", 3)  # fmt: skip
    cfg = seen[0]
    assert (cfg.data.pairs, cfg.data.min_agreement, cfg.data.min_reviewers) == ("p.csv", 0.7, 2)
    assert cfg.finetune.method == PairwiseSettings(
        features=("encoder", "stats"), freeze="partial", dropout=0.3, hidden_dim=64,
        batch_size=8, feature_cache="fc", resnet_weights="r.pth",
    )  # fmt: skip
    assert cfg.finetune.patience == 3
    result = invoke("finetune", "--method", "pairwise", "--ways", 5, code=2)
    assert one_line_error(result).startswith(
        "error: --ways does not apply to finetune method 'pairwise' (it sets episodes"
    )
    result = invoke("finetune", "--method", "pairwise", "--features", "clip", code=2)
    assert "unknown feature set 'clip'" in one_line_error(result)
    result = invoke("finetune", "--method", "protonet", "--freeze", "partial", code=2)
    assert "--freeze does not apply to finetune method 'protonet'" in one_line_error(result)


@pytest.mark.parametrize(
    "options, message",
    [
        ({}, "needs --pairs CSV"),
        ({"data.source": "x.zip"}, "--data does not apply to --method pairwise"),
        ({"finetune.freeze_encoder": True, "finetune.<method>.freeze": "partial"},
         "--freeze partial sets what trains end to end"),
        ({"finetune.<method>.features": ("stats",)}, "holds no sketch encoder to train"),
        ({"finetune.views.stroke_jitter": 0.02}, "work on strokes"),
    ],
)  # fmt: skip
def test_the_engine_refuses_what_pairwise_training_would_ignore(few, options, message):
    pairs = write_csv(few / "pairs.csv", [["imgs/a.png", "imgs/b.png", 1]], HEADER[:3])
    given = {"finetune.method": "pairwise", "data.pairs": str(pairs)} | options
    if not options:
        given.pop("data.pairs")
    with pytest.raises(ConfigError, match=message):
        engine.finetune(resolve_config(None, given), out=few / "run", quiet=True)
    with pytest.raises(UsageError, match="only to pairwise"):
        resolve_config(None, {"finetune.<method>.dropout": 0.1})


def test_pairs_options_are_refused_for_other_methods(tmp_path):
    with pytest.raises(ConfigError, match="--pairs applies to finetune --method pairwise, not "
                       "to --method protonet"):  # fmt: skip
        engine.finetune(resolve_config(None, {"data.pairs": "p.csv"}), out=tmp_path / "run")
    with pytest.raises(ConfigError, match="--min-reviewers applies .* not to pretrain"):
        engine.pretrain(resolve_config(None, {"data.min_reviewers": 2}), out=tmp_path / "run")


def test_a_frozen_run_resumes_with_its_features_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # the default cache folder
    data = write_ink_pairs(tmp_path / "data", n_classes=6, n_drawers=4, per_class=6)
    run = tmp_path / "run"
    args = ("finetune", "--method", "pairwise", "--pairs", data, "--freeze-encoder", "--features",
            "stats", "--batch-size", 8, "--device", "cpu", "--quiet")  # fmt: skip
    invoke(*args, "--epochs", 1, "--out", run)
    assert list((tmp_path / "xdg" / "sketchshot" / "features").glob("stats-*/*.safetensors"))
    done = json.loads(invoke("finetune", "--resume", run, "--epochs", 2, "--json").stdout)
    assert done["epochs"] == 2
    ends = [x for x in (run / "metrics.jsonl").read_text().splitlines() if "epoch_end" in x]
    assert len(ends) == 2
    cache = results(run)["feature_cache"]
    assert (cache["computed"], cache["cached"]) == (0, len(read_pairs(data).images))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_ink_pairs(tmp_path_factory.mktemp("pairs"))


SPLIT = ("--split-fractions", 0.5, 0.25, 0.25)


def results(run: Path) -> dict:
    return json.loads((run / "results.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def frozen(data, tmp_path_factory) -> Path:
    """A head trained on cached features of the encoder and the image statistics."""
    root = tmp_path_factory.mktemp("frozen")
    args = ("finetune", "--method", "pairwise", "--pairs", data, "--freeze-encoder",
            "--features", "encoder", "--features", "stats", "--feature-cache", root / "cache",
            "--epochs", 6, "--batch-size", 16, "--dropout", 0.5, *SPLIT, "--device", "cpu",
            "--quiet", "--json")  # fmt: skip
    first = json.loads(invoke(*args, "--out", root / "run").stdout)
    assert first["results"]["test"]["pairs"] == 120
    # again, reading the cache, with early stopping: the val log-loss stops improving soon
    invoke(*args, "--out", root / "again", "--epochs", 40, "--patience", 1)
    return root


def test_frozen_training_learns_the_preference_and_a_second_run_hits_the_cache(frozen, data):
    r, n = results(frozen / "run"), len(read_pairs(data).images)
    assert r["mode"] == "frozen" and r["features"] == ["encoder", "stats"]
    counts = {s: (v["pairs"], v["groups"]) for s, v in r["splits"].items()}
    assert counts == {"train": (240, 12), "val": (120, 6), "test": (120, 6)}
    # chance is 0.5; on unseen glyphs, this run: 0.83 (stats alone: 1.0; the encoder alone,
    # random and frozen, overfits the 12 train glyphs)
    assert r["splits"]["test"]["accuracy"] > 0.7
    assert r["splits"]["test"]["log_loss"] < math.log(2)
    assert r["feature_cache"] | {"computed": n, "cached": 0} == r["feature_cache"]
    again = results(frozen / "again")
    assert (again["feature_cache"]["computed"], again["feature_cache"]["cached"]) == (0, n)
    assert again["stopped"] == "early_stop" and again["epochs"] < 40
    assert again["best"]["epoch"] == again["epochs"] - 1  # --patience 1
    assert (frozen / "run" / "config.toml").is_file() and (frozen / "run" / "model.json").is_file()
    assert r["best"]["epoch"] is not None and "val_loss" in r["best"]


@pytest.fixture(scope="module")
def end_to_end(data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("e2e") / "run"
    invoke("finetune", "--method", "pairwise", "--pairs", data, "--epochs", 2, "--batch-size",
           16, "--image-size", 16, *SPLIT, "--out", run, "--device", "cpu", "--quiet")  # fmt: skip
    return run


def test_end_to_end_training_learns_the_preference(end_to_end):
    r = results(end_to_end)
    assert r["mode"] == "end-to-end (--freeze none)"
    # chance is 0.5; this run: 0.84 on the unseen glyphs of the test split after 2 epochs
    assert r["splits"]["test"]["accuracy"] > 0.7
    card = json.loads((end_to_end / "model.json").read_text(encoding="utf-8"))
    assert card["model"]["kind"] == "pairwise" and card["preprocessing"]["image_size"] == 16
    assert "feature_cache" not in card["model"]["method_args"]
    records = [json.loads(x) for x in (end_to_end / "metrics.jsonl").read_text().splitlines()]
    assert all("val_loss" in x and "val_acc" in x for x in records if x.get("event"))


def test_evaluate_and_predict_work_on_pairs(end_to_end, frozen, data, tmp_path):
    for run in (end_to_end, frozen / "run"):
        out = json.loads(invoke("evaluate", "--model", run, "--json", "--quiet").stdout)
        test = results(run)["splits"]["test"]
        assert out["split"] == "test" and out["n_pairs"] == test["pairs"] == 120
        assert out["accuracy"] == pytest.approx(test["accuracy"])
        assert out["log_loss"] == pytest.approx(test["log_loss"], abs=1e-4)
    table = plain(invoke("evaluate", "--model", end_to_end, "--split", "all").stdout)
    assert "480 pairs" in table and "log-loss" in table
    result = invoke("evaluate", "--model", end_to_end, "--ways", 5, code=2)
    assert "--ways does not apply to a pairwise model" in one_line_error(result)
    # predict: a CSV without labels, one of its images missing; the rows come in its order
    with open(data, newline="") as f:
        rows = [r[:2] for r in csv.reader(f)][1:4]
    rows.append([rows[0][0], "img/missing.png"])
    pairs = write_csv(data.parent / "to_score.csv", rows, ["image_a", "image_b"])
    result = invoke("predict", "--pairs", pairs, "--model", end_to_end, "--json", code=1)
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    assert [[x["image_a"], x["image_b"]] for x in lines] == rows
    assert all(0 < x["p_a"] < 1 and x["preferred"] in "ab" for x in lines[:3])
    assert lines[3]["p_a"] is None and "missing.png" in lines[3]["error"]
    assert "1 of 4 pair(s) could not be scored" in plain(result.stderr)
    swapped = write_csv(data.parent / "swapped.csv", [r[::-1] for r in rows[:3]],
                        ["image_a", "image_b"])  # fmt: skip
    back = [json.loads(x) for x in invoke("predict", "--pairs", swapped, "--model", end_to_end,
                                          "--json").stdout.splitlines()]  # fmt: skip
    for x, y in zip(lines[:3], back, strict=True):  # P(b > a) = 1 - P(a > b)
        assert x["p_a"] + y["p_a"] == pytest.approx(1, abs=2e-6)
    shown = plain(invoke("predict", "--pairs", data, "--model", frozen / "run").stdout)
    assert "P(a > b)" in shown and "480 pairs of" in shown
    assert "pairwise (pairwise)" in plain(invoke("info", end_to_end).stdout)


def test_predict_pairs_with_a_model_of_another_kind_is_one_line(saved_model, data):
    result = invoke("predict", "--pairs", data, "--model", saved_model, code=2)
    assert "is a protonet model; pairs are scored by a pairwise one" in one_line_error(result)
    result = invoke("evaluate", "--pairs", data, "--model", saved_model, code=2)
    assert "is a protonet model" in one_line_error(result)
