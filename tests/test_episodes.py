"""EpisodeSampler: N-way K-shot Q-query episodes drawn from labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sketchshot.data.episodes import EpisodeSampler
from sketchshot.errors import DataError

N_CLASSES, PER_CLASS = 7, 6


@pytest.fixture
def labels() -> torch.Tensor:
    """7 classes x 6 items, shuffled so that dataset index and class are unrelated."""
    order = np.random.default_rng(0).permutation(N_CLASSES * PER_CLASS)
    return torch.arange(N_CLASSES).repeat_interleave(PER_CLASS)[torch.from_numpy(order)]


@pytest.mark.parametrize(("n_way", "n_shot", "n_query"), [(5, 1, 5), (3, 2, 4), (7, 5, 1)])
def test_episode_shapes_labels_and_disjointness(labels, n_way, n_shot, n_query):
    sampler = EpisodeSampler(labels, n_way, n_shot, n_query)
    rng = np.random.default_rng(1)
    for ep in sampler.episodes(20, rng):
        assert ep.classes.shape == (n_way,)
        assert len(set(ep.classes.tolist())) == n_way, "classes repeat within an episode"
        assert ep.support.shape == (n_way * n_shot,)
        assert ep.query.shape == (n_way * n_query,)
        assert ep.support_labels.tolist() == [c for c in range(n_way) for _ in range(n_shot)]
        assert ep.query_labels.tolist() == [c for c in range(n_way) for _ in range(n_query)]
        assert set(ep.support_labels.tolist()) == set(range(n_way))
        # no index twice, and support and query are disjoint
        both = np.concatenate([ep.support, ep.query])
        assert len(set(both.tolist())) == len(both)
        # episode label c really is dataset class classes[c], in support and in query
        for idx, lab in zip(ep.support, ep.support_labels, strict=True):
            assert labels[idx] == ep.classes[lab]
        for idx, lab in zip(ep.query, ep.query_labels, strict=True):
            assert labels[idx] == ep.classes[lab]


def test_episodes_cover_every_class_and_item(labels):
    sampler = EpisodeSampler(labels, 3, 1, 1)
    seen_classes, seen_items = set(), set()
    for ep in sampler.episodes(300, np.random.default_rng(2)):
        seen_classes.update(ep.classes.tolist())
        seen_items.update(np.concatenate([ep.support, ep.query]).tolist())
    assert seen_classes == set(range(N_CLASSES))
    assert seen_items == set(range(N_CLASSES * PER_CLASS))


def test_same_seed_same_episodes_other_seed_other_episodes(labels):
    sampler = EpisodeSampler(labels, 4, 1, 3)

    def draw(seed):
        return [
            (ep.classes.tolist(), ep.support.tolist(), ep.query.tolist())
            for ep in sampler.episodes(10, np.random.default_rng(seed))
        ]

    assert draw(5) == draw(5)
    assert draw(5) != draw(6)
    # a fresh sampler on the same labels draws the same episodes too
    again = EpisodeSampler(labels, 4, 1, 3)
    assert [ep.query.tolist() for ep in again.episodes(10, np.random.default_rng(5))] == [
        q for _, _, q in draw(5)
    ]


def test_too_few_images_in_a_class_names_it(labels):
    keep = ~((labels == 4) & (torch.arange(len(labels)) % 2 == 0))  # class 4 loses some items
    small = labels[keep]
    count = int((small == 4).sum())
    assert count < PER_CLASS
    names = tuple(f"alphabet/char{c}" for c in range(N_CLASSES))
    with pytest.raises(DataError) as info:
        EpisodeSampler(small, 3, 1, count, class_names=names)  # needs count + 1
    message = str(info.value)
    assert message == (
        f"a 1-shot {count}-query episode needs {count + 1} images per class; 1 class(es) have "
        f"fewer: 'alphabet/char4' ({count}); lower --shots/--queries or drop them with "
        "--exclude-classes"
    )
    assert "char3" not in message  # only the short class is named
    EpisodeSampler(small, 3, 1, count - 1, class_names=names)  # one fewer query fits


def test_too_few_images_without_names_uses_the_label():
    with pytest.raises(DataError, match=r"'2' \(1\)"):
        EpisodeSampler(torch.tensor([0, 0, 0, 1, 1, 1, 2]), 2, 1, 1)


def test_fewer_classes_than_ways(labels):
    with pytest.raises(DataError, match="8-way episodes need 8 classes, the data has 7"):
        EpisodeSampler(labels, 8, 1, 1)
    EpisodeSampler(labels, 7, 1, 1)
