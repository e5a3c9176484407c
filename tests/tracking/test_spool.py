"""The spool: what is written reads back in order, a torn tail is not an event, cursors persist,
and a dead writer's lock is free."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tunefleet.tracking.console_sink import ConsoleSink
from tunefleet.tracking.events import BestSoFar, Checkpoint, End, Evaluation, Point
from tunefleet.tracking.sinks import batches, deliver
from tunefleet.tracking.spool import (
    Cursors,
    SpoolLock,
    SpoolLocked,
    SpoolWriter,
    append_end,
    read_header,
    read_items,
    sibling,
)

EVENTS = [
    Point("loss", 0.7, 1, 1000),
    Point("learning_rate", 1e-3, 1, 1000),
    Point("eval_accuracy", 0.5, 8, 1001),
    Checkpoint(8, 0.5, "/ckpt"),
    Evaluation(8, {"labels": ["0", "1"], "confusion_matrix": [[3, 1], [0, 4]]}),
    BestSoFar(3, 0.5, {"train.learning_rate": 0.001}, 2, 1002),
    Point("loss", float("nan"), 9, 1003),
    End("FINISHED"),
]


def written(tmp_path: Path) -> tuple[SpoolWriter, Path]:
    path = tmp_path / "trial-0-abcd.spool"
    writer = SpoolWriter(path, {"spool_id": "abcd", "run": {}, "sinks": {}})
    writer.write(EVENTS)
    writer.flush()
    return writer, path


def test_events_read_back_in_order_with_line_offsets(tmp_path: Path) -> None:
    writer, path = written(tmp_path)
    items = list(read_items(path))
    assert [repr(i.event) for i in items] == [repr(e) for e in EVENTS]  # NaN != NaN
    assert read_header(path)["spool_id"] == "abcd"
    # Consecutive points share a line: only the line's last event moves a cursor past it.
    assert [i.last for i in items[:3]] == [False, False, True]
    assert len({i.end for i in items[:3]}) == 1
    assert items[-1].end == path.stat().st_size == writer.size
    later = list(read_items(path, items[2].end))
    assert [repr(i.event) for i in later] == [repr(e) for e in EVENTS[3:]]
    writer.close()


def test_a_torn_last_line_is_skipped_and_an_end_replaces_it(tmp_path: Path) -> None:
    writer, path = written(tmp_path)
    writer.close()
    whole = path.stat().st_size
    with path.open("ab") as f:
        f.write(b'{"p":[["loss",0.5,1')  # killed mid-write
    assert len(list(read_items(path))) == len(EVENTS)
    append_end(path, "FAILED")
    items = list(read_items(path))
    assert items[-1].event == End("FAILED") and len(items) == len(EVENTS) + 1
    assert items[-2].end == whole


def test_end_states_are_checked() -> None:
    with pytest.raises(ValueError, match="RUNNING"):
        End("RUNNING")


def test_cursors_survive_a_new_process(tmp_path: Path) -> None:
    path = tmp_path / "c.cursors.json"
    Cursors(path).advance("mlflow", offset=120, state={"run_id": "r1"})
    again = Cursors(path)
    assert again.offset("mlflow") == 120 and again.state("mlflow") == {"run_id": "r1"}
    assert again.offset("wandb") == 0


def test_a_failed_write_leaves_the_cursor_and_a_good_one_moves_it(tmp_path: Path) -> None:
    writer, path = written(tmp_path)
    cursors = Cursors(sibling(path, ".cursors.json"))
    items = list(read_items(path))
    closed = io.StringIO()
    closed.close()
    with pytest.raises(ValueError, match="closed file"):
        deliver(ConsoleSink(closed), items, cursors)
    assert cursors.offset("console") == 0
    out = io.StringIO()
    assert deliver(ConsoleSink(out), items[:2], cursors) == 2
    assert cursors.offset("console") == 0  # the line of points is not complete yet
    deliver(ConsoleSink(out), items[2:], cursors)
    assert cursors.offset("console") == path.stat().st_size
    assert "eval_accuracy 0.5" in out.getvalue() and "run finished" in out.getvalue()
    writer.close()


def test_batches_hold_at_most_a_thousand(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path / "big.spool", {"run": {}, "sinks": {}})
    writer.write([Point("x", float(i), i, 0) for i in range(2500)])
    writer.close()
    sizes = [len(b) for b in batches(list(read_items(tmp_path / "big.spool")))]
    assert sizes == [1000, 1000, 500]


def test_a_spool_is_locked_while_its_writer_lives_and_free_once_it_dies(tmp_path: Path) -> None:
    lock_path = tmp_path / "x.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from tunefleet.tracking.spool import SpoolLock
                SpoolLock(__import__("pathlib").Path({str(lock_path)!r})).acquire()
                print("held", flush=True)
                time.sleep(600)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    with pytest.raises(SpoolLocked):
        SpoolLock(lock_path).acquire()
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    SpoolLock(lock_path).acquire().release()  # the OS released the dead holder's lock


def test_a_spool_is_never_reused(tmp_path: Path) -> None:
    path = tmp_path / "t.spool"
    SpoolWriter(path, {"run": {}, "sinks": {}}).close()
    with pytest.raises(FileExistsError):
        SpoolWriter(path, {"run": {}, "sinks": {}})
