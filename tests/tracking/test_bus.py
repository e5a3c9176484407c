"""The bus with real sinks: MLflow on sqlite, the console, and an MLflow server that is not
there. Every point is spooled and delivered once; a dead sink delays only itself."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from support.ports import free_port
from tunefleet.tracking.bus import TelemetryBus
from tunefleet.tracking.console_sink import ConsoleSink
from tunefleet.tracking.events import End, Point, RunInfo
from tunefleet.tracking.mlflow_sink import MlflowSink, ensure_experiment, make_client
from tunefleet.tracking.sinks import deliver
from tunefleet.tracking.spool import Cursors, SpoolWriter, read_items, sibling

INFO = RunInfo(sweep="bus", trial=0, method="full", params={"train.epochs": 1})


def mlflow_sink(uri: str, tmp_path: Path, spool_id: str = "s1") -> MlflowSink:
    client = make_client(uri)
    return MlflowSink(
        client,
        info=INFO,
        experiment_id=ensure_experiment(client, "bus", artifact_location=None)
        if uri.startswith("sqlite")
        else "0",
        parent_run_id=None,
        spool_id=spool_id,
        artifacts=tmp_path / "artifacts",
        state={},
    )


def mlflow_bus(spool: Path, sink: MlflowSink, **options: Any) -> TelemetryBus:
    """A bus writing ``spool`` and delivering to ``sink`` alone, polling quickly."""
    return TelemetryBus(
        SpoolWriter(spool, {"run": {}, "sinks": {}}),
        [sink],
        Cursors(sibling(spool, ".cursors.json")),
        interval_s=0.05,
        **options,
    )


def steps(n: int) -> list[list[Point]]:
    return [
        [Point.now("loss", 1.0 / (s + 1), s), Point.now("grad_norm/head", 0.1 * s, s)]
        for s in range(n)
    ]


def test_every_point_reaches_mlflow_once_and_the_cursor_reaches_the_end(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spool = tmp_path / "t.spool"
    sink = mlflow_sink(uri, tmp_path)
    out = io.StringIO()
    bus = TelemetryBus(
        SpoolWriter(spool, {"run": {}, "sinks": {}}),
        [sink, ConsoleSink(out)],
        Cursors(sibling(spool, ".cursors.json")),
        interval_s=0.05,
    )
    for points in steps(300):
        bus.emit(points)
    assert bus.close(status="FINISHED", timeout_s=60) == {"mlflow": 0, "console": 0}
    client = MlflowClient(tracking_uri=uri)
    assert sink.run_id is not None
    history = client.get_metric_history(sink.run_id, "loss")
    assert sorted(m.step for m in history) == list(range(300))
    assert client.get_run(sink.run_id).info.status == "FINISHED"
    cursors = Cursors(sibling(spool, ".cursors.json"))
    assert cursors.offset("mlflow") == cursors.offset("console") == spool.stat().st_size
    assert cursors.state("mlflow") == {"run_id": sink.run_id}


def test_writing_a_batch_twice_leaves_mlflow_as_if_once(tmp_path: Path) -> None:
    """The contract exactly-once rests on: a replay resends the batch that was in flight."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spool = tmp_path / "t.spool"
    writer = SpoolWriter(spool, {"run": {}, "sinks": {}})
    for points in steps(50):
        writer.write(points)
    writer.close()
    items = list(read_items(spool))
    cursors = Cursors(sibling(spool, ".cursors.json"))
    sink = mlflow_sink(uri, tmp_path)
    deliver(sink, items, cursors)
    again = mlflow_sink(uri, tmp_path)  # another process: finds the run by its spool id
    deliver(again, items[40:], Cursors(tmp_path / "other.json"))
    assert again.run_id == sink.run_id
    client = MlflowClient(tracking_uri=uri)
    assert len(client.get_metric_history(sink.run_id, "loss")) == 50
    assert len(client.get_metric_history(sink.run_id, "grad_norm/head")) == 50


def test_a_dead_tracker_delays_only_itself_and_its_points_stay_spooled(tmp_path: Path) -> None:
    spool = tmp_path / "t.spool"
    dead = mlflow_sink(f"http://127.0.0.1:{free_port()}", tmp_path)
    out = io.StringIO()
    bus = TelemetryBus(
        SpoolWriter(spool, {"run": {}, "sinks": {}}),
        [dead, ConsoleSink(out)],
        Cursors(sibling(spool, ".cursors.json")),
        interval_s=0.05,
    )
    started = time.monotonic()
    for points in steps(100):
        bus.emit(points)
    emitting = time.monotonic() - started
    unsent = bus.close(status="FINISHED", timeout_s=1.0)
    assert unsent == {"mlflow": 201, "console": 0}  # 200 points and the end
    assert "mlflow" in bus.errors and "Connection" in bus.errors["mlflow"]
    assert out.getvalue().count("step") == 100
    items = list(read_items(spool))
    assert len(items) == 201 and items[-1].event == End("FINISHED")
    assert Cursors(sibling(spool, ".cursors.json")).offset("mlflow") == 0
    # Not a timing claim: emit must not have waited on even one connection attempt's timeout.
    assert emitting < 10


def test_a_sink_too_far_behind_reads_the_spool_and_still_gets_each_point_once(
    tmp_path: Path,
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spool = tmp_path / "t.spool"
    sink = mlflow_sink(uri, tmp_path)
    bus = mlflow_bus(spool, sink, max_backlog=50)
    for points in steps(300):  # far faster than MLflow takes them: the backlog overflows
        bus.emit(points)
    assert bus.close(status="FINISHED", timeout_s=60) == {"mlflow": 0}
    assert bus.fell_behind["mlflow"] >= 1
    client = MlflowClient(tracking_uri=uri)
    assert sorted(m.step for m in client.get_metric_history(sink.run_id, "loss")) == list(
        range(300)
    )
    assert client.get_run(sink.run_id).info.status == "FINISHED"


def test_a_dead_sink_keeps_a_bounded_backlog_and_counts_what_is_spooled(tmp_path: Path) -> None:
    spool = tmp_path / "t.spool"
    dead = mlflow_sink(f"http://127.0.0.1:{free_port()}", tmp_path)
    bus = mlflow_bus(spool, dead, max_backlog=50)
    for points in steps(300):
        bus.emit(points)
    assert bus.close(status="FINISHED", timeout_s=1.0) == {"mlflow": 601}  # counted in the file
    assert bus.fell_behind["mlflow"] == 1


def test_a_retry_drops_the_steps_its_dead_attempt_logged_and_keeps_the_rest(
    tmp_path: Path,
) -> None:
    """A retry redoes steps 6..9 after resuming at 5; its dead attempt logged through 9."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spool = tmp_path / "retry.spool"
    sink = mlflow_sink(uri, tmp_path)
    bus = mlflow_bus(spool, sink, logged_through=9)
    for points in steps(15)[6:]:
        bus.emit(points)
    assert bus.close(status="FINISHED", timeout_s=60) == {"mlflow": 0}
    client = MlflowClient(tracking_uri=uri)
    assert sink.run_id is not None
    assert [m.step for m in client.get_metric_history(sink.run_id, "loss")] == list(range(10, 15))
    # Only the steps after 9 were spooled, and the end of the run was kept.
    spooled = [item.event for item in read_items(spool)]
    assert {e.step for e in spooled if isinstance(e, Point)} == set(range(10, 15))
    assert spooled[-1] == End("FINISHED")
    assert client.get_run(sink.run_id).info.status == "FINISHED"
