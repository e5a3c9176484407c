"""User-facing errors: each names the key path or file at fault and what is allowed.

The CLI turns these into exit code 2 without a traceback; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations


class TunefleetError(Exception):
    """Base of the errors a user can fix by changing their input."""


class ConfigError(TunefleetError):
    """A config (or something it names) is invalid.

    ``problems`` holds one ``(where, what)`` pair per mistake, so that a user sees every mistake
    of a config at once rather than one per run.
    """

    def __init__(self, problems: list[tuple[str, str]], *, source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        head = f"invalid config {source}" if source else "invalid config"
        lines = [f"{head}:"] + [f"  {where}: {what}" for where, what in self.problems]
        super().__init__("\n".join(lines))


class DataError(ConfigError):
    """A data file is missing, empty, unreadable or lacks what the config names."""


class NotFoundError(TunefleetError):
    """A sweep, trial, checkpoint or model alias that the user named does not exist."""


class CheckpointError(TunefleetError):
    """A checkpoint that is not what it should be: files that do not match the hashes recorded
    when it was written, or weights that do not fit the base model they are loaded onto."""
