"""A saved model for use without sketchshot: its encoder, and its scoring where that is a
learned module (``Method.scoring``), as ONNX or TorchScript files in a folder with an
``export.json`` (an ``ExportCard``) that says how to feed them.

The encoder takes images float32 [batch, 1, S, S] in [0, 1], strokes bright on a dark
background (decoded and inverted as the card's preprocessing says); the normalisation
``(x - mean) / std`` is inside it. It returns embeddings [batch, D]. Every batch dimension is
free. Each file is loaded back (``onnxruntime`` for ONNX, where it is installed) and run on
other batch sizes than it was exported with; the largest difference from the model itself is
recorded, and an export that differs by more than ``TOLERANCE`` is refused.

The folder appears whole or not at all: the files are written into a temporary folder beside
it, which is renamed into place. ONNX uses ``torch.onnx.export``'s dynamo exporter, which
needs the ``onnx`` and ``onnxscript`` packages (``pip install 'sketchshot[onnx]'``)."""

from __future__ import annotations

import contextlib
import importlib.metadata
import inspect
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

import sketchshot
from sketchshot.card import (
    ExportCard,
    ExportCheck,
    ExportedFile,
    ExportedScoring,
    ModelCard,
    ModelRef,
    parse_card,
    read_json,
)
from sketchshot.checkpoint import _fsync, atomic_write, sha256_of, write_error
from sketchshot.errors import ConfigError, ExportError
from sketchshot.methods import Method
from sketchshot.methods.base import Scoring

Format = Literal["onnx", "torchscript"]
SUFFIXES: dict[str, str] = {"onnx": ".onnx", "torchscript": ".pt"}
CARD = "export.json"
ENCODER, SCORING = "encoder", "scoring"
# what an export folder may hold: --force replaces nothing else
EXPORT_FILES = {
    CARD,
    *(f"{stem}{suffix}" for stem in (ENCODER, SCORING) for suffix in (".onnx", ".pt")),
}
# the batch sizes a module is exported with, and (others) checked at
EXAMPLE_ROWS, CHECK_ROWS = (2, 3), (5, 7)
# largest difference allowed between an export and the model, relative to the outputs' scale
# (float32 kernels that sum in another order differ by about 1e-6 of it)
TOLERANCE = 1e-4
# the free dimension of each scoring input, by the input's name
ROWS = {"images": "batch", "embeddings": "batch", "query": "queries", "prototypes": "classes",
        "support": "support_images"}  # fmt: skip
PIXELS = (
    "float32 [batch, 1, S, S] in [0, 1] (uint8 / 255), strokes bright on a dark background: "
    "decoded grey, inverted as preprocessing.invert says (auto: when the page is light), "
    "cropped to the drawing's bounding box with a 10% border where preprocessing.fit is 'ink', "
    "padded square and resized to image_size; the encoder applies (x - mean) / std itself"
)


@dataclass(frozen=True)
class Exported:
    """One module written: its file's card entry, and the check of its outputs."""

    entry: ExportedFile
    max_abs_diff: float | None


def write_export(
    method: Method, card: ModelCard, fmt: Format, out: Path, force: bool = False
) -> tuple[ExportCard, list[str]]:
    """Export ``method`` (saved with ``card``) as ``fmt`` into the folder ``out``; returns the
    card written as ``out/export.json`` and notes for the user."""
    check_out(out, force)
    backend = Onnx() if fmt == "onnx" else TorchScript()
    notes = [] if backend.runtime else [backend.unchecked]
    method = method.cpu().eval()
    encoder = method.encoder
    size = card.preprocessing.image_size
    images = [torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(n))
              for n in (*EXAMPLE_ROWS, *CHECK_ROWS)]  # fmt: skip
    with torch.no_grad():
        embeddings = encoder(torch.cat(images))
    dim = int(embeddings.shape[1])
    scoring = method.scoring()
    out.parent.mkdir(parents=True, exist_ok=True)
    discard_leftovers(out)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as exc:
        raise write_error(out, exc) from None
    try:
        enc = backend.write(
            encoder,
            tmp / f"{ENCODER}{backend.suffix}",
            {"images": (["batch", 1, size, size], images[0], images[2])},
            ("embeddings", ["batch", dim]),
        )
        module = None
        if scoring.module is not None:
            module = write_scoring(backend, scoring, embeddings, tmp)
        check = None
        if backend.runtime:
            check = ExportCheck(
                runtime=backend.runtime,
                images=CHECK_ROWS[0],
                encoder_max_abs_diff=enc.max_abs_diff or 0.0,
                scoring_max_abs_diff=module.max_abs_diff if module is not None else None,
            )
        exported = ExportCard(
            format=fmt,
            sketchshot_version=sketchshot.__version__,
            torch_version=torch.__version__,
            onnx_opset=backend.opset(tmp / enc.entry.filename),
            source=ModelRef.of(card),
            model=card.model,
            preprocessing=card.preprocessing,
            pixels=PIXELS,
            embedding_dim=dim,
            encoder=enc.entry,
            scoring=ExportedScoring(
                rule=scoring.rule,
                parameters=scoring.parameters,
                module=module.entry if module is not None else None,
            ),
            class_names=card.class_names if card.model.kind == "supervised" else (),
            check=check,
        )
        atomic_write(tmp / CARD, lambda p: p.write_text(exported.to_json(), encoding="utf-8"))
        _fsync(tmp)
        place(tmp, out)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise write_error(out, exc) from None
        raise
    return exported, notes


