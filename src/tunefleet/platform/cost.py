"""What a sweep's attempts cost in compute, and the budget gate (``search.budget``).

An attempt records what its compute is counted in when it starts (the Optuna user attr
``compute``: ``{"device": "gpu" | "cpu", "units": N}``, N the GPUs its worker sees, or its torch
threads without a GPU). Its device-seconds are its duration in Optuna (``datetime_start`` to
``datetime_complete``; a running attempt's until now) times N. Every attempt counts, complete,
pruned or failed: a killed attempt's compute was spent too. Optuna's datetimes are the one source
of these figures; the store keeps a copy (``device``, ``device_seconds``) once the attempt ends.

No torch at import: status and compare read costs without it.
"""

from __future__ import annotations

import statistics
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, get_args

import optuna
from optuna.trial import FrozenTrial, TrialState

from tunefleet.config import BudgetConfig, SearchConfig
from tunefleet.platform.retries import attempt_of
from tunefleet.platform.store import Store

COMPUTE_ATTR = "compute"
"""Optuna user attr set when an attempt starts: what its compute is counted in."""
Device = Literal["gpu", "cpu"]
DEVICES: tuple[Device, ...] = get_args(Device)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
"""States whose cost makes the median trial cost (a failed attempt's cost is spent, but says
nothing of what a trial costs)."""


@dataclass(frozen=True)
class Compute:
    """What one attempt's compute is counted in."""

    device: Device
    units: int

    def attr(self) -> dict[str, Any]:
        return {"device": self.device, "units": self.units}


def worker_compute(threads: int | None) -> Compute:
    """This worker's compute: the GPUs it sees (``CUDA_VISIBLE_DEVICES``, set by the launcher's
    slot or by Ray for an actor), else its torch threads (``--threads``, else torch's own)."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus:
        return Compute("gpu", gpus)
    return Compute("cpu", threads or torch.get_num_threads())


def compute_of(trial: FrozenTrial) -> Compute | None:
    """What the attempt is counted in; None for one that has not started (or predates this)."""
    raw = trial.user_attrs.get(COMPUTE_ATTR)
    if not isinstance(raw, dict) or raw.get("device") not in DEVICES:
        return None
    device: Device = raw["device"]
    return Compute(device, int(raw["units"]))


@dataclass(frozen=True)
class AttemptCost:
    number: int
    logical: int
    state: TrialState
    device: Device
    units: int
    device_seconds: float
    completed: datetime | None

    @property
    def hours(self) -> float:
        return self.device_seconds / 3600


def attempt_cost(trial: FrozenTrial, *, now: datetime | None = None) -> AttemptCost | None:
    """The attempt's compute so far (a running one's until ``now``); None when it is not known
    (not started, or started without the ``compute`` attr)."""
    compute = compute_of(trial)
    if compute is None or trial.datetime_start is None:
        return None
    end = trial.datetime_complete
    if end is None:
        if trial.state != TrialState.RUNNING:
            return None
        # Optuna's datetimes are naive local time (datetime.now()).
        end = now or datetime.now()
    seconds = max(0.0, (end - trial.datetime_start).total_seconds())
    return AttemptCost(
        number=trial.number,
        logical=attempt_of(trial).logical,
        state=trial.state,
        device=compute.device,
        units=compute.units,
        device_seconds=seconds * compute.units,
        completed=trial.datetime_complete,
    )


def cost_fields(trial: FrozenTrial) -> dict[str, Any]:
    """The store's ``device`` and ``device_seconds`` of an ended attempt (nothing if unknown)."""
    cost = attempt_cost(trial)
    return {} if cost is None else {"device": cost.device, "device_seconds": cost.device_seconds}


def record_cost(store: Store, sweep: str, trial: FrozenTrial) -> None:
    """Keep an ended attempt's cost in the store (a failed one's: ``Retries.end``)."""
    fields = cost_fields(trial)
    if fields:
        store.upsert_trial(sweep, trial.number, **fields)


