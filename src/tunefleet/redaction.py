"""Keeping secrets out of everything tunefleet writes: MLflow and W&B params, the store, the
checkpoint manifest, logs and printed errors.

A config's secrets are its token fields and the passwords inside its URLs. Pydantic serialises
them redacted (see ``SecretValue`` and ``RedactedUrl``), so every JSON dump of a config is safe to
write anywhere; only a dump with the ``REVEAL`` context holds the real values, and that one goes
only to a worker process (in the environment, never on a command line, where ``ps`` shows it).
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import traceback
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Annotated, Any
from urllib.parse import unquote

from pydantic import BaseModel, PlainSerializer, SecretStr, SerializationInfo

from tunefleet.dotted import flatten

REDACTED = "***"
"""What a secret reads as wherever tunefleet writes it."""

REVEAL = "tunefleet_reveal_secrets"
"""Serialisation context key: ``model_dump(mode="json", context={REVEAL: True})`` keeps secrets."""

SECRETS_ENV = "TUNEFLEET_SECRETS"
"""JSON of dotted config path -> real value, handed by the launcher to the workers it starts."""

SECRET_NAMES = (
    "token",
    "api_key",
    "apikey",
    "password",
    "passwd",
    "secret",
    "access_key",
    "private_key",
)
"""A key whose last part is (or ends in ``_``) one of these holds a secret: ``hf_token`` too."""

# scheme://user:PASSWORD@host... The password may hold raw '@', ':' or '/' (users paste them
# unescaped), so it runs to the '@' that is followed by a plain host and then the end of the
# URL's authority; the user name is kept so that a reader can still tell which account it was.
_URL_PASSWORD = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/?#@'\"]*:)"
    r"(?P<password>[^\s'\"]*?)"
    r"(?=@[^\s@/?#'\"]*(?:[/?#\s'\",;)\]}]|$))"
)


def redact_url(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@host`` URL in it as ``***``."""
    return _URL_PASSWORD.sub(lambda m: m["head"] + REDACTED if m["password"] else m[0], text)


def url_passwords(text: str) -> set[str]:
    """The passwords of the URLs in ``text``, as written and percent-decoded."""
    found: set[str] = set()
    for match in _URL_PASSWORD.finditer(text):
        password = match["password"]
        if password and password != REDACTED:
            found.update({password, unquote(password)})
    return found


def is_secret_key(key: str) -> bool:
    """Whether the dotted ``key``'s last part names a secret (``model.token``, ``db_password``)."""
    last = key.rsplit(".", 1)[-1].lower().replace("-", "_")
    return any(last == name or last.endswith("_" + name) for name in SECRET_NAMES)


def is_redacted(value: Any) -> bool:
    """Whether ``value`` is a secret that a dump redacted (so the real one must come from
    elsewhere)."""
    return isinstance(value, str) and (value == REDACTED or f":{REDACTED}@" in value)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    return value


def redact_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Flattened params (dotted keys) fit for a tracker: secret-named keys' values as ``***``
    (a None stays None: it says that none was set), URL passwords in every string as ``***``."""
    return {
        key: REDACTED if is_secret_key(key) and value is not None else _redact_value(value)
        for key, value in params.items()
    }


# --- config fields -----------------------------------------------------------------------------


def _revealing(info: SerializationInfo) -> bool:
    context = info.context
    return isinstance(context, Mapping) and bool(context.get(REVEAL))


def _show_secret(value: SecretStr, info: SerializationInfo) -> str:
    return value.get_secret_value() if _revealing(info) else REDACTED


def _show_url(value: str, info: SerializationInfo) -> str:
    return value if _revealing(info) else redact_url(value)


SecretValue = Annotated[SecretStr, PlainSerializer(_show_secret, return_type=str, when_used="json")]
"""A config field holding a secret: hidden in ``repr``, ``***`` in every JSON dump."""

RedactedUrl = Annotated[str, PlainSerializer(_show_url, return_type=str, when_used="json")]
"""A config field holding a URL: its password is ``***`` in every JSON dump."""


def reveal(model: BaseModel) -> dict[str, Any]:
    """``model``'s JSON dump with its secrets in clear: for a worker's environment only."""
    return model.model_dump(mode="json", context={REVEAL: True})


def secret_params(model: BaseModel) -> dict[str, Any]:
    """Dotted path -> real value of every leaf that ``model``'s JSON dump redacts."""
    shown, real = flatten(model.model_dump(mode="json")), flatten(reveal(model))
    return {key: real[key] for key in real if shown.get(key) != real[key]}


def secret_values(model: BaseModel) -> set[str]:
    """The secret strings ``model`` holds: whole secret fields and the passwords in its URLs."""
    shown = flatten(model.model_dump(mode="json"))
    values: set[str] = set()
    for key, value in secret_params(model).items():
        if not isinstance(value, str):
            continue
        if shown.get(key) == REDACTED:
            values.add(value)
        values.update(url_passwords(value))
    values.discard("")
    values.discard(REDACTED)
    return values


# --- logs and printed text -------------------------------------------------------------------


class RedactingFilter(logging.Filter):
    """Masks known secret strings and URL passwords in a record's message (its args merged in),
    exception text and stack; it never drops a record."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        super().__init__()
        self._values: list[str] = []
        self.add(values)

    def add(self, values: Iterable[str]) -> None:
        # Longest first, so that a secret containing another is masked whole.
        fresh = {v for v in values if v and v != REDACTED} | set(self._values)
        self._values = sorted(fresh, key=len, reverse=True)

    def mask(self, text: str) -> str:
        for value in self._values:
            text = text.replace(value, REDACTED)
        return redact_url(text)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            # logging would print the raw msg and args in its own error report; mask those.
            message = f"{record.msg} {record.args!r}"
        record.msg, record.args = self.mask(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.mask(record.exc_text)
        if record.stack_info:
            record.stack_info = self.mask(record.stack_info)
        return True


_FILTER = RedactingFilter()
_installed = False


def redact_text(text: str) -> str:
    """``text`` (an error, a printed line) with every installed secret and URL password masked."""
    return _FILTER.mask(text)


def install_log_redaction(values: Iterable[str]) -> None:
    """Mask ``values`` (and any URL password) in every log record and uncaught traceback of this
    process from now on; values accumulate over calls."""
    global _installed
    _FILTER.add(values)
    handlers = [*logging.getLogger().handlers]
    if logging.lastResort is not None:
        handlers.append(logging.lastResort)
    for handler in handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)
    if _installed:
        return
    _installed = True
    # Handlers added later (a library's own, a logger that does not propagate) never see the
    # filter above; masking each record as it is made covers them all.
    make_record = logging.getLogRecordFactory()

    def masked_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        _FILTER.filter(record)
        return record

    logging.setLogRecordFactory(masked_record)

    def masked_excepthook(
        kind: type[BaseException], exc: BaseException, tb: TracebackType | None
    ) -> None:
        sys.stderr.write(redact_text("".join(traceback.format_exception(kind, exc, tb))))

    sys.excepthook = masked_excepthook

    def masked_thread_excepthook(args: threading.ExceptHookArgs) -> None:
        if issubclass(args.exc_type, SystemExit):
            return
        name = args.thread.name if args.thread is not None else "?"
        text = "".join(
            traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback)
        )
        sys.stderr.write(redact_text(f"Exception in thread {name}:\n{text}"))

    threading.excepthook = masked_thread_excepthook
