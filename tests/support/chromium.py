"""Loading an HTML file in headless Chromium: its DOM after the scripts ran, and every console
line (errors, uncaught exceptions, failed loads). `.ci/run` installs Chromium."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL = "install it: apt-get install -y chromium (.ci/run does), or set $CHROMIUM to its binary"
# Chromium logs each console message as `INFO:CONSOLE:LINE] "text", source: URL (LINE)`, an
# uncaught exception as a console message starting with "Uncaught".
_CONSOLE = re.compile(r':CONSOLE(?::\d+)?\] "(?P<text>.*)", source: ')


@dataclass(frozen=True)
class Page:
    dom: str
    console: list[str]


def chromium() -> str:
    """The Chromium binary; the test fails (it never skips) without one."""
    given = os.environ.get("CHROMIUM")
    found = given or next((p for p in map(shutil.which, CANDIDATES) if p), None)
    if not found:
        pytest.fail(f"headless Chromium is needed to check the HTML report; {INSTALL}")
    return found


def load(path: Path, *, timeout: float = 120) -> Page:
    """The page at ``path`` (file://) after its scripts ran, with no name resolving: a page
    that needs the network does not work here."""
    result = subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
            "--dump-dom",
            path.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    console = [m["text"] for m in map(_CONSOLE.search, result.stderr.splitlines()) if m]
    return Page(result.stdout, console)
