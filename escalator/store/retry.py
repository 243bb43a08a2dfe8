"""Running a store call again after a :class:`~escalator.store.base.Conflict`: a write lost a
race with another writer (two daemons opening the same dedup key, a serialization failure, a
deadlock, a lock wait that timed out). The transaction was rolled back, so running the call
again sees the other writer's rows (docs/reliability.md "Several daemons").

Used at the edges — intake (group commit, spool files, ``escalator send``), the actions over
the API, the console's forms and the CLI — never inside a transaction: the call retried must
be whole transactions (one, or several that are each safe to repeat). The engine's tick does
not retry: its next pass does the work again.

:data:`ATTEMPTS` tries in all, with a jittered backoff of about :data:`BACKOFF` seconds doubling
each time (at most ~0.3 s in all); after the last, the :class:`Conflict` is raised (the API
answers 503 with ``Retry-After``; the CLI says "database error").
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

import structlog

from escalator.store.base import Conflict
from escalator.store.thread import Runner

T = TypeVar("T")

ATTEMPTS = 4
"""Tries in all (the first and three retries)."""
BACKOFF = 0.02
"""Seconds before the first retry (doubled for each next one, times a jitter of 0.5–1.5)."""

log = structlog.get_logger("escalator.store.retry")


def delay(attempt: int, rng: random.Random | None = None) -> float:
    """Seconds to wait after failed try number ``attempt`` (1 for the first)."""
    return BACKOFF * 2 ** (attempt - 1) * (0.5 + (rng or random).random())


def retrying(fn: Callable[..., T], /, *args: Any, attempts: int = ATTEMPTS,
             sleep: Callable[[float], None] = time.sleep, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, run again (up to ``attempts`` tries in all) while it raises
    :class:`Conflict`; the last :class:`Conflict` is raised. Blocking: for the CLI and other
    callers on their own thread."""
    for attempt in range(1, attempts + 1):
        try:
            return fn(*args, **kwargs)
        except Conflict as e:
            _lost(fn, e, attempt, attempts)
            sleep(delay(attempt))
    raise AssertionError("unreachable")  # pragma: no cover


async def retrying_async(run: Runner, fn: Callable[..., T], /, *args: Any,
                         attempts: int = ATTEMPTS, **kwargs: Any) -> T:
    """``await run(fn, *args, **kwargs)`` (e.g. on the daemon's store thread), run again while
    it raises :class:`Conflict`, waiting on the event loop between tries (the store thread is
    free meanwhile); the last :class:`Conflict` is raised."""
    for attempt in range(1, attempts + 1):
        try:
            return await run(fn, *args, **kwargs)
        except Conflict as e:
            _lost(fn, e, attempt, attempts)
            await asyncio.sleep(delay(attempt))
    raise AssertionError("unreachable")  # pragma: no cover


def _lost(fn: Callable[..., Any], e: Conflict, attempt: int, attempts: int) -> None:
    """Log try ``attempt`` of ``fn`` lost to ``e``; the last one re-raises ``e``."""
    if attempt == attempts:
        log.warning("conflict_retries_exhausted", call=_name(fn), attempts=attempts,
                    cause=str(e))
        raise e
    log.info("conflict_retried", call=_name(fn), attempt=attempt, cause=str(e))


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__


__all__ = ["ATTEMPTS", "BACKOFF", "delay", "retrying", "retrying_async"]
