"""The failure taxonomy, and retrying a trial whose worker died with the same params.

An attempt that ends other than complete or pruned gets a reason:

- ``interrupted``: its worker was killed (``kill -9``, found by the launcher's process check),
  SIGTERM'd (it saved its state and said so) or Ctrl-C'd; ``stale``: its heartbeat stopped.
  These are the machine's faults: the trial is re-queued with the same params, up to
  ``search.max_retries`` times, and the retry resumes from the trial's resumable state.
- ``failed`` (an exception in training), ``invalid_params`` (the drawn params make the config
  invalid), ``non_finite`` (NaN/inf loss or gradient norm, with the step): the code's or the
  params' faults, never retried.
- ``oom``: failed with the batch size; with ``train.on_oom: halve_batch`` retried once with half
  the per-device batch and twice the accumulation (the effective batch is unchanged).

A retry is an Optuna trial queued WAITING (Optuna's own ``RetryHeartbeatStaleTrialCallback``,
which keeps the params, their distributions and the pruner's evaluations, and links the attempts
in system attrs), with the user attrs ``retry_of`` (the logical trial: the first attempt's
number), ``attempt`` (2, 3, ...) and, for an OOM retry, ``overrides`` (dotted config path ->
value). The next worker to ask gets it before any
new trial. A dead attempt's budget slot goes back when it is re-queued (or failed for good), so
the budget counts logical trials exactly.
"""

from __future__ import annotations

import copy
import shutil
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial

from tunefleet.platform.layout import Layout
from tunefleet.platform.store import Store
from tunefleet.search.study import fail_twin

RETRIED_REASONS = frozenset({"interrupted", "stale"})
"""Reasons that are the machine's fault: re-queued up to ``search.max_retries``."""
REASONS = ("interrupted", "stale", "failed", "invalid_params", "non_finite", "oom")
_NOT_INHERITED = ("host", "pid", "fail_reason", "reason", "compute", "twin")
"""User attrs that describe one attempt, not the logical trial."""


@dataclass(frozen=True)
class Attempt:
    """Which attempt of which logical trial an Optuna trial is."""

    number: int
    logical: int
    """The first attempt's number: the trial as the user sees it (its checkpoint, resume state)."""
    attempt: int = 1
    overrides: dict[str, Any] = field(default_factory=dict)
    """Dotted config path -> value applied after the params (an OOM retry's halved batch)."""

    @property
    def retry_of(self) -> int | None:
        return None if self.attempt == 1 else self.logical


def attempt_of(trial: FrozenTrial | optuna.Trial) -> Attempt:
    attrs = trial.user_attrs
    return Attempt(
        number=trial.number,
        logical=int(attrs.get("retry_of", trial.number)),
        attempt=int(attrs.get("attempt", 1)),
        overrides=dict(attrs.get("overrides", {})),
    )


def last_line(exc: BaseException) -> str:
    """The exception's last line, as a traceback would end: ``Type: message``."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1]}" if text else type(exc).__name__


class Retries:
    """Ends failed attempts: records the reason in the store, gives the budget slot back and
    re-queues the trial when its reason allows. Also the storage's stale-trial callback, so a
    trial found stale by any process is handled the same way."""

    def __init__(self, store: Store, sweep: str, *, max_retries: int, layout: Layout) -> None:
        self.store, self.sweep, self.max_retries, self.layout = store, sweep, max_retries, layout

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.end(study, trial, reason="stale", detail="no heartbeat within search.stale_after_s")

    def end(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        *,
        reason: str,
        detail: str,
        overrides: dict[str, Any] | None = None,
    ) -> bool:
        """``trial`` is FAIL in Optuna already (told by its worker, or by whoever found it dead);
        True when a retry was queued. ``overrides`` asks for an OOM retry with those values."""
        from tunefleet.platform.cost import cost_fields  # cost imports this module

        attempt = attempt_of(trial)
        fail_twin(study, trial)  # a no-op where the worker told its twin already
        retry = (reason in RETRIED_REASONS and attempt.attempt <= self.max_retries) or (
            reason == "oom" and overrides is not None
        )
        if retry:
            self._enqueue(study, trial, attempt, overrides or {})
        else:
            # The logical trial has ended: nothing will resume from its state.
            shutil.rmtree(self.layout.resume_dir(self.sweep, attempt.logical), ignore_errors=True)
        if reason in RETRIED_REASONS and not retry:
            detail = f"{detail}; retried {attempt.attempt - 1} time(s), search.max_retries"
        self.store.upsert_trial(
            self.sweep,
            trial.number,
            state="FAIL",
            params=dict(trial.params),
            attempt=attempt.attempt,
            retry_of=attempt.retry_of,
            reason=reason,
            reason_detail=detail[:2000],
            requeued=retry,
            **cost_fields(trial),  # a killed attempt's compute was spent too
        )
        self.store.release_slot(self.sweep)
        return retry

    def _enqueue(
        self, study: optuna.Study, trial: FrozenTrial, attempt: Attempt, overrides: dict[str, Any]
    ) -> None:
        carried = {k: v for k, v in trial.user_attrs.items() if k not in _NOT_INHERITED}
        retry = copy.deepcopy(trial)
        retry.user_attrs = {
            **carried,
            "retry_of": attempt.logical,
            "attempt": attempt.attempt + 1,
            "overrides": {**attempt.overrides, **overrides},
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            # Optuna's own retry: WAITING, same params and distributions, linked in system attrs;
            # the evaluations the pruner saw carry over, since the retry resumes after them.
            RetryHeartbeatStaleTrialCallback(max_retry=None, inherit_intermediate_values=True)(
                study, retry
            )


def halved_batch(config_batch: int, accumulation: int) -> dict[str, Any] | None:
    """The overrides of an OOM retry, or None when the batch cannot be halved."""
    if config_batch < 2:
        return None
    return {
        "train.batch_size": config_batch // 2,
        "train.gradient_accumulation_steps": accumulation * 2,
    }


def failure_stop(store: Store, sweep: str, max_failures: int | None) -> str | None:
    """Why the sweep must stop (``search.max_failures`` trials failed for good), or None."""
    if max_failures is None:
        return None
    reasons = Counter(
        r.reason or "failed" for r in store.trials(sweep) if r.state == "FAIL" and not r.requeued
    )
    failed = sum(reasons.values())
    if failed < max_failures:
        return None
    reason, count = reasons.most_common(1)[0]
    return (
        f"sweep {sweep} stopped: {failed} trials failed (search.max_failures: {max_failures}); "
        f"most frequent reason: {reason} ({count} of {failed})"
    )
