"""The files of a vector source, from a folder or a .zip archive, with their class paths."""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from sketchshot.data.folder import class_of
from sketchshot.data.vector.bad_records import BadRecords
from sketchshot.data.vector.drawing import Drawing, Sketch
from sketchshot.errors import DataError

MAX_FILE_BYTES = 64 * 2**20  # one stroke or SVG file; a bigger one is refused unread


def _hidden(path: PurePosixPath) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in path.parts)


def _unsafe(name: str) -> bool:
    return (
        name.startswith(("/", "\\"))
        or re.match(r"[A-Za-z]:", name) is not None
        or (".." in re.split(r"[/\\]", name))
    )


def suffixes_in(source: Path) -> set[str]:
    """The lower-case suffixes of the visible files of a folder or zip (to tell its kind)."""
    if source.is_dir():
        return {
            p.suffix.lower()
            for p in source.rglob("*")
            if p.is_file() and not _hidden(PurePosixPath(p.relative_to(source).as_posix()))
        }
    with zipfile.ZipFile(source) as archive:
        return {
            PurePosixPath(n).suffix.lower()
            for n in archive.namelist()
            if not n.endswith("/") and not _unsafe(n) and not _hidden(PurePosixPath(n))
        }


class ClassFiles:
    """The ``suffix`` files of a folder or zip laid out ``ROOT/<class path>/<file>``, sorted:
    ``entries`` (path, class name) and ``read_text``. An archive's single top-level folder is
    its root, as for image archives."""

    def __init__(self, source: Path, suffix: str) -> None:
        self.source = source
        self.archive: zipfile.ZipFile | None = None
        if source.is_dir():
            found = (PurePosixPath(p.relative_to(source).as_posix()) for p in source.rglob("*"))
            paths = sorted(
                p for p in found if p.suffix.lower() == suffix and not _hidden(p)
                and (source / str(p)).is_file()
            )  # fmt: skip
        else:
            try:
                self.archive = zipfile.ZipFile(source)
            except (zipfile.BadZipFile, OSError) as exc:
                raise DataError(f"{source} is not a readable zip archive: {exc}") from None
            paths = sorted(
                PurePosixPath(n) for n in self.archive.namelist()
                if not _unsafe(n) and not _hidden(PurePosixPath(n))
                and PurePosixPath(n).suffix.lower() == suffix
            )  # fmt: skip
        if not paths:
            raise DataError(f"no {suffix} files found in {source}")
        loose = [p for p in paths if len(p.parts) < 2]
        if loose:
            raise DataError(f"{source}: {loose[0]} is not inside a class folder")
        self.entries = list(
            zip(paths, class_of(paths, in_archive=self.archive is not None), strict=True)
        )

    def where(self, path: PurePosixPath) -> str:
        return f"{self.source}:{path}" if self.archive is not None else str(self.source / path)

    def read_text(self, path: PurePosixPath) -> str:
        """The text of one file; ``DataError`` naming it when too big or not UTF-8."""
        if self.archive is not None:
            size = self.archive.getinfo(str(path)).file_size
        else:
            size = (self.source / str(path)).stat().st_size
        if size > MAX_FILE_BYTES:
            raise DataError(f"{self.where(path)}: {size / 2**20:.0f} MB is too big for one file")
        try:
            if self.archive is not None:
                data = self.archive.read(str(path))
            else:
                data = (self.source / str(path)).read_bytes()
            return data.decode("utf-8")
        except (OSError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
            raise DataError(f"cannot read {self.where(path)}: {exc}") from None

    def close(self) -> None:
        if self.archive is not None:
            self.archive.close()


@contextmanager
def class_files(source: Path, suffix: str) -> Iterator[ClassFiles]:
    files = ClassFiles(source, suffix)
    try:
        yield files
    finally:
        files.close()


def read_class_files(
    source: str | Path,
    suffix: str,
    parse: Callable[[str], Drawing],
    bad: BadRecords,
    max_per_class: int | None = None,
) -> Iterator[Sketch]:
    """Each ``ROOT/<class>/*SUFFIX`` file of a folder or zip parsed by ``parse`` (its text ->
    a drawing, or a ``ValueError``), lazily, as ``Sketch``; at most ``max_per_class`` of a
    class. Unreadable and unusable files go to ``bad``, named ``file`` or ``file:line``."""
    with class_files(Path(source), suffix) as files:
        taken: dict[str, int] = {}
        for path, name in files.entries:
            if max_per_class is not None and taken.get(name, 0) >= max_per_class:
                continue
            where = files.where(path)
            try:
                drawing = parse(files.read_text(path))
            except (ValueError, DataError) as exc:
                line = getattr(exc, "line", None)
                bad.report(f"{where}:{line}" if line else where, str(exc))
                continue
            if bad.usable(where, drawing):
                taken[name] = taken.get(name, 0) + 1
                yield Sketch(name, drawing, where)
