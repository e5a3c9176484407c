"""A trial's resumable state, and how a trial ends when it does not complete.

The state lives in one folder per logical trial (``Layout.resume_dir``) and is replaced at every
evaluation, and when a stop is requested mid-epoch. It holds:

- ``model_state.pt``: every parameter the optimizer holds or that trains, plus the buffers, by
  name. Frozen weights are left out: they are rebuilt identically from the base model and the
  trial's seed, so a LoRA state is the adapters and the head, not the whole model. Loaded in place
  (``load_state_dict``), so the optimizer built before Trainer keeps its parameters.
- ``optimizer.pt``, ``scheduler.pt`` (ReduceLROnPlateau's too, saved after it stepped with the
  evaluation), ``scaler.pt`` (fp16), ``rng_state.pth`` (python, numpy, torch, cuda): in the
  files and formats of Trainer's own (single-process) checkpoints, read back by Trainer.
- ``trainer_state.json``: Trainer's state (global step, epoch, log history, best metric).
  Resuming goes through ``Trainer.train(resume_from_checkpoint=...)``, which restores it, skips
  the batches already trained in a mid-epoch stop (the sampler is seeded per epoch, so the
  skipped batches are the same ones) and then restores the RNG states.
- ``tunefleet-resume.json``, written last: the best-so-far (value, epoch, metrics, the hashes of
  the best checkpoint, which lives in its own folder) and the evaluations since it improved.
  Its presence is what makes a state complete. Not Trainer's ``stateful_callbacks``: restoring
  those rebuilds each callback from its constructor arguments (and only with
  ``restore_callback_states_from_checkpoint``), and BestCheckpointCallback's are closures.

Methods keep no state of their own beyond their weights: gradual unfreezing derives which blocks
train from the global step at each epoch start, and dann's lambda from the global step before
each optimizer step, so both continue from the restored step.

Replacing is atomic for a process that dies at any instant: the new state is written to a temp
folder beside the old one, the old one is renamed aside, the new one renamed into place, and the
old one removed. A reader takes the folder itself when complete, else a complete state left
aside or in a temp folder by a death between the two renames; :func:`recover` (run at a trial's
start) puts that one in place and removes the rest.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tunefleet.trainers.run import TrialOutcome

MARKER = "tunefleet-resume.json"
"""Written last into a resumable state; its presence means the state is complete."""
FORMAT = 1
_STAGING = "-tmp-"
_ASIDE = "-old"


class TrialInterrupted(Exception):
    """A stop was requested: the trial finished its optimizer step ``step``, wrote its resumable
    state and ended; ``outcome`` holds what it reached so far."""

    def __init__(self, step: int, outcome: TrialOutcome | None = None) -> None:
        super().__init__(f"interrupted after optimizer step {step}, resumable state written")
        self.step = step
        self.outcome = outcome


class NonFiniteError(Exception):
    """The training loss or gradient norm (``what``) of optimizer step ``step`` (1-based) was NaN
    or infinite; the trial stopped there, before that step updated the weights."""

    def __init__(self, step: int, what: str) -> None:
        super().__init__(f"non-finite {what} at optimizer step {step}")
        self.step = step
        self.what = what


class TrialOutOfMemory(Exception):
    """Training ran out of (GPU or host) memory with this per-device batch and accumulation."""

    def __init__(self, batch_size: int, accumulation: int) -> None:
        super().__init__(
            f"out of memory with train.batch_size={batch_size}, "
            f"train.gradient_accumulation_steps={accumulation}"
        )
        self.batch_size = batch_size
        self.accumulation = accumulation


class StopRequested(Exception):
    """Raised inside Trainer once the state is written, to leave its loop at once; run_trial
    turns it into :class:`TrialInterrupted` with the outcome."""

    def __init__(self, step: int) -> None:
        super().__init__(f"stop requested after optimizer step {step}")
        self.step = step


def has_resumable(folder: Path) -> bool:
    """Whether ``folder`` (or a state a crash left beside it) holds a complete resumable state."""
    return _pick(folder) is not None


def resumable_step(folder: Path) -> int | None:
    """The global step the trial would resume from, or None without a complete state."""
    picked = _pick(folder)
    return None if picked is None else int(read_record(picked)["step"])


def read_record(state: Path) -> dict[str, Any]:
    """The contents of a complete state's marker file."""
    record: dict[str, Any] = json.loads((state / MARKER).read_text())
    return record


def recover(folder: Path) -> Path | None:
    """The complete state to resume from, moved to ``folder`` if a crash left it beside it, with
    every leftover beside ``folder`` removed; None when there is none."""
    picked = _pick(folder)
    if picked is not None and picked != folder:
        shutil.rmtree(folder, ignore_errors=True)  # incomplete, or missing
        picked.rename(folder)
        picked = folder
    for leftover in _leftovers(folder):
        shutil.rmtree(leftover, ignore_errors=True)
    # Without a complete state the folder itself is left as it is (a caller may have made it);
    # the first write replaces it.
    return picked


def write_state(folder: Path, *, fill: Callable[[Path], None], record: dict[str, Any]) -> None:
    """Replace ``folder`` with a new state: ``fill`` writes the files into a temp folder beside
    it, ``record`` (with ``step``) becomes the marker, written last, then the swap."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}{_STAGING}"))
    fill(staging)
    (staging / MARKER).write_text(json.dumps({"format": FORMAT, **record}, indent=2))
    aside = _aside(folder)
    shutil.rmtree(aside, ignore_errors=True)
    if folder.exists():
        folder.rename(aside)
    staging.rename(folder)
    shutil.rmtree(aside, ignore_errors=True)


class StateWriter:
    """Writes states on a background thread, one at a time, so training goes on meanwhile.

    A process killed mid-write leaves the previous complete state (the swap is atomic), so the
    work lost is at most the interval since that one plus the write.
    """

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, folder: Path, *, fill: Callable[[Path], None], record: dict[str, Any]) -> None:
        """Start writing (after the previous write has finished)."""
        self.wait()

        def run() -> None:
            try:
                write_state(folder, fill=fill, record=record)
            except BaseException as error:  # re-raised on the training thread by wait()
                self._error = error

        self._thread = threading.Thread(target=run, name="tunefleet-resume-writer", daemon=True)
        self._thread.start()

    def wait(self) -> None:
        """Until the last write is on disk; raises what it failed with."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def _pick(folder: Path) -> Path | None:
    if _complete(folder):
        return folder
    # Died between the renames: the new state is complete in its temp folder, the old aside.
    staged = [path for path in _staging(folder) if _complete(path)]
    candidates = [*staged, *([_aside(folder)] if _complete(_aside(folder)) else [])]
    if not candidates:
        return None
    return max(candidates, key=lambda path: int(read_record(path)["step"]))


def _complete(path: Path) -> bool:
    if not (path / MARKER).is_file():
        return False
    try:
        return read_record(path).get("format") == FORMAT
    except (OSError, ValueError):
        return False  # a marker cut short by a full disk


def _aside(folder: Path) -> Path:
    return folder.with_name(f".{folder.name}{_ASIDE}")


def _staging(folder: Path) -> list[Path]:
    if not folder.parent.is_dir():
        return []
    return sorted(folder.parent.glob(f".{folder.name}{_STAGING}*"))


def _leftovers(folder: Path) -> list[Path]:
    aside = _aside(folder)
    return [*_staging(folder), *([aside] if aside.exists() else [])]
