"""Trackers that go away: a real ``mlflow server`` killed mid-trial, and a worker killed with
SIGKILL mid-trial. Training goes on, the spool keeps every point, ``tunefleet sync`` delivers
each exactly once."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from support.cli import run_cli, start_cli
from support.configs import write_config
from support.mlflow_server import MlflowServer
from support.ports import free_port
from support.trials import tiny_config
from support.waiting import wait_for
from tunefleet.config import SweepConfig, parse_config, set_path
from tunefleet.platform.launcher import prepare_sweep
from tunefleet.platform.layout import Layout
from tunefleet.platform.store import Store
from tunefleet.platform.worker import WorkerOptions, run_worker
from tunefleet.tracking.events import End, Point
from tunefleet.tracking.spool import (
    Cursors,
    SpoolLock,
    SpoolLocked,
    read_header,
    read_items,
    sibling,
)

pytestmark = pytest.mark.slow


def outage_config(model: Path, data: Path, name: str, **tracking: Any) -> SweepConfig:
    config: dict[str, Any] = tiny_config(
        model, data, epochs=6, logging_steps=1, learning_rate=3e-3
    ).model_dump(mode="json")
    for path, value in {
        "name": name,
        "search.trials": 1,
        "search.pruner": "none",
        "tracking.wandb.enabled": False,
        "tracking.system_every_s": 0,  # time-based points would differ between two runs
        "tracking.sink_wait_s": 2,
        **tracking,
    }.items():
        config = set_path(config, path, value)
    return parse_config(config)


def spool_of(layout: Layout, name: str) -> Path:
    (path,) = layout.spool_dir(name).glob("*.spool")
    return path


def spooled_points(path: Path) -> Counter[tuple[str, int, float]]:
    return Counter(
        (i.event.key, i.event.step, i.event.value)
        for i in read_items(path)
        if isinstance(i.event, Point)
    )


def mlflow_points(client: MlflowClient, run_id: str) -> Counter[tuple[str, int, float]]:
    run = client.get_run(run_id)
    return Counter(
        (key, m.step, m.value)
        for key in run.data.metrics
        for m in client.get_metric_history(run_id, key)
    )


def evaluated(layout: Layout, name: str) -> bool:
    """True once the trial's first evaluation is flushed to its spool."""
    folder = layout.spool_dir(name)
    return any(
        b'"eval_loss"' in line
        for path in folder.glob("*.spool")
        # Only a whole line counts: a torn one would not survive as an event.
        for line in path.read_bytes().splitlines(keepends=True)
        if line.endswith(b"\n")
    )


class Connections:
    """Every socket connection this process opens to one port, with the thread that opened it
    (CPython's audit events: nothing is patched)."""

    def __init__(self, port: int) -> None:
        self.port, self.active, self.threads = port, False, []
        sys.addaudithook(self._hook)

    def _hook(self, event: str, args: tuple[Any, ...]) -> None:
        if self.active and event == "socket.connect":
            address = args[1]
            if isinstance(address, tuple) and len(address) >= 2 and address[1] == self.port:
                self.threads.append(threading.current_thread().name)


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path / "mlflow-server").start()
    server.wait()
    try:
        yield server
    finally:
        server.stop()


def test_a_killed_server_neither_blocks_training_nor_loses_a_point(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path, server: MlflowServer
) -> None:
    layout = Layout.at(tmp_path / "runs").ensure()
    uri = {"tracking.mlflow.tracking_uri": server.url}
    outage = outage_config(tiny_model, sentiment_csv, "outage", **uri)
    prepare_sweep(outage, layout, layout.db_url).dispose()
    connections = Connections(server.port)

    def kill_after_first_evaluation() -> None:
        wait_for(lambda: evaluated(layout, "outage"), what="the first evaluation in the spool")
        server.kill()

    killer = threading.Thread(target=kill_after_first_evaluation)
    killer.start()
    connections.active = True
    assert run_worker(WorkerOptions(name="outage", layout=layout, db_url=layout.db_url)) == 1
    connections.active = False
    killer.join()

    store = Store(layout.db_url)
    assert store.trial("outage", 0).state == "COMPLETE"  # the trial finished with MLflow dead
    path = spool_of(layout, "outage")
    spooled = spooled_points(path)
    assert spooled[("eval_accuracy", 48, _value(path, "eval_accuracy", 48))] == 1  # last epoch
    assert Cursors(sibling(path, ".cursors.json")).offset("mlflow") < path.stat().st_size
    # The training thread never spoke to the tracker: every attempt, failed ones included, came
    # from the bus (or the worker's replay) thread.
    assert connections.threads and "MainThread" not in connections.threads

    server.start().wait()
    result = run_cli("sync", "outage", "--out", str(layout.out))
    assert result.returncode == 0, result.stdout + result.stderr
    client = MlflowClient(tracking_uri=server.url)
    run_id = store.trial("outage", 0).mlflow_run_id
    assert run_id is not None
    assert mlflow_points(client, run_id) == spooled  # every spooled point, each exactly once
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    artifacts = {a.path for a in client.list_artifacts(run_id, "evaluation")}
    assert "evaluation/confusion_matrix.png" in artifacts
    parent = client.get_run(store.get_sweep("outage").mlflow_parent_run_id)
    assert parent.data.tags["tunefleet.best_trial"] == "0"

    steady = outage_config(tiny_model, sentiment_csv, "steady", **uri)
    prepare_sweep(steady, layout, layout.db_url).dispose()
    assert run_worker(WorkerOptions(name="steady", layout=layout, db_url=layout.db_url)) == 1
    steady_points = mlflow_points(client, store.trial("steady", 0).mlflow_run_id)
    assert _per_key(steady_points) == _per_key(spooled)


