"""``sketchshot data``: COCO crops, inspect, render, the Omniglot download against a local
server, and unlabelled folders for pretrain."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from helpers import plain, sketch_array, write_folder, write_png
from sketchshot.cli import app
from sketchshot.download import KNOWN_SHA256

SHARED = Path("/work/shared/data/omniglot")


def run(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


# ---- crop ---------------------------------------------------------------------------------


def write_coco(tmp_path: Path) -> Path:
    page = np.full((100, 200), 255, dtype=np.uint8)
    page[20:40, 30:70] = 0  # a 40x20 symbol at (30, 20)
    Image.fromarray(page).save(tmp_path / "sheet1.png")
    coco = {
        "images": [{"id": 1, "file_name": "sheet1.png", "width": 200, "height": 100}],
        "categories": [{"id": 1, "name": "valve"}, {"id": 2, "name": "pump"}],
        "annotations": [
            {"id": 7, "image_id": 1, "category_id": 1, "bbox": [30, 20, 40, 20]},
            {"id": 8, "image_id": 1, "category_id": 2, "bbox": [100, 50, 10, 10]},
            {"id": 9, "image_id": 1, "category_id": 2, "bbox": [180, 90, 40, 20]},  # outside
        ],
    }
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    return tmp_path / "ann.json"


def test_crop_fails_on_a_box_outside_its_image_naming_file_and_annotation(tmp_path):
    ann = write_coco(tmp_path)
    result = run("data", "crop", "--coco", ann, "--images", tmp_path, "--out", tmp_path / "o")
    assert result.exit_code == 1
    line = plain(result.output).strip()
    assert "sheet1.png: annotation 9: bbox [180, 90, 40, 20] lies outside the 200x100" in line


def test_crop_skips_bad_boxes_pads_and_counts_per_class(tmp_path):
    ann = write_coco(tmp_path)
    out = tmp_path / "o"
    result = run(
        "data", "crop", "--coco", ann, "--images", tmp_path, "--out", out,
        "--on-error", "skip", "--min-size", "0", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["counts"] == {"pump": 1, "valve": 1}
    assert len(payload["skipped"]) == 1 and "annotation 9" in payload["skipped"][0]
    # 10% padding: 40x20 grows by 4 px left and right, 2 px above and below
    assert Image.open(out / "valve" / "sheet1_7.png").size == (48, 24)
    assert Image.open(out / "pump" / "sheet1_8.png").size == (12, 12)


def test_crop_min_size_leaves_small_boxes_out(tmp_path):
    ann = write_coco(tmp_path)
    out = tmp_path / "o"
    result = run(
        "data", "crop", "--coco", ann, "--images", tmp_path, "--out", out,
        "--on-error", "skip", "--min-size", "15", "--json",
    )  # fmt: skip
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["counts"] == {"pump": 0, "valve": 1} and payload["too_small"] == 1


# ---- inspect ------------------------------------------------------------------------------


def test_inspect_reports_duplicates_blanks_and_unsupported_files(tmp_path):
    root = write_folder(tmp_path / "d", {"a": 3, "b": 2})
    (root / "b" / "copy.png").write_bytes((root / "a" / "00.png").read_bytes())
    write_png(root / "b" / "blank.png", np.full((40, 40), 255, dtype=np.uint8))
    (root / "a" / "notes.txt").write_text("not an image")
    result = run("data", "inspect", root, "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert found["counts"] == {"a": 3, "b": 3}
    assert found["imbalance"] == 1.0
    assert found["sizes"] == {"40x40": 6}
    assert list(found["unreadable"]) == ["b/blank.png"]
    assert "blank" in found["unreadable"]["b/blank.png"]
    assert found["duplicates"] == [["a/00.png", "b/copy.png"]]
    assert found["unsupported"] == ["a/notes.txt"]
    human = plain(run("data", "inspect", root).output)
    assert "2 classes, 6 images, imbalance (max/min) 1.00" in human


# ---- render -------------------------------------------------------------------------------


def test_render_writes_class_folders_of_dark_strokes_on_white(tmp_path):
    root = write_folder(tmp_path / "d", {"x/one": 2, "y": 1})
    out = tmp_path / "png"
    result = run("data", "render", root, "--out", out, "--image-size", "32", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["counts"] == {"x/one": 2, "y": 1}
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == ["x/one/00.png", "x/one/01.png", "y/00.png"]
    pixels = np.asarray(Image.open(out / "y" / "00.png"))
    assert pixels.shape == (32, 32) and np.median(pixels) == 255 and pixels.min() < 128


# ---- download -----------------------------------------------------------------------------


class Files(http.server.BaseHTTPRequestHandler):
    """Serves ``files`` (name -> bytes) with Range support; records each Range asked for."""

    files: dict[str, bytes] = {}
    ranges: list[str | None] = []

    def do_GET(self) -> None:  # noqa: N802
        body = self.files.get(self.path.rsplit("/", 1)[-1])
        if body is None:
            self.send_error(404)
            return
        asked = self.headers.get("Range")
        self.ranges.append(asked)
        start = int(asked.split("=")[1].split("-")[0]) if asked else 0
        if start >= len(body):
            self.send_error(416)
            return
        self.send_response(206 if asked else 200)
        if asked:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server():
    Files.files, Files.ranges = {}, []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Files)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/python", Files
    httpd.shutdown()
    httpd.server_close()


def shared_archive(name: str) -> bytes:
    if not (SHARED / name).exists():
        pytest.skip(f"{SHARED / name} is absent")
    return (SHARED / name).read_bytes()


def test_the_cli_offers_the_downloader_s_splits():
    from typing import get_args

    from sketchshot.cli import data
    from sketchshot.download import OMNIGLOT_SPLITS

    assert get_args(data.OmniglotSplit) == OMNIGLOT_SPLITS
    assert "background_small1" in OMNIGLOT_SPLITS


def test_download_verifies_the_known_sha256(server, tmp_path):
    url, files = server
    name = "images_background_small1.zip"
    files.files[name] = shared_archive(name)
    result = run("data", "download", "omniglot", "--split", "background_small1",
                 "--to", tmp_path, "--base-url", url, "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    assert got["verified"] and got["sha256"] == KNOWN_SHA256[name]
    assert (tmp_path / name).stat().st_size == len(files.files[name]) == got["size"]
    assert not (tmp_path / f"{name}.part").exists()


def test_download_resumes_a_truncated_part(server, tmp_path):
    url, files = server
    name = "strokes_background_small1.zip"
    body = files.files[name] = shared_archive(name)
    (tmp_path / f"{name}.part").write_bytes(body[:1000])
    result = run("data", "download", "omniglot", "--split", "strokes_background_small1",
                 "--to", tmp_path, "--base-url", url, "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    assert files.ranges == ["bytes=1000-"]
    assert got["resumed_from"] == 1000 and got["fetched"] == len(body) - 1000
    assert hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() == KNOWN_SHA256[name]


def test_download_refuses_a_corrupt_file_and_keeps_the_part(server, tmp_path):
    url, files = server
    name = "images_background_small2.zip"
    files.files[name] = b"not the archive" * 1000
    result = run("data", "download", "omniglot", "--split", "background_small2",
                 "--to", tmp_path, "--base-url", url, "-q")  # fmt: skip
    assert result.exit_code == 1
    lines = plain(result.output).strip().splitlines()
    assert len(lines) == 1 and "refused" in lines[0] and KNOWN_SHA256[name] in lines[0]
    assert not (tmp_path / name).exists()
    assert (tmp_path / f"{name}.part").stat().st_size == 15000


def test_download_without_a_known_hash_says_it_was_not_verified(server, tmp_path, monkeypatch):
    url, files = server
    files.files["images_evaluation.zip"] = body = b"generated" * 500
    monkeypatch.setenv("SKETCHSHOT_OMNIGLOT_URL", url)  # the environment variable, not --base-url
    result = run("data", "download", "omniglot", "--split", "evaluation", "--to", tmp_path)
    assert result.exit_code == 0, result.output
    out = plain(result.output)
    assert f"sha256 {hashlib.sha256(body).hexdigest()} not verified" in out
    assert (tmp_path / "images_evaluation.zip").read_bytes() == body


# ---- unlabelled folders -------------------------------------------------------------------


def test_pretrain_reads_an_unlabelled_folder_and_finetune_refuses_it(tmp_path):
    flat = tmp_path / "flat"
    for i in range(12):
        write_png(flat / f"{i:02d}.png", sketch_array(i % 4, i))
    write_png(flat / "deeper" / "more.png", sketch_array(1, 3))  # any layout, recursively
    result = run(
        "pretrain", "--data", flat, "--epochs", 1, "--batch-size", 8, "--encoder", "conv4",
        "--out", tmp_path / "run",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "is unlabelled (images outside class folders): training on all 13 images" in plain(
        result.output
    )
    result = run("finetune", "--data", flat, "--epochs", 1, "--out", tmp_path / "ft")
    assert result.exit_code == 1
    lines = plain(result.output).strip().splitlines()
    assert len(lines) == 1 and "finetune needs labels" in lines[0], lines
    assert "00.png is not inside a class folder" in lines[0]
