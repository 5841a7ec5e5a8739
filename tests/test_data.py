"""Data: built-in glyphs, image folders and archives, class filters and splits, sketch views."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from helpers import sketch_array, write_folder, write_png
from sketchshot.config import DataConfig
from sketchshot.data import load_dataset
from sketchshot.data.dataset import filter_classes, match_classes
from sketchshot.data.folder import UNLABELLED, decode_sketch, load_image_folder, require_labels
from sketchshot.data.glyphs import make_glyphs
from sketchshot.data.splits import split_classes, take_split
from sketchshot.data.views import SketchAugment
from sketchshot.errors import DataError

# ---------------------------------------------------------------- built-in glyphs


def test_glyphs_are_deterministic_per_seed():
    a = make_glyphs(6, 3, 28, seed=0)
    b = make_glyphs(6, 3, 28, seed=0)
    c = make_glyphs(6, 3, 28, seed=1)
    assert a.images.numpy().tobytes() == b.images.numpy().tobytes()
    assert torch.equal(a.labels, b.labels)
    assert a.class_names == b.class_names
    assert (a.images != c.images).float().mean() > 0.05


@pytest.mark.parametrize("size", [28, 64])
def test_glyphs_render_at_any_size_bright_on_dark(size):
    ds = make_glyphs(5, 4, size, seed=0)
    assert ds.images.shape == (20, 1, size, size)
    assert ds.images.dtype == torch.uint8
    assert ds.image_size == size
    assert ds.labels.tolist() == [c for c in range(5) for _ in range(4)]
    assert ds.class_names == tuple(f"glyph-{c:03d}" for c in range(5))
    assert len(ds.sources) == 20
    assert ds.counts().tolist() == [4] * 5
    x = ds.floats()
    border = torch.cat([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], dim=-1)
    assert border.mean() < 0.02  # the page is dark
    assert x.mean() < 0.25  # mostly page
    assert x.flatten(1).amax(1).min() > 0.9  # every drawing has bright ink


def test_glyph_sizes_draw_the_same_picture():
    small = make_glyphs(3, 2, 28, seed=0).floats()
    big = make_glyphs(3, 2, 56, seed=0).floats()
    down = torch.nn.functional.avg_pool2d(big, 2)
    assert (down - small).abs().mean() < 0.05


def test_glyph_drawers_of_one_class_are_alike_and_classes_differ():
    # few-shot structure: a blurred drawing's nearest neighbour is mostly another drawer's
    # rendition of the same glyph (chance: 5 of 71 neighbours, 7%)
    ds = make_glyphs(12, 6, 28, seed=0)
    x = torch.nn.functional.avg_pool2d(ds.floats(), 4).flatten(1)
    d = torch.cdist(x, x).fill_diagonal_(float("inf"))
    nearest_same = (ds.labels[d.argmin(1)] == ds.labels).float().mean()
    assert nearest_same > 0.6
    assert not torch.equal(ds.images[0], ds.images[1])  # drawers never copy each other


# ---------------------------------------------------------------- image folders


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """Two groups with nested class folders, dark strokes on white pages."""
    return write_folder(
        tmp_path / "sketches",
        {"alpha/char1": 3, "alpha/char2": 2, "beta/char1": 4},
    )


def test_folder_nested_classes_inverted_to_bright_strokes(tree):
    ds = load_image_folder(tree, 28)
    assert ds.class_names == ("alpha/char1", "alpha/char2", "beta/char1")
    assert ds.counts().tolist() == [3, 2, 4]
    assert ds.images.shape == (9, 1, 28, 28)
    assert ds.images.dtype == torch.uint8
    assert ds.origin == str(tree)
    for label, source in zip(ds.labels.tolist(), ds.sources, strict=True):
        assert source.startswith(ds.class_names[label] + "/")
    x = ds.floats()
    assert x[..., 0, 0].max() == 0  # the white page became black
    assert x.flatten(1).amax(1).min() > 0.7  # strokes are bright
    assert x.mean() < 0.3


def test_folder_invert_no_keeps_the_page_white(tree):
    ds = load_image_folder(tree, 28, invert="no")
    assert ds.floats()[..., 0, 0].min() == 1.0
    already_dark = write_folder(tree.parent / "dark", {"a": 2, "b": 2}, white=False)
    auto = load_image_folder(already_dark, 28)
    assert auto.floats()[..., 0, 0].max() == 0  # bright-on-dark is left as it is
    forced = load_image_folder(already_dark, 28, invert="yes")
    # inverted before resizing, so rounding may differ by one grey level
    assert (forced.images.int() - (255 - auto.images.int())).abs().max() <= 1
    assert forced.floats()[..., 0, 0].min() == 1.0


def test_folder_and_zip_give_the_same_dataset(tree, tmp_path):
    archive = tmp_path / "sketches.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted(tree.rglob("*.png")):
            z.write(path, "top/" + path.relative_to(tree).as_posix())  # one shared top folder
        z.writestr("__MACOSX/top/alpha/char1/._00.png", b"resource fork")
        z.writestr("top/.hidden/x.png", b"not an image")
        z.writestr("top/alpha/notes.txt", b"ignored")
    from_dir = load_image_folder(tree, 28)
    from_zip = load_image_folder(archive, 28)
    assert from_zip.class_names == from_dir.class_names
    assert torch.equal(from_zip.images, from_dir.images)
    assert torch.equal(from_zip.labels, from_dir.labels)
    assert from_zip.origin == str(archive)


def test_single_group_keeps_its_class_folders(tmp_path):
    root = write_folder(tmp_path / "one", {"cat": 2, "dog": 2})
    assert load_image_folder(root, 28).class_names == ("cat", "dog")


def test_transparent_and_non_square_images(tmp_path):
    rgba = Image.new("RGBA", (60, 30), (0, 0, 0, 0))
    ImageDraw.Draw(rgba).line([(5, 15), (55, 15)], fill=(0, 0, 0, 255), width=4)
    rgba.save(tmp_path / "wide.png")
    out = decode_sketch((tmp_path / "wide.png").read_bytes(), 30, "auto", "wide.png")
    assert out.shape == (30, 30) and out.dtype == np.uint8
    assert out[15, 15] > 200  # the black stroke on a transparent page is bright
    assert out[0].max() == 0 and out[-1].max() == 0  # padding is page, not ink
    assert out[7].max() == 0  # the padded band above the stroke stays dark


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match="does not exist") as info:
        load_image_folder(tmp_path / "nope", 28)
    assert "nope" in str(info.value)


def test_empty_folder(tmp_path):
    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "a" / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match="no images found"):
        load_image_folder(tmp_path / "empty", 28)


def test_image_outside_a_class_folder_makes_the_source_unlabelled(tmp_path):
    root = write_folder(tmp_path / "d", {"a": 1})
    write_png(root / "loose.png", sketch_array(0, 0))
    dataset = load_image_folder(root, 28)
    assert dataset.class_names == (UNLABELLED,)
    assert sorted(dataset.sources) == ["a/00.png", "loose.png"]  # every image, at any depth
    with pytest.raises(DataError, match="loose.png is not inside a class folder"):
        require_labels(dataset, "finetune")


def test_a_file_that_is_neither_folder_nor_zip(tmp_path):
    path = tmp_path / "data.tar"
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(DataError, match="neither a folder nor a .zip"):
        load_image_folder(path, 28)


def test_broken_png_is_named(tree):
    broken = tree / "alpha" / "char2" / "x.png"
    broken.write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(DataError) as info:
        load_image_folder(tree, 28)
    assert str(broken) in str(info.value)
    assert "cannot read image" in str(info.value)


def test_broken_png_inside_a_zip_is_named(tmp_path):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as z:
        buffer = io.BytesIO()
        Image.fromarray(sketch_array(0, 0)).save(buffer, format="PNG")
        z.writestr("top/good/0.png", buffer.getvalue())
        z.writestr("top/good/x.png", b"\x89PNG garbage")
    with pytest.raises(DataError) as info:
        load_image_folder(archive, 28)
    assert "top/good/x.png" in str(info.value)
    assert str(archive) in str(info.value)


# ---------------------------------------------------------------- class filters and splits


def test_filter_by_glob_and_group(tree):
    ds = load_image_folder(tree, 28)
    assert filter_classes(ds, ["alpha"], []).class_names == ("alpha/char1", "alpha/char2")
    assert filter_classes(ds, ["*/char1"], []).class_names == ("alpha/char1", "beta/char1")
    kept = filter_classes(ds, [], ["alpha/char1"])
    assert kept.class_names == ("alpha/char2", "beta/char1")
    assert kept.counts().tolist() == [2, 4]
    assert kept.labels.max() == 1  # relabelled 0..n-1
    # images travel with their labels
    keep_idx = [i for i, s in enumerate(ds.sources) if not s.startswith("alpha/char1/")]
    assert torch.equal(kept.images, ds.images[keep_idx])
    both = filter_classes(ds, ["alpha", "beta"], ["*/char2"])
    assert both.class_names == ("alpha/char1", "beta/char1")
    assert match_classes(["Greek/c1", "Greekish/c1"], ["Greek"]) == ["Greek/c1"]


def test_filter_errors(tree):
    ds = load_image_folder(tree, 28)
    with pytest.raises(DataError, match="no class of .* matches --classes"):
        filter_classes(ds, ["gamma"], [])
    with pytest.raises(DataError, match="removes every class"):
        filter_classes(ds, [], ["*"])


def names(n: int) -> tuple[str, ...]:
    return tuple(f"group{i % 4}/c{i:02d}" for i in range(n))


@pytest.mark.parametrize("fractions", [(0.7, 0.1, 0.2), (0.5, 0.25, 0.25), (1.0, 0.0, 0.0)])
def test_fraction_splits_are_disjoint_and_cover_every_class(fractions):
    classes = names(40)
    parts = split_classes(classes, DataConfig(split_fractions=fractions))
    train, val, test = (set(parts[k]) for k in ("train", "val", "test"))
    assert not (train & val) and not (train & test) and not (val & test)
    assert train | val | test == set(classes)
    assert len(train) == round(fractions[0] * 40)
    assert len(val) == round(fractions[1] * 40)
    # the split seed decides, reproducibly
    assert split_classes(classes, DataConfig(split_fractions=fractions)) == parts
    if fractions[1] > 0:
        other = split_classes(classes, DataConfig(split_fractions=fractions, split_seed=1))
        assert other["train"] != parts["train"]


def test_explicit_val_group_puts_the_rest_in_train():
    classes = names(12)
    parts = split_classes(classes, DataConfig(val_classes=("group1",)))
    assert parts["val"] == [c for c in classes if c.startswith("group1/")]
    assert parts["train"] == [c for c in classes if not c.startswith("group1/")]
    assert parts["test"] == []
    parts = split_classes(classes, DataConfig(val_classes=("group1",), test_classes=("*/c0[02]",)))
    assert parts["test"] == ["group0/c00", "group2/c02"]
    assert set(parts["train"]).isdisjoint(parts["test"] + parts["val"])
    assert len(parts["train"]) + len(parts["val"]) + len(parts["test"]) == 12


def test_a_class_in_two_explicit_splits_is_an_error():
    with pytest.raises(DataError, match="'group1/c01' is in both the val and test split"):
        split_classes(names(8), DataConfig(val_classes=("group1",), test_classes=("*/c01",)))


def test_take_split_selects_and_refuses_an_empty_split():
    ds = make_glyphs(10, 2, 28)
    cfg = DataConfig(split_fractions=(0.6, 0.0, 0.4))
    train, test = take_split(ds, cfg, "train"), take_split(ds, cfg, "test")
    assert len(train.class_names) == 6 and len(test.class_names) == 4
    assert set(train.class_names).isdisjoint(test.class_names)
    assert len(train) == 12 and len(test) == 8
    assert take_split(ds, cfg, "all") is ds
    with pytest.raises(DataError, match="the val split of .* has no classes"):
        take_split(ds, cfg, "val")


def test_load_dataset_filters_then_splits(tree):
    cfg = DataConfig(source=str(tree), classes=("alpha",), val_classes=("alpha/char2",))
    assert load_dataset(cfg, 28, "train").class_names == ("alpha/char1",)
    assert load_dataset(cfg, 28, "val").class_names == ("alpha/char2",)
    builtin = load_dataset(DataConfig(builtin={"n_classes": 5, "n_drawers": 2}), 28, "all")
    assert len(builtin) == 10


# ---------------------------------------------------------------- sketch views


@pytest.fixture
def batch() -> torch.Tensor:
    return make_glyphs(4, 2, 28, seed=0).floats()


@pytest.mark.parametrize("strength", [0.5, 1.0, 2.0])
def test_augment_keeps_shape_and_range(batch, strength):
    torch.manual_seed(0)
    out = SketchAugment(strength)(batch)
    assert out.shape == batch.shape and out.dtype == batch.dtype
    assert out.min() >= 0 and out.max() <= 1
    assert not torch.equal(out, batch)
    assert out.flatten(1).amax(1).min() > 0.3  # the drawing survives


def test_augment_strength_zero_is_identity(batch):
    assert torch.equal(SketchAugment(0.0)(batch), batch)


def test_augment_same_seed_same_views_and_views_differ(batch):
    aug = SketchAugment(1.0)
    torch.manual_seed(3)
    a = aug(batch)
    torch.manual_seed(3)
    b = aug(batch)
    c = aug(batch)
    assert torch.equal(a, b)
    assert not torch.equal(b, c)
    # parameters are drawn per sample: two copies of one image get different views
    twins = aug(batch[:1].repeat(2, 1, 1, 1))
    assert not torch.equal(twins[0], twins[1])


def test_augment_does_not_mutate_its_input(batch):
    before = batch.clone()
    torch.manual_seed(0)
    SketchAugment(2.0)(batch)
    assert torch.equal(batch, before)


def test_augment_strength_scales_the_change(batch):
    def change(strength):
        torch.manual_seed(0)
        aug = SketchAugment(strength, thickness_p=0.0, erase_p=0.0)
        return (aug(batch) - batch).abs().mean()

    assert change(0.1) < change(1.0)


def test_crop_stays_inside_the_image_and_zooms_in():
    # only the crop: a window inside the image never samples the zero padding outside it
    aug = SketchAugment(1.0, rotation=0, scale=0, shear=0, translate=0, thickness_p=0,
                        erase_p=0, crop=0.5)  # fmt: skip
    torch.manual_seed(0)
    page = aug(torch.ones(64, 1, 28, 28))  # (bilinear sampling blends the outer pixel ring)
    assert torch.allclose(page[..., 1:-1, 1:-1], torch.ones(1), atol=1e-5)
    # a centred square grows: the window covers 50-100% of the area, so ink covers more
    square = torch.zeros(64, 1, 28, 28)
    square[..., 10:18, 10:18] = 1
    torch.manual_seed(0)
    grown = aug(square).flatten(1).sum(1) / square.flatten(1).sum(1)
    assert grown.min() >= 0.99 and grown.mean() > 1.2 and grown.max() <= 2.1


def test_crop_one_is_off(batch):
    torch.manual_seed(0)
    a = SketchAugment(1.0, crop=1.0)(batch)
    torch.manual_seed(0)
    assert torch.equal(a, SketchAugment(1.0)(batch))


def test_filters_never_move_a_class_to_another_split():
    # evaluate --exclude-classes must not reshuffle which classes were held out in training
    cfg = DataConfig(builtin={"n_classes": 30, "n_drawers": 2}, split_fractions=(0.7, 0.1, 0.2))
    test_all = set(load_dataset(cfg, 16, "test").class_names)
    narrowed = cfg.model_copy(update={"exclude_classes": ("glyph-00*",)})
    test_narrowed = set(load_dataset(narrowed, 16, "test").class_names)
    assert test_narrowed == {n for n in test_all if not n.startswith("glyph-00")}
    assert set(load_dataset(narrowed, 16, "train").class_names).isdisjoint(test_all)


def test_an_explicit_split_pattern_that_matches_nothing_is_an_error():
    cfg = DataConfig(builtin={"n_classes": 6, "n_drawers": 2}, val_classes=("Gerek",))
    with pytest.raises(DataError, match="--val-classes .*Gerek.* matches no class"):
        load_dataset(cfg, 16, "train")


def _drawing_at(offset: tuple[int, int], scale: float, page: int = 105) -> bytes:
    """A white page with the same dark cross-and-ring drawn ``scale`` times as large, its
    box's top-left corner at ``offset``, as PNG bytes."""
    im = Image.new("L", (page, page), 255)
    draw = ImageDraw.Draw(im)
    x, y, s = offset[0], offset[1], 30 * scale
    draw.line([(x, y), (x + s, y + s)], fill=0, width=max(1, round(3 * scale)))
    draw.line([(x, y + s), (x + s, y)], fill=0, width=max(1, round(3 * scale)))
    draw.ellipse(
        (x + s / 4, y, x + 3 * s / 4, y + s / 2), outline=0, width=max(1, round(3 * scale))
    )
    out = io.BytesIO()
    im.save(out, format="PNG")
    return out.getvalue()


