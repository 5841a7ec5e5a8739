"""Vector sketches: the stroke representation, the one renderer, and readers of Omniglot's
stroke files, QuickDraw's files and SVG drawings."""

from sketchshot.data.vector.bad_records import BadRecord, BadRecords, OnError
from sketchshot.data.vector.drawing import Drawing, Sketch
from sketchshot.data.vector.omniglot import read_omniglot_strokes
from sketchshot.data.vector.quickdraw import read_bitmaps, read_ndjson, read_stroke3
from sketchshot.data.vector.render import LINE_WIDTH, render
from sketchshot.data.vector.source import load_vector_source, source_kind
from sketchshot.data.vector.svg import read_svg_folder

__all__ = [
    "LINE_WIDTH",
    "BadRecord",
    "BadRecords",
    "Drawing",
    "OnError",
    "Sketch",
    "load_vector_source",
    "read_bitmaps",
    "read_ndjson",
    "read_omniglot_strokes",
    "read_stroke3",
    "read_svg_folder",
    "render",
    "source_kind",
]
