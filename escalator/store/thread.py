"""Store work off the event loop: one dedicated thread runs every transaction of the daemon,
and a second one the reads that must not wait for it.

SQLite lets one writer in at a time anyway; giving it a thread of its own keeps the asyncio
loop free for intake, timers, delivery and health checks while a transaction (and its fsync)
runs (docs/ARCHITECTURE.md, "Lanes"). Calls queue in two classes: **urgent** ones
(:meth:`StoreThread.urgent`: the delivery lane's claim, re-check and record, which each cover a
whole batch of sends) go before every waiting **normal** one (:meth:`StoreThread.run`: intake's
group commits, timer ticks, web reads); within a class the order is FIFO. So a send waits at
most for the one transaction running, never for a queue of group commits; intake loses at most
one short delivery transaction per turn.

A third class, :meth:`StoreThread.read`, runs on a thread of its own: short reads through
:meth:`~escalator.store.base.Store.snapshot` (the delivery lane's re-check before each group of
sends), which then wait for nothing — not even the transaction running on the store thread,
an intake commit of hundreds of events under a burst.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import queue
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

URGENT = 0
"""Priority class of :meth:`StoreThread.urgent` (runs before every waiting normal call)."""
NORMAL = 1
"""Priority class of :meth:`StoreThread.run`."""


class Runner(Protocol):
    """How async code runs a blocking store call: ``await run(fn, *args, **kwargs)``."""

    async def __call__(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T: ...


async def inline(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run ``fn`` on the caller's thread (tests on a fake clock, ``simulate``, the CLI)."""
    return fn(*args, **kwargs)


class StoreThread:
    """One worker thread for store calls, and one for snapshot reads. ``await
    thread.run(fn, *args)`` (normal) or ``await thread.urgent(fn, *args)`` runs ``fn`` on the
    store thread and returns its result (or raises its exception) on the loop; urgent calls go
    before waiting normal ones. ``await thread.read(fn, *args)`` runs ``fn`` on the read
    thread. :meth:`close` waits for queued calls to finish."""

    def __init__(self, name: str = "escalator-store") -> None:
        self._queue: queue.PriorityQueue[tuple[int, int, Any]] = queue.PriorityQueue()
        self._reads: queue.PriorityQueue[tuple[int, int, Any]] = queue.PriorityQueue()
        self._seq = itertools.count()
        self._closed = False
        self._thread = threading.Thread(target=self._work, args=(self._queue,),
                                        name=f"{name}_0", daemon=True)
        self._reader = threading.Thread(target=self._work, args=(self._reads,),
                                        name=f"{name}-read", daemon=True)
        self._thread.start()
        self._reader.start()

    async def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` on the store thread, after the calls queued before it."""
        return await self._submit(NORMAL, fn, args, kwargs)

    async def urgent(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` on the store thread, before every waiting :meth:`run` call
        (after the call running and the urgent ones queued before it)."""
        return await self._submit(URGENT, fn, args, kwargs)

    async def read(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` on the read thread (FIFO), beside whatever the store thread
        runs: for ``fn`` that only reads through ``Store.snapshot()``."""
        return await self._submit(URGENT, fn, args, kwargs, self._reads)

    async def _submit(self, priority: int, fn: Callable[..., T], args: tuple[Any, ...],
                      kwargs: dict[str, Any], into: queue.PriorityQueue[Any] | None = None) -> T:
        if self._closed:
            raise RuntimeError("store thread closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        call = functools.partial(fn, *args, **kwargs)
        (into or self._queue).put((priority, next(self._seq), (loop, future, call)))
        return await future

    @classmethod
    def _work(cls, calls: queue.PriorityQueue[tuple[int, int, Any]]) -> None:
        while True:
            _, _, item = calls.get()
            if item is None:
                return
            loop, future, call = item
            if future.cancelled():
                continue
            try:
                result = call()
            except BaseException as e:  # handed to the caller, on its loop
                cls._settle(loop, future, None, e)
            else:
                cls._settle(loop, future, result, None)

    @staticmethod
    def _settle(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], result: Any,
                error: BaseException | None) -> None:
        def settle() -> None:
            if future.cancelled():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)
        try:
            loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the caller's loop has closed
            pass

    def close(self) -> None:
        """Run what is queued, then stop the thread (idempotent)."""
        if not self._closed:
            self._closed = True
            self._queue.put((NORMAL + 1, next(self._seq), None))
            self._reads.put((NORMAL + 1, next(self._seq), None))
        for thread in (self._thread, self._reader):
            if thread is not threading.current_thread():
                thread.join()