def write_scoring(
    backend: Backend, scoring: Scoring, embeddings: torch.Tensor, folder: Path
) -> Exported:
    """Export ``scoring.module`` on real embeddings [N, D]: its inputs take ``EXAMPLE_ROWS``
    and then ``CHECK_ROWS`` rows of them (one input: the first of each). Its output must be
    [N_0, N_1] for two inputs (each row of the first against each of the second) or [N_0, K]
    for one."""
    module, names = scoring.module, scoring.inputs
    assert module is not None
    rows = [EXAMPLE_ROWS[: len(names)], CHECK_ROWS[: len(names)]]
    example, check = ([embeddings[:n] for n in sizes] for sizes in rows)
    with torch.no_grad():
        out = module.eval()(*check)
    width = int(out.shape[1])
    if len(names) == 2:  # [N_0, N_1]: every query against every prototype or support embedding
        shape: list[int | str] = [rows_of(names[0]), rows_of(names[1])]
        expected = list(CHECK_ROWS)
    else:  # [N_0, K]: a row of K scores for each input row
        shape, expected = [rows_of(names[0]), width], [CHECK_ROWS[0], width]
    if list(out.shape) != expected:
        raise ExportError(
            f"the scoring module returns {list(out.shape)} for inputs of {CHECK_ROWS} rows, "
            f"not {expected}"
        )
    dim = int(embeddings.shape[1])
    inputs = {name: ([rows_of(name), dim], example[i], check[i]) for i, name in enumerate(names)}
    path = folder / f"{SCORING}{backend.suffix}"
    return backend.write(module, path, inputs, (scoring.output, shape))


class Backend:
    """Writes a module as one file, loads it back and runs it."""

    name: str  # the format, as messages name it
    suffix: str
    runtime: str | None  # what runs the file back ("onnxruntime 1.20.1"); None: nothing here
    unchecked = ""  # the note when nothing here runs the files back

    def write(
        self,
        module: nn.Module,
        path: Path,
        inputs: dict[str, tuple[list[int | str], torch.Tensor, torch.Tensor]],
        output: tuple[str, list[int | str]],
    ) -> Exported:
        """Write ``module`` to ``path``: ``inputs`` maps each input's name to its shape (free
        dimensions named), an example and a check value (another batch size); ``output`` is
        the output's name and shape. Returns its card entry and the largest difference of the
        loaded file's output from the module's on the check values."""
        module = module.eval()
        examples = tuple(example for _, example, _ in inputs.values())
        try:
            with quiet_export():
                self.save(module, examples, list(inputs), output[0], path)
        except Exception as exc:  # the exporters raise many kinds; each is one line here
            raise ExportError(
                f"cannot export the {path.stem} as {self.name}: {first_line(exc)}"
            ) from None
        _fsync(path)
        checks = tuple(check for _, _, check in inputs.values())
        diff = None
        if self.runtime:
            with torch.no_grad():
                expected = module(*checks).numpy()
            try:
                got = self.run(path, dict(zip(inputs, checks, strict=True)))
            except Exception as exc:  # a runtime that refuses the file: one line as well
                raise ExportError(
                    f"the exported {path.stem} does not run in {self.runtime}: {first_line(exc)}"
                ) from None
            if got.shape != expected.shape:
                raise ExportError(
                    f"the exported {path.stem} returns {list(got.shape)} for inputs of "
                    f"{[c.shape[0] for c in checks]} rows, not {list(expected.shape)}"
                )
            diff = float(np.abs(got - expected).max())
            scale = max(1.0, float(np.abs(expected).max()))
            if not diff <= TOLERANCE * scale:
                raise ExportError(
                    f"the exported {path.stem} differs from the model by {diff:.3g} (more than "
                    f"{TOLERANCE:g} of its outputs' scale {scale:.3g}); nothing was written"
                )
        entry = ExportedFile(
            filename=path.name,
            sha256=sha256_of(path),
            inputs={name: shape for name, (shape, _, _) in inputs.items()},
            outputs={output[0]: output[1]},
        )
        return Exported(entry, diff)

    def save(self, module, examples, input_names, output_name, path) -> None:
        raise NotImplementedError

    def run(self, path: Path, inputs: dict[str, torch.Tensor]) -> np.ndarray:
        raise NotImplementedError

    def opset(self, path: Path) -> int | None:
        return None


