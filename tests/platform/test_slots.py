"""GPU slots on the local engine (``plan_slots``), with the visible devices and cores given
explicitly: this machine has no GPU, and the planner must not need one to be tested."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.cli import run_cli
from support.configs import write_config
from tunefleet.errors import TunefleetError
from tunefleet.platform.launcher import Slot, plan_slots


def devices_of(slots: list[Slot]) -> list[str]:
    return [slot.env["CUDA_VISIBLE_DEVICES"] for slot in slots]


def test_workers_get_disjoint_sets_of_k_devices_in_the_visible_order() -> None:
    slots = plan_slots(2, gpus_per_trial=2, devices=["4", "5", "6", "7"])
    assert devices_of(slots) == ["4,5", "6,7"]
    assert [s.index for s in slots] == [0, 1] and all(s.threads is None for s in slots)


def test_devices_left_over_by_the_sets_stay_unused() -> None:
    assert devices_of(plan_slots(1, gpus_per_trial=2, devices=["0", "1", "2"])) == ["0,1"]


def test_device_uuids_pass_through_unchanged() -> None:
    slots = plan_slots(2, gpus_per_trial=1, devices=["GPU-aa", "GPU-bb"])
    assert devices_of(slots) == ["GPU-aa", "GPU-bb"]


def test_more_workers_than_slots_is_refused_naming_what_fits() -> None:
    with pytest.raises(TunefleetError) as refused:
        plan_slots(3, gpus_per_trial=2, devices=["0", "1", "2", "3"])
    message = str(refused.value)
    assert "needs 6 GPUs" in message and "--workers 2" in message and "0,1,2,3" in message


def test_gpus_per_trial_without_a_gpu_is_refused() -> None:
    with pytest.raises(TunefleetError, match="no GPU is visible"):
        plan_slots(1, gpus_per_trial=1, devices=[])


def test_gpus_per_trial_must_be_positive() -> None:
    with pytest.raises(TunefleetError, match="at least 1"):
        plan_slots(1, gpus_per_trial=0, devices=["0"])


def test_without_the_flag_each_worker_gets_one_visible_device_round_robin() -> None:
    # The device's own id: CUDA_VISIBLE_DEVICES=2,3 must not become 0 and 1 in the workers.
    assert devices_of(plan_slots(3, devices=["2", "3"])) == ["2", "3", "2"]


def test_on_cpu_the_threads_are_split_between_workers() -> None:
    slots = plan_slots(2, devices=[], cpus=8)
    assert [s.threads for s in slots] == [4, 4]
    assert all(s.env["CUDA_VISIBLE_DEVICES"] == "" for s in slots)
    assert all(s.env["OMP_NUM_THREADS"] == "4" for s in slots)
    assert [s.threads for s in plan_slots(4, devices=[], cpus=2)] == [1, 1, 1, 1]


def test_the_cli_refuses_more_workers_than_gpu_slots_before_any_trial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")  # what the launcher reads: no GPU needed
    config = write_config(
        tmp_path,
        {"name": "slots", "model": {"name_or_path": "minilm"}, "data": {"train": "x.csv"}},
    )
    out = tmp_path / "runs"
    result = run_cli(
        "sweep",
        str(config),
        "--out",
        str(out),
        "--workers",
        "3",
        "--gpus-per-trial",
        "1",
        timeout=120,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "3 GPUs" in result.stderr and "--workers 2" in result.stderr, result.stderr
    assert not (out / "tunefleet.db").exists()
