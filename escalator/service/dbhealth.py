"""The database part of ``/healthz``: reachable or not, the round trip, the schema version.

A load balancer asks every few seconds and wants an answer at once, so an answer never waits
long for the database. The daemon checks every :data:`INTERVAL_SECONDS` from a task of its own
(:meth:`DatabaseHealth.run`; the check on a thread of its own — never the store thread, so a
long transaction does not delay it), and ``/healthz`` answers from the last result while it is
younger than :data:`FRESH_SECONDS`. An older one (the checks are late, or nothing runs them)
starts a check (one at a time) and waits for it at most :data:`WAIT_SECONDS`; a check still
running then is answered with the last result while that is younger than
:data:`STALE_SECONDS`, and with "unreachable, no answer" after. The check itself is bounded too
(:class:`escalator.store.probe.Probe`: connect and statement timeouts, TCP keepalives), and a
check that still hangs a second after its timeout is aborted (a proxy that holds the connection
and never answers).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from escalator.store.probe import Probe, ProbeResult

INTERVAL_SECONDS = 1.0
"""How often the daemon checks the database (seconds)."""

FRESH_SECONDS = 2.0
"""A check younger than this answers ``/healthz`` without asking the database (seconds)."""

WAIT_SECONDS = 0.08
"""How long ``/healthz`` waits for a check in flight (seconds): the answer stays under 100 ms."""

STALE_SECONDS = 5.0
"""How long the last result stands in for a check that has not answered yet (seconds)."""


class DatabaseHealth:
    """The bounded, briefly cached database check behind ``/healthz``.

    ``probe``: what :meth:`Probe.check` answers (blocking; run on this object's own thread);
    ``monotonic``: the clock for the ages (seconds; ``time.monotonic``, injectable in tests)."""

    def __init__(self, probe: Probe, *, interval: float = INTERVAL_SECONDS,
                 fresh: float = FRESH_SECONDS, wait: float = WAIT_SECONDS,
                 stale: float = STALE_SECONDS,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.probe = probe
        self.interval, self.fresh, self.wait, self.stale = interval, fresh, wait, stale
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

    async def check_now(self) -> None:
        """Run a check now (or wait for the one running) and keep its result; never raises.
        A check still running :attr:`Probe.timeout` + 1 seconds later hangs (a server that
        keeps the connection and never answers): it is aborted (:meth:`Probe.abort`)."""
        running = self._start()
        try:
            await asyncio.wait_for(asyncio.shield(running), self.probe.timeout + 1)
        except TimeoutError:
            self.probe.abort()
        except Exception:
            return
        try:
            await running
        except Exception:
            pass

    async def run(self) -> None:
        """Check every :attr:`interval` seconds until cancelled (the daemon's task)."""
        while True:
            await self.check_now()
            await asyncio.sleep(self.interval)

    def close(self) -> None:
        """Close the probe's connection and the thread (a check still hanging is aborted
        first, so the thread ends and the process can exit)."""
        self.probe.abort()
        self._executor.submit(self.probe.close)
        self._executor.shutdown(wait=False)

