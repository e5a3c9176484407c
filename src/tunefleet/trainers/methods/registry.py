"""Name -> method implementation; unknown names fail with the list of registered ones.

A method's name comes from its registration alone; ``check_names`` holds the registry to the
names the config accepts (``tunefleet.config.METHODS``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from tunefleet.trainers.methods.base import Method

_REGISTRY: dict[str, Method] = {}
M = TypeVar("M")


def register(name: str) -> Callable[[type[M]], type[M]]:
    """Class decorator: register one instance of the class as ``name`` and set its ``name``."""

    def decorate(cls: type[M]) -> type[M]:
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} is already registered")
        if not isinstance(getattr(cls, "self_contained", None), bool):
            raise TypeError(
                f"method {name!r} ({cls.__name__}) must declare self_contained: "
                "True if its checkpoint is the whole model, False if it needs the pretrained body"
            )
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


def check_names(expected: Iterable[str]) -> None:
    """Fail, naming the differences, unless the registered names are exactly ``expected``."""
    wanted = set(expected)
    missing = sorted(wanted - set(_REGISTRY))
    extra = sorted(set(_REGISTRY) - wanted)
    problems = []
    if missing:
        problems.append(
            f"no implementation registered for {', '.join(missing)} "
            "(add a module to tunefleet.trainers.methods with @register(NAME))"
        )
    if extra:
        problems.append(f"registered but not in tunefleet.config.Method: {', '.join(extra)}")
    if problems:
        raise RuntimeError("method registry out of step with the config: " + "; ".join(problems))
