"""Study-aware checkpoint retention: which of a sweep's files on disk may go, and deleting them.

What a sweep holds on disk, per logical trial (the first attempt's number): its best checkpoint
(``Layout.checkpoint``), its resumable state (``Layout.resume_dir``) and, after a crash mid-write,
staging or set-aside folders beside either (``.trial-N-...``). :func:`held_files` finds them;
:func:`plan` decides, from the store's records alone, what goes; :func:`apply` deletes and records
it. Never deleted: a pinned trial's files (``tunefleet pin``), a promoted one's (registered or
behind an alias), a running or re-queued trial's (its retry resumes from them), and the best
checkpoints of the ``keep_top_k`` best complete trials. Deleted, in this order, until the sweep
fits ``max_disk_gb`` (or all of them without a budget):

1. leftovers: failed and pruned trials' checkpoints and states, a finished trial's state, and
   the staging folders of a write that a crash cut short (never taken for a checkpoint: only the
   folder whose files match the recorded hashes is one);
2. the checkpoints of complete trials outside the top K, worst first.

"Best" is the objective's order; in a multi-objective sweep, Pareto front rank, then the first
objective (``platform.pareto``); a trial that broke a constraint ranks after every feasible one.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tunefleet.config import Objective, SweepConfig
from tunefleet.config.schema import CheckpointsConfig
from tunefleet.errors import NotFoundError
from tunefleet.platform.layout import Layout
from tunefleet.platform.pareto import dominates
from tunefleet.platform.store import PinRecord, PromotionRecord, Store, TrialRecord

log = logging.getLogger(__name__)

GB = 10**9
"""``max_disk_gb`` and ``min_free_gb`` count in GB of 10^9 bytes, as disks are sold."""
KINDS = ("checkpoint", "resume", "staging")
_TRIAL_FOLDER = re.compile(r"^\.?trial-(?P<number>\d+)(?P<rest>.*)$")


@dataclass(frozen=True)
class Held:
    """One folder a logical trial holds on disk."""

    number: int
    """The logical trial: its first attempt's number."""
    kind: str
    """checkpoint (its best checkpoint), resume (its resumable state) or staging (a crashed
    write's staging or set-aside folder)."""
    path: Path
    bytes: int


@dataclass(frozen=True)
class Removal:
    held: Held
    why: str


@dataclass(frozen=True)
class Plan:
    """What gc deletes, what it keeps and why, and the sweep's bytes before and after."""

    removals: tuple[Removal, ...]
    verdicts: dict[int, str]
    """Logical trial -> why its checkpoint stays (``pinned``, ``promoted``, ``running``,
    ``top 2``, ``kept``) or ``to delete``; only trials with a checkpoint on disk."""
    total_bytes: int
    budget_bytes: int | None
    over_budget: str | None = None
    sizes: dict[int, int] = field(default_factory=dict)
    """Logical trial -> its checkpoint's bytes on disk."""
    """Why the sweep still exceeds its budget after the plan (everything left is protected)."""

    @property
    def freed_bytes(self) -> int:
        return sum(r.held.bytes for r in self.removals)

    @property
    def after_bytes(self) -> int:
        return self.total_bytes - self.freed_bytes


@dataclass(frozen=True)
class Policy:
    keep_top_k: int | None = None
    budget_bytes: int | None = None

    @classmethod
    def of(cls, settings: CheckpointsConfig) -> Policy:
        budget = None if settings.max_disk_gb is None else int(settings.max_disk_gb * GB)
        return cls(keep_top_k=settings.keep_top_k, budget_bytes=budget)


@dataclass(frozen=True)
class _Logical:
    """A logical trial's attempts, as the store has them."""

    number: int
    attempts: list[TrialRecord] = field(default_factory=list)

    @property
    def latest(self) -> TrialRecord:
        return max(self.attempts, key=lambda r: (r.attempt, r.number))

    @property
    def live(self) -> bool:
        """Running, or re-queued: a retry will resume from its files."""
        latest = self.latest
        return latest.state in ("RUNNING", "WAITING") or (
            latest.state == "FAIL" and latest.requeued
        )


