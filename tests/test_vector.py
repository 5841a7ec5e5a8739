"""Vector sketches: the renderer, each reader (good and bad records), and load_dataset on each
kind of vector source; one check against Omniglot's own PNGs when the archives are here."""

from __future__ import annotations

import io
import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import OMNIGLOT
from sketchshot.config import DataConfig
from sketchshot.data import load_dataset
from sketchshot.data.vector.bad_records import BadRecord, BadRecords
from sketchshot.data.vector.omniglot import parse_omniglot_strokes, read_omniglot_strokes
from sketchshot.data.vector.quickdraw import (
    read_bitmaps,
    read_ndjson,
    read_stroke3,
    stroke3_to_drawing,
)
from sketchshot.data.vector.render import render
from sketchshot.data.vector.source import source_kind
from sketchshot.data.vector.svg import parse_path, parse_svg, parse_transform, read_svg_folder
from sketchshot.errors import DataError, DataWarning

SQUARE = [np.array([[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]], dtype=np.float32)]


def ink_centre(image: np.ndarray) -> tuple[float, float]:
    ys, xs = np.indices(image.shape)
    w = image.astype(np.float64)
    return float((xs * w).sum() / w.sum()), float((ys * w).sum() / w.sum())


# ---------------------------------------------------------------- renderer


def test_render_centres_and_fits_whatever_the_coordinate_range():
    image = render(SQUARE, 32, line_width=0.05, padding=0.1)
    assert image.dtype == np.uint8 and image.shape == (32, 32)
    cx, cy = ink_centre(image)
    assert abs(cx - 15.5) < 0.1 and abs(cy - 15.5) < 0.1  # pixel centres: 0..31
    rows = np.flatnonzero(image.max(axis=1) > 0)
    assert rows[0] == 3 and rows[-1] == 28  # 10% margins: 3.2 px each side
    moved = [s * 37.5 - 1000 for s in SQUARE]  # same shape, another range
    assert np.abs(render(moved, 32, 0.05).astype(int) - image.astype(int)).max() <= 1
    # a wide drawing keeps its aspect: a 2:1 rectangle is half as tall as it is wide
    wide = render([np.array([[0, 0], [20, 0], [20, 10], [0, 10], [0, 0]], np.float32)], 64)
    rows, cols = np.flatnonzero(wide.max(1) > 127), np.flatnonzero(wide.max(0) > 127)
    assert (rows[-1] - rows[0]) / (cols[-1] - cols[0]) == pytest.approx(0.5, abs=0.05)


def test_render_is_deterministic_and_anti_aliased():
    diagonal = [np.array([[0, 0], [7, 3], [2, 9]], dtype=np.float32)]
    a, b = render(diagonal, 28), render(diagonal, 28)
    assert np.array_equal(a, b)
    grey = ((a > 0) & (a < 255)).sum()
    assert grey > 20  # soft edges, not a binary mask
    assert a.max() == 255 and a.min() == 0


