"""Adaptation methods behind one registry; importing this package registers every module in it
and checks that the registered names are exactly the config's ``METHODS``."""

import importlib
import pkgutil

from tunefleet.config import METHODS
from tunefleet.trainers.methods.base import Method, MethodBase
from tunefleet.trainers.methods.registry import check_names, get_method, method_names

_INFRASTRUCTURE = {"base", "registry"}
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _INFRASTRUCTURE and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
check_names(METHODS)

__all__ = ["Method", "MethodBase", "get_method", "method_names"]