# --------------------------------------------------------------------------------------------
# What is on disk


def folder_bytes(folder: Path) -> int:
    """Bytes of every file under ``folder`` (0 when it is gone)."""
    if not folder.is_dir():
        return 0
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink())


def held_files(layout: Layout, sweep: str) -> list[Held]:
    """Every trial folder of the sweep under ``checkpoints/`` and ``resume/``, with its size.
    Folders not named for a trial (``tunefleet train``'s runs) are not a sweep's and not listed."""
    held: list[Held] = []
    roots = {
        "checkpoint": layout.checkpoint(sweep, 0).parent,
        "resume": layout.resume_dir(sweep, 0).parent,
    }
    for kind, root in roots.items():
        if not root.is_dir():
            continue
        for path in sorted(root.iterdir()):
            match = _TRIAL_FOLDER.match(path.name)
            if match is None or not path.is_dir():
                continue
            whole = not path.name.startswith(".") and not match["rest"]
            number = int(match["number"])
            held.append(Held(number, kind if whole else "staging", path, folder_bytes(path)))
    return held


# --------------------------------------------------------------------------------------------
# The plan


def rank_complete(records: Iterable[TrialRecord], objectives: Sequence[Objective]) -> list[int]:
    """The complete trials' numbers, best first: by the objective (several: front rank, then
    the first objective), feasible before infeasible, ties by number."""
    complete = [r for r in records if r.state == "COMPLETE" and r.value is not None]
    directions = [o.direction for o in objectives]
    multi = len(objectives) > 1
    values = {
        r.number: tuple(r.objective_values)
        if multi and r.objective_values
        else (float(r.value or 0),)
        for r in complete
    }
    # Only trials with every objective's value take part in the front (and a feasible one).
    ranked = [
        r.number
        for r in complete
        if r.feasible is not False and len(values[r.number]) == len(directions)
    ]
    ranks = _front_ranks({n: values[n] for n in ranked}, directions) if multi else {}
    sign = -1.0 if directions[0] == "maximize" else 1.0

    def key(record: TrialRecord) -> tuple[int, int, float, int]:
        infeasible = int(record.feasible is False)
        return (
            infeasible,
            ranks.get(record.number, len(complete)) if multi else 0,
            sign * values[record.number][0],
            record.number,
        )

    return [r.number for r in sorted(complete, key=key)]


def _front_ranks(
    values: Mapping[int, tuple[float, ...]], directions: Sequence[str]
) -> dict[int, int]:
    """Non-dominated sorting (rank 0 = the front), as ``platform.pareto`` ranks FrozenTrials."""
    left, ranks, rank = dict(values), {}, 0
    while left:
        layer = [
            n
            for n, v in left.items()
            if not any(dominates(w, v, directions) for w in left.values())
        ]
        for n in layer:
            ranks[n] = rank
            del left[n]
        rank += 1
    return ranks


