"""Image-level splits (the same classes in train, val and test): a seeded stratified draw,
train/ valid/ test/ folders, small classes; and kNN with train images as references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from helpers import sketch_array, write_png
from sketchshot.cli import app
from sketchshot.config import BuiltinDataConfig, DataConfig
from sketchshot.data import load_dataset, load_splits
from sketchshot.data.splits import presplit
from sketchshot.errors import ConfigError, DataError
from sketchshot.protocols.knn import knn_reference_protocol

BUILTIN = BuiltinDataConfig(n_classes=6, n_drawers=10)


def image_split(**kw: object) -> DataConfig:
    return DataConfig(builtin=BUILTIN, split_by="images", split_fractions=(0.6, 0.2, 0.2), **kw)


def test_a_seeded_stratified_split_keeps_every_class_in_every_split():
    splits = load_splits(image_split(), 28)
    sizes = {k: v.counts().tolist() for k, v in splits.items() if v is not None}
    assert sizes == {"train": [6] * 6, "val": [2] * 6, "test": [2] * 6}
    names = {k: v.class_names for k, v in splits.items() if v is not None}
    assert names["train"] == names["val"] == names["test"]
    seen = [set(v.sources) for v in splits.values() if v is not None]
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    again = load_splits(image_split(), 28)
    assert again["test"].sources == splits["test"].sources  # seeded
    other = load_splits(image_split(split_seed=1), 28)
    assert other["test"].sources != splits["test"].sources
    test = load_dataset(image_split(), 28, "test")
    assert test.sources == splits["test"].sources


def test_small_classes_fail_or_stay_in_train(tmp_path):
    root = tmp_path / "data"
    for c, (name, count) in enumerate({"cup": 5, "hat": 2}.items()):
        for i in range(count):
            write_png(root / name / f"{i}.png", sketch_array(c, i))
    cfg = DataConfig(source=str(root), split_by="images", split_fractions=(0.6, 0.2, 0.2))
    with pytest.raises(DataError, match="'hat' has 2 images, too few for the 3 splits"):
        load_splits(cfg, 28)
    kept = load_splits(cfg.model_copy(update={"small_classes": "train"}), 28)
    assert kept["train"].counts().tolist() == [3, 2]
    assert kept["val"].counts().tolist() == [1, 0] and kept["test"].counts().tolist() == [1, 0]


def test_class_lists_are_refused_with_an_image_split():
    with pytest.raises(ConfigError, match="split the classes"):
        load_splits(image_split(test_classes=("glyph_001",)), 28)


def write_presplit(root, counts: dict[str, dict[str, int]]):
    classes = sorted({c for split in counts.values() for c in split})
    for split, per_class in counts.items():
        for name, n in per_class.items():
            for i in range(n):
                path = root / split / name / f"{i}.png"
                write_png(path, sketch_array(classes.index(name), i + 10 * len(split)))
    return root


def test_train_valid_test_folders_are_read_as_the_split(tmp_path):
    root = write_presplit(
        tmp_path / "symbols",
        {"train": {"bolt": 4, "nut": 6}, "valid": {"bolt": 1, "nut": 2}, "test": {"nut": 3}},
    )
    assert presplit(root) and not presplit(tmp_path)
    splits = load_splits(DataConfig(source=str(root)), 28)
    assert splits["train"].class_names == ("bolt", "nut")
    assert splits["train"].counts().tolist() == [4, 6]
    assert splits["val"].counts().tolist() == [1, 2]
    assert splits["test"].counts().tolist() == [0, 3]
    assert all(s.startswith("test/nut/") for s in splits["test"].sources)


def test_knn_with_references_scores_every_query_against_the_train_images():
    # 3 classes on 3 axes; references exact, queries: 2 of class 0 lean to class 1
    refs = torch.eye(3).repeat_interleave(5, dim=0)
    ref_labels = torch.arange(3).repeat_interleave(5)
    queries = torch.tensor([[1.0, 0, 0], [0.2, 1, 0], [0.1, 1, 0], [0, 1, 0], [0, 0, 1]])
    query_labels = torch.tensor([0, 0, 0, 1, 2])
    report = knn_reference_protocol(
        refs, ref_labels, queries, query_labels, ("a", "b", "c"), draws=4, seed=0
    )
    assert [f.accuracy for f in report.figures] == pytest.approx([0.6, 0.6, 0.6])
    assert report.figures[0].name.startswith("3-way kNN all 15 train images, k=5")
    assert report.figures[1].repeats == 4 and report.figures[0].repeats == 5
    assert report.confusion[0].tolist() == [1, 2, 0]


def test_pretrain_then_knn_on_an_image_split_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = write_presplit(
        tmp_path / "symbols",
        {
            "train": {f"s{c}": 6 for c in range(4)},
            "valid": {f"s{c}": 2 for c in range(4)},
            "test": {f"s{c}": 3 for c in range(4)},
        },
    )
    runner = CliRunner()
    done = runner.invoke(
        app,
        ["pretrain", "--data", str(root), "--epochs", "1", "--batch-size", "8", "--out", "ssl"],
        env={"COLUMNS": "200"},
    )
    assert done.exit_code == 0, done.output
    assert "splitting the images of 4 classes by its train/valid/test folders" in done.stderr
    done = runner.invoke(
        app, ["evaluate", "--model", "ssl", "--protocol", "knn", "--draws", "3", "--json"]
    )
    assert done.exit_code == 0, done.output
    import json

    result = json.loads(done.stdout)
    assert result["split"] == "test" and result["n_classes"] == 4
    names = [f["name"] for f in result["figures"]]
    assert names[0].startswith("4-way kNN all 24 train images, k=5")
    assert "kNN 1-shot train images, k=1" in names[1] and "5-shot" in names[2]
    accuracies = np.array([f["accuracy"] for f in result["figures"]])
    assert (accuracies >= 0.25).all()  # the shapes differ by class: well above chance


def test_classifier_metrics_from_a_confusion():
    from sketchshot.protocols.classify import precision_recall_f1

    confusion = np.array([[3, 1, 0], [0, 2, 0], [1, 0, 0]])
    precision, recall, f1 = precision_recall_f1(confusion)
    assert precision.tolist() == pytest.approx([0.75, 2 / 3, 0.0])
    assert recall.tolist() == pytest.approx([0.75, 1.0, 0.0])
    assert f1.tolist() == pytest.approx([0.75, 0.8, 0.0])


def test_classifier_protocol_scores_the_head_on_the_model_classes():
    from torch import nn

    from sketchshot.protocols.classify import classify_protocol

    class Head(nn.Module):
        def logits(self, features: torch.Tensor) -> torch.Tensor:
            return features  # features are logits over the model's 3 classes

    features = torch.tensor([[5.0, 1, 0], [0, 5, 1], [0, 5, 1], [1, 0, 5]])
    # evaluated classes are two of the model's three, in another order
    report = classify_protocol(
        Head(), features, torch.tensor([1, 0, 0, 1]), ("b", "a"), ("a", "b", "c")
    )
    top1, top_k = report.figures
    assert top1.accuracy == pytest.approx(0.75) and top_k.accuracy == 1.0
    assert top1.name.startswith("3-way classifier top-1") and "top-3" in top_k.name
    assert report.details["per_class"]["a"]["recall"] == 0.5
    assert set(report.details["per_class"]) == {"a", "b"}
    with pytest.raises(ConfigError, match="not trained on 1 of these classes"):
        classify_protocol(Head(), features, torch.tensor([0, 0, 0, 0]), ("z",), ("a", "b", "c"))
    with pytest.raises(ConfigError, match="classification head"):
        classify_protocol(nn.Identity(), features, torch.tensor([0, 0, 0, 0]), ("a",), ("a",))


def test_presplit_without_test_folder_evaluates_val_and_all_merges_classes(tmp_path):
    from sketchshot.card import ModelCard
    from sketchshot.config import Config
    from sketchshot.engine import evaluation_split

    root = write_presplit(tmp_path / "pre", {"train": {"a": 6, "b": 6}, "valid": {"a": 2, "b": 2}})
    assert presplit(root) == {"train", "val"}
    everything = load_dataset(DataConfig(source=str(root)), 28, "all")
    assert everything.class_names == ("a", "b") and everything.counts().tolist() == [8, 8]
    cfg = Config.model_validate({"data": {"source": str(root)}})
    card = ModelCard.model_construct(data=None, config={"data": {"source": str(root)}})
    assert evaluation_split(cfg, card).split == "val"


def test_a_class_excluded_is_not_refused_for_being_small(tmp_path):
    root = tmp_path / "data"
    for c, (name, count) in enumerate({"cup": 5, "hat": 5, "tiny": 2}.items()):
        for i in range(count):
            write_png(root / name / f"{i}.png", sketch_array(c, i))
    cfg = DataConfig(
        source=str(root), split_by="images", split_fractions=(0.6, 0.2, 0.2),
        exclude_classes=("tiny",),
    )  # fmt: skip
    splits = load_splits(cfg, 28)
    assert splits["train"].class_names == ("cup", "hat")


def test_empty_classes_of_a_split_take_no_part_in_episodes(tmp_path):
    root = write_presplit(
        tmp_path / "pre",
        {"train": {"a": 4, "b": 4, "c": 4}, "valid": {"a": 3, "b": 3}, "test": {"c": 3}},
    )
    val = load_splits(DataConfig(source=str(root)), 28)["val"]
    assert val.counts().tolist() == [3, 3, 0]
    assert val.nonempty().class_names == ("a", "b")


def test_knn_references_leave_out_5_shot_when_a_class_has_fewer_train_images():
    refs, labels = torch.eye(2).repeat(3, 1), torch.tensor([0, 1, 0, 1, 0, 1])
    report = knn_reference_protocol(
        refs, labels, torch.eye(2), torch.tensor([0, 1]), ("a", "b"), draws=2, seed=0
    )
    assert len(report.figures) == 2 and "1-shot" in report.figures[1].name
    assert report.details["notes"] == ["kNN 5-shot left out: a class has 3 train image(s)"]


def test_quickdraw_filters_are_refused_for_image_folders(tmp_path):
    root = tmp_path / "data"
    write_png(root / "cup" / "0.png", sketch_array(0, 0))
    with pytest.raises(ConfigError, match="QuickDraw"):
        load_dataset(DataConfig(source=str(root), recognized="yes"), 28)


def test_subsample_keeps_a_seeded_share_of_groups_or_classes(tmp_path):
    from sketchshot.data.splits import subsample

    few = load_dataset(DataConfig(builtin=BUILTIN, subsample=0.5, split_fractions=(1, 0, 0)), 28)
    assert len(few.class_names) == 3 and few.counts().tolist() == [10, 10, 10]
    again = load_dataset(DataConfig(builtin=BUILTIN, subsample=0.5, split_fractions=(1, 0, 0)), 28)
    assert again.class_names == few.class_names
    # grouped names: whole groups go, so no group is split between train and the rest
    root = tmp_path / "abc"
    for c, name in enumerate(f"{g}/c{i}" for g in "abcd" for i in range(2)):
        write_png(root / name / "0.png", sketch_array(c, 0))
    dataset = load_dataset(DataConfig(source=str(root), split_fractions=(1, 0, 0)), 28)
    half = subsample(dataset, DataConfig(source=str(root), subsample=0.5))
    groups = {n.split("/")[0] for n in half.class_names}
    assert len(groups) == 2 and len(half.class_names) == 4
    # a presplit source is subsampled by its classes, every split keeps them
    pre = write_presplit(
        tmp_path / "pre", {s: {f"k{i}": 2 for i in range(4)} for s in ("train", "valid", "test")}
    )
    splits = load_splits(DataConfig(source=str(pre), subsample=0.5), 28)
    assert splits["train"].class_names == splits["test"].class_names
    assert len(splits["train"].class_names) == 2
