"""The Python API: ``sketchshot.load(run)`` rebuilds a saved model and its preprocessing from
its card; the ``Model`` embeds sketches and labels them against classes, as timm's
``create_model`` and easyfsl's classifiers are used.

Images may be given one at a time or as a list, each as an image file's path, a PIL image, a
numpy array or a torch tensor. Files, PIL images and arrays are decoded exactly as ``predict``
decodes a file (grey, inverted per the card's ``invert`` rule, padded square, resized), so the
same drawing gives the same embedding whichever way it comes. Tensors are taken as model input
already: [N, 1, S, S] or [1, S, S] or [S, S] at the model's size S, strokes bright on a dark
background, uint8 in 0..255 or float in [0, 1] (rounded to 256 levels, as decoded images are)."""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sketchshot.bank import (
    ClassBank,
    bank_files,
    check_model,
    encode_support,
    find_model,
    is_bank,
    load_bank,
)
from sketchshot.card import ModelCard, Preprocessing
from sketchshot.checkpoint import load_model
from sketchshot.data import load_support
from sketchshot.data.dataset import SketchDataset
from sketchshot.data.folder import decode_sketch
from sketchshot.distributed import resolve_device
from sketchshot.errors import ConfigError, DataError
from sketchshot.evaluation import embed
from sketchshot.methods import Method
from sketchshot.prediction import READERS, BankScorer, Prediction, label_rows, read_image

ImageLike = str | os.PathLike | Image.Image | np.ndarray | torch.Tensor
Images = ImageLike | Sequence[ImageLike]
Classes = ClassBank | str | os.PathLike | Mapping[str, Images]
_PNG_MODES = {"1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I;16B"}  # written by Pillow as is
_TIFF_MODES = {"I", "F", "I;16L", "PA", "CMYK", "YCbCr", "RGBX", "LAB"}  # PNG cannot hold them


def load(
    path: str | os.PathLike, device: str = "auto", model: str | os.PathLike | None = None
) -> Model:
    """The model saved in ``path`` (a run folder, its ``model.json`` or ``model.safetensors``),
    rebuilt from its card, hash-checked and in eval mode on ``device`` (auto, cpu, cuda, mps).

    ``path`` may be a class bank (``BANK``, ``BANK.json``): then the model is the one that
    encoded it, found as ``predict --bank`` finds it (``model``, else the bank's bundled
    copy, else a model beside it, else its recorded run folder), and ``predict`` labels
    against the bank unless given other classes."""
    dev = resolve_device(device)
    if not is_bank(path):
        method, card = load_model(model if model is not None else path, dev)
        return Model(method, card, dev)
    bank, where = load_bank(path), bank_files(path)[0]
    method, card = load_model(model if model is not None else find_model(bank.model, where), dev)
    check_model(bank, card, str(where))
    return Model(method, card, dev, bank)


def _encoded(image: Image.Image) -> bytes:
    """``image`` as lossless file bytes (PNG, or TIFF for wide modes), so that it goes through
    the very decoder that files go through."""
    if image.mode not in _PNG_MODES | _TIFF_MODES:
        image = image.convert("RGBA")
    out = io.BytesIO()
    image.save(out, format="PNG" if image.mode in _PNG_MODES else "TIFF")
    return out.getvalue()


def _array_image(array: np.ndarray, name: str) -> Image.Image:
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.dtype.kind == "f":
        array = array.astype(np.float32)
    try:
        return Image.fromarray(np.ascontiguousarray(array))
    except (TypeError, ValueError, KeyError):
        raise DataError(
            f"{name}: a {array.dtype} array of shape {list(array.shape)} is not an image; pass "
            "[H, W] (uint8, uint16, or float in [0, 1]) or [H, W, 3 or 4] uint8"
        ) from None


def _tensor_pixels(t: torch.Tensor, size: int, name: str) -> torch.Tensor:
    """A tensor of model input -> uint8 [N, 1, S, S]."""
    t = t.detach().cpu()
    t = t[None, None] if t.dim() == 2 else t[None] if t.dim() == 3 else t
    if t.dim() != 4 or tuple(t.shape[1:]) != (1, size, size):
        raise DataError(
            f"{name}: a tensor must be [N, 1, {size}, {size}] (or [1, S, S], [S, S]), not "
            f"{list(t.shape)}; pass files, PIL images or arrays to have them decoded and resized"
        )
    if t.dtype == torch.uint8:
        return t
    if not t.is_floating_point() or not bool(((t >= 0) & (t <= 1)).all()):
        raise DataError(f"{name}: a tensor must be uint8, or float in [0, 1] (strokes bright)")
    return t.mul(255).round_().to(torch.uint8)


def _pixels(item: ImageLike, pre: Preprocessing, name: str) -> torch.Tensor:
    """One input -> uint8 [n, 1, S, S]; n > 1 only for a tensor holding a batch."""
    if isinstance(item, torch.Tensor):
        return _tensor_pixels(item, pre.image_size, name)
    if isinstance(item, str | os.PathLike):
        array = read_image(os.fspath(item), pre.image_size, pre.invert, pre.fit)
    else:
        image = _array_image(item, name) if isinstance(item, np.ndarray) else item
        if not isinstance(image, Image.Image):
            raise DataError(f"{name}: a {type(item).__name__} is not an image")
        array = decode_sketch(_encoded(image), pre.image_size, pre.invert, name, pre.fit)
    return torch.tensor(array)[None, None]  # a copy: decoded arrays are read-only


