"""Store work off the event loop: one dedicated thread runs every transaction of the daemon.

SQLite lets one writer in at a time anyway; giving it a thread of its own keeps the asyncio
loop free for intake, timers, delivery and health checks while a transaction (and its fsync)
runs (docs/ARCHITECTURE.md, "Lanes"). The calls queue in order (FIFO), so a caller waits at most
for the transactions queued before its own.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Runner(Protocol):
    """How async code runs a blocking store call: ``await run(fn, *args, **kwargs)``."""

    async def __call__(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T: ...


async def inline(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run ``fn`` on the caller's thread (tests on a fake clock, ``simulate``, the CLI)."""
    return fn(*args, **kwargs)


class StoreThread:
    """One worker thread for store calls. ``await thread.run(fn, *args)`` runs ``fn`` there and
    returns its result (or raises its exception) on the loop. :meth:`close` waits for queued
    calls to finish."""

    def __init__(self, name: str = "escalator-store") -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
