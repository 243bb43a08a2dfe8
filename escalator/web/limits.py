"""The request-size cap: :class:`BodyLimit`, ASGI middleware answering 413 for a body larger
than ``api.max_body_bytes``."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from escalator.web.errors import error_body

DRAIN_FACTOR = 4
"""An oversized body up to this many times the limit is read (and discarded) before the 413."""


class _BodyTooLarge(Exception):
    pass


def _too_large(limit: int) -> dict[str, Any]:
    msg = f"request body larger than {limit} bytes"
    return error_body(msg, [{"field": "(body)", "message": msg}])


class BodyLimit:
    """ASGI middleware capping request bodies at ``limit()`` bytes (413).

    A ``Content-Length`` above the limit is refused before the handler runs; a streamed
    (chunked) body is counted as it arrives and refused once it passes the limit. Before
    answering, the rest of a body up to :data:`DRAIN_FACTOR` × the limit is read and discarded,
    so that an ordinary client (which writes the whole body before reading) sees the 413 and
    not a reset connection; a larger one is answered at once and the connection closed.
    """

    def __init__(self, app: Any, limit: Callable[[], int]) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict]],
                       send: Callable[[dict], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit()
        received = 0
        headers = dict(scope.get("headers", ()))
        if b"content-length" in headers:
            try:
                declared = int(headers[b"content-length"])
            except ValueError:
                await _send_json(send, 400, error_body("invalid Content-Length", []))
                return
            if declared > limit:
                # a client waiting for "100 Continue" has sent nothing yet: answer at once
                if declared <= DRAIN_FACTOR * limit and b"expect" not in headers:
                    await _drain(receive, DRAIN_FACTOR * limit)
                await _send_json(send, 413, _too_large(limit))
                return
        started = False
        complete = False  # the whole body has been received: nothing left to drain

        async def counted() -> dict:
            nonlocal received, complete
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > limit:
                    raise _BodyTooLarge
            return message

        async def watched(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except _BodyTooLarge:
            if started:
                raise
            if not complete:  # (receive() after the last part would wait for a disconnect)
                await _drain(receive, DRAIN_FACTOR * limit - received)
            await _send_json(send, 413, _too_large(limit))


async def _drain(receive: Callable[[], Awaitable[dict]], budget: int) -> None:
    while budget > 0:
        message = await receive()
        if message["type"] != "http.request":
            return
        budget -= len(message.get("body", b""))
        if not message.get("more_body", False):
            return


async def _send_json(send: Callable[[dict], Awaitable[None]], status: int, body: Any) -> None:
    data = json.dumps(body, ensure_ascii=False).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": data})
