"""Registering real checkpoints in a real MLflow registry (sqlite store and a live ``mlflow
server``) and loading them back as pyfunc models in fresh processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow.artifacts
import pandas as pd
import pytest
from mlflow.models import Model
from mlflow.tracking import MlflowClient
from transformers import PreTrainedModel

from support.mlflow_server import MlflowServer
from tunefleet.config import METHODS, TrainConfig, parse_config
from tunefleet.errors import CheckpointError
from tunefleet.platform.model_registry import PROMOTION_TAG, RegisteredModel, register_checkpoint
from tunefleet.platform.pyfunc import (
    BASE_MODEL_ARTIFACT,
    CHECKPOINT_ARTIFACT,
    MERGED_ARTIFACT,
    CheckpointModel,
    load_predictor,
)
from tunefleet.trainers.checkpoint import Manifest, hash_folder, write_checkpoint
from tunefleet.trainers.merge import STANDALONE
from tunefleet.trainers.methods import get_method
from tunefleet.trainers.model import load_classifier, load_tokenizer
from tunefleet.trainers.predict import Predictor
from tunefleet.trainers.run import TrialRequest, run_trial

pytestmark = pytest.mark.slow

TEXTS = [
    "The food was wonderful and the staff friendly.",
    "Cold fries, rude waiter, never again.",
    "ok",
    "Best brunch in town!",
]

# Runs in a fresh interpreter that knows only MLFLOW_TRACKING_URI: loads each model URI and
# records what predict gives for a list, a Series, DataFrames with and without a text column.
_LOADER = r"""
import json, sys
import mlflow.pyfunc
import numpy as np
import pandas as pd

uris, texts, out = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
results = {}
for uri in uris:
    model = mlflow.pyfunc.load_model(uri)
    def rows(frame):
        return [[r["label"], r["probabilities"]] for r in frame.to_dict("records")]
    entry = {
        "list": rows(model.predict(texts)),
        "series": rows(model.predict(pd.Series(texts))),
        "frame": rows(model.predict(pd.DataFrame({"id": range(len(texts)), "text": texts}))),
        # What `mlflow models serve` hands the model for {"inputs": [...]}.
        "array": rows(model.predict(np.array(texts))),
    }
    try:
        model.predict(pd.DataFrame({"review": texts}))
        entry["bad"] = None
    except Exception as exc:
        entry["bad"] = [type(exc).__name__, str(exc)]
    entry["peft_imported"] = "peft" in sys.modules
    results[uri] = entry
with open(out, "w") as handle:
    json.dump(results, handle)
