"""``sketchshot export``: a saved model's encoder (and learned scoring) as ONNX or TorchScript
gives our embeddings and scores to 1e-5 when loaded back by onnxruntime or torch.jit, with an
``export.json`` that describes it; the folder appears whole or not at all."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import sketchshot.export as export_module
from helpers import model_spec, one_line_error, plain, write_folder
from sketchshot import engine
from sketchshot.checkpoint import load_model, save_model
from sketchshot.cli import app
from sketchshot.config import Config, DataConfig, ExportConfig
from sketchshot.data import load_source
from sketchshot.encoders import create_encoder
from sketchshot.errors import ConfigError, ExportError
from sketchshot.evaluation import embed
from sketchshot.export import read_export
from sketchshot.methods import create_method, prototypes
from sketchshot.methods.fewshot.siamese import best_per_class

MATCH = 1e-5  # what the issue asks of an export: our embeddings to 1e-5
SIZES = {"conv4": 28, "resnet18": 32}


def save_run(run: Path, method: str, encoder: str, **method_args: object) -> Path:
    """A model as a run folder: random weights, and batch-norm statistics that are not the
    identity, so that an export whose batch norm ran in training mode would not match."""
    torch.manual_seed(0)
    size = SIZES[encoder]
    class_names = ["cup", "hat", "key"] if method == "supervised" else []
    if method == "supervised":
        method_args["n_classes"] = len(class_names)
    spec = model_spec(method, encoder, size, **method_args)
    model = create_method(method, create_encoder(encoder, image_size=size), **method_args)
    g = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.copy_(torch.rand(module.num_features, generator=g) * 0.4 - 0.2)
            module.running_var.copy_(torch.rand(module.num_features, generator=g) + 0.5)
    save_model(
        run / "model",
        model,
        {
            "model": spec,
            "preprocessing": {"image_size": size, "invert": "auto", "mean": 0.5, "std": 0.5},
            "class_names": class_names,
            "config": Config().model_dump(mode="json"),
        },
    )
    return run


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Drawings of three classes, dark on white (the preprocessing inverts them)."""
    return write_folder(
        tmp_path_factory.mktemp("export-data") / "data", {"cup": 3, "hat": 2, "key": 2}
    )


def our_pixels(root: Path, size: int) -> torch.Tensor:
    """The images as the model's preprocessing decodes them: uint8 [N, 1, S, S]."""
    return load_source(str(root), size, DataConfig(source=str(root))).images


def onnx_runner(path: Path):
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return lambda *xs: session.run(None, dict(zip(names, (x.numpy() for x in xs), strict=True)))[0]


