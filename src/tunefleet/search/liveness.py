"""Trial liveness: heartbeats for ask/tell trials, and failing the trials of dead workers.

Optuna beats for a trial only inside ``Study.optimize``; tunefleet's workers ask and tell, so they
beat for themselves. Optuna has no public way from a ``Study`` and a ``Trial`` to the storage row
that a heartbeat is recorded for, so :func:`heartbeat` is the one place in tunefleet that reads
Optuna's private attributes (``Study._storage``, ``Trial._trial_id`` and the ``BaseHeartbeat``
storage interface): an Optuna release that moves them breaks here, and
``tests/search/test_liveness.py`` says so. Everything else here is Optuna's public API.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import optuna
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import TrialState

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 20
"""Running trials beat this often; one silent for ``GRACE_SECONDS`` is failed (optuna#3215)."""
GRACE_SECONDS = 120
STOP_WAIT_SECONDS = 5.0
"""How long the end of a trial waits for a heartbeat in flight (a slow database)."""


@contextmanager
def heartbeat(study: optuna.Study, trial: optuna.Trial) -> Iterator[None]:
    """Beat for ``trial`` while the block runs (at once, then every ``HEARTBEAT_SECONDS``), so
    that a trial whose worker dies is recognised as stale by :func:`fail_stale_trials`."""
    storage = study._storage
    if not isinstance(storage, BaseHeartbeat):
        raise ValueError(f"{type(storage).__name__} records no heartbeats: use search.make_storage")
    stop = threading.Event()
    thread = threading.Thread(
        target=_beat,
        args=(storage, trial._trial_id, stop),
        daemon=True,
        name="tunefleet-heartbeat",
    )
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(STOP_WAIT_SECONDS)


def _beat(storage: BaseHeartbeat, trial_id: int, stop: threading.Event) -> None:
    while True:
        try:
            storage.record_heartbeat(trial_id)
        except Exception:  # a missed beat is not worth the trial; the next one may land
            log.warning("heartbeat failed", exc_info=True)
        if stop.wait(HEARTBEAT_SECONDS):
            return


def fail_trial(study: optuna.Study, number: int) -> bool:
    """Fail trial ``number`` now if it is still RUNNING (its worker is known to be dead, so it
    will never tell); True if it was failed here."""
    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    if trial is None or trial.state != TrialState.RUNNING:
        return False
    study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
    return True


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail the RUNNING trials whose heartbeat stopped more than the storage's grace period ago:
    workers that died on other hosts, which no process table here can tell about."""
    optuna.storages.fail_stale_trials(study)