def test_line_width_is_a_fraction_of_the_side():
    line = [np.array([[0, 0], [10, 0]], dtype=np.float32)]
    for lw, size in ((0.05, 56), (0.1, 56), (0.1, 112)):
        image = render(line, size, line_width=lw).astype(np.float64) / 255
        thickness = image[:, size // 2].sum()  # ink across the middle column, in pixels
        assert thickness == pytest.approx(lw * size, rel=0.1)


def test_render_draws_a_single_point_as_a_dot_and_refuses_nothing_to_draw():
    dot = render([np.array([[3, 4]], dtype=np.float32)], 28, line_width=0.1)
    assert ink_centre(dot) == pytest.approx((13.5, 13.5), abs=0.05)
    assert dot.astype(np.float64).sum() / 255 == pytest.approx(math.pi * 1.4**2, rel=0.15)
    with pytest.raises(ValueError, match="empty drawing"):
        render([], 28)
    with pytest.raises(ValueError, match="NaN"):
        render([np.array([[0, 0], [np.nan, 1]], dtype=np.float32)], 28)


# ---------------------------------------------------------------- Omniglot strokes

OMNI_TEXT = "START\n1,-1,0\n5,-1,10\nBREAK\n3,-2,20\n3,-9,30\nBREAK\n"


def write_omniglot(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_omniglot_strokes_parse_with_y_pointing_down():
    drawing = parse_omniglot_strokes(OMNI_TEXT)
    assert len(drawing) == 2
    assert drawing[0].tolist() == [[1, 1], [5, 1]] and drawing[1].tolist() == [[3, 2], [3, 9]]


def test_omniglot_reader_from_a_folder_and_a_zip(tmp_path):
    files = {f"Greek/char{c}/{d}.txt": OMNI_TEXT for c in (1, 2) for d in (1, 2, 3)}
    root = write_omniglot(tmp_path / "strokes", files)
    sketches = list(read_omniglot_strokes(root, max_per_class=2))
    assert [s.class_name for s in sketches] == ["Greek/char1"] * 2 + ["Greek/char2"] * 2
    assert sketches[0].source == str(root / "Greek/char1/1.txt")
    archive = tmp_path / "strokes.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for name, text in files.items():
            z.writestr(f"strokes_small/{name}", text)
        z.writestr("__MACOSX/strokes_small/._x.txt", "junk")
    zipped = list(read_omniglot_strokes(archive))
    assert len(zipped) == 6 and zipped[0].class_name == "Greek/char1"


def test_omniglot_bad_files_are_named_with_their_line_or_skipped_and_counted(tmp_path):
    root = write_omniglot(
        tmp_path,
        {
            "A/c1/good.txt": OMNI_TEXT,
            "A/c1/bad.txt": "START\n1,2,3\n1;2\n",
            "A/c1/empty.txt": "START\n",
        },
    )
    with pytest.raises(BadRecord, match=r"bad record .*A/c1/bad\.txt:3: expected 'x,y,t'"):
        list(read_omniglot_strokes(root))
    bad = BadRecords("skip")
    assert len(list(read_omniglot_strokes(root, bad))) == 1
    assert bad.count == 2
    assert sorted(b.reason.split(" (")[0] for b in bad.skipped) == [
        "empty drawing",
        "expected 'x,y,t', START or BREAK, got '1;2'",
    ]


# ---------------------------------------------------------------- QuickDraw ndjson


def ndjson_line(word: str, strokes: list, **extra: object) -> str:
    return json.dumps(
        {"word": word, "drawing": strokes, "recognized": True, "countrycode": "US", **extra}
    )


def test_ndjson_reads_raw_and_simplified_strokes_and_filters(tmp_path):
    path = tmp_path / "cat.ndjson"
    lines = [
        ndjson_line("cat", [[[0, 10], [0, 5]], [[3, 4, 5], [6, 7, 8]]]),  # simplified
        ndjson_line("cat", [[[1, 2], [3, 4], [0, 16]]], countrycode="DE"),  # raw: with times
        ndjson_line("cat", [[[0, 9], [9, 0]]], recognized=False),
    ]
    path.write_text("\n".join(lines) + "\n")
    sketches = list(read_ndjson(path))
    assert [s.source for s in sketches] == [f"{path}:1", f"{path}:2", f"{path}:3"]
    assert sketches[0].drawing[1].tolist() == [[3, 6], [4, 7], [5, 8]]
    assert sketches[1].drawing[0].tolist() == [[1, 3], [2, 4]]
    assert len(list(read_ndjson(path, recognized=True))) == 2
    assert [s.source for s in read_ndjson(path, countries={"DE"})] == [f"{path}:2"]


def test_ndjson_stops_reading_at_max_per_class(tmp_path):
    path = tmp_path / "dog.ndjson"
    good = ndjson_line("dog", [[[0, 1], [0, 1]]])
    path.write_text("\n".join([good] * 3 + ["{not json"]) + "\n")  # never reached
    assert len(list(read_ndjson(path, max_per_class=3))) == 3
    with pytest.raises(BadRecord, match=r"dog\.ndjson:4: malformed JSON"):
        list(read_ndjson(path, max_per_class=4))


def test_ndjson_bad_lines_are_named_or_skipped_and_counted(tmp_path):
    path = tmp_path / "bad.ndjson"
    path.write_text(
        "\n".join([
            ndjson_line("cat", [[[0, 1], [0, 1]]]),
            '{"word": "cat", "drawing": [[[0, 1]',  # truncated
            ndjson_line("cat", []),  # empty drawing
            '{"word": "cat", "drawing": [[[0, NaN], [0, 1]]]}',  # NaN coordinates
            '{"drawing": [[[0, 1], [0, 1]]]}',  # no word
            ndjson_line("cat", [[[0, 1, 2], [0, 1]]]),  # x and y differ
        ]) + "\n"
    )  # fmt: skip
    with pytest.raises(BadRecord, match=r"bad\.ndjson:2: malformed JSON"):
        list(read_ndjson(path))
    bad = BadRecords("skip")
    assert len(list(read_ndjson(path, bad))) == 1
    assert [b.where.rsplit(":", 1)[1] for b in bad.skipped] == ["2", "3", "4", "5", "6"]
    assert "NaN" in bad.skipped[2].reason and "'word'" in bad.skipped[3].reason
    summary = bad.summary(path)
    assert summary.startswith(f"{path}: skipped 5 bad records (")


# ---------------------------------------------------------------- QuickDraw .npy and .npz


def test_bitmaps_are_memory_mapped_and_capped(tmp_path):
    images = np.zeros((5, 784), dtype=np.uint8)
    images[:, 100:110] = np.arange(1, 6)[:, None] * 40
    np.save(tmp_path / "apple.npy", images)
    sketches = list(read_bitmaps(tmp_path / "apple.npy", max_per_class=3))
    assert [s.class_name for s in sketches] == ["apple"] * 3
    assert sketches[2].drawing.shape == (28, 28) and sketches[2].drawing.max() == 120
    assert sketches[2].source.endswith("apple.npy[2]")


def test_truncated_bitmaps_are_named(tmp_path):
    np.save(tmp_path / "full.npy", np.ones((50, 784), dtype=np.uint8))
    data = (tmp_path / "full.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadRecord, match=r"cut\.npy: not a readable \.npy array"):
        list(read_bitmaps(tmp_path / "cut.npy"))
    np.save(tmp_path / "odd.npy", np.ones((3, 100), dtype=np.uint8))
    bad = BadRecords("skip")
    assert list(read_bitmaps(tmp_path / "odd.npy", bad)) == [] and bad.count == 1
    assert "expected N x 784 uint8" in bad.skipped[0].reason


def test_stroke3_is_cumulative_with_pen_lifts():
    stroke3 = np.array([[1, 2, 0], [3, 0, 1], [0, 5, 0], [-1, 0, 1]], dtype=np.float32)
    drawing = stroke3_to_drawing(stroke3)
    assert [s.tolist() for s in drawing] == [[[1, 2], [4, 2]], [[4, 7], [3, 7]]]


def write_npz(path: Path) -> Path:
    sketches = np.empty(3, dtype=object)  # sketch-rnn's layout: an object array of [n, 3]
    for i in range(3):
        sketches[i] = np.array([[0, 0, 0], [5, i, 0], [0, 5, 1]], dtype=np.int16)
    np.savez(path, train=sketches, valid=sketches[:1], test=sketches[:1])
    return path


def test_npz_needs_the_trust_flag(tmp_path):
    path = write_npz(tmp_path / "owl.npz")
    with pytest.raises(DataError, match=r"owl\.npz holds pickled object arrays .*--trust-npz"):
        list(read_stroke3(path))
    sketches = list(read_stroke3(path, max_per_class=4, trust_pickle=True))
    assert [s.source.split("owl.npz")[1] for s in sketches] == [
        "[train][0]", "[train][1]", "[train][2]", "[valid][0]",
    ]  # fmt: skip
    assert sketches[1].drawing[0].tolist() == [[0, 0], [5, 1], [5, 6]]


# ---------------------------------------------------------------- SVG


def test_svg_path_commands_absolute_and_relative():
    [square] = parse_path("M10,10 h5 V20 L10 20 z")
    assert square.tolist() == [[10, 10], [15, 10], [15, 20], [10, 20], [10, 10]]
    [implicit] = parse_path("m1 1 2 0 0 2")  # numbers after a moveto are linetos
    assert implicit.tolist() == [[1, 1], [3, 1], [3, 3]]
    [curve] = parse_path("M0 0 C0 10 10 10 10 0 s10 -10 10 0")
    assert curve[16].tolist() == [10, 0] and curve[-1].tolist() == [20, 0]
    assert curve[8, 1] == pytest.approx(7.5) and curve[24, 1] == pytest.approx(-7.5)
    [quad] = parse_path("M0 0 Q5 10 10 0 T20 0")
    assert quad[8].tolist() == [5, 5] and quad[24, 1] == pytest.approx(-5)
    [arc] = parse_path("M0 0 a5 5 0 01 10 0")  # compact flags: large 0, sweep 1
    radii = np.hypot(arc[:, 0] - 5, arc[:, 1])
    assert np.allclose(radii, 5, atol=1e-4) and arc[-1].tolist() == [10, 0]
    assert arc[:, 1].min() == pytest.approx(-5, abs=0.1)  # sweep 1 goes through y = -5
    assert len(parse_path("M0 0 L1 1 M5 5 l1 1")) == 2


def test_svg_transforms_on_elements_and_groups():
    point = np.array([1, 1, 1])
    assert parse_transform("translate(3) scale(2,4)") @ point == pytest.approx([5, 4, 1])
    assert parse_transform("rotate(90 1 1)") @ np.array([2, 1, 1]) == pytest.approx([1, 2, 1])
    assert parse_transform("matrix(1 0 0 1 7 8)") @ np.array([0, 0, 1]) == pytest.approx([7, 8, 1])
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg"><g transform="translate(100,0)">'
        '<g transform="scale(2)"><polyline points="0,0 1,1"/><polygon points="0,0 1,0 1,1"/>'
        '<line x1="0" y1="0" x2="0" y2="3" transform="translate(0,1)"/></g></g>'
        '<defs><path d="M0 0 L999 999"/></defs></svg>'
    )
    drawing = parse_svg(svg)
    assert [s.tolist() for s in drawing] == [
        [[100, 0], [102, 2]],
        [[100, 0], [102, 0], [102, 2], [100, 0]],
        [[100, 2], [100, 8]],
    ]


def write_svgs(root: Path, files: dict[str, str]) -> Path:
    for name, body in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(f'<svg xmlns="http://www.w3.org/2000/svg">{body}</svg>')
    return root


def test_svg_unknown_command_is_named_with_file_and_element(tmp_path):
    root = write_svgs(
        tmp_path,
        {
            "cup/1.svg": '<path d="M0 0 L5 5"/>',
            "cup/2.svg": '<path d="M0 0 L5 5"/><path d="M0 0 X5 5"/>',
            "cup/3.svg": "<g/>",
            "cup/4.svg": '<path d="M0 0 L5',
        },
    )
    with pytest.raises(BadRecord, match=r"cup/2\.svg: <path> #2: unknown path command 'X'"):
        list(read_svg_folder(root))
    bad = BadRecords("skip")
    assert len(list(read_svg_folder(root, bad))) == 1
    assert [b.where.rsplit("/", 1)[1] for b in bad.skipped] == ["2.svg", "3.svg", "4.svg"]
    assert bad.skipped[1].reason.startswith("empty drawing")
    assert bad.skipped[2].reason.startswith("not well-formed XML")


def test_svg_refuses_entity_declarations():
    with pytest.raises(ValueError, match="entity"):
        parse_svg('<!DOCTYPE svg [<!ENTITY a "aaaa">]><svg><path d="M0 0 L1 1"/></svg>')


# ---------------------------------------------------------------- load_dataset on each kind


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def test_load_dataset_reads_each_vector_source(tmp_path):
    omni = write_omniglot(
        tmp_path / "omni", {f"A/c{c}/{d}.txt": OMNI_TEXT for c in (1, 2) for d in (1, 2)}
    )
    svgs = write_svgs(
        tmp_path / "svg",
        {f"{k}/{d}.svg": '<path d="M0 0 L9 9"/>' for k in ("cup", "hat") for d in (1, 2, 3)},
    )
    quick = tmp_path / "quick"
    quick.mkdir()
    (quick / "cat.ndjson").write_text("\n".join([ndjson_line("cat", [[[0, 9], [0, 9]]])] * 4))
    np.save(quick / "tree.npy", np.full((6, 784), 200, dtype=np.uint8))
    expected = {
        omni: (("A/c1", "A/c2"), [2, 2]),
        svgs: (("cup", "hat"), [3, 3]),
        quick: (("cat", "tree"), [3, 3]),
    }
    for source, (names, counts) in expected.items():
        cfg = DataConfig(source=str(source), split_fractions=(1, 0, 0), max_per_class=3)
        dataset = load_dataset(cfg, 32)
        assert dataset.class_names == names and dataset.counts().tolist() == counts
        assert dataset.images.shape == (sum(counts), 1, 32, 32)
        assert dataset.images.dtype == torch.uint8 and dataset.images.amax().item() == 255
    assert source_kind(tmp_path / "quick" / "cat.ndjson") == "quickdraw"
    tree = load_dataset(DataConfig(source=str(quick / "tree.npy"), split_fractions=(1, 0, 0)), 56)
    assert tree.images.shape == (6, 1, 56, 56)
    assert tree.images.float().mean().item() == pytest.approx(200)  # resized, values kept


def test_load_dataset_skips_bad_records_with_one_note_or_fails(tmp_path):
    quick = tmp_path / "quick"
    quick.mkdir()
    good = ndjson_line("cat", [[[0, 9], [0, 9]]])
    (quick / "cat.ndjson").write_text("\n".join([good, "oops", good, ndjson_line("cat", [])]))
    cfg = DataConfig(source=str(quick), split_fractions=(1, 0, 0))
    with pytest.raises(BadRecord, match=r"cat\.ndjson:2: malformed JSON"):
        load_dataset(cfg, 28)
    note = r"skipped 2 bad records \(1 malformed JSON, 1 empty drawing\)"
    with pytest.warns(DataWarning, match=note):
        dataset = load_dataset(cfg.model_copy(update={"on_error": "skip"}), 28)
    assert len(dataset) == 2


def test_a_source_mixing_kinds_is_refused(tmp_path):
    write_svgs(tmp_path, {"cup/1.svg": '<path d="M0 0 L9 9"/>'})
    (tmp_path / "cup" / "2.png").write_bytes(png_bytes(np.zeros((8, 8), np.uint8)))
    with pytest.raises(DataError, match=r"mixes kinds of sketch files: images \(\.png\), svg"):
        source_kind(tmp_path)


# ---------------------------------------------------------------- the real stroke archive

STROKES = OMNIGLOT / "strokes_background_small1.zip"
IMAGES = OMNIGLOT / "images_background_small1.zip"


@pytest.mark.skipif(
    not (STROKES.exists() and IMAGES.exists()),
    reason=f"Omniglot's archives are not in {OMNIGLOT}",
)
def test_rendered_omniglot_strokes_match_the_archive_pngs():
    """Drawn in their 105-pixel frame at 28 px, the strokes cover the PNG's strokes: mean IoU
    of the masks 0.83 over 160 drawings with the default width (measured)."""
    with zipfile.ZipFile(STROKES) as strokes, zipfile.ZipFile(IMAGES) as images:
        names = [n for n in strokes.namelist() if n.endswith(".txt") and "MACOSX" not in n][::68]
        ious, ink = [], []
        for name in names:
            drawing = parse_omniglot_strokes(strokes.read(name).decode())
            ours = render(drawing, 28, padding=0, frame=(0, 0, 105, 105))
            png = name.replace("strokes_background", "images_background").replace(".txt", ".png")
            page = np.asarray(Image.open(io.BytesIO(images.read(png))).convert("L"))
            theirs = np.asarray(Image.fromarray(255 - page).resize((28, 28), Image.Resampling.BOX))
            a, b = ours >= 128, theirs >= 128
            ious.append((a & b).sum() / (a | b).sum())
            ink.append(ours.sum(dtype=np.int64) / theirs.sum(dtype=np.int64))
    assert len(ious) == 40
    assert np.mean(ious) > 0.75, np.mean(ious)
    assert 0.8 < np.mean(ink) < 1.2, np.mean(ink)  # the default line width: as thick as theirs


def test_enroll_reads_a_vector_support_folder(tmp_path, saved_model):
    from sketchshot import engine
    from sketchshot.config import EnrollConfig

    svgs = write_svgs(
        tmp_path / "svg",
        {
            **{f"cup/{d}.svg": f'<path d="M0 0 L9 {d}"/>' for d in (1, 2)},
            **{f"hat/{d}.svg": f'<path d="M0 9 Q5 {d} 9 9"/>' for d in (1, 2)},
        },
    )
    done = engine.enroll(EnrollConfig(model=saved_model, support=svgs, out=tmp_path / "bank"))
    assert done.classes == {"cup": 2, "hat": 2}
