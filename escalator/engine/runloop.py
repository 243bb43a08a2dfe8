"""The run loop: what one timer pass and one delivery pass are, written once.

Used by the daemon's lanes (each pass a task of its own, store calls on the store thread:
docs/ARCHITECTURE.md, "Lanes"), by :class:`escalator.testing.Harness` (inline, on a
:class:`~escalator.clock.FakeClock`) and by ``escalator simulate`` (inline, with a delivery that
marks rows delivered without sending). A pass only runs its store work through ``db`` (a
:class:`~escalator.store.thread.Runner`), so the same code is off the event loop in the daemon
and plain calls in tests.

- **timer pass** (:meth:`RunLoop.timer_pass`): the daily purge when a new school-local day
  began (``before_tick``), then :meth:`~escalator.engine.engine.Engine.tick` in batches of at
  most :data:`TICK_BATCH` incidents, one transaction each, until nothing more is due — so one
  pass never holds the store for long.
- **delivery pass** (:meth:`RunLoop.delivery_pass`): ``delivery.run_once(send_batch)``: claim
  and send at most ``send_batch`` due notifications.
- :meth:`RunLoop.settle`: both, alternately, until neither has anything left at this instant.

A :class:`~escalator.store.base.Conflict` (another daemon on the same database won a race:
a unique key, a serialization failure, a deadlock) rolls back the one transaction it hit; the
pass logs it and ends, and the next pass does that work again (docs/reliability.md "Several
daemons").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import structlog

from escalator.clock import FakeClock
from escalator.engine.engine import Engine
from escalator.store.base import Conflict
from escalator.store.thread import Runner, inline

log = structlog.get_logger("escalator.engine.runloop")

TICK_BATCH = 50
"""Most incidents one tick transaction advances (the store is free for the other lanes between)."""
SEND_BATCH = 50
"""Notifications one delivery pass claims (three store transactions for the pass: claim, re-check
per group of free send slots, record; a kill between a send and the record re-sends at most
this many: ``tests/test_crash_lane.py``'s ``CLAIM_LIMIT``)."""


class Deliverer(Protocol):
    """What the run loop sends with: :class:`~escalator.delivery.pipeline.Delivery` or a stand-in."""

    async def run_once(self, limit: int) -> int:
        """Claim and process up to ``limit`` due notifications; return how many were claimed."""
        ...


@dataclass
class Lane:
    """What one lane (``intake``, ``timers``, ``delivery``) did last, kept in memory for
    ``/healthz``: ``busy`` while it has work in hand, ``progress_at`` (UTC, on the daemon's
    clock) when it last finished a piece of work (a commit, a tick batch, a delivery pass) or
    took work in hand after being idle."""

    name: str
    progress_at: datetime
    busy: bool = False

    def start(self, now: datetime) -> None:
        """Work taken in hand at ``now``: an idle lane's wait for progress counts from here."""
        if not self.busy:
            self.busy = True
            self.progress_at = now

    def progressed(self, now: datetime, *, idle: bool = False) -> None:
        """A piece of work finished at ``now``; ``idle``: nothing more is in hand."""
        self.progress_at = now
        if idle:
            self.busy = False

    def stuck_for(self, now: datetime) -> float | None:
        """Seconds since the last progress while it has work in hand, else None."""
        return (now - self.progress_at).total_seconds() if self.busy else None


class RunLoop:
    """The passes over ``engine`` and ``delivery``, store work run through ``db``.

    ``periodic``: whether ticks run the rules' periodic checks (``on_tick``: heartbeat
    monitors; the harness turns them off by default, ``simulate`` always), or a blocking
    callable answering that at each pass (run through ``db``: the daemon's lease,
    :meth:`escalator.service.nodes.Node.holds`). ``before_tick``: a
    blocking callable run (through ``db``) at the start of each timer pass (the daemon's
    :class:`~escalator.school.retention.DailyPurge`). ``timers`` / ``delivery_lane``: the
    :class:`Lane` records each pass keeps up to date (fresh ones by default)."""

    def __init__(self, engine: Engine, delivery: Deliverer, *, db: Runner = inline,
                 periodic: bool | Callable[[], bool] = True, before_tick: Callable[[], Any] | None = None,
                 tick_batch: int = TICK_BATCH, send_batch: int = SEND_BATCH) -> None:
        self.engine = engine
        self.delivery = delivery
        self.db = db
        self.periodic = periodic
        self.before_tick = before_tick
        self.tick_batch = tick_batch
        self.send_batch = send_batch
        now = engine.clock.now()
        self.timers = Lane("timers", now)
        self.delivery_lane = Lane("delivery", now)

    async def timer_pass(self) -> int:
        """Fire everything due now, :data:`TICK_BATCH` incidents per transaction. Returns how
        many incidents advanced (plus what the periodic checks counted). Store errors are
        raised (the lane stays busy, so ``/healthz`` names it once it is stuck)."""
        self.timers.start(self.engine.clock.now())
        total = 0
        try:
            if self.before_tick is not None:
                await self.db(self.before_tick)
            # the rules' periodic checks once a pass, not a batch
            periodic = (self.periodic if isinstance(self.periodic, bool)
                        else bool(await self.db(self.periodic)))
            while fired := await self.db(self.engine.tick, self.tick_batch, periodic=periodic):
                total, periodic = total + fired, False
                self.timers.progressed(self.engine.clock.now())
        except Conflict as e:  # rolled back; the next pass does it again
            log.warning("timer_pass_conflict", cause=str(e))
        self.timers.progressed(self.engine.clock.now(), idle=True)
        return total

    async def delivery_pass(self) -> int:
        """Claim and send at most ``send_batch`` due notifications. Returns how many were
        claimed; store errors are raised."""
        self.delivery_lane.start(self.engine.clock.now())
        try:
            claimed = await self.delivery.run_once(self.send_batch)
        except Conflict as e:  # rolled back (claimed rows given back); the next pass again
            log.warning("delivery_pass_conflict", cause=str(e))
            claimed = 0
        self.delivery_lane.progressed(self.engine.clock.now(), idle=not claimed)
        return claimed

    async def settle(self) -> None:
        """Timer and delivery passes, alternately, until neither has anything left now."""
        while True:
            fired = await self.timer_pass()
            sent = await self.delivery_pass()
            if not fired and not sent:
                self.delivery_lane.progressed(self.engine.clock.now(), idle=True)
                return

    async def next_due(self) -> datetime | None:
        """The earliest timer (step or delivery) in the store, or None."""
        return await self.db(self.engine.next_due)

    async def advance(self, clock: FakeClock, until: datetime) -> None:
        """On a fake ``clock``: settle at every timer up to ``until`` (UTC), moving the clock
        to each, then to ``until`` and settle there."""
        while (due := await self.next_due()) is not None and due <= until:
            if due > clock.now():
                clock.set(due)
            await self.settle()
        if until > clock.now():
            clock.set(until)
        await self.settle()
