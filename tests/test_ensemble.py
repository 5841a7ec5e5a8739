"""``sketchshot ensemble``: ProtoNet runs side by side as one model, whose embeddings are the
members' concatenated and whose logits are the sum of theirs, taken by every command that
takes a model; and the runs it refuses, writing nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import sketchshot
from helpers import one_line_error, plain, sketch_array, write_folder, write_png
from sketchshot import engine
from sketchshot.checkpoint import load_model, save_model
from sketchshot.compute import inference_encoder
from sketchshot.config import METHOD_SETTINGS, Config, DataConfig, EnsembleConfig
from sketchshot.encoders import ENCODERS, create_encoder
from sketchshot.encoders.ensemble import EnsembleEncoder
from sketchshot.errors import CheckpointError, ConfigError
from sketchshot.evaluation import embed
from sketchshot.export import quiet_export
from sketchshot.methods import create_method
from sketchshot.ranking import sketch_encoder
from sketchshot.runs import model_spec

CLASSES = {f"alpha/c{i}": 8 for i in range(6)}
WIDTHS = (16, 8)  # members of different widths: 16 + 8 features at 28 px


def images(n: int, size: int = 28, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


def random_statistics(module: torch.nn.Module, seed: int) -> None:
    """BatchNorm running statistics off their defaults, so that eval mode (and BatchNorm
    folded into the convolutions) computes something a mix-up of members would change."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)


def save_run(
    folder: Path,
    data: Path,
    seed: int,
    width: int = 16,
    method: str = "protonet",
    image_size: int = 28,
    invert: str = "auto",
    class_names: tuple[str, ...] = tuple(sorted(CLASSES)[:3]),
    **method_args: object,
) -> Path:
    """A run folder as ``finetune`` leaves one: a conv4 ``method`` with random weights, its
    config pointing at ``data`` with half the classes held out for testing."""
    torch.manual_seed(seed)
    settings = METHOD_SETTINGS[method](**method_args)
    encoder = create_encoder("conv4", width=width, image_size=image_size)
    model = create_method(method, encoder, settings)
    random_statistics(model, seed)
    cfg = Config(data=DataConfig(source=str(data), split_fractions=(0.5, 0.0, 0.5)))
    card = {
        "model": model_spec(settings, "conv4", image_size, "random", {"width": width}),
        "preprocessing": {"image_size": image_size, "invert": invert},
        "class_names": class_names,
        "data": {"origin": str(data), "images": 24},
        "config": cfg.model_dump(mode="json"),
    }
    save_model(folder / "model", model.eval(), card)
    return folder


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return write_folder(tmp_path / "data", CLASSES)


@pytest.fixture
def runs(tmp_path: Path, data: Path) -> tuple[Path, Path]:
    return tuple(  # type: ignore[return-value]
        save_run(tmp_path / f"run{i}", data, seed=i, width=w) for i, w in enumerate(WIDTHS)
    )


