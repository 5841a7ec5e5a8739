"""``inspect_source`` and ``sketchshot data inspect`` on each kind of source: image folders and
zips, Omniglot stroke files, QuickDraw files and SVG folders, with bad records, duplicates across
classes and skipped files; once on Omniglot's own archives when they are here."""

from __future__ import annotations

import json
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from helpers import OMNIGLOT, plain, sketch_array, write_folder, write_png
from sketchshot.cli import app
from sketchshot.data.inspect import Spread, inspect_source
from sketchshot.errors import DataError


def run(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def write_files(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def zip_folder(root: Path, archive: Path, top: str = "") -> Path:
    """Every file under ``root`` (hidden ones too) into ``archive``, below ``top``."""
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                z.write(path, top + path.relative_to(root).as_posix())
    return archive


# ---- images ---------------------------------------------------------------------------------


def test_an_image_zip_reports_what_its_folder_does_and_names_unsafe_entries(tmp_path):
    root = write_folder(tmp_path / "d", {"Greek/alpha": 3, "Latin/a": 2})
    (root / "Latin/a/copy.png").write_bytes((root / "Greek/alpha/00.png").read_bytes())
    write_png(root / "Latin/a/blank.png", np.full((40, 40), 255, dtype=np.uint8))
    page = np.full((40, 40), 255, dtype=np.uint8)
    write_png(root / "Latin/a/wide.png", np.concatenate([sketch_array(1, 9), page], axis=1))
    (root / "Greek/alpha/notes.txt").write_text("not an image")
    (root / "Latin/.DS_Store").write_bytes(b"hidden: never listed")
    folder = inspect_source(root)
    assert folder.kind == "images" and folder.labelled
    assert folder.counts == {"Greek/alpha": 3, "Latin/a": 4}
    assert folder.sizes == {"40x40": 6, "80x40": 1}
    assert list(folder.unreadable) == ["Latin/a/blank.png"]
    assert "blank" in folder.unreadable["Latin/a/blank.png"]
    assert folder.duplicates == [["Greek/alpha/00.png", "Latin/a/copy.png"]]
    assert folder.unsupported == ["Greek/alpha/notes.txt"]
    assert folder.strokes is None and folder.points is None

    archive = zip_folder(root, tmp_path / "d.zip")
    with zipfile.ZipFile(archive, "a") as z:
        z.writestr("../up/c9/x.png", b"x")
        z.writestr("/abs/c9/y.png", b"y")
    zipped = inspect_source(archive)
    reason = "unsafe zip path (absolute or with '..'): never read"
    unsafe = dict.fromkeys(["../up/c9/x.png", "/abs/c9/y.png"], reason)
    assert zipped == replace(folder, source=str(archive), unreadable=folder.unreadable | unsafe)


def test_an_image_zip_under_one_top_folder_takes_the_class_folders_below_it(tmp_path):
    root = write_folder(tmp_path / "d", {"a": 2, "b": 1})
    zipped = inspect_source(zip_folder(root, tmp_path / "d.zip", top="images_small/"))
    assert zipped.counts == {"a": 2, "b": 1} and zipped.imbalance == 2.0
    assert zipped.unreadable == {} and zipped.unsupported == []
    with pytest.raises(DataError, match="neither a folder nor a readable zip"):
        inspect_source(root / "a" / "00.png")


# ---- Omniglot strokes -----------------------------------------------------------------------

TWO = "START\n1,-1,0\n5,-1,10\nBREAK\n3,-2,20\n3,-9,30\nBREAK\n"  # 2 strokes, 4 points
THREE = "START\n0,0,0\nBREAK\n1,1,5\n2,2,6\nBREAK\n4,4,9\n5,5,9\n6,6,9\nBREAK\n"  # 3, 6
STROKE_FILES = {
    "A/c1/1.txt": TWO,
    "A/c1/2.txt": THREE,
    "A/c2/1.txt": TWO,  # the same drawing in another class
    "A/c2/bad.txt": "START\n1,2,3\n1;2\n",
    "A/c2/empty.txt": "START\n",
    "A/README.md": "not a stroke file",
}


def test_omniglot_strokes_report_stroke_counts_bad_files_and_duplicates(tmp_path):
    root = write_files(tmp_path / "strokes", STROKE_FILES)
    found = inspect_source(root)
    assert found.kind == "omniglot_strokes"
    assert found.counts == {"A/c1": 2, "A/c2": 1} and found.n_images == 3
    assert found.strokes == Spread(2, 2.0, 3) and found.points == Spread(4, 4.0, 6)
    assert found.sizes == {}
    assert found.unreadable == {
        "A/c2/bad.txt:3": "expected 'x,y,t', START or BREAK, got '1;2'",
        "A/c2/empty.txt": "empty drawing (no points)",
    }
    assert found.duplicates == [["A/c1/1.txt", "A/c2/1.txt"]]
    assert found.unsupported == ["A/README.md"]
    # at most one drawing a class: the files after it are never read
    first = inspect_source(root, max_per_class=1)
    assert first.counts == {"A/c1": 1, "A/c2": 1} and first.unreadable == {}


def test_omniglot_strokes_from_a_zip_with_macos_junk(tmp_path):
    root = write_files(tmp_path / "strokes", STROKE_FILES)
    archive = zip_folder(root, tmp_path / "strokes.zip", top="strokes_small/")
    with zipfile.ZipFile(archive, "a") as z:
        z.writestr("__MACOSX/strokes_small/A/c1/._1.txt", "junk")
    found = inspect_source(archive)
    assert found.kind == "omniglot_strokes"
    assert found.counts == {"A/c1": 2, "A/c2": 1}
    assert found.strokes == Spread(2, 2.0, 3) and found.points == Spread(4, 4.0, 6)
    assert sorted(found.unreadable) == [
        "strokes_small/A/c2/bad.txt:3",
        "strokes_small/A/c2/empty.txt",
    ]
    assert found.duplicates == [["strokes_small/A/c1/1.txt", "strokes_small/A/c2/1.txt"]]
    assert found.unsupported == ["strokes_small/A/README.md"]


# ---- QuickDraw ------------------------------------------------------------------------------


def ndjson_line(word: str, strokes: list) -> str:
    return json.dumps({"word": word, "drawing": strokes, "recognized": True})


def write_quickdraw(root: Path) -> Path:
    root.mkdir()
    cat = [
        ndjson_line("cat", [[[0, 10], [0, 5]], [[3, 4, 5], [6, 7, 8]]]),  # 2 strokes, 5 points
        "oops",
        ndjson_line("cat", [[[0, 9], [0, 9]]]),  # 1 stroke, 2 points
        ndjson_line("cat", []),
    ]
    (root / "cat.ndjson").write_text("\n".join(cat) + "\n")
    (root / "dog.ndjson").write_text(ndjson_line("dog", [[[0, 9], [0, 9]]]) + "\n")  # as cat:3
    bitmaps = np.zeros((3, 784), dtype=np.uint8)
    bitmaps[0, 100:110], bitmaps[2, 300:320] = 200, 90  # row 1 is blank
    np.save(root / "tree.npy", bitmaps)
    (root / "labels.csv").write_text("word\ncat\n")
    return root


def test_quickdraw_reports_strokes_bitmap_sizes_bad_lines_and_duplicates(tmp_path):
    found = inspect_source(write_quickdraw(tmp_path / "quick"))
    assert found.kind == "quickdraw"
    assert found.counts == {"cat": 2, "dog": 1, "tree": 2}
    assert found.sizes == {"28x28": 2}  # the bitmaps; strokes count the stroke drawings
    assert found.strokes == Spread(1, 1.0, 2) and found.points == Spread(2, 2.0, 5)
    assert list(found.unreadable) == ["cat.ndjson:2", "cat.ndjson:4", "tree.npy[1]"]
    assert found.unreadable["cat.ndjson:2"].startswith("malformed JSON")
    assert found.unreadable["cat.ndjson:4"] == "empty drawing (no points)"
    assert found.unreadable["tree.npy[1]"] == "empty drawing (blank bitmap)"
    assert found.duplicates == [["cat.ndjson:3", "dog.ndjson:1"]]
    assert found.unsupported == ["labels.csv"]


def test_one_quickdraw_file_and_max_per_class_stop_early(tmp_path):
    cat = write_quickdraw(tmp_path / "quick") / "cat.ndjson"
    whole = inspect_source(cat)
    assert whole.counts == {"cat": 2} and list(whole.unreadable) == ["cat.ndjson:2", "cat.ndjson:4"]
    first = inspect_source(cat, max_per_class=1)  # the bad line 2 is never read
    assert first.counts == {"cat": 1} and first.unreadable == {}
    assert first.points == Spread(5, 5.0, 5)


def test_npz_is_read_only_when_trusted(tmp_path):
    sketches = np.empty(3, dtype=object)  # sketch-rnn's layout: an object array of [n, 3]
    for i in range(3):
        sketches[i] = np.array([[0, 0, 0], [5, i, 0], [0, 5, 1]], dtype=np.int16)
    np.savez(tmp_path / "owl.npz", train=sketches, valid=sketches[:1], test=sketches[:1])
    with pytest.raises(DataError, match="--trust-npz"):
        inspect_source(tmp_path / "owl.npz")
    found = inspect_source(tmp_path / "owl.npz", trust_pickle=True)
    assert found.counts == {"owl": 5}
    assert found.strokes == Spread(1, 1.0, 1) and found.points == Spread(3, 3.0, 3)
    assert found.duplicates == []  # the copies in valid and test are of the same class


# ---- SVG and mixed sources ------------------------------------------------------------------


def svg(body: str) -> str:
    return f'<svg xmlns="http://www.w3.org/2000/svg">{body}</svg>'


def test_svg_folder_reports_strokes_bad_files_and_duplicates(tmp_path):
    root = write_files(
        tmp_path / "svg",
        {
            "cup/1.svg": svg('<path d="M0 0 L5 5"/><path d="M0 0 L0 9 L9 9"/>'),  # 2, 5
            "cup/2.svg": svg('<line x1="0" y1="0" x2="3" y2="3"/>'),  # 1, 2
            "hat/1.svg": svg('<line x1="0" y1="0" x2="3" y2="3"/>'),  # as cup/2
            "hat/2.svg": svg('<path d="M0 0 X5 5"/>'),
            "hat/meta.json": "{}",
        },
    )
    found = inspect_source(root)
    assert found.kind == "svg" and found.counts == {"cup": 2, "hat": 1}
    assert found.strokes == Spread(1, 1.0, 2) and found.points == Spread(2, 2.0, 5)
    assert list(found.unreadable) == ["hat/2.svg"]
    assert "unknown path command 'X'" in found.unreadable["hat/2.svg"]
    assert found.duplicates == [["cup/2.svg", "hat/1.svg"]]
    assert found.unsupported == ["hat/meta.json"]


def test_a_source_mixing_vector_kinds_is_refused(tmp_path):
    root = write_files(tmp_path, {"cup/1.svg": svg('<path d="M0 0 L9 9"/>'), "cup/2.txt": TWO})
    with pytest.raises(DataError, match="mixes kinds of sketch files"):
        inspect_source(root)


# ---- the command ----------------------------------------------------------------------------


def test_inspect_command_on_quickdraw_as_json_and_for_people(tmp_path):
    quick = write_quickdraw(tmp_path / "quick")
    result = run("data", "inspect", quick, "--max-per-class", 1, "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert found["kind"] == "quickdraw" and found["n_images"] == 3
    assert found["counts"] == {"cat": 1, "dog": 1, "tree": 1}
    assert found["strokes"] == {"min": 1, "median": 1.5, "max": 2}
    assert found["points"] == {"min": 2, "median": 3.5, "max": 5}
    assert found["unreadable"] == {} and found["unsupported"] == ["labels.csv"]
    human = plain(run("data", "inspect", quick).output)
    assert "3 classes, 5 drawings, imbalance (max/min) 2.00" in human
    assert "strokes per drawing: min 1, median 1, max 2" in human
    assert "points per drawing: min 2, median 2, max 5" in human
    assert "unreadable tree.npy[1]: empty drawing (blank bitmap)" in human
    assert "skipped (not .ndjson, .npy or .npz) labels.csv" in human
    missing = run("data", "inspect", tmp_path / "nowhere")
    assert missing.exit_code == 1 and "does not exist" in plain(missing.output)


# ---- Omniglot's own archives ----------------------------------------------------------------

STROKES = OMNIGLOT / "strokes_background_small1.zip"
IMAGES = OMNIGLOT / "images_background_small1.zip"


@pytest.mark.skipif(
    not (STROKES.is_file() and IMAGES.is_file()),
    reason=f"../shared/data/omniglot not found: expected {IMAGES.name} and {STROKES.name} there",
)
def test_omniglot_archives_images_and_strokes_agree():
    """136 characters x 20 drawers in both; stroke statistics as measured on small1."""
    images, strokes = inspect_source(IMAGES), inspect_source(STROKES)
    assert images.kind == "images" and strokes.kind == "omniglot_strokes"
    assert images.counts == strokes.counts
    assert len(images.counts) == 136 and set(images.counts.values()) == {20}
    assert images.sizes == {"105x105": 2720}
    assert strokes.strokes == Spread(1, 2.0, 29) and strokes.points == Spread(2, 123.0, 535)
    for found in (images, strokes):  # .DS_Store and __MACOSX entries are hidden
        assert found.unreadable == {} and found.duplicates == [] and found.unsupported == []
