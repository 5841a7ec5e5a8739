"""SVG line drawings, as TU-Berlin distributes its sketches (Eitz et al. 2012, "How Do Humans
Sketch Objects?"): ``<path>`` (commands M L H V C S Q T A Z, absolute and relative),
``<polyline>``, ``<polygon>`` and ``<line>``, with ``transform`` attributes (translate, scale,
rotate, skewX, skewY, matrix) on them and on their groups. Curves are flattened into points;
fills, colours and text are ignored."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from sketchshot.data.vector.bad_records import BadRecords
from sketchshot.data.vector.drawing import Drawing, Sketch
from sketchshot.data.vector.files import read_class_files

CURVE_POINTS = 16  # points per Bézier segment; an arc gets one per 10 degrees
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_SEPARATOR = re.compile(r"[\s,]*")
_ARGS = {"M": 2, "L": 2, "H": 1, "V": 1, "C": 6, "S": 4, "Q": 4, "T": 2, "A": 7, "Z": 0}
_SKIPPED = {"defs", "clipPath", "mask", "symbol", "marker", "pattern", "metadata", "title"}


class _Scanner:
    """Numbers and arc flags read off a path's ``d``, one at a time."""

    def __init__(self, text: str) -> None:
        self.text, self.pos = text, 0

    def skip(self) -> None:
        self.pos = _SEPARATOR.match(self.text, self.pos).end()  # type: ignore[union-attr]

    def done(self) -> bool:
        self.skip()
        return self.pos >= len(self.text)

    def at_number(self) -> bool:
        self.skip()
        return _NUMBER.match(self.text, self.pos) is not None

    def command(self) -> str:
        self.skip()
        c = self.text[self.pos]
        if not c.isalpha():
            raise ValueError(f"expected a path command at character {self.pos}, got {c!r}")
        if c.upper() not in _ARGS:
            raise ValueError(f"unknown path command {c!r} at character {self.pos}")
        self.pos += 1
        return c

    def number(self) -> float:
        self.skip()
        m = _NUMBER.match(self.text, self.pos)
        if m is None:
            got = self.text[self.pos : self.pos + 10] or "the end"
            raise ValueError(f"expected a number at character {self.pos}, got {got!r}")
        self.pos = m.end()
        return float(m.group())

    def flag(self) -> float:
        self.skip()
        c = self.text[self.pos : self.pos + 1]
        if c not in ("0", "1"):
            raise ValueError(f"expected an arc flag 0 or 1 at character {self.pos}, got {c!r}")
        self.pos += 1
        return float(c)


