"""The sweep's parent run on a real MLflow store (sqlite): it ends with the sweep and is
running again while a resumed sweep runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunefleet.tracking.mlflow_sink import (
    end_parent_run,
    ensure_experiment,
    make_client,
    reopen_parent_run,
    start_parent_run,
)


def test_a_parent_run_ends_is_reopened_and_ends_again(tmp_path: Path) -> None:
    client = make_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = ensure_experiment(client, "parent", artifact_location=None)
    run_id = start_parent_run(client, experiment_id=experiment, sweep="parent", params={"a": 1})
    assert client.get_run(run_id).info.status == "RUNNING"

    end_parent_run(client, run_id, status="KILLED")
    stopped = client.get_run(run_id).info
    assert stopped.status == "KILLED" and stopped.end_time is not None

    reopen_parent_run(client, run_id)
    assert client.get_run(run_id).info.status == "RUNNING"

    end_parent_run(client, run_id, status="FINISHED")
    assert client.get_run(run_id).info.status == "FINISHED"


def test_a_parent_run_ends_only_in_a_terminal_status(tmp_path: Path) -> None:
    client = make_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with pytest.raises(ValueError, match="got 'RUNNING'"):
        end_parent_run(client, "any", status="RUNNING")
