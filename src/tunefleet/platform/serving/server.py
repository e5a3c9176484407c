"""Running the app under uvicorn until interrupted; a model that cannot be loaded stops it."""

from __future__ import annotations

import logging
from collections.abc import Callable

import uvicorn

from tunefleet.errors import TunefleetError
from tunefleet.platform.serving.app import Serving, create_app
from tunefleet.platform.serving.limits import Limits
from tunefleet.platform.serving.metrics import Metrics
from tunefleet.platform.serving.source import Source
from tunefleet.platform.store import Store


def serve(
    spec: str,
    *,
    store: Callable[[], Store],
    host: str,
    port: int,
    limits: Limits,
    reload_every_s: float | None,
    log_level: str = "info",
) -> None:
    """Serve ``spec`` (NAME@ALIAS or a checkpoint folder) on ``host:port`` until SIGINT/SIGTERM.

    The alias is resolved before the port opens (nothing promoted: NotFoundError at once); the
    model then loads in the background while /health/ready answers 503. A model that fails to
    load ends the server with a TunefleetError naming it."""
    source = Source(spec, store=store)
    source.current()
    fatal: list[BaseException] = []
    server: uvicorn.Server | None = None

    def on_fatal(exc: BaseException) -> None:
        fatal.append(exc)
        if server is not None:
            server.should_exit = True

    serving = Serving(source, limits, Metrics(), reload_every_s, on_fatal)
    _log_to_stderr(log_level)
    config = uvicorn.Config(
        create_app(serving),
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    server.run()
    if fatal:
        raise TunefleetError(f"cannot serve {spec}: could not load its model: {fatal[0]}")


def _log_to_stderr(level: str) -> None:
    """The serving modules' lines (loads, alias moves) beside uvicorn's, in its format."""
    logger = logging.getLogger("tunefleet.platform.serving")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level.upper())
