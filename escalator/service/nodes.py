"""This daemon as one node among several on one database (docs/reliability.md "Several
daemons"; GoAlert's model: work rows claimed in the database, leases with an owner and an
expiry, no clustering of our own).

- **Beat**: :meth:`Node.beat` — one transaction every :attr:`Node.beat_every` seconds (a
  quarter of the TTL): the node's row lives until ``now + ttl``, and the ``sending`` rows of
  nodes whose row expired are released to ``pending`` (``release_dead_claims``), so a killed
  daemon's sends in flight go out from a survivor within the TTL plus a beat (8 s + 2 s by
  default: at most 10 s after a kill -9).
- **Leases**: :meth:`Node.holds` — whether this node holds a periodic singleton's lease now
  (the daily purge :data:`PURGE`, the rules' periodic checks :data:`PERIODIC`), taking or
  renewing it in the store when it is free, expired or ours and half its TTL is gone. Another
  node takes it over once it expires: a holder that stops renewing (killed, stuck) hands it on
  within one TTL.

Times come from the daemon's clock (aware UTC); the TTL is in seconds. A lease assumes the
daemons' clocks agree to well within the TTL (NTP).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import structlog

from escalator.clock import Clock
from escalator.store.base import Store

log = structlog.get_logger("escalator.service.nodes")

PURGE = "daily-purge"
"""The lease of the daily purge of personal data (:class:`escalator.school.retention.DailyPurge`)."""
PERIODIC = "periodic-checks"
"""The lease of the rules' periodic checks (``Rule.on_tick``: heartbeat days and zero reports,
early warning's daily run and its purge of counted cases)."""
LEASES = (PURGE, PERIODIC)


class Node:
    """The node ``name`` of ``store``: its beat and its leases. ``ttl``: seconds a beat or a
    lease lasts (``Settings.node_ttl``). Every method runs store transactions on the caller's
    thread (the daemon calls them through its store thread) and raises the store's errors."""

    def __init__(self, store: Store, name: str, clock: Clock, ttl: float) -> None:
        if ttl <= 0:
            raise ValueError(f"node_ttl: must be more than 0 seconds, not {ttl}")
        self.store = store
        self.name = name
        self.clock = clock
        self.ttl = ttl
        self._leases: dict[str, tuple[datetime, datetime | None]] = {}
        """Lease name → (when to ask the store again, until when it is ours or None)."""

    @property
    def beat_every(self) -> float:
        """Seconds between beats: a quarter of the TTL (three beats may be late before the
        others count this node dead)."""
        return self.ttl / 4

    def beat(self) -> int:
        """One beat (one transaction): this node alive until now + TTL; the ``sending`` rows of
        dead nodes back to ``pending``. Returns how many rows were released (logged)."""
        now = self.clock.now()
        with self.store.transaction() as tx:
            tx.beat_node(self.name, now, self.ttl)
            released = tx.release_dead_claims(now)
        if released:
            log.warning("dead_node_sends_released", count=released, node=self.name)
        return released

    def holds(self, lease: str) -> bool:
        """Whether this node holds ``lease`` now. Asks the store (takes or renews it) when half
        the TTL has passed since it last asked; in between, answers from memory — never past
        the expiry it was granted."""
        now = self.clock.now()
        ask_at, until = self._leases.get(lease, (now, None))
        if now >= ask_at:
            with self.store.transaction() as tx:
                taken = tx.take_lease(lease, self.name, now, self.ttl)
            was = until is not None and until > now
            until = now + timedelta(seconds=self.ttl) if taken else None
            self._leases[lease] = (now + timedelta(seconds=self.ttl / 2), until)
            if taken != was:
                log.info("lease_taken" if taken else "lease_lost", lease=lease,
                         node=self.name)
        return until is not None and now < until
