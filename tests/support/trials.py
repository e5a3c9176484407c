"""Building tiny trials for tests: one config shape and one request shape, shared by the
training-path and method tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunefleet.config import SweepConfig, parse_config
from tunefleet.trainers.run import TrialRequest


def tiny_config(
    model: Path, data: Path, *, data_options: dict[str, Any] | None = None, **train: Any
) -> SweepConfig:
    """A sweep config for ``model`` on ``data`` (max_length 32); ``train`` overrides the
    trial's training settings."""
    return parse_config(
        {
            "name": "unit",
            "model": {"name_or_path": str(model)},
            "data": {"train": str(data), "max_length": 32, **(data_options or {})},
            "train": {"epochs": 1, "batch_size": 16, **train},
        }
    )


def trial_request(folder: Path, **kwargs: Any) -> TrialRequest:
    """A request writing its checkpoint, scratch and token cache under ``folder``."""
    kwargs.setdefault("params", {})
    return TrialRequest(
        sweep="unit",
        number=0,
        checkpoint_dir=folder / "ckpt",
        work_dir=folder / "work",
        cache_dir=folder / "cache",
        **kwargs,
    )
