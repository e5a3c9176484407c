"""The launcher's watch loop (``platform.launcher.watch``) against a real store, a real Optuna
study and a real child process standing in for a worker."""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

from tunefleet.config import SweepConfig
from tunefleet.platform.launcher import LocalFleet, Slot, watch
from tunefleet.platform.layout import Layout
from tunefleet.platform.store import Store

optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass
class DiesDuringCheck(LocalFleet):
    """Its one worker dies at the worst moment: right after the launcher's check looked."""

    killed: bool = False

    def check(self) -> None:
        super().check()
        if not self.killed:
            self.killed = True
            self.procs[0].kill()
            self.procs[0].wait()


def test_a_worker_that_dies_while_the_launcher_checks_still_has_its_trial_requeued(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'watch.db'}"
    store = Store(url)
    store.create_sweep("w", config={}, budget=1)
    study = optuna.create_study(study_name="w", storage=url, direction="maximize")
    worker = subprocess.Popen(["sleep", "120"])
    assert store.claim_slot("w")
    trial = study.ask()
    store.upsert_trial(
        "w", trial.number, state="RUNNING", host=socket.gethostname(), pid=worker.pid
    )
    config = SweepConfig.model_validate({"name": "w", "data": {"train": "unused.csv"}})
    fleet = DiesDuringCheck(
        config=config,
        store=store,
        study=study,
        procs=[worker],
        layout=Layout.at(tmp_path),
        db_url=url,
        slots=[Slot(0, {}, None)],
        deadline=time.time(),  # no worker is started again for the retry
    )
    try:
        code = watch(fleet, budget=1)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert fleet.killed and code == 1  # a worker killed by a signal is a failed worker
    record = store.trial("w", trial.number)
    assert record is not None and (record.state, record.reason, record.requeued) == (
        "FAIL",
        "interrupted",
        True,
    )
    assert [t.params for t in study.get_trials(states=(TrialState.WAITING,))] == [{}]
    store.dispose()
