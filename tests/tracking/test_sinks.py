"""The sink registry: a run's sinks are described in its spool header from the config and
built back from that header alone, as ``tunefleet sync`` does in another process."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from tunefleet.config import SweepConfig, parse_config
from tunefleet.tracking.mlflow_sink import MlflowSink
from tunefleet.tracking.sinks import (
    RunSetup,
    build_sinks,
    describe_sinks,
    register_sink,
    sink_names,
)
from tunefleet.tracking.spool import Cursors, sibling
from tunefleet.tracking.wandb_sink import WandbSink

RUN = {
    "sweep": "reg",
    "trial": 1,
    "method": "full",
    "params": {"train.epochs": 1},
    "tags": {},
    "run_name": "",
}


def config(tmp_path: Path, *, mlflow: bool = True, wandb: bool = True) -> SweepConfig:
    return parse_config(
        {
            "name": "reg",
            "data": {"train": str(tmp_path / "train.csv")},
            "tracking": {"mlflow": {"enabled": mlflow}, "wandb": {"enabled": wandb}},
        }
    )


def header(setup: RunSetup) -> dict[str, Any]:
    # Through JSON, as a spool's header line is.
    described = {"spool_id": "0123456789abcdef", "run": RUN, "sinks": describe_sinks(setup)}
    loaded: dict[str, Any] = json.loads(json.dumps(described))
    return loaded


def rebuilt(tmp_path: Path, head: dict[str, Any], known: set[str | None]) -> dict[str, Any]:
    spool = tmp_path / "trial-1-abcd.spool"
    return dict(
        build_sinks(
            head, spool, Cursors(sibling(spool, ".cursors.json")), known_uris=known, store=None
        )
    )


def test_each_enabled_tracker_is_described_and_built_back_from_the_header(
    tmp_path: Path,
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    setup = RunSetup(
        config=config(tmp_path),
        local_dir=tmp_path,
        mlflow_uri=uri,
        experiment_id="7",
        parent_run_id="parent-1",
    )
    head = header(setup)
    assert head["sinks"]["mlflow"] == {
        "tracking_uri": uri,
        "experiment_id": "7",
        "parent_run_id": "parent-1",
    }
    assert head["sinks"]["wandb"]["directory"] == str(tmp_path)
    assert "store" not in head["sinks"]  # no store handed in: none described
    sinks = rebuilt(tmp_path, head, known=set())
    assert set(sinks) == {"mlflow", "wandb"}
    mlflow, wandb = sinks["mlflow"], sinks["wandb"]
    assert isinstance(mlflow, MlflowSink) and isinstance(wandb, WandbSink)
    assert (mlflow.experiment_id, mlflow.parent_run_id) == ("7", "parent-1")
    assert mlflow.run_id is None  # created lazily, on the bus thread
    assert wandb.run_id == head["sinks"]["wandb"]["run_id"]  # chosen up front, kept by a replay


def test_disabled_trackers_and_a_run_without_an_experiment_are_not_described(
    tmp_path: Path,
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    off = RunSetup(
        config=config(tmp_path, mlflow=False, wandb=False),
        local_dir=tmp_path,
        mlflow_uri=uri,
        experiment_id="7",
    )
    assert describe_sinks(off) == {}
    no_experiment = RunSetup(
        config=config(tmp_path, wandb=False), local_dir=tmp_path, mlflow_uri=uri
    )
    assert describe_sinks(no_experiment) == {}


def test_a_uri_whose_password_this_process_lacks_leaves_its_sink_out(tmp_path: Path) -> None:
    uri = "http://user:pw-4711@127.0.0.1:9/"
    setup = RunSetup(
        config=config(tmp_path, wandb=False),
        local_dir=tmp_path,
        mlflow_uri=uri,
        experiment_id="0",
    )
    head = header(setup)
    assert head["sinks"]["mlflow"]["tracking_uri"] == "http://user:***@127.0.0.1:9/"
    assert "pw-4711" not in json.dumps(head)
    assert rebuilt(tmp_path, head, known={None, "sqlite:///elsewhere.db"}) == {}
    (sink,) = rebuilt(tmp_path, head, known={uri}).values()
    assert isinstance(sink, MlflowSink)


def test_a_sink_not_registered_here_is_left_out_and_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    setup = RunSetup(config=config(tmp_path, mlflow=False), local_dir=tmp_path, mlflow_uri="x")
    head = header(setup)
    head["sinks"]["tensorboard"] = {"directory": str(tmp_path)}
    with caplog.at_level(logging.WARNING):
        sinks = rebuilt(tmp_path, head, known=set())
    assert set(sinks) == {"wandb"}
    assert "'tensorboard' is not registered" in caplog.text and "wandb" in caplog.text


def test_names_are_checked_when_registering() -> None:
    assert {"mlflow", "wandb"} <= set(sink_names())
    with pytest.raises(ValueError, match="'mlflow' is already registered"):
        register_sink("mlflow", describe=lambda setup: None, build=lambda source: None)
    with pytest.raises(ValueError, match="identifier, got 'my sink'"):
        register_sink("my sink", describe=lambda setup: None, build=lambda source: None)
