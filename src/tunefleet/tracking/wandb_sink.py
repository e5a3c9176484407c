"""Weights & Biases: one run per trial (group = sweep, job_type = method, name = trial-N)."""

from __future__ import annotations

import secrets
import string
from collections.abc import Sequence
from itertools import groupby
from pathlib import Path
from typing import Any

from tunefleet.tracking.events import Point, RunInfo


def new_run_id() -> str:
    """A W&B-style run id, made here so the store knows it before the run starts."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def _import_wandb() -> Any:
    try:
        import wandb
    except ImportError:
        raise ImportError(
            "W&B tracking needs wandb: pip install wandb, or set tracking.wandb.enabled: false"
        ) from None
    return wandb


class WandbSink:
    """Starts its run lazily on the bus thread: ``wandb.init`` spawns a service process and can
    take seconds, which must not be spent on the training thread."""

    name = "wandb"

    def __init__(
        self,
        *,
        info: RunInfo,
        run_id: str,
        project: str,
        entity: str | None,
        mode: str,
        directory: Path,
    ) -> None:
        self.info, self.run_id = info, run_id
        self.project, self.entity, self.mode, self.directory = project, entity, mode, directory
        self._run: Any = None

    def _started(self) -> Any:
        if self._run is None:
            wandb = _import_wandb()
            self.directory.mkdir(parents=True, exist_ok=True)
            self._run = wandb.init(
                project=self.project,
                entity=self.entity,
                group=self.info.sweep,
                job_type=self.info.method,
                name=f"trial-{self.info.trial}",
                id=self.run_id,
                config=dict(self.info.params),
                mode=self.mode,
                dir=str(self.directory),
                reinit="create_new",
                settings=wandb.Settings(
                    silent=True,
                    console="off",
                    x_disable_stats=True,
                    disable_git=True,
                    save_code=False,
                ),
            )
        return self._run

    def write(self, points: Sequence[Point]) -> None:
        run = self._started()
        for step, group in groupby(points, key=lambda p: p.step):
            run.log({p.key: p.value for p in group}, step=step)

    def finish(self, *, status: str) -> None:
        if self._run is None and status == "FINISHED":
            self._started()  # a trial that logged nothing still gets its run
        if self._run is not None:
            self._run.finish(exit_code=0 if status == "FINISHED" else 1)
