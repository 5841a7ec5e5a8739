"""Omniglot's pen trajectories (Lake et al. 2015): one ``.txt`` per drawing, laid out
``<alphabet>/<character>/<id>_<drawer>.txt`` like the image archives, in a folder or the
``strokes_background_small*.zip`` archives.

A file is ``START``, then one ``x,y,t`` line per pen sample (y pointing up, t in ms), with
``BREAK`` after each stroke (pen-up)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from sketchshot.data.vector.bad_records import BadRecords
from sketchshot.data.vector.drawing import Drawing, Sketch, problem
from sketchshot.data.vector.files import class_files
from sketchshot.errors import DataError


def parse_omniglot_strokes(text: str) -> Drawing:
    """The strokes of one stroke file (y flipped to point down); ``ValueError(line_number,
    reason)`` for a malformed line."""
    strokes: Drawing = []
    points: list[tuple[float, float]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line in ("START", ""):
            continue
        if line == "BREAK":
            if points:
                strokes.append(np.asarray(points, dtype=np.float32))
            points = []
            continue
        fields = line.split(",")
        try:
            if len(fields) != 3:
                raise ValueError
            x, y, _ = (float(f) for f in fields)
        except ValueError:
            reason = f"expected 'x,y,t', START or BREAK, got {line[:40]!r}"
            raise ValueError(number, reason) from None
        points.append((x, -y))
    if points:  # a last stroke without its BREAK
        strokes.append(np.asarray(points, dtype=np.float32))
    return strokes


def read_omniglot_strokes(
    source: str | Path, bad: BadRecords | None = None, max_per_class: int | None = None
) -> Iterator[Sketch]:
    """Each drawing of an Omniglot stroke folder or zip, lazily, as ``Sketch`` (class
    ``alphabet/character``). Malformed or empty files go to ``bad`` (default: refused)."""
    bad = bad or BadRecords()
    with class_files(Path(source), ".txt") as files:
        taken: dict[str, int] = {}
        for path, name in files.entries:
            if max_per_class is not None and taken.get(name, 0) >= max_per_class:
                continue
            where = files.where(path)
            try:
                drawing = parse_omniglot_strokes(files.read_text(path))
            except ValueError as exc:
                number, reason = exc.args
                bad.report(f"{where}:{number}", reason)
                continue
            except DataError as exc:
                bad.report(where, str(exc))
                continue
            if (why := problem(drawing)) is not None:
                bad.report(where, why)
                continue
            taken[name] = taken.get(name, 0) + 1
            yield Sketch(name, drawing, where)