def torchscript_runner(path: Path):
    with warnings.catch_warnings():  # torch.jit is deprecated in torch 2.10+; loading still works
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(path))

    def run(*xs: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return module(*xs).numpy()

    return run


RUNNERS = {"onnx": onnx_runner, "torchscript": torchscript_runner}


def exported(tmp_path: Path, fmt: str, method: str, encoder: str, **method_args: object):
    """(model, card, export folder) of a fresh run exported as ``fmt``."""
    if fmt == "onnx":
        pytest.importorskip("onnxscript")
        pytest.importorskip("onnxruntime")
    run = save_run(tmp_path / f"{method}-{encoder}", method, encoder, **method_args)
    result = engine.export_model(ExportConfig(model=run, format=fmt, out=tmp_path / "out"))
    model, card = load_model(run)
    return model, card, result


# ---------------------------------------------------------------- numbers


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("encoder", ["conv4", "resnet18"])
def test_the_exported_encoder_gives_our_embeddings(tmp_path, images, fmt, encoder):
    model, card, result = exported(tmp_path, fmt, "protonet", encoder)
    pixels = our_pixels(images, card.preprocessing.image_size)
    ours = embed(model, pixels, torch.device("cpu")).numpy()
    run = RUNNERS[fmt](result.out / f"encoder{export_module.SUFFIXES[fmt]}")
    inputs = pixels.float() / 255  # export.json's "pixels": uint8 / 255, strokes bright
    theirs = run(inputs)
    assert theirs.shape == ours.shape == (7, result.embedding_dim)
    assert np.abs(theirs - ours).max() <= MATCH
    assert np.abs(run(inputs[:1]) - ours[:1]).max() <= MATCH  # the batch is free, 1 included
    assert result.max_abs_diff["encoder"] <= MATCH  # export's own check, on other batch sizes


def test_export_json_says_how_to_feed_the_model(tmp_path):
    model, card, result = exported(tmp_path, "torchscript", "protonet", "conv4")
    described = read_export(result.out)  # hash-checked (card_sha256)
    assert described.format == "torchscript" and described.kind == "export"
    assert described.preprocessing == card.preprocessing  # image size, inversion, mean, std
    assert "(x - mean) / std" in described.pixels and "[0, 1]" in described.pixels
    assert described.encoder.inputs == {"images": ["batch", 1, 28, 28]}
    assert described.encoder.outputs == {"embeddings": ["batch", 64]}
    assert described.embedding_dim == 64
    assert described.source.sha256 == card.sha256 and described.model == card.model
    assert described.torch_version == torch.__version__
    assert described.sketchshot_version and described.onnx_opset is None
    assert described.scoring.module is None and "squared Euclidean" in described.scoring.rule
    assert sorted(p.name for p in result.out.iterdir()) == ["encoder.pt", "export.json"]
    assert result.files == ("encoder.pt", "export.json")
    assert described.encoder.sha256 == export_module.sha256_of(result.out / "encoder.pt")


def test_onnx_records_its_opset_and_dynamic_batch(tmp_path):
    onnx = pytest.importorskip("onnx")
    _, _, result = exported(tmp_path, "onnx", "protonet", "conv4")
    described = read_export(result.out)
    graph = onnx.load(str(result.out / "encoder.onnx")).graph
    assert [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == [
        "batch", 1, 28, 28,
    ]  # fmt: skip
    assert described.onnx_opset >= 17 and described.check.runtime.startswith("onnxruntime")
    assert not list(result.out.glob("*.data"))  # the weights are inside the file


def our_scores(model, method: str, support, labels, query, n_way):
    """What the exported scoring module's output turns into, computed by ``model`` itself."""
    if method == "relation":
        return model.score(support, labels, query, n_way)
    if method == "siamese":
        return model.score(support, labels, query, n_way)
    if method == "matching":
        return model.attention_logits(support, query)
    return model.logits(query)


def scores_from_export(run, method: str, support, labels, query, n_way):
    if method == "relation":
        return torch.from_numpy(run(query, prototypes(support, labels, n_way)))
    if method == "siamese":
        return best_per_class(torch.from_numpy(run(query, support)), labels, n_way)
    if method == "matching":
        return torch.from_numpy(run(query, support))
    return torch.from_numpy(run(query))


@pytest.mark.parametrize(
    "fmt, method, encoder, args",
    [
        ("onnx", "relation", "conv4", {}),
        ("onnx", "supervised", "conv4", {}),
        ("torchscript", "relation", "conv4", {}),
        ("torchscript", "siamese", "conv4", {}),
        ("torchscript", "matching", "conv4", {"attention": "mlp"}),
        ("torchscript", "supervised", "conv4", {}),
    ],
)
def test_the_exported_scoring_gives_our_scores(tmp_path, images, fmt, method, encoder, args):
    model, card, result = exported(tmp_path, fmt, method, encoder, **args)
    described = read_export(result.out)
    assert (
        described.scoring.module is not None
        and result.files[1] == described.scoring.module.filename
    )
    pixels = our_pixels(images, card.preprocessing.image_size)
    with torch.no_grad():
        embeddings = model.encoder(pixels.float() / 255)
        labels = torch.tensor([0, 0, 0, 1, 1, 2, 2])
        support, query = embeddings, embeddings[[0, 3, 5, 6]]
        ours = our_scores(model, method, support, labels, query, 3)
    run = RUNNERS[fmt](result.out / described.scoring.module.filename)
    theirs = scores_from_export(run, method, support, labels, query, 3)
    assert theirs.shape == ours.shape and (theirs - ours).abs().max() <= MATCH
    if method == "supervised":
        assert described.class_names == ("cup", "hat", "key")
        assert described.scoring.module.outputs == {"logits": ["batch", 3]}


def test_a_learned_scale_is_written_down(tmp_path):
    model, _, result = exported(tmp_path, "torchscript", "protonet", "conv4", distance="cosine")
    scoring = read_export(result.out).scoring
    assert scoring.module is None and "times scale" in scoring.rule
    assert scoring.parameters["scale"] == pytest.approx(float(model.log_scale.detach().exp()))


# ---------------------------------------------------------------- the folder, errors


def invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def test_cli_exports_into_the_run_folder_and_replaces_only_with_force(tmp_path):
    run = save_run(tmp_path / "run", "protonet", "conv4")
    done = invoke("export", run, "--format", "torchscript", "--json")
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)
    out = run / "export-torchscript"
    assert result["out"] == str(out) and result["files"] == ["encoder.pt", "export.json"]
    assert result["max_abs_diff"]["encoder"] <= MATCH and result["embedding_dim"] == 64
    first = (out / "export.json").read_text()

    again = invoke("export", run, "--format", "torchscript")
    assert again.exit_code == 2 and "already holds an export; pass --force" in one_line_error(again)
    forced = invoke("export", run, "--format", "torchscript", "--force")
    assert forced.exit_code == 0, forced.output
    assert "saved" in forced.stdout and "encoder.pt, export.json" in forced.stdout
    assert json.loads((out / "export.json").read_text())["source"] == json.loads(first)["source"]
    assert [p.name for p in run.iterdir() if p.name.startswith(".")] == []  # no leftovers

    other = tmp_path / "notes"
    (other / "todo.txt").parent.mkdir()
    (other / "todo.txt").write_text("keep me")
    for extra in ((), ("--force",)):
        refused = invoke("export", run, "--format", "torchscript", "--out", other, *extra)
        assert refused.exit_code == 2 and "holds more than an export" in one_line_error(refused)
    assert [p.name for p in other.iterdir()] == ["todo.txt"]


def test_unknown_format_and_a_missing_onnx_extra(tmp_path, monkeypatch):
    run = save_run(tmp_path / "run", "protonet", "conv4")
    unknown = invoke("export", run, "--format", "tflite")
    assert unknown.exit_code == 2 and "tflite" in plain(unknown.output)
    monkeypatch.setattr(export_module, "_importable", lambda name: name != "onnxscript")
    missing = invoke("export", run, "--format", "onnx", "--out", tmp_path / "x")
    line = one_line_error(missing)
    assert missing.exit_code == 2 and "pip install 'sketchshot[onnx]'" in line
    assert "onnxscript" in line and not (tmp_path / "x").exists()


def test_a_failed_export_writes_nothing_and_keeps_the_previous_one(tmp_path, monkeypatch):
    run = save_run(tmp_path / "run", "relation", "conv4")
    out = tmp_path / "out"
    cfg = ExportConfig(model=run, format="torchscript", out=out)
    real = export_module.TorchScript.save

    def fails_on_scoring(self, module, examples, names, output, path):
        if path.stem == "scoring":
            raise RuntimeError("unsupported operator aten::frobnicate\nmore detail")
        return real(self, module, examples, names, output, path)

    monkeypatch.setattr(export_module.TorchScript, "save", fails_on_scoring)
    with pytest.raises(ExportError, match="cannot export the scoring as TorchScript: unsupported"):
        engine.export_model(cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no out, no temporary folder

    monkeypatch.setattr(export_module.TorchScript, "save", real)
    engine.export_model(cfg)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def wrong(self, path, inputs):  # an export that computes something else
        return real_run(self, path, inputs) + 1e-2

    real_run = export_module.TorchScript.run
    monkeypatch.setattr(export_module.TorchScript, "run", wrong)
    forced = cfg.model_copy(update={"force": True})
    with pytest.raises(ExportError, match="differs from the model by 0.01"):
        engine.export_model(forced)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "run"]


def test_out_must_be_a_folder(tmp_path):
    run = save_run(tmp_path / "run", "protonet", "conv4")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        engine.export_model(ExportConfig(model=run, format="torchscript", out=tmp_path / "file"))
    (tmp_path / "empty").mkdir()
    engine.export_model(ExportConfig(model=run, format="torchscript", out=tmp_path / "empty"))
    assert (tmp_path / "empty" / "export.json").is_file()
