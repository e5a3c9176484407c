"""Checkpoint retention: the planner on real store rows and real folders, ``gc``/``pin``/``unpin``
through the real CLI, and real sweeps (tiny BERT, sqlite) under a disk budget and on a disk that
cannot take a checkpoint."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from support.cli import run_cli
from support.configs import write_config
from tunefleet.config import SweepConfig
from tunefleet.errors import CheckpointError
from tunefleet.platform.layout import Layout
from tunefleet.platform.retention import (
    GB,
    PAUSED_EXIT,
    Plan,
    Policy,
    disk_refusal,
    estimated_checkpoint_bytes,
    held_files,
    plan,
    rank_complete,
)
from tunefleet.platform.store import Store
from tunefleet.trainers.checkpoint import hash_folder, verify

NAME = "ret"


def _config(tmp_path: Path, **checkpoints: Any) -> dict[str, Any]:
    return {
        "name": NAME,
        "data": {"train": str(tmp_path / "train.csv")},
        "search": {"metric": "eval_accuracy", "direction": "maximize"},
        "checkpoints": checkpoints,
        "tracking": {"mlflow": {"enabled": False}, "wandb": {"enabled": False}},
    }


class Sweep:
    """A real sqlite store and ``--out`` folder holding trials written as a worker writes them."""

    def __init__(self, tmp_path: Path, **checkpoints: Any) -> None:
        self.layout = Layout.at(tmp_path / "runs").ensure()
        self.store = Store(self.layout.db_url)
        self.config = SweepConfig.model_validate(_config(tmp_path, **checkpoints))
        self.store.create_sweep(NAME, config=self.config.model_dump(mode="json"), budget=20)

    def trial(
        self,
        number: int,
        state: str,
        *,
        value: float | None = None,
        size: int = 1000,
        retry_of: int | None = None,
        requeued: bool = False,
        resume: int = 0,
        checkpoint: bool = True,
        **fields: Any,
    ) -> Path:
        """A trial's row and its checkpoint folder (``size`` bytes of weights) under the
        logical trial's name; ``resume``: bytes of resumable state beside it."""
        logical = number if retry_of is None else retry_of
        folder = self.layout.checkpoint(NAME, logical)
        if checkpoint:
            _files(folder, size)
        if resume:
            _files(self.layout.resume_dir(NAME, logical), resume)
        complete = state == "COMPLETE"
        self.store.upsert_trial(
            NAME,
            number,
            state=state,
            value=value,
            retry_of=retry_of,
            attempt=1 if retry_of is None else 2,
            requeued=requeued,
            checkpoint=str(folder) if complete else None,
            checkpoint_sha256=hash_folder(folder) if complete else None,
            **fields,
        )
        return folder

    def plan(self, **policy: Any) -> Plan:
        records = self.store.trials(NAME)
        return plan(
            records=records,
            held=held_files(self.layout, NAME),
            pins=self.store.pins(NAME),
            promotions=self.store.promotions(NAME),
            ranking=rank_complete(records, self.config.search.all_objectives),
            policy=Policy(**policy),
        )

    def promote(self, number: int) -> None:
        record = self.store.trial(NAME, number)
        assert record is not None and record.checkpoint
        self.store.record_promotion(
            NAME,
            number=number,
            alias="champion",
            model_name=NAME,
            model_version="1",
            checkpoint=record.checkpoint,
        )