@pytest.fixture
def ensembled(cli, runs, tmp_path) -> tuple[Path, dict]:
    out = tmp_path / "ens"
    result = cli("ensemble", *runs, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


def members_of(runs):
    return [load_model(run)[0] for run in runs]


# ---------------------------------------------------------------- one model of several


def test_the_ensemble_embeds_as_the_members_side_by_side(ensembled, runs):
    out, result = ensembled
    assert result["members"] == [str(r) for r in runs] and result["notes"] == []
    assert (result["embedding_dim"], result["image_size"]) == (sum(WIDTHS), 28)
    ensemble, card = load_model(out)
    assert isinstance(ensemble.encoder, EnsembleEncoder)
    assert (card.model.method, card.model.method_args) == ("protonet", {"distance": "euclidean"})
    assert result["model_sha256"] == card.sha256
    x = images(7, seed=3)
    with torch.no_grad():
        expected = torch.cat([m.encoder(x) for m in members_of(runs)], dim=1)
        got = ensemble.encoder(x)
    assert got.shape == (7, sum(WIDTHS))
    assert (got - expected).abs().max() <= 1e-6
    # the weights are the members' own, under members.<i>.
    for i, member in enumerate(members_of(runs)):
        for key, value in member.encoder.state_dict().items():
            assert torch.equal(ensemble.state_dict()[f"encoder.members.{i}.{key}"], value)


def test_its_logits_are_the_sum_of_the_members_protonet_logits(ensembled, runs):
    ensemble, _ = load_model(ensembled[0])
    members = members_of(runs)
    support, query = images(6, seed=4), images(5, seed=5)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    with torch.no_grad():
        mine = ensemble.score(ensemble.encoder(support), labels, ensemble.encoder(query), 3)
        theirs = [m.score(m.encoder(support), labels, m.encoder(query), 3) for m in members]
    total = theirs[0] + theirs[1]
    assert torch.allclose(mine, total, rtol=1e-5, atol=1e-5 * total.abs().max().item())
    assert not torch.allclose(mine, theirs[0], rtol=1e-3)  # both members count


def test_the_card_records_the_runs_and_the_first_runs_data(ensembled, runs):
    out, _ = ensembled
    card = json.loads((out / "model.json").read_text(encoding="utf-8"))
    first = json.loads((runs[0] / "model.json").read_text(encoding="utf-8"))
    for ref, run in zip(card["members"], runs, strict=True):
        member = json.loads((run / "model.json").read_text(encoding="utf-8"))
        assert (ref["path"], ref["sha256"]) == (str(run.resolve()), member["sha256"])
        assert (ref["method"], ref["encoder"]) == ("protonet", "conv4")
    assert card["model"]["encoder_args"] == {
        "members": [
            {"encoder": "conv4", "encoder_args": {"width": w, "image_size": 28}} for w in WIDTHS
        ],  # fmt: skip
        "image_size": 28,
    }
    for key in ("preprocessing", "config", "data", "class_names"):
        assert card[key] == first[key], key
    assert "members" not in first  # a run's own card is written as before


def test_evaluate_without_data_works_as_for_the_first_run(cli, ensembled, runs):
    args = ("--ways", 3, "--queries", 3, "--episodes", 10, "--json", "--device", "cpu")
    alone = cli("evaluate", "--model", runs[0], *args)
    together = cli("evaluate", "--model", ensembled[0], *args)
    assert alone.exit_code == 0, alone.output
    assert together.exit_code == 0, together.output
    a, b = json.loads(alone.stdout), json.loads(together.stdout)
    for key in ("data", "split", "n_classes", "n_images", "n_way", "episodes"):
        assert a[key] == b[key], key
    assert (b["split"], b["n_classes"]) == ("test", 3)
    assert b["model_sha256"] == ensembled[1]["model_sha256"]
    tta = cli("evaluate", "--model", ensembled[0], *args, "--tta", 2)
    assert tta.exit_code == 0, tta.output


def test_embed_equals_the_members_embeddings_side_by_side(cli, ensembled, runs, data, tmp_path):
    outs = []
    for i, model in enumerate((*runs, ensembled[0])):
        outs.append(tmp_path / f"e{i}.npy")
        result = cli("embed", data, "--model", model, "--out", outs[-1], "--device", "cpu")
        assert result.exit_code == 0, result.output
    a, b, both = (np.load(p) for p in outs)
    assert both.shape == (48, sum(WIDTHS))
    np.testing.assert_allclose(both, np.concatenate([a, b], axis=1), atol=1e-5)


def test_test_time_views_are_the_members_views_side_by_side(ensembled, runs):
    # each view is drawn once per batch, so every member sees the same augmented images
    pixels = (images(10, seed=11) * 255).to(torch.uint8)
    cpu = torch.device("cpu")
    ensemble, _ = load_model(ensembled[0])
    together = embed(ensemble, pixels, cpu, views=4, seed=3)
    apart = torch.cat([embed(m, pixels, cpu, views=4, seed=3) for m in members_of(runs)], 1)
    assert (together - apart).abs().max() <= 1e-5


def test_enroll_predict_and_the_python_api_take_it(cli, ensembled, tmp_path):
    support = write_folder(tmp_path / "support", {"a": 2, "b": 2, "c": 2})
    bank = tmp_path / "bank"
    result = cli("enroll", "--model", ensembled[0], "--support", support, "--out", bank,
                 "--json", "--device", "cpu")  # fmt: skip
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "bank.json").read_text(encoding="utf-8"))
    assert meta["embedding_dim"] == sum(WIDTHS)
    assert meta["built_with"]["sha256"] == ensembled[1]["model_sha256"]
    query = write_png(tmp_path / "q" / "b.png", sketch_array(1, 5))
    result = cli("predict", query, "--bank", bank, "--json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout.splitlines()[0])
    assert row["label"] in ("a", "b", "c") and row["error"] is None

    model = sketchshot.load(ensembled[0], device="cpu")
    assert "protonet/ensemble" in repr(model) and model.image_size == 28
    assert model.embed(query).shape == (1, sum(WIDTHS))
    assert model.predict(query, support)[0].label in ("a", "b", "c")


def test_info_names_each_run_and_its_hash(cli, ensembled, runs):
    result = cli("info", ensembled[0])
    assert result.exit_code == 0, result.output
    shown = plain(result.stdout)
    assert "ensemble of conv4 + conv4, side by side" in shown
    for i, run in enumerate(runs, start=1):
        sha = json.loads((run / "model.json").read_text(encoding="utf-8"))["sha256"]
        assert f"member {i}" in shown and sha in shown
    as_json = json.loads(cli("info", ensembled[0], "--json").stdout)
    assert [m["path"] for m in as_json["members"]] == [str(r.resolve()) for r in runs]


def run_export(fmt: str, folder: Path):
    """The exported encoder as a function of images."""
    if fmt == "torchscript":
        with quiet_export():
            loaded = torch.jit.load(str(folder / "encoder.pt"), map_location="cpu")
        return lambda x: loaded(x).detach().numpy()
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(folder / "encoder.onnx"), providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"images": x.numpy()})[0]


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_an_export_computes_the_members_side_by_side(cli, ensembled, runs, tmp_path, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnxscript")
    out = tmp_path / "exported"
    result = cli("export", ensembled[0], "--format", fmt, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["embedding_dim"] == sum(WIDTHS)
    x = images(9, seed=6)
    with torch.no_grad():
        expected = torch.cat([m.encoder(x) for m in members_of(runs)], dim=1).numpy()
    assert abs(run_export(fmt, out)(x) - expected).max() <= 1e-5


def test_a_run_given_twice_counts_twice_and_is_noted(cli, runs, tmp_path):
    result = cli("ensemble", runs[0], runs[0], "--out", tmp_path / "twice")
    assert result.exit_code == 0, result.output
    assert "is given twice" in plain(result.stderr)
    ensemble, _ = load_model(tmp_path / "twice")
    member = members_of(runs[:1])[0]
    support, query, labels = images(3, seed=7), images(4, seed=8), torch.tensor([0, 1, 2])
    with torch.no_grad():
        mine = ensemble.score(ensemble.encoder(support), labels, ensemble.encoder(query), 3)
        alone = member.score(member.encoder(support), labels, member.encoder(query), 3)
    assert torch.allclose(mine, 2 * alone, rtol=1e-5, atol=1e-4)
    quiet = cli("ensemble", runs[0], runs[0], "--out", tmp_path / "quiet", "--quiet")
    assert quiet.exit_code == 0 and quiet.stderr == ""


def test_without_out_it_writes_a_new_folder_under_runs(cli, runs, tmp_path):
    result = cli("ensemble", *runs, "--json")  # the cli fixture works in tmp_path
    assert result.exit_code == 0, result.output
    out = Path(json.loads(result.stdout)["out"])
    assert out.parent == Path("runs") and out.name.startswith("ensemble-protonet-")
    assert (tmp_path / out / "model.json").is_file()


def test_an_ensemble_of_an_ensemble_is_the_flat_one(cli, ensembled, runs, data, tmp_path):
    third = save_run(tmp_path / "run2", data, seed=2, width=4)
    result = cli("ensemble", ensembled[0], third, "--out", tmp_path / "nested")
    assert result.exit_code == 0, result.output
    nested, _ = load_model(tmp_path / "nested")
    x = images(3, seed=9)
    with torch.no_grad():
        flat = torch.cat([m.encoder(x) for m in members_of((*runs, third))], dim=1)
        assert (nested.encoder(x) - flat).abs().max() <= 1e-6


def test_members_trained_on_other_data_are_noted(cli, runs, tmp_path):
    other_data = write_folder(tmp_path / "other-data", {f"beta/c{i}": 8 for i in range(6)})
    other = save_run(tmp_path / "other", other_data, seed=5, class_names=("x", "y"))
    result = cli("ensemble", runs[0], other, "--out", tmp_path / "mixed", "--json")
    assert result.exit_code == 0, result.output
    (said,) = json.loads(result.stdout)["notes"]
    assert f"{other} was trained on other data or classes than {runs[0]}" in said
    card = json.loads((tmp_path / "mixed" / "model.json").read_text(encoding="utf-8"))
    first = json.loads((runs[0] / "model.json").read_text(encoding="utf-8"))
    assert card["config"] == first["config"] and card["class_names"] == []


def test_inference_folds_every_members_batchnorm(ensembled):
    ensemble, _ = load_model(ensembled[0])
    fast = inference_encoder(ensemble.encoder, torch.device("cpu"))
    assert fast is not ensemble.encoder  # traced, not the fallback
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    x = images(5, seed=10)
    with torch.no_grad():
        assert (fast(x) - ensemble.encoder(x)).abs().max() <= 1e-5


# ---------------------------------------------------------------- refusals


def refused(cli, tmp_path, *runs, code=2) -> str:
    out = tmp_path / "refused"
    result = cli("ensemble", *runs, "--out", out)
    assert result.exit_code == code, result.output
    assert not out.exists()  # nothing written
    return one_line_error(result)


def test_one_run_is_refused(cli, runs, tmp_path):
    assert "at least 2 runs, got 1" in refused(cli, tmp_path, runs[0])


@pytest.mark.parametrize(
    "method, args, says",
    [
        ("protonet", {"distance": "cosine"}, "a ProtoNet with distance cosine"),
        ("matching", {}, "is a matching model, not a ProtoNet"),
    ],
)
def test_a_member_that_is_not_a_euclidean_protonet_is_refused(
    cli, runs, data, tmp_path, method, args, says
):
    other = save_run(tmp_path / "other", data, seed=3, method=method, **args)
    message = refused(cli, tmp_path, runs[0], other)
    assert says in message and "only with distance euclidean" in message


@pytest.mark.parametrize(
    "change, says",
    [({"image_size": 32}, "image_size 32"), ({"invert": "yes"}, "invert yes")],
)
def test_members_that_see_other_images_are_refused(cli, runs, data, tmp_path, change, says):
    other = save_run(tmp_path / "other", data, seed=3, **change)
    message = refused(cli, tmp_path, runs[0], other)
    assert says in message and "must see the same images" in message


def test_a_folder_holding_a_model_and_a_missing_run_are_refused(cli, runs, tmp_path):
    result = cli("ensemble", *runs, "--out", runs[1])
    assert result.exit_code == 2 and "already holds a model" in one_line_error(result)
    message = refused(cli, tmp_path, runs[0], tmp_path / "nowhere", code=1)
    assert "no saved model" in message


def test_fine_tuning_from_an_ensemble_is_refused(ensembled):
    method, _ = load_model(ensembled[0])
    with pytest.raises(ConfigError, match="no one encoder to fine-tune from"):
        sketch_encoder(method, ensembled[0])


def test_the_cli_hands_the_runs_and_out_to_the_engine(cli, monkeypatch):
    seen = []

    def fake(cfg):
        seen.append(cfg)
        raise CheckpointError("stop here")

    monkeypatch.setattr(engine, "ensemble", fake)
    result = cli("ensemble", "a", "b", "c", "--out", "o")
    assert result.exit_code == 1 and one_line_error(result) == "error: stop here"
    assert seen == [EnsembleConfig(runs=(Path("a"), Path("b"), Path("c")), out=Path("o"))]
    cli("ensemble", "a", "b")
    assert seen[-1] == EnsembleConfig(runs=(Path("a"), Path("b")), out=None)


# ---------------------------------------------------------------- the encoder


def test_the_encoder_is_built_by_name_but_not_offered_for_training():
    assert "ensemble" not in ENCODERS.names()
    with pytest.raises(ConfigError) as info:
        create_encoder("nope", image_size=28)
    assert "ensemble" not in str(info.value)
    with pytest.raises(ValueError, match="registered twice"):
        ENCODERS.register("ensemble")(lambda **kw: None)
    members = [{"encoder": "conv4", "encoder_args": {"width": 4}},
               {"encoder": "sketch_cnn", "encoder_args": {"embedding_dim": 8}}]  # fmt: skip
    encoder = create_encoder("ensemble", members=members, image_size=32)
    assert encoder.embedding_dim == 4 * 2 * 2 + 8
    out = encoder(images(3, size=32))
    assert out.shape == (3, encoder.embedding_dim) and torch.isfinite(out).all()
    out.pow(2).mean().backward()
    for name, p in encoder.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    "members, says",
    [
        ([], "at least one member"),
        ([{"encoder": "conv4"}], "expected the keys encoder and encoder_args"),
        ([{"encoder": "conv4", "encoder_args": {"image_size": 32}}], "works at 32 px"),
    ],
)
def test_a_bad_member_list_is_refused(members, says):
    with pytest.raises(ConfigError, match=says):
        EnsembleEncoder(members, image_size=28)
