"""tunefleet's SQL store, kept in the same database as the sweep's Optuna study."""

from __future__ import annotations

from tunefleet.platform.store.store import (
    ALIAS_ACTIONS,
    AliasMove,
    BestRecord,
    PinRecord,
    PromotionRecord,
    Store,
    SweepRecord,
    TrialRecord,
)

__all__ = [
    "ALIAS_ACTIONS",
    "AliasMove",
    "BestRecord",
    "PinRecord",
    "PromotionRecord",
    "Store",
    "SweepRecord",
    "TrialRecord",
]
