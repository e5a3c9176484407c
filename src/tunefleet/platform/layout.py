"""Where a sweep's files live under ``--out`` (the embedded default keeps everything there)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tunefleet.config import SweepConfig


@dataclass(frozen=True)
class Layout:
    out: Path

    @classmethod
    def at(cls, out: str | Path) -> Layout:
        return cls(Path(out).expanduser().resolve())

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.out / 'tunefleet.db'}"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.out / "mlartifacts"

    @property
    def wandb_dir(self) -> Path:
        return self.out

    @property
    def token_cache(self) -> Path:
        return self.out / "cache" / "tokens"

    def checkpoint(self, sweep: str, number: int) -> Path:
        return self.out / "checkpoints" / sweep / f"trial-{number}"

    def named_checkpoint(self, sweep: str, run: str) -> Path:
        return self.out / "checkpoints" / sweep / run

    def spool_dir(self, sweep: str) -> Path:
        """Each run's events and its sinks' cursors (see tracking/spool.py)."""
        return self.out / "spool" / sweep

    @property
    def spool_root(self) -> Path:
        return self.out / "spool"

    def resume_dir(self, sweep: str, number: int) -> Path:
        """The resumable state of logical trial ``number`` (its first attempt's number), replaced
        at every evaluation and read back by a retry (see trainers/resume.py)."""
        return self.out / "resume" / sweep / f"trial-{number}"

    def work_dir(self, sweep: str, number: int) -> Path:
        return self.out / "work" / sweep / f"trial-{number}"

    def ensure(self) -> Layout:
        self.out.mkdir(parents=True, exist_ok=True)
        return self


def mlflow_tracking_uri(layout: Layout, config: SweepConfig | None = None) -> str:
    """The MLflow tracking URI a run logs to: the config's ``tracking.mlflow.tracking_uri``, else
    ``MLFLOW_TRACKING_URI`` (as MLflow users expect), else the embedded default, a sqlite file
    ``mlflow.db`` in ``--out``. Without a config: what a config without a URI gets."""
    configured = config.tracking.mlflow.tracking_uri if config is not None else None
    return (
        configured
        or os.environ.get("MLFLOW_TRACKING_URI")
        or f"sqlite:///{layout.out / 'mlflow.db'}"
    )
