"""Request and response bodies, and the input formats of MLflow's ``/invocations``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr

#: The column a DataFrame-shaped MLflow input must have (as ``CheckpointModel`` expects).
TEXT_COLUMN = "text"
INVOCATION_KEYS = ("inputs", "instances", "dataframe_split", "dataframe_records")


class RequestError(Exception):
    """A request body that is not what the route accepts; answered 422 naming ``field``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: list[StrictStr] = Field(
        min_length=1, description="The texts to classify (at most --max-batch of them)."
    )
    top_k: int = Field(1, ge=1, description="How many labels (most probable first) per input.")


class ModelInfo(BaseModel):
    name: str = Field(description="The registered model's name (a folder: the sweep's name).")
    version: str | None = Field(description="The registry version; null for a folder.")
    alias: str | None = Field(description="The alias it was served under; null for a folder.")
    trial: int = Field(description="The sweep trial whose checkpoint this is.")


class Scored(BaseModel):
    labels: list[str] = Field(description="The top_k labels, most probable first.")
    scores: list[float] = Field(description="Their probabilities, in the same order.")


class PredictResponse(BaseModel):
    model: ModelInfo
    predictions: list[Scored]


class ErrorBody(BaseModel):
    kind: str
    message: str
    field: str | None = None


def invocation_texts(body: Any) -> list[str]:
    """The texts of an MLflow scoring request: ``inputs`` or ``instances`` (a list of texts, or
    of ``{"text": ...}`` records, or ``{"text": [...]}``), ``dataframe_split`` or
    ``dataframe_records`` (a ``text`` column). RequestError names the field at fault."""
    if not isinstance(body, dict):
        raise RequestError("body", f"must be a JSON object with one of {_keys()}")
    given = [k for k in INVOCATION_KEYS if k in body]
    if len(given) != 1:
        raise RequestError("body", f"needs exactly one of {_keys()}; got {sorted(body) or 'none'}")
    key = given[0]
    value = body[key]
    if key == "dataframe_split":
        values = _split_column(value)
    elif key == "dataframe_records":
        values = _records_column(value, key)
    elif isinstance(value, dict):
        values = _mapping_column(value, key)
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        values = _records_column(value, key)
    elif isinstance(value, list):
        values = value
    else:
        raise RequestError(key, f"must be a list of texts; got {type(value).__name__}")
    return _strings(values, key)


def _keys() -> str:
    return ", ".join(INVOCATION_KEYS)


def _split_column(split: Any) -> list[Any]:
    if not isinstance(split, dict):
        raise RequestError("dataframe_split", "must be an object with columns and data")
    columns, data = split.get("columns"), split.get("data")
    if not isinstance(columns, list) or TEXT_COLUMN not in columns:
        raise RequestError("dataframe_split.columns", f"must name a {TEXT_COLUMN!r} column")
    if not isinstance(data, list) or not all(
        isinstance(r, list) and len(r) == len(columns) for r in data
    ):
        raise RequestError("dataframe_split.data", f"must be rows of {len(columns)} values")
    at = columns.index(TEXT_COLUMN)
    return [row[at] for row in data]


def _records_column(records: Any, key: str) -> list[Any]:
    if not isinstance(records, list):
        raise RequestError(key, "must be a list of records")
    for i, record in enumerate(records):
        if not isinstance(record, dict) or TEXT_COLUMN not in record:
            raise RequestError(f"{key}.{i}", f"must be a record with a {TEXT_COLUMN!r} field")
    return [r[TEXT_COLUMN] for r in records]


def _mapping_column(mapping: dict[str, Any], key: str) -> list[Any]:
    values = mapping.get(TEXT_COLUMN)
    if not isinstance(values, list):
        raise RequestError(f"{key}.{TEXT_COLUMN}", "must be a list of texts")
    return values


def _strings(values: list[Any], key: str) -> list[str]:
    if not values:
        raise RequestError(key, "needs at least one text")
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise RequestError(f"{key}.{i}", f"must be a string; got {type(value).__name__}")
    return values
