"""Omniglot's upstream archives (Lake et al. 2015), fetched with the standard library: resumed
with an HTTP Range request, and installed only once their sha256 is right.

Known hashes are those of the archives in the project's shared data (``SHA256SUMS``); an archive
without one is installed with its sha256 reported as not verified (pass ``sha256`` to check
it)."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sketchshot.errors import DataError

BASE_URL = "https://github.com/brendenlake/omniglot/raw/master/python"
BASE_URL_ENV = "SKETCHSHOT_OMNIGLOT_URL"  # another server (a mirror, or a test's)
OMNIGLOT_SPLITS = (
    "background",
    "evaluation",
    "background_small1",
    "background_small2",
    "strokes_background",
    "strokes_evaluation",
    "strokes_background_small1",
    "strokes_background_small2",
)
KNOWN_SHA256 = {
    "images_background_small1.zip": (
        "f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4"
    ),
    "images_background_small2.zip": (
        "3ccaa407515a8778e5d0861875af38b17e418f301ad5bb3b5a6b65d901a41c7f"
    ),
    "strokes_background_small1.zip": (
        "8cb3960fb6cf4ccf5f064ad83169f828c36c36782a0f6e7faacb7ecfae4468a2"
    ),
    "strokes_background_small2.zip": (
        "345bf2141efbea062833dbb2828abbc23d9e07825e46f2afdd4daecddfed6e78"
    ),
}
CHUNK = 2**16
TIMEOUT_S = 60


@dataclass(frozen=True)
class Downloaded:
    """An installed archive: where, its sha256, whether that was checked against a known
    hash, and how many bytes this call fetched (fewer than the size after a resume)."""

    path: str
    url: str
    sha256: str
    verified: bool
    size: int
    fetched: int
    resumed_from: int


def archive_name(split: str) -> str:
    """``background_small1`` -> ``images_background_small1.zip``; ``strokes_...`` as it is."""
    if split not in OMNIGLOT_SPLITS:
        choices = ", ".join(OMNIGLOT_SPLITS)
        raise DataError(f"unknown Omniglot split {split!r}; choose one of: {choices}")
    return f"{split}.zip" if split.startswith("strokes_") else f"images_{split}.zip"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(2**20):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(url: str, part: Path, progress: Callable[[int, int | None], None] | None) -> int:
    """Append the rest of ``url`` to ``part`` (all of it when the server ignores Range);
    the bytes fetched."""
    start = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:  # nothing after the end: the .part is whole
            return 0
        raise DataError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(f"cannot download {url}: {reason}") from None
    fetched = 0
    with response:
        if start and response.status != 206:  # a whole file, not the rest: start over
            start = 0
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        try:
            with open(part, "ab" if start else "wb") as f:
                while chunk := response.read(CHUNK):
                    f.write(chunk)
                    fetched += len(chunk)
                    if progress is not None:
                        progress(start + fetched, total)
        except (urllib.error.URLError, OSError) as exc:
            raise DataError(
                f"download of {url} broke off after {start + fetched} bytes ({exc}); run the "
                f"same command again to resume from {part}"
            ) from None
    if total is not None and start + fetched < total:
        raise DataError(
            f"download of {url} broke off at {start + fetched} of {total} bytes; run the same "
            f"command again to resume from {part}"
        )
    return fetched


def download_omniglot(
    split: str,
    to: Path,
    base_url: str | None = None,
    sha256: str | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> Downloaded:
    """Fetch Omniglot's ``split`` archive into ``to``, resuming ``<name>.part`` when one is
    there. The file is installed (renamed from ``.part``) only when its sha256 equals
    ``sha256`` or the known hash; on a mismatch it stays ``.part`` and a ``DataError`` says
    so. ``progress(done, total)`` is called as bytes arrive (``total`` None when unknown)."""
    name = archive_name(split)
    base = (base_url or os.environ.get(BASE_URL_ENV) or BASE_URL).rstrip("/")
    url = f"{base}/{name}"
    expected = (sha256 or KNOWN_SHA256.get(name) or "").lower() or None
    to = Path(to)
    to.mkdir(parents=True, exist_ok=True)
    target, part = to / name, to / f"{name}.part"
    if target.exists():
        digest = file_sha256(target)
        if expected is None or digest == expected:
            size = target.stat().st_size
            return Downloaded(str(target), url, digest, expected is not None, size, 0, size)
        raise DataError(
            f"{target} is already there but its sha256 {digest} is not the expected "
            f"{expected}; delete it to download again"
        )
    resumed_from = part.stat().st_size if part.exists() else 0
    fetched = _fetch(url, part, progress)
    digest = file_sha256(part)
    if expected is not None and digest != expected:
        raise DataError(
            f"refused {url}: sha256 {digest} is not the expected {expected} (corrupt or "
            f"changed upstream); kept as {part}, not installed: delete it to start over"
        )
    os.replace(part, target)
    size = target.stat().st_size
    return Downloaded(str(target), url, digest, expected is not None, size, fetched, resumed_from)
