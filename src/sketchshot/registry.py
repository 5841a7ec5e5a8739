"""A small name -> constructor registry (the pattern of torchvision's ``models/_api.py``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from sketchshot.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to constructors; refuses duplicates and lists valid names on a miss."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(fn: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = fn
            return fn

        return decorator

    def get(self, name: str) -> Callable[..., T]:
        try:
            return self._entries[name]
        except KeyError:
            valid = ", ".join(sorted(self._entries))
            raise ConfigError(f"unknown {self.kind} {name!r}; choose one of: {valid}") from None

    def create(self, name: str, **kwargs: object) -> T:
        return self.get(name)(**kwargs)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