"""


@dataclass(frozen=True)
class Trained:
    base: Path
    checkpoints: dict[str, Path]

    def expected(self, method: str) -> list[list[Any]]:
        predictions = Predictor.from_checkpoint(self.checkpoints[method]).predict(TEXTS)
        return [[p.label, p.probabilities] for p in predictions]

    @contextmanager
    def hidden(self) -> Iterator[None]:
        """Moves the base model and checkpoints away, so a load that still needs them fails."""
        moved = [self.base, *self.checkpoints.values()]
        for folder in moved:
            folder.rename(folder.with_name(folder.name + ".hidden"))
        try:
            yield
        finally:
            for folder in moved:
                folder.with_name(folder.name + ".hidden").rename(folder)


@pytest.fixture(scope="module")
def trained(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, sentiment_csv: Path
) -> Trained:
    """One real full fine-tuning trial and one LoRA trial on a private copy of the tiny BERT."""
    root = tmp_path_factory.mktemp("registry-trials")
    base = root / "base"
    shutil.copytree(tiny_model, base)
    checkpoints = {}
    for number, method in enumerate(("full", "lora")):
        config = parse_config(
            {
                "name": "reg",
                "model": {"name_or_path": str(base)},
                "data": {"train": str(sentiment_csv), "test_fraction": 0.0, "max_length": 32},
                "train": {"method": method, "epochs": 1, "learning_rate": 1e-3, "batch_size": 16},
            }
        )
        run_trial(
            config,
            TrialRequest(
                sweep="reg",
                number=number,
                params={"method": method},
                checkpoint_dir=root / method,
                work_dir=root / f"work-{method}",
            ),
        )
        checkpoints[method] = root / method
    return Trained(base=base, checkpoints=checkpoints)


@pytest.fixture(scope="module")
def every_method(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Trained:
    """Each method's checkpoint of the tiny BERT as it prepared it, written the way a trial
    writes its best one; untrained, since what a checkpoint holds does not depend on training."""
    root = tmp_path_factory.mktemp("every-method")
    base = root / "base"
    shutil.copytree(tiny_model, base)
    tokenizer = load_tokenizer(str(base))
    labels = ("0", "1")
    checkpoints = {}
    for number, name in enumerate(METHODS):
        method = get_method(name)
        model = method.prepare(
            load_classifier(str(base), labels), TrainConfig.model_validate({"method": name})
        )
        manifest = Manifest(
            method=name,
            base_model=str(base),
            label_names=labels,
            max_length=32,
            sweep="sizes",
            trial=number,
            metric="eval_accuracy",
            value=0.5,
            epoch=1.0,
            params={"method": name},
            config={},
            data_sha256="0" * 64,
        )
        checkpoints[name] = root / name
        write_checkpoint(
            root / name, model=model, save=method.save, tokenizer=tokenizer, manifest=manifest
        )
    return Trained(base=base, checkpoints=checkpoints)


@pytest.fixture(scope="module")
def sqlite_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A sqlite store (shared: creating one takes seconds) whose experiment keeps its artifacts
    under tmp, not ./mlruns; each test uses its own model names."""
    root = tmp_path_factory.mktemp("sqlite-store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri).create_experiment(
        "promotions", artifact_location=(root / "artifacts").as_uri()
    )
    return uri


