"""The store as a telemetry sink: a running trial's latest metrics, replay-safe, shown by
``tunefleet status``."""

from __future__ import annotations

import math
from pathlib import Path

from tunefleet.platform.store import Store
from tunefleet.platform.store_sink import StoreSink
from tunefleet.tracking.events import End, Point, Progress

WHERE = {"worker": "1", "host": "node-a"}


def test_live_summary_keeps_the_latest_values_and_survives_a_replay(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'tf.db'}")
    store.create_sweep("live", config={"name": "live"}, budget=1)
    sink = StoreSink(store, sweep="live", trial=0, where=WHERE, state={})
    batch = [Point("loss", 0.9, 1, 0), Point("loss", 0.7, 2, 0), Point("eval_f1", math.nan, 2, 0)]
    sink.write(batch)
    sink.write([End("FINISHED")])  # not a metric: nothing changes
    record = store.trial("live", 0)
    assert record is not None and record.live == {
        "step": 2,
        "at_ms": 0,
        "metrics": {"loss": 0.7, "eval_f1": None},
    }
    # A replay in another process starts from the saved state and resends the last batch.
    again = StoreSink(store, sweep="live", trial=0, where=WHERE, state=sink.state())
    again.write(batch[1:])
    assert store.trial("live", 0).live == record.live  # type: ignore[union-attr]
    again.write([Point("eval_f1", 0.8, 3, 5)])
    assert store.trial("live", 0).live == {  # type: ignore[union-attr]
        "step": 3,
        "at_ms": 5,
        "metrics": {"loss": 0.7, "eval_f1": 0.8},
    }


def test_progress_records_the_attempts_start_its_total_and_where_it_runs(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'tf.db'}")
    store.create_sweep("live", config={"name": "live"}, budget=1)
    sink = StoreSink(store, sweep="live", trial=0, where=WHERE, state={})
    # A resumed attempt starts at step 16 of 40; its first point comes at 17, 2 s later.
    sink.write([Progress(16, 40, 1_000), Point("loss", 0.5, 17, 3_000)])
    record = store.trial("live", 0)
    assert record is not None and record.live == {
        "step": 17,
        "at_ms": 3_000,
        "total": 40,
        "since_step": 16,
        "since_ms": 1_000,
        "worker": "1",
        "host": "node-a",
        "metrics": {"loss": 0.5},
    }
