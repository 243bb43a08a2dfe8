"""What the routers share: the daemon of the app (``app.state.daemon``) as a dependency,
intake through it, store work through its store thread (:func:`in_store`), and waking its
lanes.

Every route is a coroutine on the event loop; whatever touches the store runs on the daemon's
store thread (``daemon.db``), so a transaction never holds up the loop (docs/ARCHITECTURE.md,
"Lanes").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request

from escalator.config.models import Config
from escalator.engine.engine import IngestResult
from escalator.events import Event
from escalator.store.retry import retrying_async
from escalator.store.thread import inline
from escalator.web.errors import ApiError

T = TypeVar("T")


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


async def in_store(daemon: Any, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` on the daemon's store thread (``daemon.db``; inline for a
    daemon without one); its exception is raised here. A
    :class:`~escalator.store.base.Conflict` (another daemon won a race) runs it again, a few
    times (:func:`~escalator.store.retry.retrying_async`), so ``fn`` is whole transactions;
    after the last, the Conflict is raised (the app answers 503 with ``Retry-After``)."""
    return await retrying_async(getattr(daemon, "db", inline), fn, *args, **kwargs)


def wake(daemon: Any) -> None:
    """Wake the daemon's lanes so that what an action made due is sent at once."""
    waker = getattr(daemon, "wake", None)
    if waker is not None:
        waker()
