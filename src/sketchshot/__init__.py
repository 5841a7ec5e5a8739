"""sketchshot: few-shot recognition of hand-drawn sketches."""

__version__ = "0.1.0"
