"""The real Omniglot archives in ../shared/data/omniglot (beside the checkout)."""

from __future__ import annotations

import pytest
import torch

from helpers import OMNIGLOT
from sketchshot.config import DataConfig
from sketchshot.data import load_dataset
from sketchshot.data.dataset import filter_classes
from sketchshot.data.folder import load_image_folder
from sketchshot.encoders import create_encoder
from sketchshot.evaluation import embed
from sketchshot.methods import create_method
from sketchshot.protocols.episodes import episodes_protocol

SMALL1 = OMNIGLOT / "images_background_small1.zip"
SMALL2 = OMNIGLOT / "images_background_small2.zip"

if not (SMALL1.is_file() and SMALL2.is_file()):
    pytest.skip(
        f"../shared/data/omniglot not found: expected {SMALL1} and {SMALL2}",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def small1():
    return load_image_folder(SMALL1, 28)


@pytest.fixture(scope="module")
def small2():
    return load_image_folder(SMALL2, 28)


def test_small1_classes_images_and_names(small1):
    assert len(small1.class_names) == 136
    assert len(small1) == 2720
    assert small1.counts().tolist() == [20] * 136  # 20 drawers per character
    assert small1.images.shape == (2720, 1, 28, 28)
    assert small1.images.dtype == torch.uint8
    assert small1.class_names[0] == "Balinese/character01"
    alphabets = {name.split("/")[0] for name in small1.class_names}
    assert alphabets == {"Balinese", "Early_Aramaic", "Greek", "Korean", "Latin"}
    assert all(name.count("/") == 1 for name in small1.class_names)


def test_small1_strokes_bright_on_dark(small1):
    # Omniglot pages are white with black ink; they must come out inverted
    x = small1.floats()
    assert x.mean() < 0.15
    assert x[..., 0, :].mean() < 0.01  # top rows are page
    assert x.flatten(1).amax(1).min() > 0.5  # every drawing has bright ink


def test_filter_greek(small1):
    greek = filter_classes(small1, ["Greek"], [])
    assert len(greek.class_names) == 24
    assert all(name.startswith("Greek/") for name in greek.class_names)
    assert len(greek) == 24 * 20


def test_small2_without_greek_and_latin_is_the_unseen_alphabets(small2):
    assert len(small2.class_names) == 156
    rest = filter_classes(small2, [], ["Greek", "Latin"])
    assert len(rest.class_names) == 106
    assert {n.split("/")[0] for n in rest.class_names} == {
        "Japanese_(katakana)",
        "Sanskrit",
        "Tagalog",
    }


def test_load_dataset_applies_filters_and_group_splits():
    cfg = DataConfig(source=str(SMALL1), classes=("Greek", "Latin"), val_classes=("Latin",))
    train = load_dataset(cfg, 28, "train")
    val = load_dataset(cfg, 28, "val")
    assert len(train.class_names) == 24 and len(val.class_names) == 26
    assert all(n.startswith("Greek/") for n in train.class_names)
    assert all(n.startswith("Latin/") for n in val.class_names)


def test_random_conv4_with_cosine_prototypes_beats_chance(small2):
    # Unseen alphabets, 5-way 1-shot: a randomly initialised conv4 scored with the default
    # (cosine-prototype) Method.score gets about 45%; chance is 20%. Labels that do not follow
    # their images (shuffled, they give 19%) or a scorer that ignores the support fall to chance.
    unseen = filter_classes(small2, [], ["Greek", "Latin"])
    torch.manual_seed(0)
    method = create_method("simclr", create_encoder("conv4", image_size=28))
    embeddings = embed(method, unseen.images, torch.device("cpu"))
    figure = episodes_protocol(method, embeddings, unseen, 5, 1, 5, 200, seed=0).figures[0]
    assert figure.repeats == 200 and (figure.n_way, figure.chance) == (5, 0.2)
    assert figure.accuracy > 0.35
    assert 0 < figure.ci95 < 0.05