class TorchScript(Backend):
    """``torch.jit.trace``: the module's operations on the example, with its batch sizes
    free (checked on others). Recent torch releases (2.14 here) mark TorchScript as deprecated
    in favour of ``torch.export``; export silences that warning and the tracer's, since it
    checks the result itself."""

    name, suffix = "TorchScript", ".pt"
    runtime = f"torch.jit {torch.__version__}"

    def save(self, module, examples, input_names, output_name, path) -> None:
        traced = torch.jit.trace(module, examples, check_trace=False)
        torch.jit.save(traced, str(path))

    def run(self, path: Path, inputs: dict[str, torch.Tensor]) -> np.ndarray:
        with quiet_export(), torch.no_grad():
            loaded = torch.jit.load(str(path), map_location="cpu")
            return loaded(*inputs.values()).numpy()


class Onnx(Backend):
    """``torch.onnx.export`` (the dynamo exporter, weights inside the file), each input's
    first dimension free; run back by onnxruntime where it is installed."""

    name, suffix = "ONNX", ".onnx"
    unchecked = (
        "onnxruntime is not installed: the ONNX files were not run back to check them "
        "(pip install 'sketchshot[onnx]')"
    )

    def __init__(self) -> None:
        missing = [name for name in ("onnx", "onnxscript") if not _importable(name)]
        if missing:
            raise ConfigError(
                f"--format onnx needs {' and '.join(missing)}, not installed here: "
                "pip install 'sketchshot[onnx]'"
            )
        if "dynamic_shapes" not in inspect.signature(torch.onnx.export).parameters:
            raise ConfigError(f"--format onnx needs torch 2.6 or newer, not {torch.__version__}")
        self.runtime = (
            f"onnxruntime {importlib.metadata.version('onnxruntime')}"
            if _importable("onnxruntime")
            else None
        )

    def save(self, module, examples, input_names, output_name, path) -> None:
        names = [rows_of(name) for name in input_names]
        shapes = tuple({0: torch.export.Dim(n)} for n in names)
        options = inspect.signature(torch.onnx.export).parameters
        extra = {"external_data": False} if "external_data" in options else {}
        torch.onnx.export(
            module,
            examples,
            str(path),
            input_names=input_names,
            output_names=[output_name],
            dynamo=True,
            dynamic_shapes=shapes,
            verbose=False,
            **extra,
        )

    def run(self, path: Path, inputs: dict[str, torch.Tensor]) -> np.ndarray:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {k: v.numpy() for k, v in inputs.items()})[0]

    def opset(self, path: Path) -> int | None:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def rows_of(name: str) -> str:
    """The name of the free first dimension of the input ``name``."""
    return ROWS.get(name, f"{name}_rows")


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def quiet_export() -> Iterator[None]:
    """Silence what exporting prints that the export's own check makes moot: the tracer's
    warnings, TorchScript's deprecation, the ONNX exporter's progress."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.\w+` is deprecated")
        warnings.filterwarnings("ignore", module=r"torch\.onnx")
        warnings.filterwarnings("ignore", module=r"onnxscript")
        yield


def check_out(out: Path, force: bool) -> None:
    """Refuse an ``out`` that is a file, a folder that is not empty (unless it holds an export
    and ``force`` is given), and, whatever ``force``, a folder holding other files than an
    export's."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; name a folder to export into")
    held = {entry.name for entry in out.iterdir()} if out.is_dir() else set()
    if not held:
        return
    if CARD not in held or held - EXPORT_FILES:
        raise ConfigError(
            f"--out {out} is not empty and holds more than an export; choose another --out"
        )
    if not force:
        raise ConfigError(f"{out} already holds an export; pass --force to replace it")


def place(tmp: Path, out: Path) -> None:
    """Rename the finished folder ``tmp`` onto ``out``; a previous ``out`` (empty, or an
    export that ``--force`` replaces) is first renamed aside, and removed after."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except OSError:
        if old is not None:
            os.replace(old, out)
        raise
    _fsync(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def discard_leftovers(out: Path) -> None:
    """Remove what exports into ``out`` that were killed left beside it: ``.OUT.*.tmp`` and
    ``.OUT.old-*`` folders."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(out.parent):
            name = entry.name
            if name.startswith(f".{out.name}.") and (
                name.endswith(".tmp") or name.startswith(f".{out.name}.old-")
            ):
                shutil.rmtree(entry.path, ignore_errors=True)


def read_export(folder: str | Path) -> ExportCard:
    """The checked card of an export folder (its ``card_sha256``)."""
    path = Path(folder) / CARD
    return parse_card(ExportCard, read_json(path), path)
