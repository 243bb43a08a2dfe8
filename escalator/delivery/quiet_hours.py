"""Quiet hours (docs/quiet-hours.md; PagerDuty's urgency and support hours): outside the school
hours of a school day, a non-urgent message on a quiet channel is not sent but deferred — its
row's due time (the not-before time the outbox claims by) moves to the next school morning's
start, durably, with a ``deferred`` row in the ledger (推迟至 …) and the timeline. Never dropped:
the row is claimed again then and goes through every stage as usual.

Urgent (goes at once at any hour): the incident has a legal reporting deadline; or its route
says ``urgency: high``, or it says
nothing and the incident's severity is in ``quiet_hours.urgent`` (default ``critical`` and
``high``). A route with ``urgency: low`` waits whatever the severity. So SMS and voice calls at
night are kept for urgent incidents, while a channel left out of ``quiet_hours.channels`` (a
group robot) still gets everything at once.

The school calendar is not imported here (delivery does not import the school rules): the
daemon and the test harness hand the delivery worker a :class:`SchoolHours` from the plugins'
``school_hours`` hook (the built-in one: :class:`escalator.school.calendar.SchoolCalendar`).
A deferred step's timeout counts from the deferred delivery
(:func:`escalator.engine.engine.step_deferred`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

import structlog

from escalator.config.models import Config, Route
from escalator.engine.engine import step_deferred
from escalator.engine.routing import matches
from escalator.events import Event
from escalator.store.base import Incident, Notification, Tx

log = structlog.get_logger("escalator.delivery.quiet_hours")

DEFERRED = "deferred"
"""Ledger outcome and timeline type of a message held back for school hours."""


class SchoolHours(Protocol):
    """When the school is open: given by the plugins' ``school_hours(config)`` hook."""

    def opens_at(self, at: datetime) -> datetime | None:
        """``at`` (aware) when it is inside school hours, else the next school day's start
        (aware UTC); None when no school day is known ahead (nothing is held back)."""
        ...


def route_of(config: Config, inc: Incident, event: dict[str, Any] | None) -> Route | None:
    """The route that sent ``inc``'s first event (JSON body ``event``) to its policy under
    ``config``: the first matching route (else the default one) when its policy is the
    incident's; None for an incident a rule opened on a policy of its own (a missed zero
    report, a cluster) or an event that no longer parses."""
    if not event:
        return None
    try:
        ev = Event.model_validate(event)
    except ValueError:
        return None
    chosen = next((r for r in config.routes if not r.default and matches(r, ev)), None)
    chosen = chosen or next((r for r in config.routes if r.default), None)
    return chosen if chosen is not None and chosen.policy == inc.policy_id else None


def urgent(config: Config, inc: Incident, event: dict[str, Any] | None) -> bool:
    """Whether ``inc``'s messages go at any hour: always for an incident with a legal
    reporting deadline (``deadline_at``: the law's clock runs at night too — 《传染病防治法》,
    docs/school-rules.md "Legal deadlines"); else its route's ``urgency`` when it says one,
    else whether its severity is in ``quiet_hours.urgent``."""
    if inc.deadline_at is not None:
        return True
    quiet = config.quiet_hours
    route = route_of(config, inc, event)
    if route is not None and route.urgency is not None:
        return route.urgency == "high"
    return quiet is None or inc.severity in {s.value for s in quiet.urgent}


def quiet_until(config: Config, hours: SchoolHours | None, n: Notification, inc: Incident,
                event: Callable[[], dict[str, Any] | None], now: datetime) -> datetime | None:
    """When row ``n`` may go, if it must wait for school hours at ``now`` (aware UTC); None to
    send it now (quiet hours off, not a quiet channel, school is open, or urgent).
    ``event``: reads the incident's first event body (only asked outside school hours)."""
    quiet = config.quiet_hours
    if quiet is None or not quiet.enabled or hours is None:
        return None
    if quiet.channels is not None and n.channel not in quiet.channels:
        return None
    opens = hours.opens_at(now)
    if opens is None or opens <= now:
        return None
    return None if urgent(config, inc, event()) else opens


def first_event(tx: Tx, inc: Incident) -> Callable[[], dict[str, Any] | None]:
    """A reader of ``inc``'s first event body in ``tx`` (for :func:`quiet_until`)."""
    def read() -> dict[str, Any] | None:
        first = tx.get_event(inc.first_event_id) if inc.first_event_id else None
        return first["body"] if first else None
    return read


def hold(config: Config, hours: SchoolHours | None
         ) -> Callable[[Tx, Notification, datetime], datetime | None]:
    """:func:`quiet_until` as ``escalator simulate`` asks it: ``(tx, row, now)`` → until when
    the row must wait, or None (the incident and its first event read from ``tx``)."""
    def until(tx: Tx, n: Notification, now: datetime) -> datetime | None:
        inc = tx.get_incident(n.incident_id)
        return None if inc is None else quiet_until(config, hours, n, inc, first_event(tx, inc),
                                                    now)
    return until


def defer(tx: Tx, config: Config, n: Notification, inc: Incident, until: datetime,
          now: datetime) -> None:
    """Hold row ``n`` (claimed, ``sending``) until ``until``: pending with that due time (no
    attempt counted; the retry deadline's start moves by the wait), a ``deferred`` ledger row
    and timeline entry naming the school-local time (推迟至 12月8日 07:30), and the step's
    timer moved so its timeout counts from the deferred delivery
    (:func:`~escalator.engine.engine.step_deferred`). In the caller's transaction."""
    first = n.first_attempt_at + (until - now) if n.first_attempt_at else None
    tx.update_notification(n.id, status="pending", due_at=until, first_attempt_at=first,
                           updated_at=now)
    local = until.astimezone(config.school.tz)
    words = (f"推迟至 {local.month}月{local.day}日 {local:%H:%M}（免打扰时段，非紧急）"
             if config.school.language == "zh"
             else f"deferred to {local:%Y-%m-%d %H:%M} (quiet hours, not urgent)")
    tx.add_delivery(notification_id=n.id, at=now, outcome=DEFERRED, detail=words, body="")
    timer = step_deferred(tx, config, n.step_run_id, until) if n.step_run_id else None
    tx.add_timeline(inc.id, now, DEFERRED, None,
                    {"recipient": n.recipient_id, "name": n.recipient_name, "channel": n.channel,
                     "notification_id": n.id, "until": until.isoformat(),
                     "until_local": f"{local:%Y-%m-%d %H:%M}", "text": words,
                     **({"next_step_at": timer.isoformat()} if timer else {})})
    log.info("notification_deferred", incident_id=inc.id, notification_id=n.id,
             channel=n.channel, until=until.isoformat())
