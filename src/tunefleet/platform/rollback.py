"""``rollback``: moving ``@champion`` back to an earlier version once that version is checked
(it downloads, matches the hashes it was registered with, and predicts); recorded in the
store's alias history (``platform.history``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tunefleet.errors import NotFoundError, TunefleetError
from tunefleet.platform.layout import Layout, mlflow_tracking_uri
from tunefleet.platform.status import SweepView
from tunefleet.platform.store import AliasMove, Store
from tunefleet.platform.versions import (
    CHAMPION,
    PREVIOUS,
    Move,
    actor,
    alias_version,
    client_for,
    downloaded,
    load_copy,
    move_aliases,
    version_of,
)

PROBE_TEXTS = ("a short text to check that the model predicts",)


@dataclass(frozen=True)
class RollbackOutcome:
    name: str
    from_version: str
    to_version: str
    previous: str | None
    """What ``@previous-champion`` names now (None: removed)."""


def rollback(
    view: SweepView,
    store: Store,
    layout: Layout,
    *,
    to: str | None = None,
    reason: str | None = None,
) -> RollbackOutcome:
    """Point ``@champion`` at version ``to`` (default: ``@previous-champion``) once that version
    downloads, matches the hashes it was registered with and predicts; ``@previous-champion``
    then names the version that was champion before ``to`` first became it (or is removed).
    CheckpointError if the target no longer matches, NotFoundError if there is none."""
    name = view.config.name
    if not view.config.tracking.mlflow.enabled:
        raise TunefleetError(
            f"sweep {name!r} has tracking.mlflow.enabled: false: it has no registry aliases "
            "to roll back"
        )
    tracking_uri = mlflow_tracking_uri(layout, view.config)
    client = client_for(tracking_uri)
    current = alias_version(client, name, CHAMPION)
    if current is None:
        raise NotFoundError(f"{name} has no @champion to roll back")
    if to is not None:
        target = version_of(client, name, to)
    else:
        found = alias_version(client, name, PREVIOUS)
        if found is None:
            raise NotFoundError(
                f"{name} has no @previous-champion to roll back to; pass --to VERSION "
                "(`tunefleet history` lists the versions)"
            )
        target = found
    was, now = str(current.version), str(target.version)
    if was == now:
        raise TunefleetError(f"version {now} of {name} is already @champion")
    with downloaded(tracking_uri, target) as copy:
        load_copy(copy).predict(list(PROBE_TEXTS))
    previous = _before(store.alias_moves(name), now)
    # Rolling back to the version ``to`` replaced: the history's own choice would undo itself.
    if previous == was:
        previous = None
    moves = [
        Move(CHAMPION, "rollback", was, now),
        Move(PREVIOUS, "rollback", _number(alias_version(client, name, PREVIOUS)), previous),
    ]
    if moves[1].from_version is None and previous is None:
        moves.pop()  # nothing to remove
    tags = target.tags or {}
    sweep, number = tags.get("tunefleet.sweep"), _int(tags.get("tunefleet.trial"))
    move_aliases(client, store, name, moves, who=actor(), sweep=sweep, number=number, reason=reason)
    if sweep == name and number is not None and tags.get("tunefleet.checkpoint"):
        store.record_promotion(
            name,
            number=number,
            alias=CHAMPION,
            model_name=name,
            model_version=now,
            checkpoint=tags["tunefleet.checkpoint"],
        )
    return RollbackOutcome(name, was, now, previous)


def _before(moves: list[AliasMove], version: str) -> str | None:
    """The version ``@champion`` named before ``version`` was last promoted to it (a rollback
    to ``version`` does not count: it came back from a worse version, not after a better one)."""
    for move in reversed(moves):
        promoted = move.action in ("promote", "force")
        if move.alias == CHAMPION and move.to_version == version and promoted:
            return move.from_version if move.from_version != version else None
    return None


def _number(version: Any) -> str | None:
    return None if version is None else str(version.version)


def _int(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() else None


def describe_rollback(outcome: RollbackOutcome) -> str:
    previous = f"version {outcome.previous}" if outcome.previous else "none"
    return (
        f"rolled back {outcome.name}: @champion version {outcome.from_version} -> "
        f"{outcome.to_version} (checked: hashes match, it loads and predicts); "
        f"@previous-champion: {previous}"
    )