def plan(
    *,
    records: Sequence[TrialRecord],
    held: Sequence[Held],
    pins: Sequence[PinRecord],
    promotions: Sequence[PromotionRecord],
    ranking: Sequence[int],
    policy: Policy,
) -> Plan:
    """What gc deletes (pure: nothing is touched). ``ranking``: complete trials, best first
    (:func:`rank_complete`); ``held``: what is on disk (:func:`held_files`)."""
    logical = _logical_trials(records)
    of = {r.number: r.retry_of if r.retry_of is not None else r.number for r in records}
    pinned = {of.get(p.number, p.number) for p in pins}
    promoted = {of.get(p.number, p.number) for p in promotions}
    promoted_paths = {Path(p.checkpoint) for p in promotions}
    top = [of.get(n, n) for n in ranking]
    keep_top = set(top if policy.keep_top_k is None else top[: policy.keep_top_k])
    verdicts: dict[int, str] = {}
    leftovers: list[Removal] = []
    outside: list[tuple[int, Removal]] = []
    for item in held:
        trial = logical.get(item.number)
        protected = _protected(item, trial, pinned, promoted, promoted_paths)
        if item.kind == "checkpoint":
            verdicts[item.number] = protected or _rank_verdict(item.number, top, keep_top)
        if protected:
            continue
        if item.kind != "checkpoint" or trial is None or trial.latest.state != "COMPLETE":
            state = "" if trial is None else trial.latest.state.lower()
            what = "a trial with no record" if trial is None else f"a {state} trial"
            leftovers.append(Removal(item, f"leftover {item.kind} of {what}"))
        elif policy.keep_top_k is not None and item.number not in keep_top:
            place = top.index(item.number) + 1 if item.number in top else len(top) + 1
            why = f"complete trial ranked {place} of {len(top)}, outside keep_top_k"
            outside.append((place, Removal(item, why)))
    outside.sort(key=lambda pair: -pair[0])  # worst first
    order = leftovers + [removal for _, removal in outside]
    total = sum(h.bytes for h in held)
    chosen = _within_budget(order, total, policy.budget_bytes)
    for removal in chosen:
        if removal.held.kind == "checkpoint":
            verdicts[removal.held.number] = "to delete"
    after = total - sum(r.held.bytes for r in chosen)
    sizes = {h.number: h.bytes for h in held if h.kind == "checkpoint"}
    over = _over(after, policy)
    return Plan(tuple(chosen), verdicts, total, policy.budget_bytes, over, sizes)


def _over(after: int, policy: Policy) -> str | None:
    if policy.budget_bytes is None or after <= policy.budget_bytes:
        return None
    unset = "" if policy.keep_top_k is not None else " (keep_top_k unset keeps every complete one)"
    return (
        f"{_gb(after)} left on disk exceeds checkpoints.max_disk_gb {_gb(policy.budget_bytes)}: "
        f"the rest is pinned, promoted, running or in the top keep_top_k{unset}"
    )


def _logical_trials(records: Sequence[TrialRecord]) -> dict[int, _Logical]:
    logical: dict[int, _Logical] = {}
    for record in records:
        number = record.retry_of if record.retry_of is not None else record.number
        logical.setdefault(number, _Logical(number)).attempts.append(record)
    return logical


def _protected(
    item: Held,
    trial: _Logical | None,
    pinned: set[int],
    promoted: set[int],
    promoted_paths: set[Path],
) -> str | None:
    """Why ``item`` may never be deleted now, or None."""
    if trial is not None and trial.live:
        return "running"  # its retry resumes from all of it, a staging folder being written too
    if item.kind != "checkpoint":
        return None
    if item.number in pinned:
        return "pinned"
    if item.number in promoted or item.path in promoted_paths:
        return "promoted"
    return None


def _rank_verdict(number: int, top: Sequence[int], keep_top: set[int]) -> str:
    if number in keep_top and number in top:
        return f"top {top.index(number) + 1}"
    return "kept"


def _within_budget(order: Sequence[Removal], total: int, budget: int | None) -> list[Removal]:
    """All of ``order`` without a budget; else its head, until what is left fits."""
    if budget is None:
        return list(order)
    chosen: list[Removal] = []
    for removal in order:
        if total <= budget:
            break
        chosen.append(removal)
        total -= removal.held.bytes
    return chosen


# --------------------------------------------------------------------------------------------
# Doing it


def sweep_plan(store: Store, layout: Layout, name: str, config: SweepConfig) -> Plan:
    """The plan for sweep ``name`` now, from its store records and what is on disk."""
    records = store.trials(name)
    return plan(
        records=records,
        held=held_files(layout, name),
        pins=store.pins(name),
        promotions=store.promotions(name),
        ranking=rank_complete(records, config.search.all_objectives),
        policy=Policy.of(config.checkpoints),
    )


def apply(store: Store, name: str, chosen: Plan) -> int:
    """Delete the plan's folders; a deleted checkpoint's trial records why and its size.
    Returns the bytes freed (a folder already gone, deleted by another worker, counts 0)."""
    records = store.trials(name)
    freed = 0
    for removal in chosen.removals:
        if not removal.held.path.exists():
            continue
        shutil.rmtree(removal.held.path, ignore_errors=True)
        freed += removal.held.bytes
        number = _holder(records, removal.held)
        if removal.held.kind == "checkpoint" and number is not None:
            store.upsert_trial(
                name,
                number,
                checkpoint_removed=removal.why,
                checkpoint_bytes=removal.held.bytes,
            )
    return freed


