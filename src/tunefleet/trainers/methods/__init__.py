"""Adaptation methods behind one registry; importing this package registers every module in it."""

import importlib
import pkgutil

from tunefleet.trainers.methods.base import Method, MethodBase
from tunefleet.trainers.methods.registry import get_method, method_names

_INFRASTRUCTURE = {"base", "registry"}
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _INFRASTRUCTURE and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["Method", "MethodBase", "get_method", "method_names"]