def _load_elsewhere(tracking_uri: str, uris: list[str], tmp_path: Path) -> dict[str, Any]:
    out = tmp_path / "loaded.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(
        MLFLOW_TRACKING_URI=tracking_uri,
        MLFLOW_DISABLE_TELEMETRY="true",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    done = subprocess.run(
        [sys.executable, "-c", _LOADER, json.dumps(uris), json.dumps(TEXTS), str(out)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def _assert_same(actual: list[list[Any]], expected: list[list[Any]]) -> None:
    assert [label for label, _ in actual] == [label for label, _ in expected]
    for (_, got), (_, want) in zip(actual, expected, strict=True):
        assert got.keys() == want.keys()
        assert all(abs(got[k] - want[k]) <= 1e-6 for k in want), (got, want)


def test_registered_checkpoints_predict_like_the_checkpoints(
    trained: Trained, sqlite_uri: str, tmp_path: Path
) -> None:
    registered = {
        method: register_checkpoint(
            tracking_uri=sqlite_uri,
            model_name=f"sentiment-{method}",
            alias="champion",
            checkpoint=trained.checkpoints[method],
            run_id=None,
            experiment_name="promotions",
            sha256=hash_folder(trained.checkpoints[method]),
        )
        for method in ("full", "lora")
    }
    assert registered["lora"] == RegisteredModel(
        name="sentiment-lora", version="1", alias="champion", uri="models:/sentiment-lora@champion"
    )
    expected = {method: trained.expected(method) for method in registered}

    # The LoRA adapter and the full model load without the folders they were trained in.
    with trained.hidden():
        # LoRA first: whether loading it imported peft is read before the full model loads.
        uris = [registered["lora"].uri, registered["full"].uri]
        loaded = _load_elsewhere(sqlite_uri, uris, tmp_path)

    for method, model in registered.items():
        result = loaded[model.uri]
        for kind in ("list", "series", "frame", "array"):
            _assert_same(result[kind], expected[method])
        error_type, message = result["bad"]
        assert error_type == "ValueError"
        assert "'text' column" in message and "'review'" in message
    # LoRA is registered merged: loading and running it never imports peft.
    assert loaded[registered["lora"].uri]["peft_imported"] is False

    client = MlflowClient(tracking_uri=sqlite_uri)
    version = client.get_model_version_by_alias("sentiment-lora", "champion")
    assert version.tags["tunefleet.checkpoint"] == str(trained.checkpoints["lora"].resolve())
    assert version.tags["tunefleet.trial"] == "1"
    assert version.tags["tunefleet.method"] == "lora"
    assert version.tags["tunefleet.weights"] == "merged"
    assert len(version.tags["tunefleet.merged_sha256"]) == 64
    full = client.get_model_version_by_alias("sentiment-full", "champion")
    assert full.tags["tunefleet.weights"] == "checkpoint"
    assert version.tags["tunefleet.metric"] == "eval_accuracy"
    assert 0.0 <= float(version.tags["tunefleet.value"]) <= 1.0
    assert version.run_id is not None
    run = client.get_run(version.run_id)
    assert run.data.tags[PROMOTION_TAG] == "true"
    assert run.info.status == "FINISHED"
    logged_model = version.tags["tunefleet.logged_model"]
    assert run.outputs is not None
    assert logged_model in [o.model_id for o in run.outputs.model_outputs]
    assert client.get_logged_model(logged_model).status == "READY"
    assert version.source == client.get_logged_model(logged_model).artifact_location


class _BodyWanted(Exception):
    pass


def _loads_without_body(name: str, checkpoint: Path) -> bool:
    def body() -> PreTrainedModel:
        raise _BodyWanted

    try:
        get_method(name).load(checkpoint, body)
    except _BodyWanted:
        return False
    return True


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_promotion_bundles_the_body_only_with_checkpoints_that_need_it(
    every_method: Trained, sqlite_uri: str, tmp_path: Path
) -> None:
    client = MlflowClient(tracking_uri=sqlite_uri)
    base = every_method.base
    registered: dict[str, dict[str, Path]] = {}
    for name, checkpoint in every_method.checkpoints.items():
        self_contained = _loads_without_body(name, checkpoint)
        assert get_method(name).self_contained == self_contained, name
        model = register_checkpoint(
            tracking_uri=sqlite_uri,
            model_name=f"size-{name}",
            alias="champion",
            checkpoint=checkpoint,
            run_id=None,
            experiment_name="promotions",
        )
        source = client.get_model_version_by_alias(model.name, model.alias).source
        folder = Path(
            mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(tmp_path / name))
        )
        flavor = Model.load(str(folder)).flavors["python_function"]
        artifacts = {key: folder / value["path"] for key, value in flavor["artifacts"].items()}
        registered[name] = artifacts

        # LoRA and IA3 carry their weights merged into the body (a plain transformers model);
        # the other methods that are not self-contained carry the body beside the checkpoint.
        merged = STANDALONE[name] == "merged"
        extra = {MERGED_ARTIFACT} if merged else set() if self_contained else {BASE_MODEL_ARTIFACT}
        assert set(artifacts) == {CHECKPOINT_ARTIFACT} | extra, name
        assert hash_folder(artifacts[CHECKPOINT_ARTIFACT]) == hash_folder(checkpoint), name
        if BASE_MODEL_ARTIFACT in extra:
            assert hash_folder(artifacts[BASE_MODEL_ARTIFACT]) == hash_folder(base), name
        if merged:
            config = json.loads((artifacts[MERGED_ARTIFACT] / "config.json").read_text())
            assert "peft_config" not in config and not list(
                artifacts[MERGED_ARTIFACT].glob("adapter_*")
            ), name
        promoted = sum(_size(path) for path in artifacts.values())
        body = 0 if self_contained or merged else _size(base)
        assert promoted == _size(checkpoint) + body + (
            _size(artifacts[MERGED_ARTIFACT]) if merged else 0
        ), name

    # Each registered copy predicts as its checkpoint does with neither the checkpoint nor the
    # pretrained body where they were written: what promotion left out was not needed.
    expected = {name: every_method.expected(name) for name in registered}
    with every_method.hidden():
        for name, artifacts in registered.items():
            body, merged_folder = artifacts.get(BASE_MODEL_ARTIFACT), artifacts.get(MERGED_ARTIFACT)
            predictor = load_predictor(
                str(artifacts[CHECKPOINT_ARTIFACT]),
                None if body is None else str(body),
                merged=None if merged_folder is None else str(merged_folder),
            )
            got = [[p.label, p.probabilities] for p in predictor.predict(TEXTS)]
            _assert_same(got, expected[name])


def test_alias_moves_to_the_newest_registration(trained: Trained, sqlite_uri: str) -> None:
    client = MlflowClient(tracking_uri=sqlite_uri)
    experiment = client.get_experiment_by_name("promotions")
    assert experiment is not None
    trial_run = client.create_run(experiment.experiment_id).info.run_id
    client.set_terminated(trial_run)  # as a finished trial's run is

    first = register_checkpoint(
        tracking_uri=sqlite_uri,
        model_name="sentiment",
        alias="champion",
        checkpoint=trained.checkpoints["full"],
        run_id=trial_run,
        experiment_name="unused",
        description="first",
    )
    second = register_checkpoint(
        tracking_uri=sqlite_uri,
        model_name="sentiment",
        alias="champion",
        checkpoint=trained.checkpoints["lora"],
        run_id=None,
        experiment_name="promotions",
    )

    assert (first.version, second.version) == ("1", "2")
    assert first.uri == second.uri == "models:/sentiment@champion"
    now = client.get_model_version_by_alias("sentiment", "champion")
    assert str(now.version) == "2" and now.tags["tunefleet.method"] == "lora"
    assert client.get_model_version("sentiment", "1").aliases == []
    assert client.get_model_version("sentiment", "1").description == "first"
    # A given run is used as is: no promotion run, and its status is left alone.
    assert client.get_model_version("sentiment", "1").run_id == trial_run
    assert PROMOTION_TAG not in client.get_run(trial_run).data.tags
    assert client.get_run(trial_run).info.status == "FINISHED"
    assert client.get_experiment_by_name("unused") is None

    model = CheckpointModel()
    with pytest.raises(ValueError, match=r"got columns: 'a', 'b'"):
        model.predict(None, pd.DataFrame({"a": ["x"], "b": ["y"]}))


def test_changed_checkpoint_is_not_registered(trained: Trained, sqlite_uri: str) -> None:
    hashes = hash_folder(trained.checkpoints["full"])
    hashes["config.json"] = "0" * 64
    with pytest.raises(CheckpointError, match=r"changed config\.json"):
        register_checkpoint(
            tracking_uri=sqlite_uri,
            model_name="tampered",
            alias="champion",
            checkpoint=trained.checkpoints["full"],
            run_id=None,
            experiment_name="promotions",
            sha256=hashes,
        )
    client = MlflowClient(tracking_uri=sqlite_uri)
    assert client.search_registered_models(filter_string="name = 'tampered'") == []


@pytest.fixture(scope="module", autouse=True)
def _server_started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """Launches ``mlflow server`` as the module starts, so that its start-up (database
    migrations, workers) overlaps the training; ``mlflow_server`` waits for it."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture()
def mlflow_server(_server_started: MlflowServer) -> str:
    """The URL of the real ``mlflow server`` (sqlite backend, proxied artifacts under tmp)."""
    return _server_started.wait()


def test_register_and_load_through_a_tracking_server(
    trained: Trained, mlflow_server: str, tmp_path: Path
) -> None:
    model = register_checkpoint(
        tracking_uri=mlflow_server,
        model_name="sentiment-http",
        alias="champion",
        checkpoint=trained.checkpoints["lora"],
        run_id=None,
        experiment_name="promotions-http",
    )
    assert model.uri == "models:/sentiment-http@champion"

    expected = trained.expected("lora")
    with trained.hidden():
        loaded = _load_elsewhere(mlflow_server, [model.uri], tmp_path)
    _assert_same(loaded[model.uri]["list"], expected)
    _assert_same(loaded[model.uri]["frame"], expected)
    version = MlflowClient(tracking_uri=mlflow_server).get_model_version("sentiment-http", "1")
    assert (version.source or "").startswith("mlflow-artifacts:/")  # proxied by the server