class Model:
    """A saved model and its preprocessing: ``embed`` sketches, ``enroll`` classes and
    ``predict`` labels. ``card`` is the saved ``ModelCard``; ``bank`` the class bank it was
    loaded from, if any."""

    def __init__(
        self, method: Method, card: ModelCard, device: torch.device, bank: ClassBank | None = None
    ) -> None:
        self.method = method.eval()
        self.card = card
        self.device = device
        self.bank = bank

    @property
    def preprocessing(self) -> Preprocessing:
        return self.card.preprocessing

    @property
    def image_size(self) -> int:
        return self.card.preprocessing.image_size

    @property
    def class_names(self) -> tuple[str, ...]:
        """The classes it was trained on (none for a self-supervised model); ``predict``
        labels with the classes it is given."""
        return self.card.class_names

    def __repr__(self) -> str:
        spec, where = self.card.model, self.card.file.parent if self.card.file else "memory"
        return f"Model({spec.method}/{spec.encoder}, {self.image_size} px, {self.device}, {where})"

    def _decoded(self, images: Images) -> tuple[torch.Tensor, list[str]]:
        """uint8 [N, 1, S, S] of ``images`` and each row's name (its path, or ``<image i>``)."""
        items = list(images) if isinstance(images, list | tuple) else [images]
        names = [str(x) if isinstance(x, str | os.PathLike) else f"<image {i}>"
                 for i, x in enumerate(items)]  # fmt: skip
        pre = self.preprocessing
        with ThreadPoolExecutor(READERS) as pool:  # PIL releases the GIL while it decodes
            decoded = list(pool.map(lambda item, name: _pixels(item, pre, name), items, names))
        if not decoded:
            return torch.empty(0, 1, pre.image_size, pre.image_size, dtype=torch.uint8), []
        rows = [name for name, d in zip(names, decoded, strict=True) for _ in range(len(d))]
        return torch.cat(decoded), rows

    def preprocess(self, images: Images) -> torch.Tensor:
        """Images -> uint8 [N, 1, S, S], strokes bright: what the encoder sees (over 255)."""
        return self._decoded(images)[0]

    def embed(self, images: Images, batch_size: int = 128) -> torch.Tensor:
        """Encoder features float32 [N, D] on the CPU, computed in eval mode without gradients,
        ``batch_size`` images at a time."""
        pixels = self.preprocess(images)
        if len(pixels) == 0:
            raise DataError("no images to embed")
        return embed(self.method, pixels, self.device, batch_size).cpu()

    def enroll(self, support: str | os.PathLike | Mapping[str, Images]) -> ClassBank:
        """A class bank (every support image's embedding) from a folder or .zip
        ``SUPPORT/<class>/*.png``, decoded as ``predict --support`` does, or from a dict
        ``{class name: image or images}``. Save it with ``sketchshot.bank.save_bank``."""
        if not isinstance(support, Mapping):
            dataset = load_support(support, self.preprocessing)
            return encode_support(self.method, self.card, dataset, self.device)
        decoded = [self._decoded(images) for images in support.values()]
        if not decoded or any(len(pixels) == 0 for pixels, _ in decoded):
            raise DataError("a support dict needs at least one image for each of its classes")
        dataset = SketchDataset(
            images=torch.cat([pixels for pixels, _ in decoded]),
            labels=torch.cat([torch.full((len(p),), i) for i, (p, _) in enumerate(decoded)]),
            class_names=tuple(str(name) for name in support),
            sources=tuple(name for _, names in decoded for name in names),
            origin="<memory>",
        )
        return encode_support(self.method, self.card, dataset, self.device)

    def _bank(self, classes: Classes) -> ClassBank:
        if isinstance(classes, Mapping):
            return self.enroll(classes)
        if isinstance(classes, ClassBank):
            bank, where = classes, "the class bank"
        elif Path(classes).is_dir() or zipfile.is_zipfile(classes):
            return self.enroll(classes)
        else:
            bank, where = load_bank(classes), str(bank_files(classes)[0])
        check_model(bank, self.card, where)
        return bank

    def predict(
        self,
        images: Images,
        classes: Classes | None = None,
        top_k: int = 3,
        reject_below: float | None = None,
    ) -> list[Prediction]:
        """One ``Prediction`` per image, as ``sketchshot predict`` labels it: against a
        ``ClassBank``, a bank's path, a support folder or .zip, or a dict ``{class name:
        images}`` (None: the bank the model was loaded from). Below ``reject_below`` (else the
        bank's calibrated threshold, if any) cosine similarity to the nearest class mean, the
        label is ``unknown``. ``path`` is the file's path, or ``<image i>`` for the i-th input
        in memory. An unreadable image raises."""
        if classes is None and self.bank is None:
            raise ConfigError(
                "predict needs classes: a bank, a support folder or a dict of images (or load "
                "the model from a bank)"
            )
        bank = self._bank(classes if classes is not None else self.bank)
        pixels, names = self._decoded(images)
        if len(pixels) == 0:
            return []
        if reject_below is None and bank.threshold is not None:
            reject_below = bank.threshold.value
        probs, sims = BankScorer(self.method, bank, self.device).scores(pixels)
        return label_rows(names, probs, sims, bank.class_names, top_k, reject_below)
