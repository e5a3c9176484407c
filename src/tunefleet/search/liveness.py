"""Trial liveness: heartbeats for ask/tell trials, and finding the trials of dead workers on a
clock.

Optuna beats for a trial only inside ``Study.optimize``; tunefleet's workers ask and tell, so they
beat for themselves. Optuna has no public way from a ``Study`` and a ``Trial`` to the storage row
that a heartbeat is recorded for, so :func:`heartbeat` is the one place in tunefleet that reads
Optuna's private attributes (``Study._storage``, ``Trial._trial_id`` and the ``BaseHeartbeat``
storage interface): an Optuna release that moves them breaks here, and
``tests/search/test_liveness.py`` says so. Everything else here is Optuna's public API.

Optuna fails stale trials only when a worker asks for its next trial (optuna#3293): a worker
busy with a two-hour trial, or a launcher that asks nothing, would never notice a dead peer.
:class:`StaleClock` looks every heartbeat interval instead, in every worker and the launcher;
what happens to a stale trial (re-queued or failed) is the storage's stale-trial callback.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

import optuna
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import TrialState

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 20
"""Running trials beat this often by default (``search.heartbeat_s``)."""
GRACE_SECONDS = 120
"""A trial silent this long is stale by default (``search.stale_after_s``, optuna#3215)."""
STOP_WAIT_SECONDS = 5.0
"""How long the end of a trial waits for a heartbeat in flight (a slow database)."""


def _heartbeat_storage(study: optuna.Study) -> BaseHeartbeat:
    storage = study._storage
    if not isinstance(storage, BaseHeartbeat):
        raise ValueError(f"{type(storage).__name__} records no heartbeats: use search.make_storage")
    return storage


def _interval(storage: BaseHeartbeat) -> float:
    return float(storage.get_heartbeat_interval() or HEARTBEAT_SECONDS)


@contextmanager
def heartbeat(study: optuna.Study, trial: optuna.Trial) -> Iterator[None]:
    """Beat for ``trial`` while the block runs (at once, then every heartbeat interval of the
    study's storage), so that a trial whose worker dies is recognised as stale."""
    storage = _heartbeat_storage(study)
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
    interval = _interval(storage)
    while True:
        try:
            storage.record_heartbeat(trial_id)
        except Exception:  # a missed beat is not worth the trial; the next one may land
            log.warning("heartbeat failed", exc_info=True)
        if stop.wait(interval):
            return


class StaleClock:
    """A daemon thread that fails (and, through the storage's stale-trial callback, re-queues)
    the study's stale trials every heartbeat interval, until the block ends.

    Several processes may run one at once: Optuna's state change is a conditional update, so
    each stale trial is failed, and its callback run, by exactly one of them.
    """

    def __init__(self, study: optuna.Study) -> None:
        self.study = study
        self.interval = _interval(_heartbeat_storage(study))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="tunefleet-stale")

    def __enter__(self) -> StaleClock:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(STOP_WAIT_SECONDS)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                fail_stale_trials(self.study)
            except Exception:  # a database hiccup; the next tick looks again
                log.warning("looking for stale trials failed", exc_info=True)


def frozen_trial(study: optuna.Study, trial: optuna.Trial) -> optuna.trial.FrozenTrial:
    """The trial as stored now (its state, its attrs), read by its storage id."""
    return study._storage.get_trial(trial._trial_id)


def taken_over(study: optuna.Study, trial: optuna.Trial) -> bool:
    """Whether another process finished the trial (found its worker dead or stale)."""
    return frozen_trial(study, trial).state.is_finished()


def fail_trial(study: optuna.Study, number: int) -> bool:
    """Fail trial ``number`` now if it is still RUNNING (its worker is known to be dead, so it
    will never tell); True if it was failed here (by this call, not a concurrent one)."""
    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    if trial is None or trial.state != TrialState.RUNNING:
        return False
    storage = study._storage
    try:
        # The storage's conditional update, so that of two processes failing the same trial
        # exactly one is told it did (and re-queues it).
        return bool(storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL))
    except optuna.exceptions.UpdateFinishedTrialError:
        return False


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail the RUNNING trials whose heartbeat stopped more than the storage's grace period ago:
    workers that died on other hosts, which no process table here can tell about. Each failed
    trial goes to the storage's stale-trial callback."""
    optuna.storages.fail_stale_trials(study)
