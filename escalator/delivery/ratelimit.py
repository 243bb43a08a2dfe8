"""Sliding-window rate limits: the one limiter used by the delivery stage's throttle (per
channel and per address) and by the channels' own limits (per robot).

A limiter never drops a message: it answers how many seconds until there is room, and the
caller holds the message back that long (the throttle moves the row's ``due_at``; a channel
answers ``failed_retryable`` with ``retry_after``).
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class RateLimit:
    """At most ``count`` messages per ``per_seconds`` seconds, as documented by ``source``."""

    count: int
    per_seconds: float
    source: str = ""


class RateLimiter:
    """Sliding-window limiter over several :class:`RateLimit` windows, sharing one record of
    send times (seconds on the limiter's clock ``now``; monotonic by default, replaceable in
    tests).

    :meth:`try_acquire` records a send and returns 0 if every window has room, else returns
    the seconds until one would (and records nothing). ``limits`` may be replaced (a config
    reload may change a channel's limits); the record of sends stays. Thread-safe.
    """

    def __init__(self, limits: Iterable[RateLimit] = (),
                 now: Callable[[], float] = time.monotonic) -> None:
        self.limits = tuple(limits)
        self.now = now
        self._sent: deque[float] = deque()
        self._lock = threading.Lock()

    def wait(self, t: float) -> float:
        """Seconds from ``t`` until every window has room (0: room now). Sends older than the
        longest window are forgotten. Call with the limiter locked (:func:`acquire_all`)."""
        horizon = max((lim.per_seconds for lim in self.limits), default=0.0)
        while self._sent and self._sent[0] <= t - horizon:
            self._sent.popleft()
        return window_wait(self.limits, self._sent, t)

    def try_acquire(self) -> float:
        """Take a slot now (on :attr:`now`) and return 0, or return the seconds until one is
        free, taking nothing."""
        return acquire_all((self,), self.now())


def window_wait(limits: Iterable[RateLimit], sends: Iterable[float], t: float) -> float:
    """Seconds from ``t`` until every one of ``limits`` has room, given the earlier ``sends``
    (seconds on the same clock, oldest first); 0: room now. The one sliding-window rule, for a
    limiter in memory and for a window kept in the store (the throttle's per-address one)."""
    sent = list(sends)
    wait = 0.0
    for lim in limits:
        recent = [s for s in sent if s > t - lim.per_seconds]
        if len(recent) >= lim.count:
            wait = max(wait, recent[-lim.count] + lim.per_seconds - t)
    return wait


def acquire_all(limiters: Sequence[RateLimiter], t: float, *,
                also: Callable[[], float] | None = None) -> float:
    """Take a slot at ``t`` (seconds on the limiters' clock) in every one of ``limiters``
    (distinct) and return 0, or return the seconds until all have room, taking nothing.

    ``also``: one more window kept elsewhere (the throttle's per-address window in the store),
    asked with the limiters locked once they have room: it returns its wait, or takes its
    slot and returns 0; only then are the limiters' slots taken."""
    with contextlib.ExitStack() as locked:
        for lim in limiters:
            locked.enter_context(lim._lock)
        wait = max((lim.wait(t) for lim in limiters), default=0.0)
        if wait > 0:
            return wait
        if also is not None and (wait := also()) > 0:
            return wait
        for lim in limiters:
            lim._sent.append(t)
        return 0.0


_LIMITERS: dict[tuple[str, str], RateLimiter] = {}
_LIMITERS_LOCK = threading.Lock()


def shared_limiter(type_name: str, identity: str, limits: Iterable[RateLimit]) -> RateLimiter:
    """The one limiter for robot ``identity`` (its token) of channel type ``type_name``.

    Shared so two channel ids on the same robot, and the channel rebuilt by a config reload,
    count against the same window. Only a hash of ``identity`` is kept.
    """
    key = (type_name, hashlib.sha256(identity.encode("utf-8")).hexdigest())
    with _LIMITERS_LOCK:
        if key not in _LIMITERS:
            _LIMITERS[key] = RateLimiter(limits)
        return _LIMITERS[key]
