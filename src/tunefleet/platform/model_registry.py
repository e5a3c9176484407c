"""Promoting a trained checkpoint into the MLflow model registry as a ``pyfunc`` model.

Everything goes through one ``MlflowClient`` built from the given tracking URI with explicit
run, experiment and model ids: the fluent API (``mlflow.set_tracking_uri``, ``mlflow.start_run``,
``mlflow.pyfunc.log_model``) keeps process-global state that a sweep runner, its MLflow sink and
a promotion in the same process would fight over.

The model is stored the MLflow 3 way: a LoggedModel (``models:/m-...``) holds the pyfunc folder
and is linked to its run as an output; the registered model version points at the LoggedModel's
artifacts (and names its ``model_id``); the alias then names the version.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mlflow.entities import LoggedModel, LoggedModelOutput, LoggedModelStatus, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.tracking import MlflowClient
from packaging.version import InvalidVersion, Version

from tunefleet.platform.pyfunc import (
    BASE_MODEL_ARTIFACT,
    CHECKPOINT_ARTIFACT,
    MERGED_ARTIFACT,
    CheckpointModel,
)

if TYPE_CHECKING:
    from tunefleet.trainers.checkpoint import Manifest

PROMOTION_TAG = "tunefleet.promotion"
MODEL_ARTIFACT_NAME = "model"
READY_TIMEOUT_S = 300

# What loading the model imports besides tunefleet itself (which travels as code, see
# ``_save_pyfunc``). Explicit, so MLflow does not load the model to infer them.
RUNTIME_PACKAGES = (
    "mlflow",
    "cloudpickle",
    "torch",
    "transformers",
    "peft",
    "safetensors",
    "tokenizers",
    "pydantic",
    "pyyaml",
    "numpy",
    "pandas",
)


@dataclass(frozen=True)
class RegisteredModel:
    """A registered model version and the alias that now names it."""

    name: str
    version: str
    alias: str
    uri: str  # models:/NAME@ALIAS — what ``mlflow.pyfunc.load_model`` takes


def register_checkpoint(
    *,
    tracking_uri: str,
    model_name: str,
    alias: str,
    checkpoint: Path,
    run_id: str | None,
    experiment_name: str,
    description: str | None = None,
    sha256: Mapping[str, str] | None = None,
    artifact_location: str | None = None,
) -> RegisteredModel:
    """Register ``checkpoint`` as a new version of ``model_name`` and point ``alias`` at it.

    The version is a pyfunc model (:class:`tunefleet.platform.pyfunc.CheckpointModel`) holding a
    copy of the checkpoint folder, the pretrained body too where the checkpoint holds only an
    adapter and the body is a local folder, and the tunefleet code; so
    ``mlflow.pyfunc.load_model(result.uri)`` works in any process whose ``MLFLOW_TRACKING_URI``
    is ``tracking_uri`` and has the runtime packages, without the original folders.

    ``run_id`` is the run the model comes from (e.g. the trial's run); None creates a run in
    ``experiment_name`` (created, at ``artifact_location`` if given, when missing) tagged
    ``tunefleet.promotion=true``, which is ended FINISHED (or FAILED) before returning. With a
    ``run_id`` the model goes to that run's experiment and ``experiment_name`` is unused.

    ``sha256`` (relative path -> digest, as ``write_checkpoint`` returned) is checked against the
    folder before anything is written (CheckpointError on mismatch); either way the copy that is
    uploaded is checked against the folder, so a checkpoint replaced mid-copy is never registered.

    The version carries the tags ``tunefleet.checkpoint`` (absolute path),
    ``tunefleet.checkpoint_sha256`` (digest of the folder's file digests) and the manifest's
    sweep, trial, method, metric and value as ``tunefleet.<key>``; ``description`` goes on the
    version. The registered model is created if missing; the alias moves from whichever version
    held it. Raises NotFoundError if ``checkpoint`` is not a tunefleet checkpoint, and
    MlflowException for tracking/registry failures (including a version not READY in time).
    """
    from tunefleet.trainers.checkpoint import Manifest

    checkpoint = checkpoint.resolve()
    manifest = Manifest.read(checkpoint)
    expected = _expected_hashes(checkpoint, sha256)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    with (
        _source_run(
            client,
            run_id,
            experiment_name=experiment_name,
            artifact_location=artifact_location,
            run_name=f"promote-{model_name}",
        ) as run,
        _merged_weights(checkpoint, manifest) as merged,
    ):
        tags = {**_version_tags(checkpoint, manifest, expected), **merged.tags()}
        logged = _log_model(
            client,
            run,
            tags,
            checkpoint=checkpoint,
            base_model=None if merged.folder else _bundled_base(manifest),
            merged=merged,
            expected=expected,
        )
        number = _register_version(
            client,
            run,
            logged,
            model_name=model_name,
            alias=alias,
            # The sqlite registry store does not keep model_id; the tag does, in every store.
            tags={**tags, "tunefleet.logged_model": logged.model_id},
            description=description,
        )
    return RegisteredModel(
        name=model_name, version=number, alias=alias, uri=f"models:/{model_name}@{alias}"
    )


@dataclass(frozen=True)
class _Run:
    """The run a promotion records under."""

    run_id: str
    experiment_id: str


def _expected_hashes(checkpoint: Path, sha256: Mapping[str, str] | None) -> dict[str, str]:
    """The checkpoint's file digests: ``sha256`` once the folder is checked against it, else the
    folder's own."""
    from tunefleet.trainers.checkpoint import hash_folder, verify

    if sha256 is None:
        return hash_folder(checkpoint)
    verify(checkpoint, sha256)
    return dict(sha256)


@contextlib.contextmanager
def _source_run(
    client: MlflowClient,
    run_id: str | None,
    *,
    experiment_name: str,
    artifact_location: str | None,
    run_name: str,
) -> Iterator[_Run]:
    """The given run, left as it is; or a new promotion run, ended FINISHED or, when the body
    raises, FAILED."""
    if run_id is not None:
        yield _Run(run_id, client.get_run(run_id).info.experiment_id)
        return
    experiment_id = _experiment_id(client, experiment_name, artifact_location)
    created = client.create_run(experiment_id, tags={PROMOTION_TAG: "true"}, run_name=run_name)
    own = created.info.run_id
    try:
        yield _Run(own, experiment_id)
    except BaseException:
        # Report the original error, not a failure to record it.
        with contextlib.suppress(Exception):
            client.set_terminated(own, status=RunStatus.to_string(RunStatus.FAILED))
        raise
    client.set_terminated(own, status=RunStatus.to_string(RunStatus.FINISHED))


def _version_tags(
    checkpoint: Path, manifest: Manifest, expected: Mapping[str, str]
) -> dict[str, str]:
    return {
        "tunefleet.checkpoint": str(checkpoint),
        "tunefleet.checkpoint_sha256": checkpoint_digest(expected),
        "tunefleet.sweep": manifest.sweep,
        "tunefleet.trial": str(manifest.trial),
        "tunefleet.method": manifest.method,
        "tunefleet.metric": manifest.metric,
        "tunefleet.value": repr(manifest.value),
        "tunefleet.base_model": manifest.base_model,
        "tunefleet.base_model_revision": base_revision(manifest.base_model),
    }


def base_revision(name_or_path: str) -> str:
    """What pins the pretrained body: ``sha256:<digest of its file digests>`` for a local
    folder, ``commit:<sha>`` for a hub model in the local HF cache, else ``unknown``."""
    from tunefleet.errors import TunefleetError
    from tunefleet.trainers.checkpoint import hash_folder
    from tunefleet.trainers.model import resolve_model

    try:
        resolved = resolve_model(name_or_path)
    except TunefleetError:
        return "unknown"
    if Path(resolved).is_dir():
        return f"sha256:{checkpoint_digest(hash_folder(Path(resolved)))}"
    try:
        from huggingface_hub import snapshot_download

        # The cached snapshot's folder is named for its commit; nothing is downloaded.
        return f"commit:{Path(snapshot_download(resolved, local_files_only=True)).name}"
    except Exception:  # not cached, or not a hub id: the tag says so rather than failing
        return "unknown"


def _log_model(
    client: MlflowClient,
    run: _Run,
    tags: dict[str, str],
    *,
    checkpoint: Path,
    base_model: Path | None,
    merged: Merged,
    expected: Mapping[str, str],
) -> LoggedModel:
    """A READY LoggedModel holding the pyfunc folder, linked to ``run`` as an output; FAILED if
    building or uploading the folder fails."""
    logged = client.create_logged_model(
        experiment_id=run.experiment_id,
        name=MODEL_ARTIFACT_NAME,
        source_run_id=run.run_id,
        tags=tags,
        model_type="tunefleet-classifier",
    )
    try:
        _upload_pyfunc(
            client,
            logged,
            run,
            checkpoint=checkpoint,
            base_model=base_model,
            merged=merged,
            expected=expected,
        )
    except BaseException:
        # Report the original error, not a failure to record it.
        with contextlib.suppress(Exception):
            client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    client.log_outputs(run.run_id, [LoggedModelOutput(logged.model_id, step=0)])
    return logged


def _upload_pyfunc(
    client: MlflowClient,
    logged: LoggedModel,
    run: _Run,
    *,
    checkpoint: Path,
    base_model: Path | None,
    merged: Merged,
    expected: Mapping[str, str],
) -> None:
    """Save the pyfunc folder locally, check its checkpoint copy against ``expected`` (so a
    checkpoint replaced mid-copy is never registered), and upload it to ``logged``."""
    from tunefleet.trainers.checkpoint import verify

    with tempfile.TemporaryDirectory(prefix="tunefleet-register-") as tmp:
        local = Path(tmp) / MODEL_ARTIFACT_NAME
        _save_pyfunc(
            local,
            checkpoint=checkpoint,
            base_model=base_model,
            merged=merged.folder,
            mlflow_model=Model(
                artifact_path=logged.artifact_location,
                run_id=run.run_id,
                model_uuid=logged.model_id,
                model_id=logged.model_id,
            ),
        )
        verify(_saved_artifact(local, CHECKPOINT_ARTIFACT), expected)
        if merged.folder is not None:
            verify(_saved_artifact(local, MERGED_ARTIFACT), merged.sha256)
        client.log_model_artifacts(logged.model_id, str(local))


def _register_version(
    client: MlflowClient,
    run: _Run,
    logged: LoggedModel,
    *,
    model_name: str,
    alias: str,
    tags: dict[str, str],
    description: str | None,
) -> str:
    """A new READY version of ``model_name`` (created if missing) for ``logged``, with ``alias``
    moved to it; returns the version number."""
    _ensure_registered_model(client, model_name)
    # The source is the LoggedModel's artifact location, not ``models:/m-...``: the sqlite
    # registry store resolves a models:/ source through the process-global tracking URI
    # (MLflow 3.17, SqlAlchemyStore.create_model_version), which we must not rely on.
    version = client.create_model_version(
        name=model_name,
        source=logged.artifact_location,
        run_id=run.run_id,
        tags=tags,
        description=description,
        await_creation_for=READY_TIMEOUT_S,
        model_id=logged.model_id,
    )
    # The sqlite store gives the version as an int, the REST store as a str.
    number = str(version.version)
    _wait_ready(client, model_name, number)
    client.set_registered_model_alias(model_name, alias, number)
    return number


def _experiment_id(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    try:
        return str(client.create_experiment(name, artifact_location=artifact_location))
    except MlflowException as exc:
        # Another promotion created it between our lookup and create.
        if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
        again = client.get_experiment_by_name(name)
        if again is None:
            raise
        return str(again.experiment_id)


def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        # Creating and tolerating "exists" (rather than get-then-create) is race-free.
        if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise


def _wait_ready(client: MlflowClient, name: str, version: str) -> None:
    # create_model_version already waits; this also turns FAILED_REGISTRATION into an error.
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        status = client.get_model_version(name, version).status
        if status == "READY":
            return
        if status == "FAILED_REGISTRATION":
            raise MlflowException(f"model version {name}/{version} failed registration")
        if time.monotonic() > deadline:
            raise MlflowException(
                f"model version {name}/{version} not READY after "
                f"{READY_TIMEOUT_S}s (status {status})"
            )
        time.sleep(0.5)


@dataclass(frozen=True)
class Merged:
    """A LoRA/IA3 checkpoint's weights merged into its body, or why not."""

    folder: Path | None
    sha256: dict[str, str]
    refused: str | None
    """Why a method that merges was not merged (its merged logits differed, say); None else."""

    def tags(self) -> dict[str, str]:
        if self.folder is not None:
            return {
                "tunefleet.weights": "merged",
                "tunefleet.merged_sha256": checkpoint_digest(self.sha256),
            }
        tags = {"tunefleet.weights": "checkpoint"}
        if self.refused is not None:
            tags["tunefleet.merge_refused"] = self.refused[:4000]
        return tags


@contextlib.contextmanager
def _merged_weights(checkpoint: Path, manifest: Manifest) -> Iterator[Merged]:
    """Where the method is a weight change (LoRA, IA3: ``trainers.merge``), the merged plain
    transformers folder, written and checked like ``tunefleet export --format hf`` (its logits
    within 1e-5 of the checkpoint's), in a temporary folder; the registered model then needs
    neither peft nor a separate body. A merge whose check fails is not registered: the version
    carries the checkpoint and body, and the tag ``tunefleet.merge_refused`` says why."""
    from tunefleet.errors import TunefleetError
    from tunefleet.trainers.checkpoint import hash_folder
    from tunefleet.trainers.merge import STANDALONE

    if STANDALONE.get(manifest.method) != "merged":
        yield Merged(None, {}, None)
        return
    from tunefleet.platform.export import export_checkpoint

    with tempfile.TemporaryDirectory(prefix="tunefleet-merge-") as tmp:
        folder = Path(tmp) / "merged"
        try:
            export_checkpoint(checkpoint, folder, fmt="hf")
        except TunefleetError as exc:
            yield Merged(None, {}, str(exc))
            return
        yield Merged(folder, hash_folder(folder), None)


def _bundled_base(manifest: Manifest) -> Path | None:
    """The local pretrained body to register with a checkpoint that is restored onto it (its
    method is not ``self_contained``), else None.

    A hub id (no local folder) is not bundled: it resolves through the HF cache/hub at load.
    """
    from tunefleet.trainers.methods import get_method
    from tunefleet.trainers.model import resolve_model

    if get_method(manifest.method).self_contained:
        return None
    resolved = Path(resolve_model(manifest.base_model))
    if not resolved.is_dir():
        return None
    return resolved


def _save_pyfunc(
    path: Path,
    *,
    checkpoint: Path,
    base_model: Path | None,
    merged: Path | None,
    mlflow_model: Model,
) -> None:
    import mlflow.pyfunc

    import tunefleet

    artifacts = {CHECKPOINT_ARTIFACT: str(checkpoint)}
    if base_model is not None:
        artifacts[BASE_MODEL_ARTIFACT] = str(base_model)
    if merged is not None:
        artifacts[MERGED_ARTIFACT] = str(merged)
    # No signature and no input example, on purpose: a signature would make MLflow reshape list
    # and Series input before CheckpointModel sees it, and an example would load the model here.
    mlflow.pyfunc.save_model(
        path=str(path),
        python_model=CheckpointModel(),
        artifacts=artifacts,
        # tunefleet itself travels with the model so that it loads where tunefleet is not
        # installed (it is not on PyPI, so it cannot be a pip requirement).
        code_paths=[str(Path(tunefleet.__file__).parent)],
        pip_requirements=_pip_requirements(),
        mlflow_model=mlflow_model,
    )


def _saved_artifact(model_dir: Path, name: str) -> Path:
    # MLflow (3.17) stores an artifact folder under its own basename, not under the artifact's
    # name, and de-duplicates clashes; the MLmodel file records where each one went.
    flavor = Model.load(str(model_dir)).flavors["python_function"]
    return model_dir / str(flavor["artifacts"][name]["path"])


def _pip_requirements() -> list[str]:
    requirements = []
    for package in RUNTIME_PACKAGES:
        try:
            version = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            requirements.append(package)
            continue
        # Drop local labels (torch 2.x+cpu): pip cannot resolve them from an index.
        with contextlib.suppress(InvalidVersion):
            version = Version(version).public
        requirements.append(f"{package}=={version}")
    return requirements


def checkpoint_digest(hashes: Mapping[str, str]) -> str:
    """One digest of a folder's file digests (``hash_folder``): the ``tunefleet.checkpoint_sha256``
    tag, against which a downloaded copy is checked."""
    return hashlib.sha256(json.dumps(dict(sorted(hashes.items()))).encode()).hexdigest()


__all__ = ["RegisteredModel", "base_revision", "checkpoint_digest", "register_checkpoint"]
