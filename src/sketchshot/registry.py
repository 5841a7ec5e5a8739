"""A small name -> constructor registry (the pattern of torchvision's ``models/_api.py``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from sketchshot.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to constructors; refuses duplicates and lists valid names on a miss.

    An entry registered with ``listed=False`` is created by name like any other (a saved
    model's card names it) but left out of ``names()``, the names offered to choose from: the
    ``ensemble`` encoder, built from saved runs by ``sketchshot ensemble``, not trained."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., T]] = {}
        self._unlisted: set[str] = set()

    def register(
        self, name: str, listed: bool = True
    ) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(fn: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = fn
            if not listed:
                self._unlisted.add(name)
            return fn

        return decorator

    def get(self, name: str) -> Callable[..., T]:
        try:
            return self._entries[name]
        except KeyError:
            valid = ", ".join(self.names())
            raise ConfigError(f"unknown {self.kind} {name!r}; choose one of: {valid}") from None

    def create(self, name: str, **kwargs: object) -> T:
        return self.get(name)(**kwargs)

    def names(self) -> list[str]:
        """The listed names, sorted."""
        return sorted(set(self._entries) - self._unlisted)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
