"""What the routers share: the daemon of the app (``app.state.daemon``) as a dependency,
intake through it, and waking its engine loop.

Every route is a coroutine that calls the engine in the loop's thread, so the store is only
ever used from one thread.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Request

from escalator.config.models import Config
from escalator.engine.engine import IngestResult
from escalator.events import Event
from escalator.web.errors import ApiError


async def current_daemon(request: Request) -> Any:
    """Dependency: the app's :class:`~escalator.service.daemon.Daemon` (``app.state.daemon``).

    A coroutine, like every dependency here: FastAPI would run a plain function in a worker
    thread, and the daemon is only used from the loop's thread."""
    return request.app.state.daemon


CurrentDaemon = Annotated[Any, Depends(current_daemon)]
"""A route parameter: the app's daemon."""


async def ingest(daemon: Any, events: list[tuple[str, Event]], source: str) -> list[IngestResult]:
    """Submit ``events`` (``(field prefix, event)`` pairs, e.g. ``("[1].", ev)``) as
    ``source`` through ``daemon.ingest`` (one transaction; committed before it returns).
    Raises :class:`~escalator.web.errors.ApiError` 422 naming each ``occurred_at`` the engine
    could not place in time."""
    _check_times(events, daemon.config, daemon.clock.now())
    return await daemon.ingest([e for _, e in events], source)


def _check_times(events: Iterable[tuple[str, Event]], config: Config, now: datetime) -> None:
    """Reject events whose ``occurred_at`` cannot be placed in UTC or the school's zone (e.g.
    year 1 with a positive offset), naming the field; the engine would fail on them."""
    errors = []
    for prefix, ev in events:
        try:
            ev.normalised(now, config.school.tz).derived_dedup_key(config.school.tz)
        except (OverflowError, ValueError) as e:
            errors.append({"field": f"{prefix}occurred_at" if prefix else "occurred_at",
                           "message": f"time out of range: {e}"})
    if errors:
        raise ApiError(422, "event rejected", errors)


def wake(daemon: Any) -> None:
    """Wake the engine loop so that what an action made due is sent at once."""
    event = getattr(daemon, "_wake", None)
    if event is not None:
        event.set()
