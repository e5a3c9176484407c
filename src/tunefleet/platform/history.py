"""``history``: a registered model's alias moves from the store's audit table
(``tf_alias_moves``): who moved which alias when, from which version to which, and the gate's
figures or the reason. Reads the store only: no MLflow import, so it answers fast."""

from __future__ import annotations

import json
from typing import Any

from tunefleet.platform.store import AliasMove


def history_json(moves: list[AliasMove]) -> list[dict[str, Any]]:
    return [
        {
            "id": m.id,
            "when": m.created.isoformat(),
            "who": m.actor,
            "alias": m.alias,
            "action": m.action,
            "from_version": m.from_version,
            "to_version": m.to_version,
            "sweep": m.sweep,
            "trial": m.number,
            "reason": m.reason,
            "gate": m.gate,
        }
        for m in moves
    ]


def history_text(name: str, moves: list[AliasMove]) -> str:
    """One line per move, oldest first: when, who, what moved where, and why."""
    if not moves:
        return f"no alias moves recorded for {name}"
    lines = []
    for m in moves:
        when = m.created.strftime("%Y-%m-%d %H:%M:%S")
        where = f"{m.from_version or '-'} -> {m.to_version or '-'}"
        trial = f" trial {m.number}" if m.number is not None else ""
        line = f"{when}  {m.actor}  {m.action:<11} @{m.alias}  {where}{trial}"
        # A previous-champion move repeats its champion move's gate: printed once, there.
        why = _why(m, gate=m.alias != "previous-champion")
        lines.append(f"{line}  {why}" if why else line)
    return "\n".join(lines)


def _why(move: AliasMove, *, gate: bool) -> str:
    parts = []
    if gate and move.gate is not None:
        checks = move.gate.get("checks") or []
        figures = "; ".join(
            f"{c['name']} {c['figure']:.4g} ({'ok' if c['passed'] else 'FAIL'})" for c in checks
        )
        verdict = "passed" if move.gate.get("passed") else "failed"
        parts.append(f"gate {verdict}: {figures or 'no checks'}")
    if move.reason:
        parts.append(f"reason: {json.dumps(move.reason)}")
    return "  ".join(parts)
