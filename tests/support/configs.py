"""Writing a config to a YAML file, the form the CLI and workers read."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from tunefleet.config import SweepConfig


def write_config(
    folder: Path, config: Mapping[str, Any] | SweepConfig, *, name: str = "config"
) -> Path:
    """``folder/NAME.yaml`` holding ``config``; returns its path."""
    data = config.model_dump(mode="json") if isinstance(config, SweepConfig) else dict(config)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path
