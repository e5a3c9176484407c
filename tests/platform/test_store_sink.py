"""The store as a telemetry sink: a running trial's latest metrics, replay-safe, shown by
``tunefleet status``."""

from __future__ import annotations

import math
from pathlib import Path

from tunefleet.platform.store import Store
from tunefleet.platform.store_sink import StoreSink
from tunefleet.tracking.events import End, Point


def test_live_summary_keeps_the_latest_values_and_survives_a_replay(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'tf.db'}")
    store.create_sweep("live", config={"name": "live"}, budget=1)
    sink = StoreSink(store, sweep="live", trial=0, state={})
    batch = [Point("loss", 0.9, 1, 0), Point("loss", 0.7, 2, 0), Point("eval_f1", math.nan, 2, 0)]
    sink.write(batch)
    sink.write([End("FINISHED")])  # not a metric: nothing changes
    record = store.trial("live", 0)
    assert record is not None and record.live == {
        "step": 2,
        "metrics": {"loss": 0.7, "eval_f1": None},
    }
    # A replay in another process starts from the saved state and resends the last batch.
    again = StoreSink(store, sweep="live", trial=0, state=sink.state())
    again.write(batch[1:])
    assert store.trial("live", 0).live == record.live  # type: ignore[union-attr]
    again.write([Point("eval_f1", 0.8, 3, 0)])
    assert store.trial("live", 0).live == {  # type: ignore[union-attr]
        "step": 3,
        "metrics": {"loss": 0.7, "eval_f1": 0.8},
    }
