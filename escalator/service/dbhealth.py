"""The database part of ``/healthz``: reachable or not, the round trip, the schema version.

A load balancer asks every few seconds and wants an answer at once, so an answer never waits
long for the database: a result younger than :data:`FRESH_SECONDS` is served from memory;
otherwise a check starts (one at a time, on a thread of its own — never the store thread, so a
long transaction does not delay it) and is waited for at most :data:`WAIT_SECONDS`. A check
still running then is answered with the last result while that is younger than
:data:`STALE_SECONDS`, and with "unreachable, no answer" after; the check's own result, when it
comes, is kept for the next question. The check itself is bounded too
(:class:`escalator.store.probe.Probe`: connect and statement timeouts).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from escalator.store.probe import Probe, ProbeResult

FRESH_SECONDS = 1.0
"""A check younger than this answers ``/healthz`` without asking the database (seconds)."""

WAIT_SECONDS = 0.08
"""How long ``/healthz`` waits for a check in flight (seconds): the answer stays under 100 ms."""

STALE_SECONDS = 5.0
"""How long the last result stands in for a check that has not answered yet (seconds)."""


class DatabaseHealth:
    """The bounded, briefly cached database check behind ``/healthz``.

    ``probe``: what :meth:`Probe.check` answers (blocking; run on this object's own thread);
    ``monotonic``: the clock for the ages (seconds; ``time.monotonic``, injectable in tests)."""

    def __init__(self, probe: Probe, *, fresh: float = FRESH_SECONDS, wait: float = WAIT_SECONDS,
                 stale: float = STALE_SECONDS,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.probe = probe
        self.fresh, self.wait, self.stale = fresh, wait, stale
        self._monotonic = monotonic
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="escalator-dbcheck")
        self._last: ProbeResult | None = None
        self._last_at = 0.0
        self._running: asyncio.Future[ProbeResult] | None = None

    @property
    def last(self) -> ProbeResult | None:
        """The latest finished check, or None before the first."""
        return self._last

    def _start(self) -> asyncio.Future[ProbeResult]:
        if self._running is None or self._running.done():
            future = asyncio.get_running_loop().run_in_executor(self._executor, self.probe.check)

            def keep(f: asyncio.Future[ProbeResult]) -> None:
                if not f.cancelled() and f.exception() is None:
                    self._last, self._last_at = f.result(), self._monotonic()

            future.add_done_callback(keep)
            self._running = future
        return self._running

    async def current(self) -> ProbeResult:
        """The database's state for ``/healthz``, within about :attr:`wait` seconds."""
        if self._last is not None and self._monotonic() - self._last_at <= self.fresh:
            return self._last
        running = self._start()
        try:
            return await asyncio.wait_for(asyncio.shield(running), self.wait)
        except TimeoutError:
            pass
        if self._last is not None and self._monotonic() - self._last_at <= self.stale:
            return self._last
        return ProbeResult(self.probe.backend, False, None, None,
                           f"no answer within {self.wait * 1000:.0f} ms"
                           + (f" (the last answer is {self._monotonic() - self._last_at:.0f} s old)"
                              if self._last is not None else ""))

    async def prime(self) -> None:
        """Run a first check now (at start-up: a load balancer's first question is answered
        from it); never raises."""
        try:
            await self._start()
        except Exception:
            pass

    def close(self) -> None:
        """Close the probe's connection and the thread (after the last check ends)."""
        self._executor.submit(self.probe.close)
        self._executor.shutdown(wait=False)

