"""The episode protocol: N-way K-shot Q-query episodes, drawn with a seed or replayed from a
saved list, scored through the method's own ``score`` (its head included) on cached
embeddings; per-class accuracy from every query of every episode."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from sketchshot.alignment import Matching, Meeting, matched
from sketchshot.data.dataset import SketchDataset
from sketchshot.data.episode_file import load_episodes, save_episodes
from sketchshot.data.episodes import EpisodeIndex, class_groups
from sketchshot.evaluation import draw_episodes, episode_accuracies, predict_episodes
from sketchshot.methods import Method
from sketchshot.pictures import episode_grid, save_png
from sketchshot.protocols.metrics import confusion_matrix
from sketchshot.protocols.report import Figure, ProtocolReport, percent


def episodes_protocol(
    method: Method,
    embeddings: torch.Tensor,
    dataset: SketchDataset,
    n_way: int,
    n_shot: int,
    n_query: int,
    count: int,
    seed: int,
    episodes_in: Path | None = None,
    episodes_out: Path | None = None,
    grid: Path | None = None,
    within_groups: bool = False,
    matching: Matching = Matching(),
    embedded: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> ProtocolReport:
    """Mean episode accuracy and 95% CI; the confusion counts every query over dataset classes.

    With ``episodes_in`` the saved list replaces the seeded draw (and its way, shot, query and
    count replace those given). ``episodes_out`` saves the list scored; ``grid`` draws the
    first episode. ``within_groups`` draws each episode's classes from one top-level group.
    ``matching`` joins the method's scores with the alignment and the shape match
    (``_matched``; ``embedded`` embeds images with the model's encoder, one view each)."""
    source = {"seed": seed, "drawn": True}
    if episodes_in is not None:
        episodes, file = load_episodes(episodes_in, dataset)
        source = {"file": str(episodes_in), "seed": file.seed, "drawn": False}
    else:
        episodes = draw_episodes(
            dataset.labels, n_way, n_shot, n_query, count, seed, dataset.class_names,
            within_groups,
        )  # fmt: skip
        source["within_groups"] = within_groups
    notes = _left_out_groups(dataset.class_names, n_way) if within_groups else []
    first = episodes[0]
    if matching:
        assert embedded is not None, "matching embeds the drawings laid over each other"
        predictions = _matched(method, embeddings, dataset.images, episodes, matching, embedded)
    else:
        predictions = predict_episodes(method, embeddings, episodes)
    accuracies = episode_accuracies(predictions, episodes)
    classes = np.stack([ep.classes for ep in episodes])  # [E, n_way] dataset classes
    truth = np.repeat(classes, first.n_query, axis=1)
    predicted = np.take_along_axis(classes, predictions, axis=1)
    n_classes = len(dataset.class_names)
    within = ", within one group" if source.get("within_groups") else ""
    within += matching.describe()
    queries = "1 query" if first.n_query == 1 else f"{first.n_query} queries"
    name = f"{first.n_shot}-shot, {queries}{within}"
    figure = Figure.of(first.n_way, name, accuracies)
    report = ProtocolReport(
        [figure],
        dataset.class_names,
        confusion_matrix(truth, predicted, n_classes),
        {
            "episodes": source | {
                "n_way": first.n_way, "n_shot": first.n_shot, "n_query": first.n_query,
                "count": len(episodes),
            },
            "notes": notes,
            "align": matching.align,
            "warp": matching.warp if matching.align else None,
            "shape_weight": matching.shape_weight,
        },
    )  # fmt: skip
    if episodes_out is not None:
        save_episodes(episodes_out, episodes, dataset, int(source["seed"]))
    if grid is not None:
        save_png(_grid(dataset, first, predictions[0], figure), grid)
    return report


@torch.no_grad()
def _matched(
    method: Method,
    embeddings: torch.Tensor,
    images: torch.Tensor,
    episodes: list[EpisodeIndex],
    matching: Matching,
    embedded: Callable[[torch.Tensor], torch.Tensor],
) -> np.ndarray:
    """Predicted labels [episodes, queries] from ``method.score`` joined with ``matching``
    (``alignment.matched``), episode by episode: every query-drawing pair's affine fit costs
    about 0.3 ms on one CPU core, and aligning embeds two more images per pair."""
    out = []
    for ep in episodes:
        labels = ep.support_labels.to(embeddings.device)
        support, query = embeddings[ep.support], embeddings[ep.query]
        scores = method.score(support, labels, query, ep.n_way)
        meeting = Meeting(
            method, embedded, (images[ep.query], query), (images[ep.support], support), labels,
            ep.n_way,
        )  # fmt: skip
        joined = matched(matching, meeting, scores)
        out.append(joined.argmax(1).cpu().numpy())
    return np.stack(out)


def _left_out_groups(class_names: tuple[str, ...], n_way: int) -> list[str]:
    """A note naming the groups too small for an ``n_way``-way episode of their own."""
    groups = class_groups(class_names)
    tops = list(dict.fromkeys(n.split("/", 1)[0] for n in class_names))
    sizes = np.bincount(groups, minlength=len(tops))
    small = [f"{tops[g]} ({sizes[g]})" for g in range(len(tops)) if sizes[g] < n_way]
    if not small:
        return []
    return [
        f"episodes within one group: {len(tops) - len(small)} of {len(tops)} groups have "
        f"{n_way} classes; left out: {', '.join(small[:5])}{' ...' if len(small) > 5 else ''}"
    ]


def _grid(dataset: SketchDataset, episode: EpisodeIndex, predicted: np.ndarray, figure: Figure):
    """The picture of ``episode`` (its ``predicted`` episode labels [n_way * n_query]) under
    the figure's name, its own score and the figure's accuracy."""
    names = [dataset.class_names[c] for c in episode.classes.tolist()]
    right = int((predicted == episode.query_labels.numpy()).sum())
    title = (
        figure.name,
        f"this episode: {right}/{predicted.size} queries right ({percent(right / predicted.size)});"
        f" all episodes: {figure.accuracy_text('episodes')}",
    )
    return episode_grid(
        dataset.images[torch.from_numpy(episode.support)].numpy(),
        dataset.images[torch.from_numpy(episode.query)].numpy(),
        names,
        predicted,
        episode.n_shot,
        episode.n_query,
        title,
    )
