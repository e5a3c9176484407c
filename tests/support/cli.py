"""Running the real ``tunefleet`` command line in a child process, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TUNEFLEET = [sys.executable, "-m", "tunefleet"]


def cli_env(**extra: str) -> dict[str, str]:
    """This process's environment (conftest made it offline) with unbuffered output, so a
    killed child's last lines are not lost."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", **extra}


def run_cli(
    *args: str, timeout: float = 300, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``tunefleet ARGS...`` to completion; stdout and stderr captured as text."""
    return subprocess.run(
        [*TUNEFLEET, *args],
        capture_output=True,
        text=True,
        env=cli_env(),
        cwd=cwd,
        timeout=timeout,
    )


def start_cli(*args: str) -> subprocess.Popen[bytes]:
    """``tunefleet ARGS...`` in the background, in a process group of its own (so a test can
    signal the launcher alone, or kill it with its workers); output discarded."""
    return subprocess.Popen(
        [*TUNEFLEET, *args],
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