def _holder(records: Sequence[TrialRecord], held: Held) -> int | None:
    """The attempt whose record names the checkpoint (its complete retry), else the logical
    trial's own number; None for a folder no trial of the store owns."""
    named = [r for r in records if r.checkpoint and Path(r.checkpoint) == held.path]
    if named:
        return max(named, key=lambda r: r.attempt).number
    return held.number if any(r.number == held.number for r in records) else None


def collect_after_trial(store: Store, layout: Layout, name: str, config: SweepConfig) -> str | None:
    """The gc a worker runs after each trial when retention is configured; a line saying what
    it freed (None: nothing). Never raises: a failed gc must not stop the sweep."""
    settings = config.checkpoints
    if not (settings.gc_after_trial and settings.configured):
        return None
    try:
        chosen = sweep_plan(store, layout, name, config)
        freed = apply(store, name, chosen)
    except Exception:
        log.warning("gc of sweep %s failed; the next trial's gc tries again", name, exc_info=True)
        return None
    if not freed and chosen.over_budget is None:
        return None
    line = f"gc: freed {_gb(freed)}, {_gb(chosen.after_bytes)} on disk"
    return line + (f"; {chosen.over_budget}" if chosen.over_budget else "")


def describe(chosen: Plan, *, dry_run: bool) -> list[str]:
    """``gc`` output: one line a folder, then the bytes freed and the total against the budget."""
    verb = "would delete" if dry_run else "deleted"
    lines = [
        f"{verb} trial {r.held.number} {r.held.kind} {r.held.path} ({_gb(r.held.bytes)}): {r.why}"
        for r in chosen.removals
    ]
    budget = "" if chosen.budget_bytes is None else f" of max_disk_gb {_gb(chosen.budget_bytes)}"
    lines.append(
        f"{'would free' if dry_run else 'freed'} {chosen.freed_bytes} bytes "
        f"({_gb(chosen.freed_bytes)}); "
        f"on disk {_gb(chosen.total_bytes)} -> {_gb(chosen.after_bytes)}{budget}"
    )
    if chosen.over_budget:
        lines.append(f"warning: {chosen.over_budget}")
    return lines


def _gb(count: int) -> str:
    for unit, size in (("GB", GB), ("MB", 10**6), ("kB", 10**3)):
        if count >= size:
            return f"{count / size:.{2 if unit == 'GB' else 1}f} {unit}"
    return f"{count} bytes"


# --------------------------------------------------------------------------------------------
# Room for a trial's checkpoint


PAUSED_EXIT = 75
"""A worker's exit code when the disk cannot take a checkpoint (EX_TEMPFAIL): its trial was
re-queued, and the launcher does not start it again; the sweep exits with it."""
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def estimated_checkpoint_bytes(records: Sequence[TrialRecord], model_folder: str) -> int:
    """The largest checkpoint the sweep has written so far; before its first, the base model's
    weight files (an over-estimate for methods that save only what they train); 0 for a hub id
    that is not a local folder."""
    written = [r.checkpoint_bytes for r in records if r.checkpoint_bytes]
    if written:
        return max(written)
    folder = Path(model_folder)
    if not folder.is_dir():
        return 0
    return sum(
        f.stat().st_size for f in folder.rglob("*") if f.is_file() and f.suffix in WEIGHT_SUFFIXES
    )


def free_bytes(folder: Path) -> int:
    """Free bytes on the disk that holds ``folder`` (its nearest existing ancestor)."""
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def disk_refusal(layout: Layout, settings: CheckpointsConfig, *, estimated: int) -> str | None:
    """Why a trial must not start here (the disk cannot hold its checkpoint), or None."""
    needed = estimated + int(settings.min_free_gb * GB)
    free = free_bytes(layout.out)
    if free >= needed:
        return None
    return (
        f"disk full: {_gb(free)} free under {layout.out}, a trial needs {_gb(needed)} "
        f"(its checkpoint, about {_gb(estimated)}, plus checkpoints.min_free_gb "
        f"{settings.min_free_gb:g}); free space (`tunefleet gc`, a lower "
        "checkpoints.max_disk_gb or keep_top_k) and run the sweep again: the trial is re-queued"
    )