def _bezier(points: np.ndarray) -> np.ndarray:
    """The curve of control points float [k, 2] (k = 3 quadratic, 4 cubic) at CURVE_POINTS
    steps, without its first point, [CURVE_POINTS, 2]."""
    t = np.linspace(0, 1, CURVE_POINTS + 1)[1:, None]
    if len(points) == 3:
        p0, p1, p2 = points
        return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
    p0, p1, p2, p3 = points
    return (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t**2 * p2 + t**3 * p3


def _arc(start: np.ndarray, rx: float, ry: float, phi_deg: float, large: float, sweep: float,
         end: np.ndarray) -> np.ndarray:  # fmt: skip
    """An elliptical arc as points without its start (SVG 1.1, appendix F.6.5)."""
    rx, ry = abs(rx), abs(ry)
    if rx == 0 or ry == 0 or np.allclose(start, end):
        return end[None]
    phi = math.radians(phi_deg)
    cos, sin = math.cos(phi), math.sin(phi)
    dx, dy = (start - end) / 2
    x1, y1 = cos * dx + sin * dy, -sin * dx + cos * dy
    grow = x1**2 / rx**2 + y1**2 / ry**2
    if grow > 1:  # radii too small to reach: scaled up, as the spec says
        rx, ry = rx * math.sqrt(grow), ry * math.sqrt(grow)
    num = rx**2 * ry**2 - rx**2 * y1**2 - ry**2 * x1**2
    root = math.sqrt(max(num, 0) / (rx**2 * y1**2 + ry**2 * x1**2))
    root = -root if large == sweep else root
    cx1, cy1 = root * rx * y1 / ry, -root * ry * x1 / rx
    cx = cos * cx1 - sin * cy1 + (start[0] + end[0]) / 2
    cy = sin * cx1 + cos * cy1 + (start[1] + end[1]) / 2
    theta = math.atan2((y1 - cy1) / ry, (x1 - cx1) / rx)
    delta = math.atan2((-y1 - cy1) / ry, (-x1 - cx1) / rx) - theta
    if sweep and delta < 0:
        delta += 2 * math.pi
    elif not sweep and delta > 0:
        delta -= 2 * math.pi
    n = max(2, math.ceil(abs(math.degrees(delta)) / 10))
    angles = theta + delta * np.linspace(0, 1, n + 1)[1:]
    ex, ey = rx * np.cos(angles), ry * np.sin(angles)
    out = np.stack([cos * ex - sin * ey + cx, sin * ex + cos * ey + cy], axis=1)
    out[-1] = end  # exactly where the next command starts
    return out


def parse_path(d: str) -> Drawing:
    """A path's ``d`` as strokes (one per subpath); ``ValueError`` naming the bad command."""
    s = _Scanner(d)
    strokes: list[list[np.ndarray]] = []
    here = start = np.zeros(2)
    last_control: np.ndarray | None = None
    previous = ""
    while not s.done():
        if previous and s.at_number():  # the previous command repeated
            c = {"M": "L", "m": "l"}.get(previous, previous)  # after a moveto: linetos
        else:
            c = s.command()
        kind, relative = c.upper(), c.islower()
        if kind == "Z":
            if strokes and len(strokes[-1]):
                strokes[-1].append(start[None])
            here, last_control, previous = start, None, ""
            continue
        args = [s.flag() if kind == "A" and i in (3, 4) else s.number() for i in range(_ARGS[kind])]
        base = here if relative else np.zeros(2)
        if kind == "H":
            end = np.array([args[0] + (here[0] if relative else 0), here[1]])
        elif kind == "V":
            end = np.array([here[0], args[0] + (here[1] if relative else 0)])
        else:
            end = base + np.array(args[-2:])
        if kind == "M":
            strokes.append([end[None]])
            here = start = end
            last_control, previous = None, c
            continue
        if not strokes:  # a path must start with a moveto; be lenient, start here
            strokes.append([here[None]])
        if kind in ("L", "H", "V"):
            segment, control = end[None], None
        elif kind == "C":
            c1, control = base + args[0:2], base + np.array(args[2:4])
            segment = _bezier(np.stack([here, c1, control, end]))
        elif kind == "S":
            c1 = (
                2 * here - last_control
                if previous.upper() in "CS" and last_control is not None
                else here
            )
            control = base + np.array(args[0:2])
            segment = _bezier(np.stack([here, c1, control, end]))
        elif kind == "Q":
            control = base + np.array(args[0:2])
            segment = _bezier(np.stack([here, control, end]))
        elif kind == "T":
            control = (
                2 * here - last_control
                if previous.upper() in "QT" and last_control is not None
                else here
            )
            segment = _bezier(np.stack([here, control, end]))
        else:  # A
            segment, control = _arc(here, *args[:5], end), None
        strokes[-1].append(segment)
        here, last_control, previous = end, control, c
    return [np.concatenate(parts).astype(np.float32) for parts in strokes]


def parse_transform(text: str) -> np.ndarray:
    """An SVG ``transform`` attribute as a 3x3 matrix (functions applied right to left)."""
    matrix = np.eye(3)
    for name, body in re.findall(r"([A-Za-z]+)\s*\(([^)]*)\)", text):
        v = [float(x) for x in _NUMBER.findall(body)]
        if name == "matrix" and len(v) == 6:
            m = [[v[0], v[2], v[4]], [v[1], v[3], v[5]]]
        elif name == "translate" and len(v) in (1, 2):
            m = [[1, 0, v[0]], [0, 1, v[1] if len(v) == 2 else 0]]
        elif name == "scale" and len(v) in (1, 2):
            m = [[v[0], 0, 0], [0, v[-1], 0]]
        elif name == "rotate" and len(v) in (1, 3):
            a = math.radians(v[0])
            cx, cy = (v[1], v[2]) if len(v) == 3 else (0.0, 0.0)
            ca, sa = math.cos(a), math.sin(a)
            m = [[ca, -sa, cx - ca * cx + sa * cy], [sa, ca, cy - sa * cx - ca * cy]]
        elif name == "skewX" and len(v) == 1:
            m = [[1, math.tan(math.radians(v[0])), 0], [0, 1, 0]]
        elif name == "skewY" and len(v) == 1:
            m = [[1, 0, 0], [math.tan(math.radians(v[0])), 1, 0]]
        else:
            raise ValueError(f"unknown or malformed transform {name}({body.strip()})")
        matrix = matrix @ np.vstack([m, [0, 0, 1]])
    return matrix


def _points(text: str) -> np.ndarray:
    v = [float(x) for x in _NUMBER.findall(text)]
    if len(v) % 2:
        raise ValueError("an odd number of coordinates in 'points'")
    return np.asarray(v, dtype=np.float64).reshape(-1, 2)


def _element_strokes(tag: str, el: ET.Element) -> Drawing:
    if tag == "path":
        return parse_path(el.get("d", ""))
    if tag in ("polyline", "polygon"):
        points = _points(el.get("points", ""))
        if tag == "polygon" and len(points):
            points = np.vstack([points, points[:1]])
        return [points.astype(np.float32)]
    if tag == "line":
        xy = [float(el.get(k, "0")) for k in ("x1", "y1", "x2", "y2")]
        return [np.asarray(xy, dtype=np.float32).reshape(2, 2)]
    return []


def parse_svg(text: str) -> Drawing:
    """Every line element of an SVG document as strokes, transforms applied; ``ValueError``
    naming the element (``<path> #3``, counting drawing elements from 1)."""
    if "<!ENTITY" in text:  # entity expansion is how XML bombs work; drawings never need it
        raise ValueError("entity declarations are not accepted in an SVG drawing")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ValueError(f"not well-formed XML ({exc})") from None
    strokes: Drawing = []
    count = 0

    def visit(el: ET.Element, outer: np.ndarray) -> None:
        nonlocal count
        tag = el.tag.rsplit("}", 1)[-1]
        if tag in _SKIPPED:
            return
        drawn = tag in ("path", "polyline", "polygon", "line")
        count += drawn
        try:
            matrix = outer @ parse_transform(el.get("transform", ""))
            found = _element_strokes(tag, el)
        except ValueError as exc:
            raise ValueError(f"<{tag}>{f' #{count}' if drawn else ''}: {exc}") from None
        for stroke in found:
            if len(stroke):
                xy = stroke.astype(np.float64) @ matrix[:2, :2].T + matrix[:2, 2]
                strokes.append(xy.astype(np.float32))
        for child in el:
            visit(child, matrix)

    visit(root, np.eye(3))
    return strokes


def read_svg_folder(
    source: str | Path, bad: BadRecords | None = None, max_per_class: int | None = None
) -> Iterator[Sketch]:
    """Each drawing of ``ROOT/<class>/*.svg`` (a folder or zip), lazily, as ``Sketch``.
    Malformed files and unknown commands go to ``bad`` (default: refused), named with the
    file and the element."""
    return read_class_files(source, ".svg", parse_svg, bad or BadRecords(), max_per_class)
