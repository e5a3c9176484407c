"""Adaptation methods behind one registry; importing this package registers them all."""

from tunefleet.trainers.methods import full, lora
from tunefleet.trainers.methods.base import Method
from tunefleet.trainers.methods.registry import get_method, method_names

__all__ = ["Method", "full", "get_method", "lora", "method_names"]