@dataclass(frozen=True)
class SweepCost:
    """Every attempt's cost at one instant, and the budget they are held against."""

    budget: BudgetConfig
    attempts: dict[int, AttemptCost]
    """By Optuna trial number; attempts whose cost is unknown are left out."""

    def limit_hours(self, device: Device) -> float | None:
        return _limit(self.budget, device)

    def price(self, device: Device) -> float | None:
        budget = self.budget
        return budget.price_per_gpu_hour if device == "gpu" else budget.price_per_cpu_hour

    def money(self, cost: AttemptCost) -> float | None:
        price = self.price(cost.device)
        return None if price is None else cost.hours * price

    def spent_hours(self, device: Device) -> float:
        return _hours(c for c in self.attempts.values() if c.device == device)

    def median_trial_hours(self, device: Device) -> float | None:
        """The median cost of the finished (complete or pruned) logical trials, each with all its
        attempts (a retry resumes where a dead attempt stopped: both were needed)."""
        per_logical: dict[int, float] = defaultdict(float)
        for cost in self.attempts.values():
            if cost.device == device:
                per_logical[cost.logical] += cost.hours
        finished = {c.logical for c in self.attempts.values() if c.state in FINISHED}
        costs = [hours for logical, hours in per_logical.items() if logical in finished]
        return statistics.median(costs) if costs else None

    def running_need_hours(self, device: Device, median: float) -> float:
        """What the running attempts will likely spend still: each up to the median trial."""
        running = (c for c in self.attempts.values() if c.state == TrialState.RUNNING)
        return sum(max(0.0, median - c.hours) for c in running if c.device == device)

    def stop(self, device: Device, *, reserve_s: float = 0.0) -> str | None:
        """Why no new trial on ``device`` may start, or None: the remaining budget (running
        attempts' time so far counted as spent) cannot cover the median trial cost so far, once
        the running attempts have had what they likely need still (each up to the median: with
        several workers, those starting together would otherwise all count the same remainder).
        With no trial finished yet, a trial starts while more than ``reserve_s`` of a trial's
        compute remains (what the budget watcher holds back: a trial would be stopped at once)."""
        limit = self.limit_hours(device)
        if limit is None:
            return None
        spent = self.spent_hours(device) + reserve_s * self.units(device) / 3600
        median = self.median_trial_hours(device)
        line = f"budget: {self.spent_hours(device):.3g} of {limit:.3g} {device}-hours spent"
        if median is None:
            return line + "; no new trial" if limit - spent <= 0 else None
        line += f"; the median trial costs {median:.3g}"
        need = self.running_need_hours(device, median)
        if need > 0:
            line += f"; running trials may need {need:.3g} more"
        return line + "; no new trial" if limit - spent - need < median else None

    def units(self, device: Device) -> int:
        """The most units an attempt on ``device`` has used (1 before any): what a starting
        trial is assumed to use."""
        return max((c.units for c in self.attempts.values() if c.device == device), default=1)

    def exhausted(self, device: Device, *, within_s: float) -> str | None:
        """Why the running trials on ``device`` must stop now, or None: the budget is spent,
        or would be within ``within_s`` at the running attempts' units (the watcher's next look
        would come too late)."""
        limit = self.limit_hours(device)
        if limit is None:
            return None
        running = [
            c
            for c in self.attempts.values()
            if c.state == TrialState.RUNNING and c.device == device
        ]
        spent = self.spent_hours(device)
        soon = spent + within_s * sum(c.units for c in running) / 3600
        if soon < limit:
            return None
        return (
            f"budget: {spent:.3g} of {limit:.3g} {device}-hours spent; stopping the running "
            "trial after its step (its state is kept: raise the budget and run the sweep again "
            "to finish it)"
        )

    def to_best(self, best: FrozenTrial) -> dict[str, Any]:
        """The sweep's cost to reach ``best``: every attempt finished by the time it completed,
        itself included, per device (hours) and in money where every device spent has a price."""
        assert best.datetime_complete is not None
        done = [
            c
            for c in self.attempts.values()
            if c.completed is not None and c.completed <= best.datetime_complete
        ]
        hours = {d: _hours(c for c in done if c.device == d) for d in DEVICES}
        spent = [d for d in DEVICES if hours[d] > 0]
        priced = all(self.price(d) is not None for d in spent)
        money = sum(hours[d] * (self.price(d) or 0.0) for d in spent) if priced else None
        return {
            "trial": best.number,
            **{f"{d}_hours": hours[d] for d in DEVICES},
            "money": money,
        }

    def json(self) -> dict[str, Any]:
        """Per device: hours spent, the limit, what remains (spent + remaining = limit), the
        price and the money spent (None where not set)."""
        out: dict[str, Any] = {}
        for device in DEVICES:
            spent, limit, price = (
                self.spent_hours(device),
                self.limit_hours(device),
                self.price(device),
            )
            out[f"{device}_hours"] = {
                "spent": spent,
                "limit": limit,
                "remaining": None if limit is None else limit - spent,
                "price_per_hour": price,
                "money": None if price is None else spent * price,
            }
        return out


