"""A corpus of bad inputs, each built here: images that decode blank or are not 8-bit, broken
and hostile zips, oversized files and decompression bombs, folders full of unreadable files,
and paths piped on stdin. Each must give one line naming the culprit (or a row with it), the
right exit code, nothing half-written and no traceback."""

from __future__ import annotations

import io
import os
import queue
import threading
import tracemalloc
import warnings
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from helpers import plain, sketch_array, write_folder, write_png
from sketchshot import engine
from sketchshot.card import Preprocessing
from sketchshot.cli import app
from sketchshot.config import EnrollConfig, PredictConfig
from sketchshot.data.folder import MAX_IMAGE_BYTES, decode_sketch, load_image_folder
from sketchshot.errors import DataError, DataWarning, UnreadableImage
from sketchshot.prediction import expand_inputs, predict_paths

PRE = Preprocessing(image_size=28)


def png(im: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, format=fmt)
    return buffer.getvalue()


def stroke(mode: str, size: int, page, ink) -> Image.Image:
    """One diagonal stroke of ``ink`` on a ``page`` of ``mode``."""
    im = Image.new(mode, (size, size), page)
    ImageDraw.Draw(im).line([(4, 4), (size - 5, size - 9)], fill=ink, width=3)
    return im


def one_line(message: str, *culprits: str) -> str:
    text = plain(message).strip()
    assert "\n" not in text and "Traceback" not in text and "<_io." not in text, text
    for culprit in culprits:
        assert culprit in text, (culprit, text)
    return text


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return buffer.getvalue()


def good_entries(n: int = 3) -> dict[str, bytes]:
    return {f"top/c{i}/0.png": png(Image.fromarray(sketch_array(i, 0))) for i in range(n)}


def with_flag(archive: bytes, bit: int) -> bytes:
    """``archive`` with ``bit`` set in the flags of every local and central header: 0x1 marks
    an entry encrypted (the stdlib cannot write encrypted zips, but refuses to read these)."""
    out = bytearray(archive)
    for signature, flags_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = 0
        while (i := out.find(signature, start)) >= 0:
            out[i + flags_at] |= bit
            start = i + 4
    return bytes(out)


