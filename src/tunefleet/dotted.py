"""Dotted config paths (``train.lora.r``): reading a schema by path, setting and flattening
nested mappings.

A leaf module: it knows pydantic, not tunefleet's schema, so the config loader, the search space
and redaction all use it without importing each other (the schema imports redaction for its
secret field types).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, get_args

from pydantic import BaseModel
from pydantic.fields import FieldInfo


def public_fields(model: type[BaseModel]) -> dict[str, FieldInfo]:
    """A model's fields by the key a user writes (the alias where there is one: ``lambda``)."""
    return {field.alias or name: field for name, field in model.model_fields.items()}


def section_of(annotation: Any) -> type[BaseModel] | None:
    """The config section an annotation holds (``X`` or ``X | None``), else None for a leaf."""
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def leaf_annotation(root: type[BaseModel], path: str) -> Any:
    """The annotation of the field at ``path`` below ``root``; ValueError names the first bad
    segment and what is allowed there."""
    model = root
    parts = path.split(".")
    for i, part in enumerate(parts):
        fields = public_fields(model)
        if part not in fields:
            where = ".".join(parts[:i]) or "the top level"
            raise ValueError(
                f"names no config field ({part!r} is not in {where}; allowed: {', '.join(fields)})"
            )
        annotation = fields[part].annotation
        section = section_of(annotation)
        if i == len(parts) - 1:
            if section is not None:
                raise ValueError(
                    f"is a section, not a leaf; search one of its fields: "
                    f"{', '.join(path + '.' + f for f in public_fields(section))}"
                )
            return annotation
        if section is None:
            raise ValueError(f"names no config field ({'.'.join(parts[: i + 1])} is a leaf)")
        model = section
    raise AssertionError("unreachable")


def set_path(data: Mapping[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``data`` with the dotted ``path`` set to ``value``."""
    out: dict[str, Any] = json.loads(json.dumps(data, default=str))
    node = out
    *parents, leaf = path.split(".")
    for part in parents:
        if node.get(part) is None:  # an optional section that is off (null) is switched on
            node[part] = {}
        node = node[part]
    node[leaf] = value
    return out


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level of dotted keys (MLflow params, W&B config)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out