def test_fit_ink_frames_the_drawing_wherever_and_however_large_it_was_drawn():
    small_corner, large_centre = _drawing_at((5, 8), 1.0), _drawing_at((20, 25), 2.0)
    page = [decode_sketch(d, 28, "auto", "x.png") for d in (small_corner, large_centre)]
    ink = [decode_sketch(d, 28, "auto", "x.png", fit="ink") for d in (small_corner, large_centre)]

    # the whole page: the two pictures are unrelated; fitted to their ink, nearly the same
    def correlation(pair: list[np.ndarray]) -> float:
        return float(
            np.corrcoef(pair[0].astype(float).ravel(), pair[1].astype(float).ravel())[0, 1]
        )

    assert correlation(page) < 0.2 and correlation(ink) > 0.85
    # the fitted drawing spans the frame but for the border, centred
    rows, cols = np.flatnonzero((ink[1] > 60).any(1)), np.flatnonzero((ink[1] > 60).any(0))
    assert rows[0] in (1, 2, 3) and 28 - 1 - rows[-1] in (1, 2, 3)
    assert abs((cols[0] + cols[-1]) - (rows[0] + rows[-1])) <= 2  # a square box, centred


def test_fit_ink_keeps_the_aspect_ratio_and_a_blank_page_is_still_refused():
    im = Image.new("L", (105, 105), 255)
    ImageDraw.Draw(im).line([(10, 50), (90, 50)], fill=0, width=4)  # a wide, flat stroke
    out = io.BytesIO()
    im.save(out, format="PNG")
    fitted = decode_sketch(out.getvalue(), 28, "auto", "dash.png", fit="ink")
    rows = np.flatnonzero((fitted > 60).any(1))
    assert rows.size <= 4 and abs(rows.mean() - 13.5) <= 1.5  # still flat, in the middle
    blank = io.BytesIO()
    Image.new("L", (40, 40), 255).save(blank, format="PNG")
    with pytest.raises(DataError, match="blank"):
        decode_sketch(blank.getvalue(), 28, "auto", "blank.png", fit="ink")


def test_fit_ink_applies_to_folders_and_the_built_in_glyphs(tree):
    page, ink = (load_image_folder(tree, 28, "auto", fit) for fit in ("page", "ink"))
    assert page.class_names == ink.class_names and ink.images.shape == page.images.shape
    assert ink.images.float().mean() > page.images.float().mean()  # the drawings fill more
    glyphs = {f: load_dataset(DataConfig(fit=f), 28) for f in ("page", "ink")}
    assert torch.equal(glyphs["page"].labels, glyphs["ink"].labels)
    assert glyphs["ink"].images.float().mean() > glyphs["page"].images.float().mean()