def _files(folder: Path, size: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").write_bytes(os.urandom(size))


def _gone(chosen: Plan) -> list[tuple[int, str]]:
    return [(r.held.number, r.held.kind) for r in chosen.removals]


@pytest.fixture
def sweep(tmp_path: Path) -> Sweep:
    """Trials 0-3 complete (values 0.9, 0.7, 0.8, 0.6), 4 pruned (its checkpoint left over),
    5 failed with state left, 6 running with its state; each checkpoint 1000 bytes."""
    sweep = Sweep(tmp_path)
    for number, value in enumerate((0.9, 0.7, 0.8, 0.6)):
        sweep.trial(number, "COMPLETE", value=value)
    sweep.trial(4, "PRUNED")
    sweep.trial(5, "FAIL", resume=500, reason="failed")
    sweep.trial(6, "RUNNING", resume=700)
    return sweep


# --------------------------------------------------------------------------------------------
# The planner


def test_without_a_budget_every_leftover_and_complete_trial_outside_the_top_k_goes(
    sweep: Sweep,
) -> None:
    chosen = sweep.plan(keep_top_k=2)
    assert _gone(chosen) == [
        (4, "checkpoint"),
        (5, "checkpoint"),
        (5, "resume"),
        (3, "checkpoint"),  # then the complete ones outside the top 2, worst first
        (1, "checkpoint"),
    ]
    assert chosen.verdicts == {
        0: "top 1",
        1: "to delete",
        2: "top 2",
        3: "to delete",
        4: "to delete",
        5: "to delete",
        6: "running",
    }
    assert chosen.freed_bytes == 4 * 1000 + 500
    assert chosen.over_budget is None


def test_a_budget_deletes_leftovers_first_then_the_worst_until_the_sweep_fits(
    sweep: Sweep,
) -> None:
    # On disk: 7 checkpoints + 1200 of state = 8200; fitting 5000 takes the leftovers (2500)
    # and then one complete trial, the worst outside the top 1.
    chosen = sweep.plan(keep_top_k=1, budget_bytes=5000)
    assert chosen.total_bytes == 8200
    assert _gone(chosen) == [(4, "checkpoint"), (5, "checkpoint"), (5, "resume"), (3, "checkpoint")]
    assert chosen.after_bytes == 4700
    assert chosen.verdicts[1] == "kept" and chosen.verdicts[2] == "kept"


def test_pinned_promoted_and_running_trials_are_never_deleted_even_over_budget(
    sweep: Sweep,
) -> None:
    sweep.store.pin(NAME, 3, actor="ann", reason="the paper's figure")
    sweep.promote(1)
    chosen = sweep.plan(keep_top_k=1, budget_bytes=1)
    assert _gone(chosen) == [(4, "checkpoint"), (5, "checkpoint"), (5, "resume"), (2, "checkpoint")]
    assert chosen.verdicts[3] == "pinned" and chosen.verdicts[1] == "promoted"
    assert chosen.verdicts[6] == "running" and chosen.verdicts[0] == "top 1"
    assert chosen.over_budget is not None and "max_disk_gb" in chosen.over_budget


def test_keep_top_k_unset_keeps_every_complete_trial_and_says_why_it_stays_over_budget(
    sweep: Sweep,
) -> None:
    chosen = sweep.plan(budget_bytes=1)
    assert {n for n, _ in _gone(chosen)} == {4, 5}
    assert chosen.over_budget is not None and "keep_top_k unset" in chosen.over_budget


def test_a_retry_owns_its_logical_trials_folder_and_is_protected_while_requeued(
    tmp_path: Path,
) -> None:
    sweep = Sweep(tmp_path)
    sweep.trial(0, "FAIL", requeued=True, reason="interrupted", resume=300)
    sweep.trial(1, "COMPLETE", value=0.5)
    sweep.trial(2, "COMPLETE", value=0.6)
    # Trial 0 waits for its retry: nothing of it may go.
    assert _gone(sweep.plan(keep_top_k=1)) == [(1, "checkpoint")]
    # Its retry (trial 3) completed best, in trial 0's folder; pinning trial 3 covers it.
    sweep.trial(3, "COMPLETE", value=0.9, retry_of=0)
    (sweep.layout.resume_dir(NAME, 0) / "model.safetensors").unlink()
    sweep.layout.resume_dir(NAME, 0).rmdir()
    chosen = sweep.plan(keep_top_k=1)
    assert chosen.verdicts[0] == "top 1"
    assert _gone(chosen) == [(1, "checkpoint"), (2, "checkpoint")]
    sweep.store.pin(NAME, 3, actor="ann")
    assert sweep.plan(keep_top_k=1, budget_bytes=0).verdicts[0] == "pinned"


def test_minimised_objectives_and_infeasible_trials_rank_as_the_study_does(tmp_path: Path) -> None:
    sweep = Sweep(tmp_path)
    sweep.trial(0, "COMPLETE", value=0.3, feasible=False)  # best value, broke a constraint
    sweep.trial(1, "COMPLETE", value=0.5)
    sweep.trial(2, "COMPLETE", value=0.4)
    records = sweep.store.trials(NAME)
    config = SweepConfig.model_validate(
        {**_config(tmp_path), "search": {"metric": "eval_loss", "direction": "minimize"}}
    )
    assert rank_complete(records, config.search.all_objectives) == [2, 1, 0]


def test_a_multi_objective_sweep_keeps_the_top_k_in_front_rank_order(tmp_path: Path) -> None:
    sweep = Sweep(tmp_path)
    # (accuracy max, latency min): 0 and 1 are the front, 2 is dominated by 0, 3 by everything.
    for number, values in enumerate(((0.9, 20.0), (0.8, 5.0), (0.85, 25.0), (0.5, 30.0))):
        sweep.trial(number, "COMPLETE", value=values[0], objective_values=list(values))
    config = SweepConfig.model_validate(
        {
            **_config(tmp_path),
            "search": {
                "objectives": [
                    {"metric": "eval_accuracy", "direction": "maximize"},
                    {"metric": "latency_ms", "direction": "minimize"},
                ]
            },
        }
    )
    ranking = rank_complete(sweep.store.trials(NAME), config.search.all_objectives)
    assert ranking == [0, 1, 2, 3]  # front (by accuracy), then rank 1, then rank 2
    # A trial without its objectives' values (recorded before them) ranks after the ranked ones.
    sweep.trial(4, "COMPLETE", value=0.99)
    assert rank_complete(sweep.store.trials(NAME), config.search.all_objectives) == [0, 1, 2, 3, 4]


def test_a_crashed_writes_staging_folder_is_a_leftover_never_the_checkpoint(
    tmp_path: Path,
) -> None:
    sweep = Sweep(tmp_path)
    good = sweep.trial(0, "COMPLETE", value=0.9)
    # A crash mid-write leaves the half-written copy beside the good one (write_checkpoint's
    # staging name): the weights cut short.
    half = good.with_name(".trial-0-k3j9x")
    half.mkdir()
    (half / "model.safetensors").write_bytes((good / "model.safetensors").read_bytes()[:400])
    record = sweep.store.trial(NAME, 0)
    assert record is not None and record.checkpoint_sha256 is not None
    with pytest.raises(CheckpointError, match=r"changed model\.safetensors"):
        verify(half, record.checkpoint_sha256)
    verify(good, record.checkpoint_sha256)
    chosen = sweep.plan()
    assert [(r.held.path, r.held.kind) for r in chosen.removals] == [(half, "staging")]
    assert chosen.sizes == {0: 1000}


# --------------------------------------------------------------------------------------------
# Commands and config


def _cli(sweep: Sweep, *args: str) -> Any:
    return run_cli(*args, "--out", str(sweep.layout.out), timeout=120)


def _snapshot(sweep: Sweep) -> tuple[dict[str, str], list[Any]]:
    files = {
        str(p.relative_to(sweep.layout.out)): hash_folder(p.parent)[p.name]
        for p in sorted(sweep.layout.out.rglob("*.safetensors"))
    }
    return files, sweep.store.trials(NAME)


def test_gc_dry_run_changes_nothing_and_gc_deletes_and_records_what_it_printed(
    tmp_path: Path,
) -> None:
    sweep = Sweep(tmp_path, keep_top_k=1, max_disk_gb=3500 / GB)
    for number, value in enumerate((0.9, 0.7, 0.8, 0.6, 0.5)):
        sweep.trial(number, "COMPLETE", value=value)
    sweep.trial(5, "PRUNED")
    sweep.store.pin(NAME, 4, actor="ann")
    before = _snapshot(sweep)
    dry = _cli(sweep, "gc", NAME, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would delete trial 5 checkpoint" in dry.stdout
    assert "would delete trial 3 checkpoint" in dry.stdout
    assert "would free 3000 bytes" in dry.stdout
    assert _snapshot(sweep) == before  # not a file, not a row
    done = _cli(sweep, "gc", NAME)
    assert done.returncode == 0, done.stderr
    assert "freed 3000 bytes" in done.stdout
    on_disk = {h.number for h in held_files(sweep.layout, NAME)}
    assert on_disk == {0, 2, 4}  # top 1, then 2 fits the budget, 4 pinned
    removed = {r.number: r for r in sweep.store.trials(NAME) if r.checkpoint_removed}
    assert set(removed) == {1, 3, 5}
    assert removed[3].checkpoint_bytes == 1000
    assert "outside keep_top_k" in (removed[3].checkpoint_removed or "")
    again = _cli(sweep, "gc", NAME, "--dry-run")
    assert "would free 0 bytes" in again.stdout
    # A folder no trial of the store owns (a sweep of the same name deleted and made again)
    # is a leftover (it takes the sweep over its budget); gc deletes it without making up a
    # trial for it.
    _files(sweep.layout.checkpoint(NAME, 9), 1000)
    orphan = _cli(sweep, "gc", NAME)
    assert "trial 9 checkpoint" in orphan.stdout and "with no record" in orphan.stdout
    assert sweep.store.trial(NAME, 9) is None
    assert not sweep.layout.checkpoint(NAME, 9).exists()


def test_pin_and_unpin_through_the_cli(tmp_path: Path) -> None:
    sweep = Sweep(tmp_path, keep_top_k=1)
    sweep.trial(0, "COMPLETE", value=0.9)
    sweep.trial(1, "COMPLETE", value=0.1)
    pinned = _cli(sweep, "pin", NAME, "1", "--reason", "baseline")
    assert pinned.returncode == 0, pinned.stderr
    assert [(p.number, p.reason) for p in sweep.store.pins(NAME)] == [(1, "baseline")]
    assert "would free 0 bytes" in _cli(sweep, "gc", NAME, "--dry-run").stdout
    assert _cli(sweep, "unpin", NAME, "1").returncode == 0
    assert sweep.store.pins(NAME) == []
    assert "would delete trial 1 checkpoint" in _cli(sweep, "gc", NAME, "--dry-run").stdout
    missing = _cli(sweep, "pin", NAME, "7")
    assert missing.returncode == 2
    assert "has no trial 7" in missing.stderr and "0, 1" in missing.stderr


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"checkpoints\.keep_top_k"):
        SweepConfig.model_validate(_config(tmp_path, keep_top_k=0))
    with pytest.raises(ValidationError, match=r"checkpoints\.max_disk_gb"):
        SweepConfig.model_validate(_config(tmp_path, max_disk_gb=-1))
    with pytest.raises(ValidationError, match=r"checkpoints\.min_free"):
        SweepConfig.model_validate(_config(tmp_path, min_free_gbs=1))


def test_the_disk_check_counts_the_checkpoint_and_min_free_gb(tmp_path: Path) -> None:
    sweep = Sweep(tmp_path)
    settings = sweep.config.checkpoints
    assert disk_refusal(sweep.layout, settings, estimated=1000) is None
    huge = settings.model_copy(update={"min_free_gb": 10**9})
    refused = disk_refusal(sweep.layout, huge, estimated=1000)
    assert refused is not None and "checkpoints.min_free_gb" in refused
    # The estimate: the largest checkpoint written so far, else the base model's weights.
    model = tmp_path / "model"
    _files(model, 2500)
    (model / "config.json").write_text("{}")
    assert estimated_checkpoint_bytes([], str(model)) == 2500
    sweep.store.upsert_trial(NAME, 0, state="COMPLETE", checkpoint_bytes=1234)
    assert estimated_checkpoint_bytes(sweep.store.trials(NAME), str(model)) == 1234


# --------------------------------------------------------------------------------------------
# Real sweeps


def _sweep_config(
    tmp_path: Path, model: Path, data: Path, name: str, *, trials: int, **checkpoints: Any
) -> Path:
    config = {
        "name": name,
        "model": {"name_or_path": str(model)},
        "data": {"train": str(data), "max_length": 32},
        "train": {"method": "full", "epochs": 1, "batch_size": 32, "logging_steps": 2},
        "search": {
            "trials": trials,
            "sampler": "random",
            "pruner": "none",
            "metric": "eval_accuracy",
            "space": {"train.learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}},
        },
        "checkpoints": checkpoints,
        "tracking": {"mlflow": {"enabled": False}, "wandb": {"enabled": False}},
    }
    return write_config(tmp_path, config, name=f"{name}-{trials}")


def _sweep(config: Path, out: Path) -> Any:
    return run_cli("sweep", str(config), "--out", str(out), "--workers", "1", timeout=900)


@pytest.mark.slow
def test_a_sweep_over_its_budget_ends_within_it_keeping_top_k_pinned_and_promoted(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path
) -> None:
    out = tmp_path / "runs"
    name = "budget"
    first = _sweep_config(
        tmp_path, tiny_model, sentiment_csv, name, trials=4, keep_top_k=1, gc_after_trial=False
    )
    result = _sweep(first, out)
    assert result.returncode == 0, result.stdout + result.stderr
    store = Store(Layout.at(out).db_url)
    records = {r.number: r for r in store.trials(name)}
    assert [r.state for r in records.values()] == ["COMPLETE"] * 4
    sizes = [r.checkpoint_bytes for r in records.values()]
    assert all(s and s > 10_000 for s in sizes), sizes
    by_value = sorted(records, key=lambda n: (-(records[n].value or 0.0), n))
    _best, pinned, promoted, other = by_value
    assert run_cli("pin", name, str(pinned), "--out", str(out)).returncode == 0
    promote = ("promote", name, "--trial", str(promoted), "--alias", "kept", "--out", str(out))
    assert run_cli(*promote).returncode == 0
    layout = Layout.at(out)
    before = sorted(p.name for p in (out / "checkpoints" / name).iterdir())
    dry = run_cli("gc", name, "--dry-run", "--out", str(out))
    assert dry.returncode == 0, dry.stderr
    assert f"would delete trial {other} checkpoint" in dry.stdout
    assert dry.stdout.count("would delete") == 1
    assert sorted(p.name for p in (out / "checkpoints" / name).iterdir()) == before
    assert not any(r.checkpoint_removed for r in store.trials(name))

    # Resumed with more trials and a budget of 3.5 checkpoints, smaller than all of them.
    budget = 3.5 * max(s for s in sizes if s)
    second = _sweep_config(
        tmp_path,
        tiny_model,
        sentiment_csv,
        name,
        trials=7,
        keep_top_k=1,
        max_disk_gb=budget / GB,
    )
    result = _sweep(second, out)
    assert result.returncode == 0, result.stdout + result.stderr
    records = {r.number: r for r in store.trials(name)}
    assert len(records) == 7 and all(r.state == "COMPLETE" for r in records.values())
    held = held_files(layout, name)
    assert sum(h.bytes for h in held) <= budget
    top = max(records, key=lambda n: (records[n].value or 0.0, -n))
    kept = {h.number for h in held}
    assert {top, pinned, promoted} <= kept
    for number, record in records.items():
        assert record.checkpoint_bytes, number  # written by every complete trial
        assert (number in kept) == (record.checkpoint_removed is None), number
    status = run_cli("status", name, "--json", "--out", str(out))
    summary = json.loads(status.stdout)
    assert summary["checkpoints"]["on_disk_bytes"] <= summary["checkpoints"]["max_disk_bytes"]
    shown = {t["number"]: t["checkpoint_retention"] for t in summary["trials"]}
    assert shown[pinned] == "pinned" and shown[promoted] == "promoted"
    assert shown[top] == "top 1"
    assert {shown[n] for n in records if n not in kept} == {"removed"}
    table = run_cli("compare", name, "--out", str(out)).stdout
    assert "pinned" in table and "promoted" in table and "checkpoints: " in table
    store.dispose()


@pytest.mark.slow
def test_a_trial_refused_for_disk_is_requeued_not_failed_and_runs_once_there_is_room(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path
) -> None:
    out = tmp_path / "runs"
    name = "full-disk"
    # No disk has a million TB free: the real free-space check refuses.
    refused = _sweep_config(tmp_path, tiny_model, sentiment_csv, name, trials=1, min_free_gb=1e6)
    result = _sweep(refused, out)
    assert result.returncode == PAUSED_EXIT, result.stdout + result.stderr
    assert "trial 0 re-queued (interrupted): disk full" in result.stdout
    assert "paused: disk full" in result.stdout  # and not started again by the launcher
    store = Store(Layout.at(out).db_url)
    [record] = store.trials(name)
    assert (record.state, record.reason, record.requeued) == ("FAIL", "interrupted", True)
    assert not (out / "checkpoints" / name).exists()  # nothing half-written, nothing at all

    roomy = yaml.safe_load(refused.read_text())
    roomy["checkpoints"]["min_free_gb"] = 0.0
    again = write_config(tmp_path, roomy, name="roomy")
    result = _sweep(again, out)
    assert result.returncode == 0, result.stdout + result.stderr
    records = {r.number: r for r in store.trials(name)}
    retry = [r for r in records.values() if r.retry_of == 0]
    assert [(r.state, r.attempt) for r in retry] == [("COMPLETE", 2)]
    assert retry[0].params == record.params  # the same trial, not a new one
    store.dispose()
