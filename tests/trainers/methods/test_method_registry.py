"""The method registry: one implementation per configurable method, names validated."""

from __future__ import annotations

import pytest

from tunefleet.config import METHODS
from tunefleet.trainers.methods import MethodBase, get_method, method_names
from tunefleet.trainers.methods.registry import check_names, register


def test_every_config_method_has_an_implementation() -> None:
    assert set(method_names()) == set(METHODS)
    for name in METHODS:
        assert get_method(name).name == name


def test_unknown_and_duplicate_names_are_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown method .qlora.; registered: .*lora"):
        get_method("qlora")
    with pytest.raises(ValueError, match="'lora' is already registered"):
        register("lora")(type("Again", (), {}))


def test_registered_names_must_be_the_config_names() -> None:
    check_names(METHODS)
    with pytest.raises(RuntimeError, match=r"no implementation registered for qlora \(add"):
        check_names((*METHODS, "qlora"))
    without_ia3 = [name for name in METHODS if name != "ia3"]
    with pytest.raises(
        RuntimeError, match=r"registered but not in tunefleet\.config\.Method: ia3$"
    ):
        check_names(without_ia3)


def test_a_method_must_declare_whether_its_checkpoint_is_self_contained() -> None:
    with pytest.raises(TypeError, match=r"'qlora' \(Undeclared\) must declare self_contained"):
        register("qlora")(type("Undeclared", (MethodBase,), {}))
    with pytest.raises(ValueError, match="unknown method 'qlora'"):
        get_method("qlora")  # nothing was registered
