"""Registered model versions as promotion and rollback use them: which version an alias names,
moving an alias and recording the move, and a version's files downloaded from the registry,
checked against the hashes it was registered with, and loaded.

Scoring and rollback go through the registered copy rather than the trial's folder: what is
gated and rolled back to is exactly what ``models:/NAME@champion`` serves, even after retention
deleted the trial's checkpoint.
"""

from __future__ import annotations

import getpass
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.tracking import MlflowClient

from tunefleet.errors import CheckpointError, NotFoundError
from tunefleet.platform.model_registry import checkpoint_digest
from tunefleet.platform.pyfunc import BASE_MODEL_ARTIFACT, CHECKPOINT_ARTIFACT, MERGED_ARTIFACT
from tunefleet.platform.store import Store

if TYPE_CHECKING:
    from tunefleet.trainers.predict import Predictor

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous-champion"
RESERVED_ALIASES = (CHAMPION, CHALLENGER, PREVIOUS)
"""Aliases only the gate, ``--force`` and rollback move (``promote --alias`` refuses them)."""


def actor() -> str:
    """Who moves an alias: ``user@host`` of this process."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's arbitrary uid)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def client_for(tracking_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def alias_version(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version ``alias`` names, or None (no such alias, or no such registered model)."""
    # Through the model's alias map: stores disagree on the error code of a missing alias
    # (the sqlite one says INVALID_PARAMETER_VALUE), not on a missing model.
    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            raise
        return None
    version = (model.aliases or {}).get(alias)
    return None if version is None else client.get_model_version(name, str(version))


def version_of(client: MlflowClient, name: str, version: str) -> ModelVersion:
    """Version ``version`` of ``name``; NotFoundError naming the model when it has none such."""
    try:
        return client.get_model_version(name, version)
    except MlflowException as exc:
        if exc.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            raise
        raise NotFoundError(f"registered model {name!r} has no version {version!r}") from None


@dataclass(frozen=True)
class Move:
    """One alias move to make and record."""

    alias: str
    action: str
    from_version: str | None
    to_version: str | None


def move_aliases(
    client: MlflowClient,
    store: Store,
    name: str,
    moves: list[Move],
    *,
    who: str,
    sweep: str | None,
    number: int | None,
    reason: str | None = None,
    gate: dict[str, Any] | None = None,
) -> None:
    """Point (or, to None, remove) each alias, then append it to the store's alias history."""
    for move in moves:
        if move.to_version is None:
            client.delete_registered_model_alias(name, move.alias)
        else:
            client.set_registered_model_alias(name, move.alias, move.to_version)
        store.record_alias_move(
            model_name=name,
            alias=move.alias,
            action=move.action,
            from_version=move.from_version,
            to_version=move.to_version,
            actor=who,
            sweep=sweep,
            number=number,
            reason=reason,
            gate=gate,
        )


@dataclass(frozen=True)
class LocalCopy:
    """A version's pyfunc folder downloaded from the registry."""

    version: ModelVersion
    checkpoint: Path
    base_model: Path | None
    merged: Path | None = None

    @property
    def size_mb(self) -> float:
        """What loading it reads: the merged model where there is one, else the checkpoint
        and, where bundled, the pretrained body."""
        from tunefleet.trainers.measures import folder_mb

        if self.merged is not None:
            return folder_mb(self.merged)
        body = folder_mb(self.base_model) if self.base_model is not None else 0.0
        return folder_mb(self.checkpoint) + body


@contextmanager
def downloaded(tracking_uri: str, version: ModelVersion) -> Iterator[LocalCopy]:
    """The version's files in a temporary folder, its checkpoint checked against the
    ``tunefleet.checkpoint_sha256`` tag it was registered with (CheckpointError if they differ
    or the version was not registered by tunefleet)."""
    from mlflow.artifacts import download_artifacts

    label = f"{version.name} version {version.version}"
    expected = (version.tags or {}).get("tunefleet.checkpoint_sha256")
    if not expected:
        raise CheckpointError(f"{label} has no tunefleet.checkpoint_sha256 tag to check it by")
    with tempfile.TemporaryDirectory(prefix="tunefleet-version-") as tmp:
        folder = Path(
            download_artifacts(
                artifact_uri=version.source,
                dst_path=tmp,
                tracking_uri=tracking_uri,
                registry_uri=tracking_uri,
            )
        )
        artifacts = Model.load(str(folder)).flavors["python_function"]["artifacts"]
        checkpoint = folder / str(artifacts[CHECKPOINT_ARTIFACT]["path"])
        body = artifacts.get(BASE_MODEL_ARTIFACT)
        _check(label, "checkpoint", checkpoint, expected)
        merged = artifacts.get(MERGED_ARTIFACT)
        if merged is not None:
            merged_expected = (version.tags or {}).get("tunefleet.merged_sha256", "")
            _check(label, "merged model", folder / str(merged["path"]), merged_expected)
        yield LocalCopy(
            version,
            checkpoint,
            None if body is None else folder / str(body["path"]),
            None if merged is None else folder / str(merged["path"]),
        )


def _check(label: str, what: str, folder: Path, expected: str) -> None:
    from tunefleet.trainers.checkpoint import hash_folder

    actual = checkpoint_digest(hash_folder(folder))
    if actual != expected:
        raise CheckpointError(
            f"{label}: its {what} no longer matches the hashes it was registered with "
            f"(sha256 {actual[:12]}..., registered {expected[:12] or 'none'}...)"
        )


def load_copy(copy: LocalCopy) -> Predictor:
    """A Predictor for a downloaded version, loaded as its pyfunc model loads it."""
    from tunefleet.platform.pyfunc import load_predictor

    return load_predictor(
        str(copy.checkpoint),
        None if copy.base_model is None else str(copy.base_model),
        merged=None if copy.merged is None else str(copy.merged),
    )