# --------------------------------------------------------------------------------------------
# What status and compare show


def trial_cells(chosen: Plan, records: Sequence[TrialRecord]) -> dict[int, dict[str, object]]:
    """Attempt number -> its logical trial's checkpoint (``bytes``, ``retention``: top N, kept,
    pinned, promoted, running, to delete, removed), on the logical trial's latest attempt."""
    cells: dict[int, dict[str, object]] = {}
    for number, trial in _logical_trials(records).items():
        latest = trial.latest
        if number in chosen.verdicts:
            size: int | None = chosen.sizes.get(number)
            verdict = chosen.verdicts[number]
        else:
            removed = [r for r in trial.attempts if r.checkpoint_removed]
            if not removed:
                continue
            size, verdict = removed[-1].checkpoint_bytes, "removed"
        cells[latest.number] = {"bytes": size, "retention": verdict}
    return cells


def cell_text(cell: Mapping[str, object] | None) -> str:
    """``top-1:1.2MB`` for the table (no blanks: the table is split on them by scripts)."""
    if cell is None:
        return "-"
    size = cell.get("bytes")
    verdict = str(cell["retention"]).replace(" ", "-")
    return f"{verdict}:{_gb(size).replace(' ', '')}" if isinstance(size, int) else verdict


def summary_json(chosen: Plan, settings: CheckpointsConfig) -> dict[str, object]:
    return {
        "on_disk_bytes": chosen.total_bytes,
        "max_disk_bytes": chosen.budget_bytes,
        "keep_top_k": settings.keep_top_k,
        "gc_would_free_bytes": chosen.freed_bytes,
    }


def summary_line(chosen: Plan, settings: CheckpointsConfig) -> str:
    """``checkpoints: 12.3 MB on disk of max_disk_gb 0.05 GB; keep_top_k 2``."""
    line = f"checkpoints: {_gb(chosen.total_bytes)} on disk"
    line += (
        " (no max_disk_gb)"
        if chosen.budget_bytes is None
        else f" of max_disk_gb {_gb(chosen.budget_bytes)}"
    )
    if settings.keep_top_k is not None:
        line += f"; keep_top_k {settings.keep_top_k}"
    if chosen.freed_bytes:
        line += f"; `tunefleet gc` would free {_gb(chosen.freed_bytes)}"
    return line


# --------------------------------------------------------------------------------------------
# The commands


def run_gc(store: Store, layout: Layout, name: str, *, dry_run: bool) -> list[str]:
    """``tunefleet gc NAME [--dry-run]``: the lines to print."""
    config = SweepConfig.model_validate(store.get_sweep(name).config)
    chosen = sweep_plan(store, layout, name, config)
    if not dry_run:
        apply(store, name, chosen)
    return describe(chosen, dry_run=dry_run)


def pin(store: Store, name: str, number: int, *, actor: str, reason: str | None) -> str:
    """``tunefleet pin``: NotFoundError for a trial the sweep does not have."""
    _known_trial(store, name, number)
    pinned = store.pin(name, number, actor=actor, reason=reason)
    by = f"pinned by {pinned.actor}" + (f" ({pinned.reason})" if pinned.reason else "")
    return f"sweep {name} trial {number}: {by}; gc never deletes its checkpoint"


def unpin(store: Store, name: str, number: int) -> str:
    _known_trial(store, name, number)
    if not store.unpin(name, number):
        return f"sweep {name} trial {number} was not pinned"
    return f"sweep {name} trial {number}: unpinned; retention's rules apply to it again"


def _known_trial(store: Store, name: str, number: int) -> None:
    if store.trial(name, number) is None:
        numbers = ", ".join(str(r.number) for r in store.trials(name)) or "none yet"
        raise NotFoundError(f"sweep {name} has no trial {number} (its trials: {numbers})")
