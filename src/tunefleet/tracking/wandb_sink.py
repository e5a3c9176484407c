"""Weights & Biases: one run per trial (group = sweep, job_type = method, name = trial-N)."""

from __future__ import annotations

import secrets
import shutil
import string
from collections.abc import Mapping, Sequence
from itertools import groupby
from pathlib import Path
from typing import Any

from tunefleet.tracking.events import Checkpoint, End, Evaluation, Event, Point, RunInfo
from tunefleet.tracking.sinks import RunSetup, SinkSource, register_sink


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
    """A trial's events to its W&B run (group = sweep, job_type = method, name = trial-N).

    The run starts lazily on the bus thread: ``wandb.init`` spawns a service process and can take
    seconds, which must not be spent on the training thread. A replay in a later process resumes
    the same run id.
    """

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
        artifacts: Path,
        state: Mapping[str, Any],
    ) -> None:
        self.info, self.run_id = info, run_id
        self.project, self.entity, self.mode, self.directory = project, entity, mode, directory
        self.artifacts = artifacts
        # A retry continues the run its dead attempt started (same id).
        self._resume = bool(state.get("started")) or info.attempt > 1
        self._step = int(state.get("step", 0))
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
                name=self.info.name,
                id=self.run_id,
                config=dict(self.info.params),
                mode=self.mode,
                dir=str(self.directory),
                reinit="create_new",
                resume="allow" if self._resume else None,
                settings=wandb.Settings(
                    silent=True,
                    console="off",
                    x_disable_stats=True,
                    disable_git=True,
                    save_code=False,
                ),
            )
            self._resume = True
        return self._run

    def state(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "started": self._resume, "step": self._step}

    def write(self, events: Sequence[Event]) -> None:
        run = self._started()
        points: list[Point] = []
        for event in events:
            if isinstance(event, Point):
                points.append(event)
                continue
            self._log(run, points)
            points = []
            self._handle(run, event)
        self._log(run, points)

    def _log(self, run: Any, points: Sequence[Point]) -> None:
        # W&B drops a log whose step is below one it has seen; a system sample taken at step S
        # can be spooled just after the training thread logged S + 1, so it goes in at S + 1.
        for step, group in groupby(points, key=lambda p: p.step):
            self._step = max(self._step, step)
            run.log({p.key: p.value for p in group}, step=self._step)

    def _handle(self, run: Any, event: Event) -> None:
        if isinstance(event, Evaluation):
            from tunefleet.tracking.render import evaluation_artifacts

            files = evaluation_artifacts(event.report, self.artifacts, step=event.step)
            wandb = _import_wandb()
            png = next(f for f in files if f.suffix == ".png")
            self._step = max(self._step, event.step)
            run.log({"evaluation/confusion_matrix": wandb.Image(str(png))}, step=self._step)
            # Into the run's own folder (synced with it): ``run.save`` would symlink and warn on
            # the console at every new best.
            target = Path(run.dir) / "evaluation"
            target.mkdir(parents=True, exist_ok=True)
            for f in files:
                if f.suffix == ".json":
                    shutil.copyfile(f, target / f.name)
        elif isinstance(event, Checkpoint):
            run.summary["best_checkpoint"] = event.path
            run.summary["best_value"] = event.value
            run.summary["best_step"] = event.step
        elif isinstance(event, End):
            run.finish(exit_code=0 if event.status == "FINISHED" else 1)
            self._run = None

    def close(self) -> None:
        """A run left open (the trial's end was not delivered) is finished as a crash would be:
        its status stays undecided until a replay delivers the end."""
        if self._run is not None:
            self._run.finish(exit_code=1)
            self._run = None


def _describe(setup: RunSetup) -> dict[str, Any] | None:
    wandb = setup.config.tracking.wandb
    if not wandb.enabled:
        return None
    return {
        "run_id": new_run_id(),
        "project": wandb.project,
        "entity": wandb.entity,
        "mode": wandb.mode,
        "directory": str(setup.local_dir),
    }


def _build(source: SinkSource) -> WandbSink:
    spec = source.spec
    return WandbSink(
        info=source.info,
        run_id=spec["run_id"],
        project=spec["project"],
        entity=spec["entity"],
        mode=spec["mode"],
        directory=Path(spec["directory"]),
        artifacts=source.artifacts,
        state=source.state,
    )


register_sink("wandb", describe=_describe, build=_build)
