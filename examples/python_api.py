"""Use sketchshot from Python: train a tiny model, load it back, embed sketches and label them
against classes given in memory.

Run: python examples/python_api.py  (a few seconds on 2 CPU cores)
"""

import tempfile
from pathlib import Path

from PIL import Image

import sketchshot
from sketchshot import engine
from sketchshot.config import resolve_config
from sketchshot.data import load_dataset

# 16 built-in glyph classes x 6 drawers: ProtoNet trains on 12, and 4 are held out as "test".
cfg = resolve_config(
    overrides={
        "device": "cpu",
        "data.builtin.n_classes": 16,
        "data.builtin.n_drawers": 6,
        "data.split_fractions": (0.75, 0.0, 0.25),
        "finetune.epochs": 1,
        "finetune.episodes_per_epoch": 10,
        "finetune.n_way": 5,
        "finetune.n_query": 3,
    }
)

with tempfile.TemporaryDirectory() as tmp:
    run = engine.finetune(cfg, Path(tmp) / "protonet", quiet=True).run_dir

    model = sketchshot.load(run, device="cpu")  # the model and its preprocessing, from model.json
    print(model)

    # Drawings of the 4 unseen classes, as numpy arrays (strokes bright on dark). The API also
    # takes image paths, PIL images and tensors; dark-on-white scans are inverted as predict
    # inverts files.
    test = load_dataset(cfg.data, model.image_size, "test")
    drawings = {
        name: [test.images[i, 0].numpy() for i in (test.labels == c).nonzero().flatten().tolist()]
        for c, name in enumerate(test.class_names)
    }

    scan = Image.fromarray(255 - drawings[test.class_names[0]][0])  # dark strokes on white
    features = model.embed([scan, drawings[test.class_names[0]][0]])
    print(f"embeddings {tuple(features.shape)}; the scan and the array give the same features:",
          bool(features[0].allclose(features[1])))  # fmt: skip

    # One example per class is the support set; the other drawings are the queries.
    support = {name: images[:1] for name, images in drawings.items()}
    queries = [image for images in drawings.values() for image in images[1:]]
    truths = [name for name, images in drawings.items() for _ in images[1:]]
    rows = model.predict(queries, support, top_k=2)
    for row, truth in list(zip(rows, truths, strict=True))[:3]:
        print(f"{row.path}: {row.label} ({row.confidence:.2f}), truth {truth}; top 2 {row.scores}")
    right = sum(row.label == truth for row, truth in zip(rows, truths, strict=True))
    print(f"{len(support)}-way 1-shot on unseen glyphs: {right}/{len(rows)} right")
