"""What the server refuses, and with which status: the limits a user sets on the command line,
the body-size guard (before FastAPI reads a byte of JSON) and the in-flight gate."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int
    max_batch: int
    batch_wait_s: float
    max_concurrency: int
    timeout_s: float
    truncate: bool

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_batch", "max_concurrency"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1; got {getattr(self, name)}")
        if self.batch_wait_s < 0 or self.timeout_s <= 0:
            raise ValueError("batch wait must be >= 0 and the timeout > 0")


class Rejection(Exception):
    """A request the server refuses: ``status``, a ``kind`` (the errors metric's label) and a
    message saying what is allowed."""

    def __init__(self, status: int, kind: str, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.message, self.field = status, kind, message, field

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"kind": self.kind, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return {"error": error}


def check_batch(count: int, limits: Limits) -> None:
    if count > limits.max_batch:
        raise Rejection(
            413,
            "batch_too_large",
            f"{count} inputs in one request; at most --max-batch {limits.max_batch}",
            field="inputs",
        )


class InFlight:
    """Requests being answered now; beyond ``limit`` a request is refused (429) at once rather
    than queued, so a client under overload learns it in milliseconds. Used from the event loop
    only, so a plain counter is enough."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0

    def enter(self) -> None:
        if self.count >= self.limit:
            raise Rejection(
                429,
                "overloaded",
                f"{self.count} requests in flight; at most --max-concurrency {self.limit}",
            )
        self.count += 1

    def leave(self) -> None:
        self.count -= 1


class BodyLimit:
    """ASGI middleware: a POST body over ``max_bytes`` is answered 413 without being parsed,
    whether its Content-Length says so up front or a chunked body grows past it."""

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, on_reject: Callable[[Rejection], None]
    ) -> None:
        self.app, self.max_bytes, self.on_reject = app, max_bytes, on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send, int(declared))
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._reject(send, size)
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(chunks), receive), send)

    async def _reject(self, send: Send, size: int) -> None:
        kb = self.max_bytes // 1024
        rejection = Rejection(
            413, "body_too_large", f"request body of {size} bytes; at most --max-body-kb {kb}"
        )
        self.on_reject(rejection)
        payload = json.dumps(rejection.body()).encode()
        headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the app the body already read, then waits on the real one (for a
    disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
