"""Bad records in a vector source: refused (``on_error="fail"``) or skipped and counted."""

from __future__ import annotations

import warnings
from collections import Counter
from typing import Literal

from sketchshot.data.vector.drawing import Drawing, problem
from sketchshot.errors import DataError, DataWarning

OnError = Literal["skip", "fail"]
NAMED = 5  # skipped records named in the summary; the rest are counted by reason


class BadRecord(DataError):
    """One record that cannot be used: ``where`` (``file``, ``file:line`` or ``file[index]``)
    and ``reason``."""

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.reason = " ".join(str(reason).split())
        super().__init__(f"bad record {where}: {self.reason}")


class RecordError(ValueError):
    """A record a parser cannot read: the ``reason``, and the ``line`` of its file when known."""

    def __init__(self, reason: str, line: int | None = None) -> None:
        super().__init__(reason)
        self.line = line


class BadRecords:
    """Where readers report bad records. With ``on_error="fail"`` the first one raises
    ``BadRecord``; with ``"skip"`` each is kept (``skipped``) and ``warn`` summarises them."""

    def __init__(self, on_error: OnError = "fail") -> None:
        if on_error not in ("skip", "fail"):
            raise ValueError(f"on_error must be 'skip' or 'fail', got {on_error!r}")
        self.on_error = on_error
        self.skipped: list[BadRecord] = []

    @property
    def count(self) -> int:
        return len(self.skipped)

    def report(self, where: str, reason: str) -> None:
        bad = BadRecord(where, reason)
        if self.on_error == "fail":
            raise bad
        self.skipped.append(bad)

    def usable(self, where: str, drawing: Drawing) -> bool:
        """Whether ``drawing`` can be rendered; reports it as bad when not."""
        if (why := problem(drawing)) is not None:
            self.report(where, why)
            return False
        return True

    def summary(self, source: object) -> str | None:
        """One line: how many records of ``source`` were skipped, why, and the first few."""
        if not self.skipped:
            return None
        reasons = Counter(_kind(b.reason) for b in self.skipped)
        why = ", ".join(f"{n} {reason}" for reason, n in reasons.most_common())
        named = "; ".join(f"{b.where} ({b.reason})" for b in self.skipped[:NAMED])
        more = f"; and {self.count - NAMED} more" if self.count > NAMED else ""
        return f"{source}: skipped {self.count} bad records ({why}): {named}{more}"

    def warn(self, source: object) -> None:
        if (line := self.summary(source)) is not None:
            warnings.warn(line, DataWarning, stacklevel=3)


def _kind(reason: str) -> str:
    """A reason without its particulars, to count alike ones together."""
    return reason.split(":")[0].split(" (")[0]
