"""Plain helpers shared by the test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHARED = Path(__file__).resolve().parents[2] / "shared"
OMNIGLOT = SHARED / "data" / "omniglot"

# Small sides to exercise encoders at, to stay fast; an encoder not named here is tested at its
# own ``default_image_size``.
TEST_SIZES = {"conv4": 28, "resnet18": 32, "resnet34": 32, "resnet50": 32, "sketch_cnn": 32}


def size_for(encoder_name: str) -> int:
    if encoder_name in TEST_SIZES:
        return TEST_SIZES[encoder_name]
    from sketchshot.encoders import create_encoder

    return create_encoder(encoder_name).default_image_size


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def plain(text: str) -> str:
    """Terminal output without colour codes."""
    return ANSI.sub("", text)


def one_line_error(result) -> str:
    """The one ``error: ...`` line a failed command printed on stderr (no traceback)."""
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    text = plain(result.stderr).strip()
    assert text.startswith("error: "), text
    assert "\n" not in text, f"expected one line, got:\n{text}"
    return text


def model_spec(method: str, encoder: str, image_size: int, **method_args: object) -> dict:
    """A card's ``model`` block, as the engine writes it."""
    from sketchshot.config import METHOD_SETTINGS
    from sketchshot.engine import model_spec as engine_spec

    settings = METHOD_SETTINGS[method](**method_args)
    return engine_spec(settings, encoder, image_size, "random").model_dump()


def sketch_array(class_index: int, variant: int, size: int = 40, white: bool = True) -> np.ndarray:
    """One drawing of class ``class_index``: a polyline whose corners depend on the class, moved a
    little per ``variant``. Dark strokes on a white page by default, as a scan would be."""
    rng = np.random.default_rng([class_index, 7])
    corners = rng.uniform(0.2, 0.8, (4, 2)) * size
    jitter = np.random.default_rng([class_index, variant, 11]).normal(0, 0.02 * size, (4, 2))
    ink, page = (0, 255) if white else (255, 0)
    im = Image.new("L", (size, size), page)
    ImageDraw.Draw(im).line([tuple(p) for p in (corners + jitter).tolist()], fill=ink, width=3)
    return np.asarray(im)


def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def write_folder(root: Path, classes: dict[str, int], size: int = 40, white: bool = True) -> Path:
    """Write ``root/<class>/<i>.png`` sketches for ``{"alpha/char1": 3, ...}``; returns ``root``.
    Drawings of one class share a shape; classes are numbered in the order given."""
    for c, (name, count) in enumerate(classes.items()):
        for i in range(count):
            write_png(root / name / f"{i:02d}.png", sketch_array(c, i, size, white))
    return root


def torchrun(args: list[str], cwd: Path, nproc: int = 2) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node=NPROC -m sketchshot ARGS`` on the CPU, one thread each, on a
    free local port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           f"--master_port={port}", "-m", "sketchshot", *args]  # fmt: skip
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
