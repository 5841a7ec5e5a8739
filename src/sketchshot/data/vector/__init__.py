"""Vector sketches: the stroke representation, the one renderer, and readers of Omniglot's
stroke files, QuickDraw's files and SVG drawings.

Import from the modules: ``drawing`` (the representation), ``render``, ``stroke_views``, the
readers (``omniglot``, ``quickdraw``, ``svg``), ``source`` (a whole source into a
``SketchDataset``). This package imports nothing itself, so that the dataset can use the
drawing and renderer modules without a cycle through the readers."""
