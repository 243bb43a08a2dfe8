"""Heartbeat monitors: the daily zero report (零报告) and other "expected every day" signals.

A monitor (``heartbeats:`` in the config, :class:`~escalator.config.models.Heartbeat`) expects
one ``kind: heartbeat`` event per day — per school day with ``school_days_only`` (see
:mod:`escalator.school.calendar`) — by ``expect_by`` (school-local) + ``grace``.

- An event feeds the monitor named by its ``labels.monitor``; without that label, the one named
  by its ``source`` (the event's own ``source`` field, else the intake source). A monitor also
  answers to every name in its ``sources`` list. ``POST /api/v1/heartbeats/{name}/ping`` sets
  the label. The day it counts for is the school-local date of its ``occurred_at`` (the time
  it was received when absent). :func:`arrived` records it in ``heartbeat_days``.
- :func:`check` is a reconcile over that table, run at every ``Engine.tick`` on the injected
  clock (:class:`HeartbeatRule` ``on_tick``), not an in-memory timer, so a deadline that passed while the
  daemon was down is noticed at the next start. For each monitor and each due day since it was
  first watched (at most :data:`LOOKBACK_DAYS` back) with no heartbeat and no incident yet, it
  opens an incident (dedup key ``heartbeat/<monitor>/<local date>``) that walks the monitor's
  policy.
- A heartbeat arriving for a day whose incident is still open resolves it; the timeline logs
  ``heartbeat_received`` (monitor, date, event) before ``resolved`` (via ``heartbeat``).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import structlog

from escalator.config.models import Config
from escalator.engine.rules import EngineOps, Rule, StoredEvent
from escalator.events import Action, Event, Kind
from escalator.school.calendar import SchoolCalendar
from escalator.store.base import Tx

log = structlog.get_logger("escalator.school.heartbeats")

LOOKBACK_DAYS = 7
"""How many days back a reconcile looks for missed heartbeats (e.g. after a long outage)."""

ACTOR = "escalator"


def dedup_key(monitor: str, day: date) -> str:
    """The dedup key of the incident for ``monitor`` missing on ``day``."""
    return f"heartbeat/{monitor}/{day.isoformat()}"


def monitor_for(config: Config, ev: Event, src: str) -> str | None:
    """The monitor id a heartbeat event feeds, or None."""
    beats = config.heartbeats
    label = ev.labels.get("monitor")
    names = [label] if label else [n for n in (ev.source, src) if n]
    for name in names:
        if name in beats:
            return name
        for mid, monitor in beats.items():
            if name in monitor.sources:
                return mid
    return None


def arrived(ops: EngineOps, tx: Tx, ev: Event, src: str, event_id: str) -> None:
    """Record a heartbeat event (already normalised) and resolve that day's open incident."""
    mid = monitor_for(ops.config, ev, src)
    if mid is None:
        return
    assert ev.occurred_at is not None
    now = ops.now
    day = ev.occurred_at.astimezone(ops.config.school.tz).date()
    tx.record_heartbeat(mid, day, now, event_id)
    inc = tx.open_incident_by_key(dedup_key(mid, day))
    if inc is not None:
        tx.add_timeline(inc.id, now, "heartbeat_received", src,
                        {"monitor": mid, "date": day.isoformat(), "event_id": event_id})
        ops.resolve(inc, actor=src, via="heartbeat")


def deadline(config: Config, mid: str, day: date) -> datetime:
    """When ``mid``'s heartbeat for ``day`` is overdue: ``expect_by`` + ``grace`` (aware)."""
    monitor = config.heartbeats[mid]
    local = datetime.combine(day, monitor.expect_by, config.school.tz)
    return local + timedelta(seconds=monitor.grace)


def check(ops: EngineOps, tx: Tx) -> int:
    """Open an incident for every overdue, unreported monitor day. Returns how many opened."""
    config, now = ops.config, ops.now
    tz = config.school.tz
    today = now.astimezone(tz).date()
    calendar = SchoolCalendar(config)
    opened = 0
    for mid, monitor in config.heartbeats.items():
        policy = config.policies.get(monitor.policy)
        if policy is None:  # refused by check-config; never crash the loop
            continue
        since = tx.heartbeat_watched_since(mid, today)
        day = max(since, today - timedelta(days=LOOKBACK_DAYS))
        while day <= today:
            current, day = day, day + timedelta(days=1)
            if monitor.school_days_only and not calendar.is_school_day(current):
                continue
            due = deadline(config, mid, current)
            if now < due:
                continue
            row = tx.heartbeat_day(mid, current)
            if row is not None and (row.received_at or row.missed_incident_id):
                continue
            name = monitor.name or mid
            summary = (f"{name}：{current.isoformat()} 未在 {monitor.expect_by:%H:%M} 前收到"
                       if config.school.language == "zh" else
                       f"{name}: nothing received for {current.isoformat()} by "
                       f"{monitor.expect_by:%H:%M}")
            event = Event(kind="heartbeat", category=monitor.category, severity=monitor.severity,
                          summary=summary, source=ACTOR, occurred_at=due,
                          dedup_key=dedup_key(mid, current),
                          labels={"heartbeat_monitor": mid, "date": current.isoformat()})
            result = ops.open_incident(event, policy=monitor.policy, source=ACTOR)
            assert result.incident_id is not None
            tx.mark_heartbeat_missed(mid, current, result.incident_id)
            log.warning("heartbeat_missed", monitor=mid, date=current.isoformat(),
                        incident_id=result.incident_id)
            opened += 1
    return opened


class HeartbeatRule(Rule):
    """The heartbeat monitors as a rule: a routed ``heartbeat`` trigger event is recorded
    (:func:`arrived`); every tick reconciles the monitors (:func:`check`)."""

    name = "heartbeats"

    def on_event(self, ops: EngineOps, tx: Tx, event: StoredEvent) -> None:
        ev = event.event
        if (ev.kind == Kind.heartbeat and ev.action == Action.trigger and event.routed
                and event.status != "ledger"):
            arrived(ops, tx, ev, event.source, event.id)

    def on_tick(self, ops: EngineOps, tx: Tx) -> int:
        return check(ops, tx) if ops.config.heartbeats else 0
