"""``sketchshot info``: what a saved model (or a class bank) is, from its card.

``engine.info`` hands back a card only once its weights matched ``sha256`` and its fields
matched ``card_sha256`` (cards of format version 1 have none); the output says which."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sketchshot.cli.app import command
from sketchshot.cli.options import Json, Quiet, Verbose
from sketchshot.cli.render import emit

Card = Annotated[
    Path | None,
    typer.Argument(
        help=escape(
            "Run folder, model.json or a class bank's JSON. [default: the newest run under ./runs]"
        ),
        show_default=False,
    ),
]


def verified(card: dict[str, Any]) -> list[str]:
    """The digests ``engine.info`` checked: the weights' always, the card's where it has one."""
    return ["sha256", *(["card_sha256"] if card.get("card_sha256") else [])]


def integrity_fields(card: dict[str, Any]) -> list[tuple[str, Any]]:
    """The rows saying what the hashes vouch for."""
    covered = (
        "verified (card_sha256)"
        if card.get("card_sha256")
        else "not covered: a card of format version 1 has no card_sha256"
    )
    return [("sha256", f"{card.get('sha256')} (verified)"), ("card", covered)]


def card_fields(card: dict[str, Any]) -> list[tuple[str, Any]]:
    """(name, value) rows of a model card's JSON shape."""
    m, p = card.get("model") or {}, card.get("preprocessing") or {}
    data = card.get("data") or {}
    origin = f" from {data['origin']}" if data.get("origin") else ""
    return [
        ("method", f"{m.get('method')} ({m.get('kind')})"),
        ("encoder", _encoder(m)),
        ("method args", m.get("method_args", {})),
        ("initialised from", m.get("init", "scratch")),
        (
            "preprocessing",
            f"{p.get('image_size')}px, invert {p.get('invert')}, fit {p.get('fit', 'page')}, "
            f"mean {p.get('mean')}, std {p.get('std')}",
        ),
        ("classes", f"{len(card.get('class_names') or ())}{origin}"),
        ("best", json.dumps(_rounded((card.get("metrics") or {}).get("best", {})))),
        *_weights(card),
        *_members(card),
        ("sketchshot", card.get("sketchshot_version")),
        *integrity_fields(card),
    ]


def _encoder(m: dict[str, Any]) -> str:
    """The encoder and its arguments; an ensemble's members by name (their runs are rows of
    their own)."""
    args = m.get("encoder_args", {})
    if m.get("encoder") != "ensemble":
        return f"{m.get('encoder')} {args}"
    names = " + ".join(str(member.get("encoder")) for member in args.get("members", ()))
    rest = {k: v for k, v in args.items() if k != "members"}
    return f"ensemble of {names}, side by side {rest}"


def _members(card: dict[str, Any]) -> list[tuple[str, Any]]:
    """One row per run of an ensemble: where it was, and the sha256 of its weights."""
    return [
        (f"member {i}", f"{ref.get('path')} (sha256 {ref.get('sha256')})")
        for i, ref in enumerate(card.get("members") or (), start=1)
    ]


def _weights(card: dict[str, Any]) -> list[tuple[str, Any]]:
    """A row saying that the weights are an average, where they are (supervised ema_decay)."""
    if (card.get("metrics") or {}).get("weights") != "ema":
        return []
    decay = ((card.get("model") or {}).get("method_args") or {}).get("ema_decay")
    return [("weights", f"exponential moving average of the training weights (decay {decay})")]


def _rounded(values: dict[str, Any]) -> dict[str, Any]:
    """Metrics as a person reads them: 0.713, not 0.7129999999999999."""
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in values.items()}


def bank_fields(card: dict[str, Any]) -> list[tuple[str, Any]]:
    """(name, value) rows of a class bank's JSON shape."""
    built, reject = card.get("built_with") or {}, card.get("reject") or {}
    classes = card.get("classes") or ()
    threshold = f"unknown below similarity {reject['value']:.4f}" if "value" in reject else "none"
    return [
        (
            "class bank",
            f"{len(classes)} classes, {card.get('n_embeddings')} embeddings of "
            f"{card.get('embedding_dim')} dimensions",
        ),
        ("encoded with", f"{built.get('method')} / {built.get('encoder')} at {built.get('path')}"),
        ("model sha256", built.get("sha256")),
        (
            "bundled",
            f"yes: its own copy of the model, {built['bundled']}, beside it"
            if built.get("bundled")
            else "no: the model is found by --model, beside the bank or at the path above",
        ),
        ("reject threshold", threshold),
        ("sketchshot", card.get("sketchshot_version")),
        *integrity_fields(card),
    ]


@command()
def info(
    model: Card = None, as_json: Json = False, quiet: Quiet = False, verbose: Verbose = False
) -> None:
    """Print a saved model's card: architecture, preprocessing, classes, metrics, and its
    hashes, checked."""
    from sketchshot import engine

    found = engine.info(model)  # a CheckpointError unless the hashes match
    card = found.model_dump(mode="json") if isinstance(found, BaseModel) else dict(found)

    def human(c: Console) -> None:
        bank = card.get("kind") == "class_bank"
        table = Table(show_header=False)
        for key, value in bank_fields(card) if bank else card_fields(card):
            table.add_row(key, escape(str(value)))
        c.print(table, soft_wrap=False)

    emit(as_json, card | {"verified": verified(card)}, human)
