"""Few-shot methods and fine-tuning options: Matching, Relation and Siamese networks against
their papers' formulas, rotation classes, a frozen encoder, head learning rates, patience,
and fine-tuning under torchrun."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from helpers import torchrun
from sketchshot import engine
from sketchshot.config import resolve_config
from sketchshot.data import load_dataset
from sketchshot.data.dataset import with_mirrors, with_rotations
from sketchshot.data.glyphs import make_glyphs
from sketchshot.encoders import create_encoder
from sketchshot.errors import ConfigError
from sketchshot.evaluation import embed
from sketchshot.methods import create_method
from sketchshot.protocols.episodes import episodes_protocol

TINY = {
    "data.builtin.n_classes": 40,
    "data.split_fractions": (0.7, 0.1, 0.2),
    "data.builtin.n_drawers": 10,
    "finetune.n_way": 10,
    "finetune.episodes_per_epoch": 20,
    "finetune.epochs": 2,
    "finetune.val_episodes": 50,
}


def test_matching_cosine_attention_is_the_papers_formula() -> None:
    torch.manual_seed(0)
    m = create_method("matching", create_encoder("conv4"))
    support, query = torch.randn(6, 64), torch.randn(4, 64)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    got = m.score(support, labels, query, 3)
    cos = F.cosine_similarity(query[:, None], support[None], dim=-1)
    attention = torch.softmax(cos * m.log_scale.exp(), dim=1)
    want = torch.stack([attention[:, labels == c].sum(1) for c in range(3)], dim=1).log()
    torch.testing.assert_close(got, want)
    assert torch.allclose(got.exp().sum(1), torch.ones(4))


def test_matching_mlp_attention_scores_pairs() -> None:
    m = create_method("matching", create_encoder("conv4"), attention="mlp")
    assert m.attention_logits(torch.randn(6, 64), torch.randn(4, 64)).shape == (4, 6)
    with pytest.raises(ValueError, match="attention"):
        create_method("matching", create_encoder("conv4"), attention="dot")


def test_relation_scores_lie_in_unit_interval_and_train_with_mse() -> None:
    torch.manual_seed(0)
    m = create_method("relation", create_encoder("conv4")).eval()
    scores = m.score(torch.randn(6, 64), torch.tensor([0, 0, 1, 1, 2, 2]), torch.randn(4, 64), 3)
    assert scores.shape == (4, 3) and (scores >= 0).all() and (scores <= 1).all()
    labels = torch.tensor([0, 1, 2, 0])
    torch.testing.assert_close(
        m.loss(scores, labels), ((scores - F.one_hot(labels, 3)) ** 2).mean()
    )


def test_siamese_scores_a_class_by_its_best_support_and_balances_pairs() -> None:
    torch.manual_seed(0)
    m = create_method("siamese", create_encoder("conv4")).eval()
    support, query = torch.randn(6, 64), torch.randn(3, 64)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    pairs = m.pair_logits(support, query)
    want = torch.stack([pairs[:, labels == c].amax(1) for c in range(3)], dim=1)
    torch.testing.assert_close(m.score(support, labels, query, 3), want)
    q_labels = torch.tensor([0, 1, 2])
    loss, _ = m.episode_loss(support, labels, query, q_labels, 3)
    same = (q_labels[:, None] == labels[None]).float()  # 6 positives, 12 negatives
    weights = torch.where(same.bool(), 2.0, 1.0)
    bce = F.binary_cross_entropy_with_logits(pairs, same, reduction="none")
    torch.testing.assert_close(loss, (bce * weights).mean())


def test_rotations_add_three_rotated_copies_of_each_class() -> None:
    data = make_glyphs(3, 2, 16)
    rotated = with_rotations(data)
    assert len(rotated.class_names) == 12 and len(rotated) == 24
    assert rotated.class_names[3 + 1] == f"{data.class_names[1]}@rot90"
    first = (rotated.labels == 3).nonzero()[0, 0]  # glyph-000 turned by 90 degrees
    assert torch.equal(rotated.images[first], torch.rot90(data.images[0], 1, dims=(1, 2)))
    assert torch.bincount(rotated.labels).tolist() == [2] * 12


def test_mirrors_then_rotations_give_the_eight_symmetries_of_each_class() -> None:
    data = make_glyphs(3, 2, 16)
    mirrored = with_mirrors(data)
    assert mirrored.class_names[3:] == tuple(f"{n}@mirror" for n in data.class_names)
    assert torch.equal(mirrored.images[6], torch.flip(data.images[0], dims=(2,)))
    assert torch.bincount(mirrored.labels).tolist() == [2] * 6
    eight = with_rotations(mirrored)
    assert len(eight.class_names) == 24 and len(eight) == 48
    assert eight.class_names[6 + 3] == f"{data.class_names[0]}@mirror@rot90"
    assert len({bytes(im.numpy()) for im in eight.images[eight.labels < 24]}) == 48


def test_frozen_encoder_trains_only_the_head(tmp_path: Path) -> None:
    cfg = resolve_config(overrides={**TINY, "finetune.method": "relation",
                                    "finetune.freeze_encoder": True})  # fmt: skip
    torch.manual_seed(cfg.seed)
    before = create_encoder("conv4").state_dict()
    run = engine.finetune(cfg, tmp_path / "frozen", quiet=True)
    model, meta = engine.load_model(run.run_dir)
    for key, value in before.items():
        if "num_batches_tracked" not in key:
            torch.testing.assert_close(model.encoder.state_dict()[key], value, msg=key)
    assert meta.config["finetune"]["freeze_encoder"] is True
    with pytest.raises(ConfigError, match="nothing to train"):
        engine.finetune(resolve_config(overrides={**TINY, "finetune.freeze_encoder": True}),
                        tmp_path / "proto", quiet=True)  # fmt: skip


def test_head_learning_rate_is_its_own_parameter_group() -> None:
    m = create_method("relation", create_encoder("conv4"))
    encoder, head = m.parameter_groups(head_lr_scale=10.0)
    assert encoder["lr_scale"] == 1.0 and head["lr_scale"] == 10.0
    assert {id(p) for p in encoder["params"]} == {id(p) for p in m.encoder.parameters()}
    assert {id(p) for p in head["params"]} == {id(p) for p in m.relation.parameters()}


def test_patience_stops_training_early(tmp_path: Path) -> None:
    cfg = resolve_config(overrides={**TINY, "finetune.epochs": 30, "finetune.patience": 1,
                                    "finetune.optim.lr": 1e-6, "finetune.episodes_per_epoch": 5,
                                    "finetune.val_episodes": 20})  # fmt: skip
    run = engine.finetune(cfg, tmp_path / "patient", quiet=True)
    assert run.fit.stopped == "early_stop"
    assert run.fit.epochs < 30
    assert run.fit.epochs - run.fit.best["epoch"] == 1


@pytest.mark.parametrize("method", ["matching", "relation", "siamese"])
def test_each_method_learns_on_the_builtin_glyphs(method: str, tmp_path: Path) -> None:
    cfg = resolve_config(overrides={**TINY, "finetune.method": method, "finetune.epochs": 3,
                                    "evaluate.n_query": 5, "evaluate.episodes": 300})  # fmt: skip
    torch.manual_seed(cfg.seed)
    untrained = create_method(method, create_encoder("conv4")).eval()
    test = load_dataset(cfg.data, 28, "test")
    embeddings = embed(untrained, test.images, torch.device("cpu"))
    before = episodes_protocol(untrained, embeddings, test, 5, 1, 5, 300, 0).figures[0].accuracy
    run = engine.finetune(cfg, tmp_path / method, quiet=True)
    after = engine.evaluate(cfg, run.run_dir).accuracy
    # measured: matching 0.60 -> 0.84, relation 0.20 -> 0.6+, siamese 0.25 -> 0.51 after 60
    # short episodes (5-way 1-shot on unseen glyphs, chance 0.20)
    assert after > max(before + 0.15, 0.45), (before, after)


def test_protonet_cosine_distance_has_a_learnable_scale() -> None:
    m = create_method("protonet", create_encoder("conv4"), distance="cosine")
    support, query = torch.randn(4, 64), torch.randn(3, 64)
    labels = torch.tensor([0, 0, 1, 1])
    protos = torch.stack([support[:2].mean(0), support[2:].mean(0)])
    want = F.cosine_similarity(query[:, None], protos[None], dim=-1) * m.log_scale.exp()
    torch.testing.assert_close(m.score(support, labels, query, 2), want)
    assert "log_scale" in dict(m.named_parameters())
    assert create_method("protonet", create_encoder("conv4")).log_scale is None


def test_matching_mlp_has_no_unused_scale_and_relation_probabilities_sum_to_one() -> None:
    mlp = create_method("matching", create_encoder("conv4"), attention="mlp")
    assert mlp.log_scale is None  # DDP refuses parameters that get no gradient
    relation = create_method("relation", create_encoder("conv4")).eval()
    scores = relation.score(torch.randn(3, 64), torch.tensor([0, 1, 2]), torch.randn(4, 64), 3)
    torch.testing.assert_close(relation.probabilities(scores).sum(1), torch.ones(4))


def test_torchrun_two_cpu_processes_finetune_and_save_a_loadable_model(tmp_path: Path) -> None:
    args = ["finetune", "--ways", "8", "--shots", "1", "--queries", "3", "--epochs", "2",
            "--out", "ddp", "--device", "cpu", "--json", "--quiet"]  # fmt: skip
    (tmp_path / "tiny.toml").write_text(
        "[data.builtin]\nn_classes = 30\nn_drawers = 6\n"
        "[finetune]\nepisodes_per_epoch = 6\nval_episodes = 20\n"
    )
    done = torchrun([*args, "--config", "tiny.toml"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [x for x in done.stdout.splitlines() if x.startswith("{")]
    assert len(lines) == 1, done.stdout  # rank 0 alone reports
    records = [json.loads(x) for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r.get("event") == "epoch_end"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert all(0 <= e["val_acc"] <= 1 for e in epochs)
    model, meta = engine.load_model(tmp_path / "ddp")
    assert not any(k.startswith("module.") for k in model.state_dict())
    # each rank trains on its own 6 episodes an epoch; DDP averages their gradients
    assert meta.metrics["steps"] == 2 * 6
