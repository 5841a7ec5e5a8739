"""Omniglot's pen trajectories (Lake et al. 2015): one ``.txt`` per drawing, laid out
``<alphabet>/<character>/<id>_<drawer>.txt`` like the image archives, in a folder or the
``strokes_background_small*.zip`` archives.

A file is ``START``, then one ``x,y,t`` line per pen sample (y pointing up, t in ms), with
``BREAK`` after each stroke (pen-up)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from sketchshot.data.vector.bad_records import BadRecords, RecordError
from sketchshot.data.vector.drawing import Drawing, Sketch
from sketchshot.data.vector.files import read_class_files


def parse_omniglot_strokes(text: str) -> Drawing:
    """The strokes of one stroke file (y flipped to point down); a ``RecordError`` naming the
    line for a malformed one."""
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
            raise RecordError(reason, line=number) from None
        points.append((x, -y))
    if points:  # a last stroke without its BREAK
        strokes.append(np.asarray(points, dtype=np.float32))
    return strokes


def read_omniglot_strokes(
    source: str | Path, bad: BadRecords | None = None, max_per_class: int | None = None
) -> Iterator[Sketch]:
    """Each drawing of an Omniglot stroke folder or zip, lazily, as ``Sketch`` (class
    ``alphabet/character``). Malformed or empty files go to ``bad`` (default: refused)."""
    return read_class_files(
        source, ".txt", parse_omniglot_strokes, bad or BadRecords(), max_per_class
    )
