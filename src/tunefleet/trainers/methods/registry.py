"""Name -> method implementation; unknown names fail with the list of registered ones."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from tunefleet.trainers.methods.base import Method

_REGISTRY: dict[str, Method] = {}
M = TypeVar("M")


def register(name: str) -> Callable[[type[M]], type[M]]:
    def decorate(cls: type[M]) -> type[M]:
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} is already registered")
        instance = cls()
        instance.name = name  # type: ignore[attr-defined]
        _REGISTRY[name] = instance  # type: ignore[assignment]
        return cls

    return decorate


def get_method(name: str) -> Method:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown method {name!r}; registered: {', '.join(sorted(_REGISTRY))}"
        ) from None


def method_names() -> list[str]:
    return sorted(_REGISTRY)