def with_bad_crc(archive: bytes, member: str) -> bytes:
    """``archive`` (stored, not deflated) with one byte of ``member``'s data flipped."""
    info = zipfile.ZipFile(io.BytesIO(archive)).getinfo(member)
    out = bytearray(archive)
    h = info.header_offset
    data_at = h + 30 + int.from_bytes(out[h + 26 : h + 28], "little")
    data_at += int.from_bytes(out[h + 28 : h + 30], "little")
    out[data_at + info.file_size // 2] ^= 0xFF
    return bytes(out)


class InkScorer:
    """A stand-in for ``BankScorer``: class "ink" has the image's share of bright pixels."""

    class_names = ("page", "ink")

    def __init__(self) -> None:
        self.seen: list[torch.Tensor] = []

    def scores(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.seen.append(images)
        ink = images.float().div(255).mean(dim=(1, 2, 3))
        return torch.stack([1 - ink, ink], dim=1), ink


@pytest.fixture
def cli(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def invoke(*args: object, input: str | None = None):
        result = runner.invoke(app, [str(a) for a in args], input=input, env={"COLUMNS": "200"})
        assert "Traceback" not in result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
        return result

    return invoke


@pytest.fixture
def bank(saved_model, tmp_path) -> Path:
    support = write_folder(tmp_path / "support", {"a": 2, "b": 2, "c": 2})
    engine.enroll(EnrollConfig(model=saved_model, support=support, out=tmp_path / "bank"))
    return tmp_path / "bank"


# ---------------------------------------------------------------- 1. blank decodes


def test_16_bit_and_float_images_decode_like_their_8_bit_twin():
    """Strokes of 60 on a page of 200 (neither black nor white): a 16-bit PNG of them used to
    clip to 255 everywhere and decode blank."""
    eight = stroke("L", 40, 200, 60)
    values = np.asarray(eight)
    want = decode_sketch(png(eight), 28, "auto", "8-bit.png")
    assert want.max() - want.min() > 100
    twins = {
        "16-bit.png": png(Image.fromarray(values.astype(np.uint16) * 257)),
        "int32.tif": png(Image.fromarray(values.astype(np.int32)), "TIFF"),
        "float.tif": png(Image.fromarray(values.astype(np.float32) / 255), "TIFF"),
    }
    assert Image.open(io.BytesIO(twins["16-bit.png"])).mode == "I;16"
    for name, data in twins.items():
        assert np.array_equal(decode_sketch(data, 28, "auto", name), want), name


def test_strokes_on_a_transparent_page_decode_bright_whatever_their_colour():
    """White strokes on a transparent page used to be composited onto white and vanish."""
    want = decode_sketch(png(stroke("L", 40, 0, 255)), 28, "auto", "white-on-black.png")
    white = stroke("RGBA", 40, (0, 0, 0, 0), (255, 255, 255, 255))
    dark = stroke("RGBA", 40, (255, 255, 255, 0), (0, 0, 0, 255))
    grey_alpha = stroke("LA", 40, (0, 0), (255, 255))
    for name, im in {"white.png": white, "dark.png": dark, "la.png": grey_alpha}.items():
        assert np.array_equal(decode_sketch(png(im), 28, "auto", name), want), name


def speck() -> Image.Image:
    page = np.full((30, 30), 255, np.uint8)
    page[12, 7] = 254
    return Image.fromarray(page)


@pytest.mark.parametrize(
    ("im", "reason"),
    [
        (Image.new("L", (30, 30), 255), "blank (every pixel decodes to 255)"),
        (Image.new("L", (30, 20), 0), "blank (every pixel decodes to 0)"),
        (Image.new("RGB", (30, 30), (90, 90, 90)), "blank"),
        (Image.fromarray(np.full((30, 30), 40000, np.uint16)), "blank"),
        (Image.new("RGBA", (30, 30), (0, 0, 0, 0)), "fully transparent"),
        (speck(), "blank (pixels only 254..255)"),  # a scanner's speck on a white page
        (stroke("RGBA", 30, (0, 0, 0, 0), (255, 255, 255, 0)), "fully transparent"),
    ],
)
def test_an_image_that_decodes_blank_is_refused(im, reason):
    with pytest.raises(UnreadableImage) as info:
        decode_sketch(png(im), 28, "auto", "dir/blank.png")
    one_line(str(info.value), "cannot read image dir/blank.png", reason)


def test_a_stroke_that_vanishes_in_the_resize_is_refused():
    im = Image.new("L", (2000, 2000), 0)
    im.putpixel((1000, 1000), 255)
    with pytest.raises(UnreadableImage, match="blank at 28 px"):
        decode_sketch(png(im), 28, "auto", "dot.png")


def test_predict_gives_a_blank_image_an_error_row_and_labels_the_rest(tmp_path):
    paths = [
        write_png(
            tmp_path / "16-bit.png", np.asarray(stroke("L", 40, 200, 60)).astype(np.uint16) * 257
        ),
        tmp_path / "blank.png",
        tmp_path / "transparent.png",
    ]
    Image.new("L", (40, 40), 255).save(paths[1])
    stroke("RGBA", 40, (0, 0, 0, 0), (255, 255, 255, 255)).save(paths[2])
    scorer = InkScorer()
    rows = list(predict_paths(scorer, [str(p) for p in paths], PRE, batch_size=8))
    assert [r.path for r in rows] == [str(p) for p in paths]
    assert rows[1].label is None and rows[1].confidence is None
    one_line(rows[1].error, str(paths[1]), "blank")
    assert rows[0].error is None is rows[2].error
    assert [len(images) for images in scorer.seen] == [2]  # the blank one never scored
    assert all(0 < r.similarity < 0.5 for r in (rows[0], rows[2]))  # strokes, not empty pages


def test_cli_predict_reports_a_blank_image_and_exits_1(cli, bank, tmp_path):
    good = write_png(tmp_path / "q" / "good.png", sketch_array(1, 9))
    blank = tmp_path / "q" / "blank.png"
    Image.new("L", (40, 40), 255).save(blank)
    result = cli("predict", good, blank, "--bank", bank, "--csv")
    assert result.exit_code == 1
    assert one_line(result.stderr) == "error: 1 of 2 image(s) could not be read"
    rows = result.stdout.splitlines()
    assert len(rows) == 3 and rows[1].startswith(f"{good},") and rows[1].endswith(",")
    assert rows[2].startswith(f"{blank},,,,") and "blank" in rows[2]


def test_enroll_refuses_a_support_folder_with_a_blank_image(cli, saved_model, tmp_path):
    support = write_folder(tmp_path / "support", {"a": 2, "b": 2})
    blank = support / "b" / "blank.png"
    Image.new("L", (40, 40), 0).save(blank)
    result = cli("enroll", "--model", saved_model, "--support", support, "--out", "bank")
    assert result.exit_code == 1
    one_line(result.stderr, f"cannot read image {blank}", "blank")
    assert not list(tmp_path.glob("bank*"))


# ---------------------------------------------------------------- 6. one line, named


def test_a_zip_member_with_a_bad_crc_is_named(tmp_path):
    archive = tmp_path / "bits.zip"
    archive.write_bytes(with_bad_crc(zip_bytes(good_entries()), "top/c1/0.png"))
    with pytest.raises(DataError) as info:
        load_image_folder(archive, 28)
    one_line(str(info.value), f"{archive}:top/c1/0.png", "damaged zip entry", "Bad CRC-32")


def test_an_encrypted_zip_is_named(tmp_path):
    archive = tmp_path / "secret.zip"
    archive.write_bytes(with_flag(zip_bytes(good_entries(2)), 0x1))
    with pytest.raises(DataError) as info:
        load_image_folder(archive, 28)
    text = one_line(str(info.value), "cannot read 2 of 2 images in", "encrypted")
    assert f"{archive}:top/c0/0.png" in text and f"{archive}:top/c1/0.png" in text


def test_a_member_that_is_not_an_image_is_named_not_its_buffer(tmp_path):
    archive = tmp_path / "a.zip"
    archive.write_bytes(zip_bytes({**good_entries(2), "top/c1/x.png": b"\x89PNG garbage"}))
    with pytest.raises(DataError) as info:
        load_image_folder(archive, 28)
    one_line(str(info.value), f"cannot read image {archive}:top/c1/x.png", "not an image")


def test_every_unreadable_image_of_a_folder_is_counted_and_ten_named(tmp_path):
    root = write_folder(tmp_path / "d", {"a": 2, "b": 1})
    broken = [root / "b" / f"x{i:02d}.png" for i in range(12)]
    for path in broken:
        path.write_bytes(b"not a png")
    with pytest.raises(DataError) as info:
        load_image_folder(root, 28)
    text = one_line(str(info.value), f"cannot read 12 of 15 images in {root}: ", "; and 2 more")
    assert all(str(p) in text for p in broken[:10])
    assert str(broken[10]) not in text and str(broken[11]) not in text


def test_cli_names_a_bad_zip_member_in_one_line_and_writes_no_run(cli, tmp_path):
    archive = tmp_path / "bits.zip"
    archive.write_bytes(with_bad_crc(zip_bytes(good_entries()), "top/c2/0.png"))
    secret = tmp_path / "secret.zip"
    secret.write_bytes(with_flag(zip_bytes(good_entries(1)), 0x1))
    for data, culprit in ((archive, f"{archive}:top/c2/0.png"), (secret, f"{secret}:top/c0/0.png")):
        result = cli("pretrain", "--data", data, "--device", "cpu")
        assert result.exit_code == 1, result.output
        one_line(result.stderr, "error: ", culprit)
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- 7. memory and bombs


def test_a_huge_zip_entry_is_refused_before_it_is_read(tmp_path):
    archive = tmp_path / "huge.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for name, data in good_entries(2).items():
            z.writestr(name, data)
        with z.open("top/c1/huge.png", "w", force_zip64=True) as f:
            chunk = bytes(2**20)
            for _ in range(100):  # 100 MB of zeros, deflated to ~100 KB
                f.write(chunk)
    tracemalloc.start()
    try:
        with pytest.raises(DataError) as info:
            load_image_folder(archive, 28)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    one_line(str(info.value), f"{archive}:top/c1/huge.png", "100 MB is over the 64 MB limit")
    assert peak < 8 * 2**20, peak


def test_a_huge_file_is_refused_before_it_is_read(tmp_path):
    root = write_folder(tmp_path / "d", {"a": 2})
    huge = root / "a" / "huge.png"
    with open(huge, "wb") as f:
        f.truncate(MAX_IMAGE_BYTES + 2**20)  # sparse: costs no disk
    tracemalloc.start()
    try:
        with pytest.raises(DataError) as info:
            load_image_folder(root, 28)
        rows = list(predict_paths(InkScorer(), [str(huge)], PRE))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    one_line(str(info.value), str(huge), "65 MB is over the 64 MB limit")
    one_line(rows[0].error, str(huge), "65 MB is over the 64 MB limit")
    assert peak < 8 * 2**20, peak


@pytest.mark.parametrize("side", [40, 100])  # over Pillow's warning limit; over its error limit
def test_a_decompression_bomb_is_refused_in_our_words(monkeypatch, side):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    data = png(Image.new("L", (side, side), 0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's raw DecompressionBombWarning would raise
        with pytest.raises(UnreadableImage) as info:
            decode_sketch(data, 28, "auto", "bomb.png")
    one_line(str(info.value), "cannot read image bomb.png", "1,000 pixels", "decompression bomb")


def test_the_command_line_prints_skipped_entries_as_one_note(tmp_path, saved_model):
    archive = tmp_path / "a.zip"
    archive.write_bytes(zip_bytes({**good_entries(2), "../up/c9/x.png": b"x"}))
    done = CliRunner().invoke(
        app, ["enroll", "--model", str(saved_model), "--support", str(archive),
              "--out", str(tmp_path / "bank"), "--device", "cpu"],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    notes = [line for line in plain(done.output).splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "skipped 1 zip entries with unsafe paths" in notes[0]
    assert "DataWarning" not in done.output  # not Python's raw two-line warning


def test_zip_entries_with_unsafe_paths_are_skipped_with_a_warning(tmp_path):
    archive = tmp_path / "a.zip"
    unsafe = {"../up/c9/x.png": b"x", "/abs/c9/y.png": b"y", "top/../../z.png": b"z"}
    archive.write_bytes(zip_bytes({**good_entries(2), **unsafe, "../notes.txt": b"t"}))
    with pytest.warns(DataWarning) as caught:
        dataset = load_image_folder(archive, 28)
    assert dataset.class_names == ("c0", "c1")
    assert len(caught) == 1
    one_line(str(caught[0].message), str(archive), "skipped 3 zip entries with unsafe paths",
             *unsafe)  # fmt: skip

    only = tmp_path / "only.zip"
    only.write_bytes(zip_bytes(unsafe))
    with pytest.raises(DataError) as info:
        load_image_folder(only, 28)
    one_line(str(info.value), f"no images found in {only}", "skipped 3 zip entries", *unsafe)


# ---------------------------------------------------------------- 8. stdin streams


def in_background(rows: Callable[[], Iterable[object]]) -> queue.Queue:
    """A queue that a thread fills with ``rows()``, then None (or the exception): a test that
    waits on it with a timeout fails, rather than hangs, when reading blocks."""
    out: queue.Queue = queue.Queue()

    def run() -> None:
        try:
            for row in rows():
                out.put(row)
            out.put(None)
        except Exception as exc:
            out.put(exc)

    threading.Thread(target=run, daemon=True).start()
    return out


def test_paths_on_stdin_are_labelled_as_they_arrive(tmp_path):
    paths = [write_png(tmp_path / f"{i}.png", sketch_array(i, 0)) for i in range(3)]
    read_end, write_end = os.pipe()
    with open(read_end, encoding="utf-8") as stdin, open(write_end, "w", buffering=1) as pipe:
        rows = in_background(
            lambda: predict_paths(InkScorer(), expand_inputs(["-"], stdin), PRE, batch_size=256)
        )
        pipe.write(f"{paths[0]}\n\n{paths[1]}\n")
        first = [rows.get(timeout=10) for _ in range(2)]  # while stdin is still open
        assert [r.path for r in first] == [str(paths[0]), str(paths[1])]
        assert rows.empty()
        pipe.write(f"{paths[2]}\n")
        pipe.close()
        assert rows.get(timeout=10).path == str(paths[2])
        assert rows.get(timeout=10) is None


def test_predict_streams_stdin_through_the_engine(bank, tmp_path):
    paths = [write_png(tmp_path / "q" / f"{i}.png", sketch_array(i, 9)) for i in range(3)]
    read_end, write_end = os.pipe()
    cfg = PredictConfig(inputs=("-",), bank=bank, batch_size=64)
    with open(read_end, encoding="utf-8") as stdin, open(write_end, "w", buffering=1) as pipe:
        rows = in_background(lambda: engine.predict(cfg, quiet=True, stdin=stdin).rows)
        pipe.write(f"{paths[0]}\n")
        row = rows.get(timeout=10)  # a batch of one: the rest has not arrived
        assert row.path == str(paths[0]) and row.error is None and row.label in ("a", "b", "c")
        pipe.write(f"{paths[1]}\n{paths[2]}\n")
        pipe.close()
        assert [rows.get(timeout=10).path for _ in range(2)] == [str(p) for p in paths[1:]]
        assert rows.get(timeout=10) is None


def test_a_failing_path_source_ends_the_rows_with_its_error(tmp_path):
    good = write_png(tmp_path / "0.png", sketch_array(0, 0))

    def source():
        yield str(good)
        raise DataError("stdin: a line is not text in its encoding (invalid start byte)")

    labelled = predict_paths(InkScorer(), source(), PRE)
    assert next(labelled).path == str(good)
    with pytest.raises(DataError, match="stdin: a line is not text"):
        next(labelled)
