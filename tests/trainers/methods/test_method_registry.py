"""The method registry: one implementation per configurable method, names validated."""

from __future__ import annotations

import pytest

from tunefleet.config import METHODS
from tunefleet.trainers.methods import get_method, method_names
from tunefleet.trainers.methods.registry import register


def test_every_config_method_has_an_implementation() -> None:
    assert set(method_names()) == set(METHODS)
    for name in METHODS:
        assert get_method(name).name == name


def test_unknown_and_duplicate_names_are_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown method .qlora.; registered: .*lora"):
        get_method("qlora")
    with pytest.raises(ValueError, match="'lora' is already registered"):
        register("lora")(type("Again", (), {}))