def _per_key(points: Counter[tuple[str, int, float]]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for (key, _, _), n in points.items():
        counts[key] += n
    return dict(counts)


def _value(path: Path, key: str, step: int) -> float:
    (value,) = [
        i.event.value
        for i in read_items(path)
        if isinstance(i.event, Point) and (i.event.key, i.event.step) == (key, step)
    ]
    return value


def _lock_free(spool: Path) -> bool:
    try:
        SpoolLock(sibling(spool, ".lock")).acquire().release()
    except SpoolLocked:
        return False
    return True


def test_a_killed_worker_leaves_a_spool_that_replays(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path
) -> None:
    out = tmp_path / "runs"
    layout = Layout.at(out)
    config = outage_config(tiny_model, sentiment_csv, "killed").model_dump(mode="json")
    config["train"]["epochs"] = 30  # long enough to be killed mid-trial
    # The next worker joins its replay for at most this long before exiting: on a loaded
    # 2-core machine, 2 s can cut the replay short (the spool would then wait for `sync`).
    config["tracking"]["sink_wait_s"] = 60
    path = write_config(tmp_path, config, name="killed")
    sweep = start_cli("sweep", str(path), "--out", str(out))
    try:
        wait_for(
            lambda: layout.spool_dir("killed").is_dir() and evaluated(layout, "killed"),
            what="the first evaluation in the spool",
        )
    finally:
        os.killpg(sweep.pid, signal.SIGKILL)  # the launcher and its worker, mid-trial
        sweep.wait()
    spool = spool_of(layout, "killed")
    survived = spooled_points(spool)
    assert any(key == "eval_accuracy" for key, _, _ in survived)  # flushed at the evaluation
    assert not any(isinstance(i.event, End) for i in read_items(spool))

    # The next worker to start replays it (this one finds the budget spent and stops), once the
    # killed worker is gone: the OS releases its lock as the process finishes dying, which on a
    # loaded machine can take a moment after the launcher's own exit.
    wait_for(lambda: _lock_free(spool), what="the killed worker to release the spool's lock")
    worker = run_cli("worker", "killed", "--out", str(out))
    assert worker.returncode == 0, worker.stdout + worker.stderr
    assert spooled_points(spool) == survived  # the replay added no point, only the end
    client = MlflowClient(tracking_uri=f"sqlite:///{layout.out / 'mlflow.db'}")
    spool_id = read_header(spool)["spool_id"]
    (run,) = client.search_runs(
        [client.get_experiment_by_name("killed").experiment_id],
        filter_string=f"tags.`tunefleet.spool` = '{spool_id}'",
    )
    assert mlflow_points(client, run.info.run_id) == survived
    assert run.info.status == "FAILED"  # its worker died: the replay closed the run
    assert Store(layout.db_url).trial("killed", 0).mlflow_run_id == run.info.run_id
    synced = run_cli("sync", "killed", "--out", str(out))
    assert synced.returncode == 0 and "sent mlflow 0" in synced.stdout, synced.stdout


def test_a_tracker_down_at_sweep_start_is_a_clear_error(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path
) -> None:
    port = free_port()
    uri = f"http://user:pw123@127.0.0.1:{port}"
    config = outage_config(tiny_model, sentiment_csv, "down").model_dump(mode="json")
    config["tracking"]["mlflow"]["tracking_uri"] = uri  # a dump holds the password redacted
    path = write_config(tmp_path, config, name="down")
    result = run_cli("sweep", str(path), "--out", str(tmp_path / "runs"))
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"MLflow at http://user:***@127.0.0.1:{port} cannot be reached" in result.stderr
    assert "tracking.mlflow.enabled: false" in result.stderr
    assert "pw123" not in result.stdout + result.stderr
    assert not Layout.at(tmp_path / "runs").spool_dir("down").exists()  # no trial started
