"""What a resumable state costs a trial: time and disk (issue 10).

Two sides, interleaved (the order rotates each repeat), each the same ``run_trial`` on the same
rows with the same seed, no trackers:

- plain: no ``resume_dir`` (the best-evaluation checkpoint only, as before issue 10);
- resumable: with a ``resume_dir``, so the resumable state (weights, optimizer, scheduler, RNG
  states, Trainer's state, best-so-far) is written and swapped in at every evaluation.

Printed: each side's median wall time and their ratio (goal: at most 1.03); per state, the
seconds the training thread spent (``save_resumable``: the copy to host memory) and the seconds
of the write on the writer's thread (``write_state``); and the state's size beside the best
checkpoint's, file by file.

    python benchmarks/resume.py [--model minilm] [--rows 400] [--epochs 2] [--repeats 2]

Shares overhead.py's pieces (imported from beside this file; importing it also sets the offline
environment defaults).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from overhead import config_for, environment, interleave, sample_rows, trial_parser

from tunefleet.config import SweepConfig

BLOCKED: list[float] = []
"""Seconds the training thread spent on each state (the copy to host memory, and waiting for
the previous write if it was still going)."""
WRITES: list[float] = []
"""Seconds of each state write on the writer's thread, while training goes on."""
SIZES: dict[str, dict[str, int]] = {}
"""Bytes by file of the last resumable side's state ("state") and best checkpoint ("checkpoint")."""


def timed(into: list[float], function: Callable[..., None]) -> Callable[..., None]:
    def timing(*args: Any, **kwargs: Any) -> None:
        started = time.perf_counter()
        function(*args, **kwargs)
        into.append(time.perf_counter() - started)

    return timing


def time_states() -> None:
    """Time the training thread's part of each state and the background write, wrapped."""
    from tunefleet.trainers import resume, trainer

    trainer.TunefleetTrainer.save_resumable = timed(  # type: ignore[method-assign]
        BLOCKED, trainer.TunefleetTrainer.save_resumable
    )
    resume.write_state = timed(WRITES, resume.write_state)


def trial(config: SweepConfig, work: Path, *, resumable: bool) -> float:
    from tunefleet.trainers.run import TrialRequest, run_trial

    request = TrialRequest(
        sweep=config.name,
        number=0,
        params={},
        checkpoint_dir=work / "ckpt",
        work_dir=work / "work",
        cache_dir=None,
        report=lambda epoch, value: False,
        resume_dir=work / "resume" if resumable else None,
    )
    started = time.perf_counter()
    run_trial(config, request)
    seconds = time.perf_counter() - started
    if resumable:
        SIZES["state"] = sizes(work / "resume")
        SIZES["checkpoint"] = sizes(work / "ckpt")
    return seconds


def plain(config: SweepConfig, work: Path) -> float:
    return trial(config, work, resumable=False)


def resumable(config: SweepConfig, work: Path) -> float:
    return trial(config, work, resumable=True)


def sizes(folder: Path) -> dict[str, int]:
    return {
        path.relative_to(folder).as_posix(): path.stat().st_size
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def load() -> str:
    """The 1-minute load average: timings on a loaded machine are read with it."""
    return f"{os.getloadavg()[0]:.1f}"


def megabytes(count: int) -> str:
    return f"{count / 1e6:.1f} MB"


def main() -> None:
    parser = trial_parser(__doc__)
    parser.set_defaults(rows=400, epochs=2)
    args = parser.parse_args()
    from tunefleet.platform.worker import quiet_libraries

    quiet_libraries()
    time_states()
    loaded = load()
    with tempfile.TemporaryDirectory() as tmp:
        config = config_for(args, sample_rows(args.rows, Path(tmp)))
        # First-run costs of the process (imports, the model's first load) out of the timing,
        # on rows of its own (``sample_rows`` names its file: the same folder would overwrite
        # the measured rows).
        warm = Path(tempfile.mkdtemp(dir=tmp))
        plain(config_for(args, sample_rows(40, warm)), warm)
        BLOCKED.clear()
        WRITES.clear()
        times = interleave(
            [("plain", plain), ("resumable", resumable)],
            config,
            repeats=args.repeats,
            folder=Path(tmp),
            rotate=True,
        )
    print(f"\n{environment(args)}; load average {loaded} before, {load()} after")
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, seconds in medians.items():
        print(f"{name:10s} median {seconds:7.2f}s  ({', '.join(f'{t:.2f}' for t in times[name])})")
    print(
        f"ratio resumable/plain: {medians['resumable'] / medians['plain']:.3f} (medians), ", end=""
    )
    # The least disturbed run of each side, for a machine shared with other work.
    print(f"{min(times['resumable']) / min(times['plain']):.3f} (fastest runs)")
    total = sum(times["resumable"])
    if WRITES:
        print(
            f"states: {len(WRITES)}; training thread per state: median "
            f"{statistics.median(BLOCKED):.3f}s ({sum(BLOCKED) / total:.1%} of the trials' time); "
            f"background write per state: median {statistics.median(WRITES):.3f}s, "
            f"max {max(WRITES):.3f}s ({sum(WRITES) / total:.1%})"
        )
    state, checkpoint = SIZES["state"], SIZES["checkpoint"]
    print(
        f"resumable state {megabytes(sum(state.values()))}, best checkpoint "
        f"{megabytes(sum(checkpoint.values()))} "
        f"(ratio {sum(state.values()) / sum(checkpoint.values()):.2f})"
    )
    for name, count in sorted(state.items(), key=lambda item: -item[1]):
        print(f"  state/{name}: {megabytes(count)}")


if __name__ == "__main__":
    main()
