"""tunefleet's SQL store, kept in the same database as the sweep's Optuna study."""

from __future__ import annotations

from tunefleet.platform.store.store import (
    BestRecord,
    PromotionRecord,
    Store,
    SweepRecord,
    TrialRecord,
)

__all__ = ["BestRecord", "PromotionRecord", "Store", "SweepRecord", "TrialRecord"]
