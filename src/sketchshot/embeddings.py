"""Every image of a source through a model's encoder, written as safetensors, .npy (with a
JSON list of paths and classes beside it) or CSV: features for use outside sketchshot."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from sketchshot.checkpoint import atomic_write
from sketchshot.compute import inference_encoder
from sketchshot.data.dataset import SketchDataset
from sketchshot.data.folder import UNLABELLED
from sketchshot.evaluation import embed
from sketchshot.methods import Method


def encode_in_batches(
    method: Method, dataset: SketchDataset, device: torch.device, batch_size: int, advance
) -> torch.Tensor:
    """Features [N, D] (float32, on the CPU) of every image, ``advance(n)`` after each batch."""
    out = []
    encoder = inference_encoder(method.encoder, device)  # made once, for every batch
    for start in range(0, len(dataset), batch_size):
        chunk = dataset.images[start : start + batch_size]
        out.append(embed(method, chunk, device, batch_size, encoder=encoder).float().cpu())
        advance(chunk.shape[0])
    return torch.cat(out)


def write_embeddings(
    path: Path, features: torch.Tensor, dataset: SketchDataset, model_sha256: str
) -> None:
    """``features`` [N, D] of ``dataset``'s images to ``path`` in the format its suffix names,
    with each row's source path and class (none for unlabelled data); written atomically."""
    classes = [
        None if dataset.class_names[i] == UNLABELLED else dataset.class_names[i]
        for i in dataset.labels.tolist()
    ]
    about = {"paths": list(dataset.sources), "classes": classes, "model_sha256": model_sha256,
             "origin": dataset.origin}  # fmt: skip
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        tensors = {"embeddings": features.contiguous(), "labels": dataset.labels.clone()}
        meta = {k: json.dumps(v) for k, v in about.items()}
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    elif suffix == ".npy":

        def write_npy(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.save(f, features.numpy())

        atomic_write(path, write_npy)
        sidecar = path.with_suffix(".json")
        atomic_write(sidecar, lambda tmp: Path(tmp).write_text(json.dumps(about, indent=1)))
    else:

        def write_csv(tmp: Path) -> None:
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                rows = csv.writer(f)
                rows.writerow(["path", "class", *(f"f{i}" for i in range(features.shape[1]))])
                for p, c, row in zip(dataset.sources, classes, features.tolist(), strict=True):
                    rows.writerow([p, c or "", *(f"{v:.7g}" for v in row)])

        atomic_write(path, write_csv)
