"""``sync`` on a dead writer's spool: the W&B run resumes its id offline, the spool gets its end,
and a second replay sends nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from support.wandb_offline import history, offline_runs, run_info
from tunefleet.platform.layout import Layout
from tunefleet.platform.sync import sync
from tunefleet.tracking.events import End, Point
from tunefleet.tracking.spool import Cursors, SpoolWriter, read_items, sibling


def dead_spool(layout: Layout) -> tuple[Path, dict[str, Any]]:
    header = {
        "spool_id": "0123456789abcdef",
        "run": {
            "sweep": "dead",
            "trial": 2,
            "method": "lora",
            "params": {"train.learning_rate": 0.001},
            "tags": {},
            "run_name": "",
        },
        "sinks": {
            "wandb": {
                "run_id": "deadrun1",
                "project": "tunefleet",
                "entity": None,
                "mode": "offline",
                "directory": str(layout.wandb_dir),
            }
        },
    }
    writer = SpoolWriter(layout.spool_dir("dead") / "trial-2-abcd.spool", header)
    first = writer.write([Point("loss", 1.0 / (s + 1), s, 1000 + s) for s in range(1, 4)])
    writer.write([Point("loss", 1.0 / (s + 1), s, 1000 + s) for s in range(4, 6)])
    writer.close()  # its process "dies": no end event, the lock is free
    return writer.path, {"offset": first[-1].end}


def test_a_dead_writers_spool_replays_to_wandb_and_is_ended(tmp_path: Path) -> None:
    layout = Layout.at(tmp_path / "runs")
    spool, _ = dead_spool(layout)

    (result,) = sync(layout, name="dead")
    assert result.complete, result
    assert result.sent == {"wandb": 6}  # five points and the end added for the dead writer
    items = list(read_items(spool))
    assert items[-1].event == End("FAILED")
    (run,) = offline_runs(layout.wandb_dir / "wandb")
    info = run_info(run)
    assert (info["id"], info["group"], info["name"], info["job_type"]) == (
        "deadrun1",
        "dead",
        "trial-2",
        "lora",
    )
    assert [step for step, _ in history(run)["loss"]] == [1, 2, 3, 4, 5]

    (again,) = sync(layout, name="dead")
    assert again.sent == {"wandb": 0} and again.complete


def test_a_run_started_before_the_crash_resumes_from_its_cursor(tmp_path: Path) -> None:
    layout = Layout.at(tmp_path / "runs")
    spool, cursor = dead_spool(layout)
    # W&B had acknowledged the first line (steps 1-3) when the writer died.
    Cursors(sibling(spool, ".cursors.json")).advance(
        "wandb", offset=cursor["offset"], state={"run_id": "deadrun1", "started": True, "step": 3}
    )
    (result,) = sync(layout, name="dead")
    assert result.complete and result.sent == {"wandb": 3}  # steps 4, 5 and the end
    (run,) = offline_runs(layout.wandb_dir / "wandb")
    assert run_info(run)["id"] == "deadrun1"
    assert [step for step, _ in history(run)["loss"]] == [4, 5]


def test_a_dead_writer_whose_sinks_took_everything_still_gets_its_end(tmp_path: Path) -> None:
    """Killed after its bus delivered every line: nothing to resend, but its runs are open."""
    layout = Layout.at(tmp_path / "runs")
    spool, _ = dead_spool(layout)
    Cursors(sibling(spool, ".cursors.json")).advance(
        "wandb",
        offset=spool.stat().st_size,
        state={"run_id": "deadrun1", "started": True, "step": 5},
    )
    (result,) = sync(layout, name="dead")
    assert result.complete and result.sent == {"wandb": 1}  # the end alone
    assert list(read_items(spool))[-1].event == End("FAILED")
    (again,) = sync(layout, name="dead")
    assert again.sent == {"wandb": 0} and again.complete


def test_sync_names_the_sweeps_it_has_when_asked_for_another(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tunefleet.platform.cli import main

    layout = Layout.at(tmp_path / "runs")
    dead_spool(layout)
    assert main(["sync", "daed", "--out", str(layout.out)]) == 2
    err = capsys.readouterr().err
    assert "no spools of sweep 'daed'" in err and "sweeps with spools: dead" in err