def _hours(costs: Iterable[AttemptCost]) -> float:
    # Summed in seconds, as each trial shows them, then converted once.
    return sum(c.device_seconds for c in costs) / 3600


def sweep_cost(
    trials: Sequence[FrozenTrial], budget: BudgetConfig, *, now: datetime | None = None
) -> SweepCost:
    now = now or datetime.now()
    costs = (attempt_cost(t, now=now) for t in trials)
    return SweepCost(budget, {c.number: c for c in costs if c is not None})


LOOK_S = 5.0
"""At most this long between a running trial's looks at the compute budget."""


def look_s(search: SearchConfig) -> float:
    """Seconds between a budget watcher's looks (every heartbeat, at most ``LOOK_S``)."""
    return min(float(search.heartbeat_s), LOOK_S)


def reserve_s(search: SearchConfig) -> float:
    """What the watcher holds back (two looks: the step under way, the state write and the
    re-queue still spend after a stop is asked), which the gate holds back too, so that no
    trial starts only to be stopped at once."""
    return 2 * look_s(search)


def budget_stop(study: optuna.Study, search: SearchConfig, device: Device) -> str | None:
    """The gate a worker passes before claiming a slot: why no trial on ``device`` may start."""
    if _limit(search.budget, device) is None:
        return None
    cost = sweep_cost(study.get_trials(deepcopy=False), search.budget)
    return cost.stop(device, reserve_s=reserve_s(search))


def budget_spent(
    study: optuna.Study, budget: BudgetConfig, device: Device, *, within_s: float
) -> str | None:
    """What a worker's budget watcher asks while its trial runs (``SweepCost.exhausted``)."""
    if _limit(budget, device) is None:
        return None
    return sweep_cost(study.get_trials(deepcopy=False), budget).exhausted(device, within_s=within_s)


def budget_end(study: optuna.Study, search: SearchConfig, *, trials: int) -> str | None:
    """Why the compute budget ended the sweep before its ``trials`` were done, or None."""
    if all(_limit(search.budget, d) is None for d in DEVICES):
        return None
    frozen = study.get_trials(deepcopy=False)
    if sum(t.state in FINISHED for t in frozen) >= trials:
        return None
    cost = sweep_cost(frozen, search.budget)
    stops = [s for s in (cost.stop(d, reserve_s=reserve_s(search)) for d in DEVICES) if s]
    return "; ".join(stops) or None


def _limit(budget: BudgetConfig, device: Device) -> float | None:
    return budget.gpu_hours if device == "gpu" else budget.cpu_hours


class BudgetWatch:
    """While a worker's trial runs, looks every ``every_s`` seconds whether the compute budget
    is spent (or would be before the next look) and then calls ``on_spent`` (the worker's
    stop request, as SIGTERM's): the trial ends after
    its optimizer step with its resumable state written and is re-queued as interrupted, and
    the worker takes no new trial. The gate (``SweepCost.stop``) keeps trials from starting;
    this keeps one that turned out dearer than the median from running past the budget."""

    def __init__(
        self,
        study: optuna.Study,
        budget: BudgetConfig,
        device: Device,
        *,
        on_spent: Callable[[str], None],
        every_s: float,
    ) -> None:
        self.study, self.budget, self.device = study, budget, device
        self.on_spent, self.every_s = on_spent, every_s
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> BudgetWatch:
        if _limit(self.budget, self.device) is not None:
            self._thread = threading.Thread(
                target=self._watch, daemon=True, name="tunefleet-budget"
            )
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()

    def _watch(self) -> None:
        while not self._done.wait(self.every_s):
            try:
                why = budget_spent(self.study, self.budget, self.device, within_s=2 * self.every_s)
            except Exception:  # a database hiccup: look again next time
                continue
            if why is not None:
                print(why, flush=True)
                self.on_spent(why)
                return
