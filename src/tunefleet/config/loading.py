"""Loading a sweep config: YAML -> validated :class:`SweepConfig`, every mistake reported at once
with its key path and what is allowed (``ConfigError``, exit 2); params applied to a config; the
option table that ``--help`` prints.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, SecretStr, ValidationError

from tunefleet.config.schema import UNSEARCHABLE, Dimension, SweepConfig
from tunefleet.dotted import flatten, leaf_annotation, public_fields, section_of, set_path
from tunefleet.errors import ConfigError
from tunefleet.redaction import (
    REDACTED,
    SECRETS_ENV,
    is_redacted,
    is_secret_key,
    redact_url,
    reveal,
)


def apply_params(config: SweepConfig, params: Mapping[str, Any]) -> SweepConfig:
    """``config`` with each dotted path in ``params`` set; validated like the YAML itself."""
    data: dict[str, Any] = reveal(config)  # a plain dump would leave the secrets as ***
    for path, value in params.items():
        data = set_path(data, path, value)
    return SweepConfig.model_validate(data)


def with_secrets(config: SweepConfig, secrets: Mapping[str, Any]) -> SweepConfig:
    """A config read back from its redacted dump, with its secrets filled in from ``secrets``.

    Only the paths the dump redacted are filled: a secret cannot add to or change what the
    sweep was created with (a URL must name the same server and user). ConfigError names each
    redacted path no value was given for, and how to give one.
    """
    data = reveal(config)
    flat = flatten(data)
    problems: list[tuple[str, str]] = []
    for path, stored in flat.items():
        if not is_redacted(stored):
            continue
        value = secrets.get(path)
        if value is None:
            problems.append(
                (
                    path,
                    "the store keeps this secret redacted; give this worker its real value with "
                    "`--config FILE` (the sweep's YAML) or in the environment variable "
                    f"{SECRETS_ENV} (JSON: {{{json.dumps(path)}: ...}})",
                )
            )
        elif isinstance(value, str) and stored != REDACTED and redact_url(value) != stored:
            problems.append(
                (path, f"the value given is not the sweep's: {redact_url(value)} != {stored}")
            )
        else:
            data = set_path(data, path, value)
    if problems:
        raise ConfigError(problems, source=f"of sweep {config.name!r}")
    return SweepConfig.model_validate(data)


def _check_dimension(config: SweepConfig, path: str, dim: Dimension) -> Iterator[tuple[str, str]]:
    if path.split(".")[0] in UNSEARCHABLE:
        yield path, f"cannot be searched (the sections {', '.join(UNSEARCHABLE)} shape the sweep)"
        return
    if is_secret_key(path):
        # Its choices would sit in the search space, which is stored and logged in clear.
        yield path, "is a secret and cannot be searched"
        return
    try:
        annotation = leaf_annotation(SweepConfig, path)
    except ValueError as exc:
        yield path, str(exc)
        return
    if dim.choices is None:
        if annotation not in (int, float):
            yield (
                path,
                f"a low/high range needs a numeric field, but this field is "
                f"{_type_name(annotation)}; use `choices`",
            )
        elif annotation is int and not (
            float(dim.low or 0).is_integer() and float(dim.high or 0).is_integer()
        ):
            yield path, f"an integer field needs integer bounds, got {dim.low}..{dim.high}"
        return
    data = config.model_dump(mode="json")
    for choice in dim.choices:
        try:
            SweepConfig.model_validate(set_path(data, path, choice))
        except ValidationError as exc:
            reason = "; ".join(e["msg"] for e in exc.errors())
            yield (
                path,
                f"choice {choice!r} does not fit this {_type_name(annotation)} field ({reason})",
            )


def _type_name(annotation: Any) -> str:
    args = get_args(annotation)
    if args and all(isinstance(a, str) for a in args):
        return "one of " + ", ".join(args)
    # Secret fields are Annotated with their serialiser, whose repr is no help in --help.
    if get_origin(annotation) is Annotated:
        return _type_name(args[0])
    if get_origin(annotation) in (Union, UnionType) and any(
        get_origin(a) is Annotated or get_origin(a) is list for a in args
    ):
        return " | ".join(_type_name(a) for a in args)
    item = args[0] if get_origin(annotation) is list and args else None
    if isinstance(item, type) and issubclass(item, BaseModel):  # search.objectives' keys
        return "list of {" + ", ".join(public_fields(item)) + "}"
    if annotation is SecretStr:
        return "secret str"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


def _problems(exc: ValidationError) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "(top level)"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = f"unknown key; allowed here: {', '.join(_allowed_keys(error['loc']))}"
        elif error["type"] == "missing":
            message = "required key is missing"
        elif message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
            # A cross-section rule names its own key path ("train.method: ...").
            head, sep, rest = message.partition(": ")
            if sep and re.fullmatch(r"[a-z_]+(\.[a-z_]+)+", head):
                where, message = head, rest
        problems.append((where, message))
    return problems


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] = SweepConfig
    for part in loc[:-1]:
        field = public_fields(model).get(str(part))
        section = section_of(field.annotation) if field else None
        if section is None:
            break
        model = section
    if len(loc) >= 2 and loc[-2] != "space" and "space" in [str(p) for p in loc]:
        model = Dimension
    return list(public_fields(model))


def parse_config(
    data: Any, *, source: str | None = None, base_dir: Path | None = None
) -> SweepConfig:
    """Validate a config mapping; relative data paths resolve against ``base_dir`` (the CWD)."""
    if not isinstance(data, Mapping):
        raise ConfigError(
            [("(top level)", f"expected a mapping of keys, got {type(data).__name__}")],
            source=source,
        )
    try:
        config = SweepConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_problems(exc), source=source) from None
    problems = [
        (f"search.space.{path}", msg)
        for path, dim in config.search.space.items()
        for _, msg in _check_dimension(config, path, dim)
    ]
    if problems:
        raise ConfigError(problems, source=source)
    return _absolute_paths(config, base_dir or Path.cwd())


def _absolute_paths(config: SweepConfig, base: Path) -> SweepConfig:
    updates = {
        key: (base / value).resolve() if not value.is_absolute() else value
        for key in ("train", "eval", "test")
        if (value := getattr(config.data, key)) is not None
    }
    return config.model_copy(update={"data": config.data.model_copy(update=updates)})


def load_config(path: str | Path, *, overrides: Mapping[str, Any] | None = None) -> SweepConfig:
    """Read and validate a YAML config; ``overrides`` are dotted paths (from CLI flags)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError([(str(path), "config file not found")])
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError([(str(path), f"not valid YAML: {exc}")]) from None
    for key, value in (overrides or {}).items():
        data = set_path(data if isinstance(data, Mapping) else {}, key, value)
    return parse_config(data, source=str(path))


def json_schema() -> dict[str, Any]:
    return SweepConfig.model_json_schema()


def describe_options() -> list[tuple[str, str, str]]:
    """(dotted key, type and default, description) for every option, for ``--help``."""
    rows: list[tuple[str, str, str]] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in public_fields(model).items():
            section = section_of(field.annotation)
            if section is not None:
                walk(section, f"{prefix}{name}.")
                continue
            default = (
                "required"
                if field.is_required()
                else f"default {field.get_default(call_default_factory=True)!r}"
            )
            kind = _type_name(field.annotation)
            rows.append((f"{prefix}{name}", f"{kind}, {default}", field.description or ""))

    walk(SweepConfig, "")
    return rows
