"""Silences and maintenance windows (docs/silences.md; Alertmanager's silences, GoAlert's
maintenance mode).

A silence is a set of matchers (:mod:`escalator.config.quieting`) and a time: from ``starts_at``
to ``ends_at``, or inside a weekly schedule (the fire-alarm test every first Monday
14:00–15:00). Silences come from the store (API, CLI: durable, expirable) and from the config
file's ``silences:`` (standing windows, changed by editing the file).

While one is active, an event it matches that would open an incident still opens it — stored,
counted, deduplicated as usual, listed — but the incident **holds**: it fires no step and tells
nobody (timeline ``silenced``) until the silence is over, then walks from its first step
(timeline ``silence_ended``). The hold is the incident's own durable timer
(``next_step_at`` = the end of the silence) plus a ``silence_holds`` row naming the silence,
so a restart, a longer schedule or an early expiry is read again when the timer comes due.
A ``critical`` event is not silenced by a silence with ``exempt_critical`` (the default).
An incident already walking when a silence starts walks on: a silence keeps new incidents quiet.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any

import structlog

from escalator.config.models import Config
from escalator.config.quieting import SilenceConfig, WeeklySchedule, parse_matchers, subject_of
from escalator.events import Event, Severity
from escalator.i18n import _
from escalator.store.base import Incident, Silence, Tx

log = structlog.get_logger("escalator.engine.silences")

MAX_SECONDS = 366 * 86400
"""Longest a silence with an end may last (a year): a longer one is refused as a likely typo."""


class SilenceError(ValueError):
    """A silence cannot be made or changed as asked: ``field`` names the input at fault
    (``matchers``, ``ends_at``, ``schedule``, ``id``), the message says why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Active:
    """A silence in force now and until when (aware UTC)."""

    silence: Silence
    until: datetime


def from_config(c: SilenceConfig, tz: tzinfo) -> Silence:
    """A standing silence of the config file as a :class:`Silence` (naive times read in
    ``tz``, the school's zone); it is never stored."""
    def aware(t: datetime | None) -> datetime | None:
        if t is None:
            return None
        return (t if t.tzinfo else t.replace(tzinfo=tz)).astimezone(UTC)

    return Silence(id=c.id, matchers=list(c.matchers), starts_at=aware(c.starts_at),
                   ends_at=aware(c.ends_at), created_by=c.created_by, comment=c.comment,
                   created_at=datetime(2000, 1, 1, tzinfo=UTC),
                   schedule=c.schedule.model_dump(mode="json") if c.schedule else None,
                   exempt_critical=c.exempt_critical)


def until_of(s: Silence, now: datetime, tz: tzinfo) -> datetime | None:
    """When ``s`` stops being in force, if it is in force at ``now`` (aware UTC); else None.
    A schedule's window ends at its ``end`` (school-local, ``tz``), or earlier at ``ends_at``."""
    end = s.ends_at
    if s.expired_at is not None and (end is None or s.expired_at < end):
        end = s.expired_at
    if (s.starts_at is not None and now < s.starts_at) or (end is not None and now >= end):
        return None
    if s.schedule is None:
        return end
    window = WeeklySchedule.model_validate(s.schedule).window_end(now, tz)
    if window is None:
        return None
    window = window.astimezone(UTC)
    return window if end is None else min(window, end)


def all_silences(tx: Tx, config: Config, now: datetime) -> list[Silence]:
    """The silences not over at ``now``: the config file's, then the store's."""
    tz = config.school.tz
    return [from_config(c, tz) for c in config.silences] + tx.list_silences(now)


def find(tx: Tx, config: Config, silence_id: str) -> Silence | None:
    """The silence ``silence_id`` (the config file's first, then the store's), or None."""
    for c in config.silences:
        if c.id == silence_id:
            return from_config(c, config.school.tz)
    return tx.get_silence(silence_id)


def silencing(tx: Tx, config: Config, event: Event, source: str, now: datetime) -> Active | None:
    """The first silence in force at ``now`` whose matchers all match ``event`` stored from
    ``source`` (skipping those exempting ``critical`` for a critical event), or None."""
    subject = subject_of(event, source)
    tz = config.school.tz
    for s in all_silences(tx, config, now):
        if s.exempt_critical and event.severity == Severity.critical:
            continue
        if not all(m.matches(subject) for m in parse_matchers(s.matchers)):
            continue
        until = until_of(s, now, tz)
        if until is not None:
            return Active(s, until)
    return None


def hold(tx: Tx, inc: Incident, active: Active, now: datetime,
         not_before: datetime | None = None) -> None:
    """Hold ``inc`` (just opened, no step fired) until ``active`` is over (or ``not_before``,
    a group's wait, when later): its timer moves there, the hold is recorded, the timeline says
    ``silenced`` (已静默)."""
    until = max(active.until, not_before) if not_before else active.until
    tx.update_incident(inc.id, next_step_at=until, updated_at=now)
    tx.hold_incident(inc.id, active.silence.id, until)
    tx.add_timeline(inc.id, now, "silenced", None,
                    {"silence": active.silence.id, "until": active.until.isoformat(),
                     "comment": active.silence.comment, "created_by": active.silence.created_by})
    log.info("incident_silenced", incident_id=inc.id, silence=active.silence.id,
             until=active.until.isoformat())


def on_due(tx: Tx, config: Config, inc: Incident, now: datetime) -> bool:
    """``inc`` came due: when a silence holds it and is still in force (a schedule or an end
    moved), move its timer to the new end and return True (nothing fires). When the silence is
    over (or gone from the store and the config), release it — timeline ``silence_ended`` —
    and return False: its walk starts from the first step now."""
    held = tx.silence_hold(inc.id)
    if held is None:
        return False
    silence_id, _ = held
    s = find(tx, config, silence_id)
    until = until_of(s, now, config.school.tz) if s is not None else None
    if until is not None and inc.state == "triggered":
        tx.hold_incident(inc.id, silence_id, until)
        tx.update_incident(inc.id, next_step_at=until, updated_at=now)
        return True
    tx.release_hold(inc.id)
    if inc.state == "triggered":
        tx.add_timeline(inc.id, now, "silence_ended", None, {"silence": silence_id})
        log.info("silence_ended", incident_id=inc.id, silence=silence_id)
    return False


def on_joined(tx: Tx, config: Config, inc: Incident, event: Event, source: str,
              event_id: str, now: datetime) -> None:
    """``event`` (stored as ``event_id``) was counted on ``inc``. When a silence holds ``inc``
    but no silence would hold ``event`` as a new incident — a ``critical`` report ("宿舍楼起火")
    joining a held "宿舍楼有焦味" under a silence that exempts critical, or one its matchers
    miss — the hold ends now: timeline ``silence_ended`` naming the event, and the walk starts
    from the first step at the next timer pass (a group's wait is cut short)."""
    held = tx.silence_hold(inc.id)
    if held is None or inc.state != "triggered" or inc.step_index >= 0:
        return
    if silencing(tx, config, event, source, now) is not None:
        return
    silence_id, _ = held
    tx.release_hold(inc.id)
    tx.update_incident(inc.id, next_step_at=now, updated_at=now)
    tx.add_timeline(inc.id, now, "silence_ended", None,
                    {"silence": silence_id, "event_id": event_id,
                     "severity": event.severity.value})
    log.info("silence_broken", incident_id=inc.id, silence=silence_id, event_id=event_id)


def create(tx: Tx, config: Config, *, matchers: list[str], created_by: str, comment: str,
           now: datetime, starts_at: datetime | None = None, ends_at: datetime | None = None,
           schedule: dict[str, Any] | None = None, exempt_critical: bool = True) -> Silence:
    """Store a new silence made by ``created_by`` at ``now`` and return it (its ``id`` a new
    short token). Naive times are read in the school's zone. Raises :class:`SilenceError`
    naming the field: matchers that do not parse (or none), no comment, neither ``ends_at``
    nor ``schedule``, an end not after the start or already past, longer than
    :data:`MAX_SECONDS`, a bad schedule."""
    tz = config.school.tz
    if not matchers:
        raise SilenceError("matchers", _("a silence needs at least one matcher"))
    try:
        parse_matchers(matchers)
    except ValueError as e:
        raise SilenceError("matchers", str(e)) from None
    if not comment.strip():
        raise SilenceError("comment", _("say why (e.g. 消防报警系统月度测试)"))
    sched = None
    if schedule is not None:
        try:
            sched = WeeklySchedule.model_validate(schedule).model_dump(mode="json")
        except ValueError as e:
            raise SilenceError("schedule", str(e).splitlines()[-1] if str(e) else "bad") from None
    starts, ends = (None if t is None else (t if t.tzinfo else t.replace(tzinfo=tz)).astimezone(UTC)
                    for t in (starts_at, ends_at))
    if ends is None and sched is None:
        raise SilenceError("ends_at", _("give an end (ends_at) or a weekly schedule"))
    if ends is not None:
        if ends <= (starts or now):
            raise SilenceError("ends_at", _("the end must be after the start and after now"))
        if (ends - (starts or now)).total_seconds() > MAX_SECONDS:
            raise SilenceError("ends_at", _("a silence may last at most a year"))
    if starts is None and sched is None:
        starts = now
    silence = Silence(id=secrets.token_hex(6), matchers=list(matchers), starts_at=starts,
                      ends_at=ends, created_by=created_by, comment=comment.strip(),
                      created_at=now, schedule=sched, exempt_critical=exempt_critical)
    tx.insert_silence(silence)
    log.info("silence_created", silence=silence.id, created_by=created_by,
             matchers=silence.matchers)
    return silence


def expire(tx: Tx, config: Config, silence_id: str, *, by: str, now: datetime) -> int:
    """End silence ``silence_id`` now, by ``by``: the incidents it holds come due at once (and
    walk from their first step at the next tick). Returns how many it held. Raises
    :class:`SilenceError` (``id``) for a silence of the config file (edit the file) and
    ``LookupError`` for an unknown or already ended one."""
    if any(c.id == silence_id for c in config.silences):
        raise SilenceError("id", _("silence {id!r} is in the config file: remove it there").format(
            id=silence_id))
    if not tx.expire_silence(silence_id, now, by):
        raise LookupError(_("no silence {id!r} in force").format(id=silence_id))
    held = tx.held_by(silence_id)
    for incident_id in held:
        inc = tx.get_incident(incident_id)
        if inc is not None and inc.state == "triggered":
            tx.update_incident(incident_id, next_step_at=now, updated_at=now)
    log.info("silence_expired", silence=silence_id, by=by, held=len(held))
    return len(held)


def state_of(s: Silence, now: datetime, tz: tzinfo) -> str:
    """``active`` (in force now), ``pending`` (will be: before its start, or between its
    schedule's windows) or ``expired``."""
    if until_of(s, now, tz) is not None:
        return "active"
    ends = [t for t in (s.expired_at, s.ends_at) if t is not None]
    if ends and now >= min(ends):
        return "expired"
    return "pending"


def describe(s: Silence, origin: str, now: datetime, tz: tzinfo, held: int) -> dict[str, Any]:
    """``s`` as the API and the CLI list it: its fields, ``state`` (:func:`state_of`),
    ``origin`` (``config`` or ``api``) and how many incidents it ``held`` now."""
    return {"id": s.id, "state": state_of(s, now, tz), "origin": origin,
            "matchers": s.matchers, "comment": s.comment, "created_by": s.created_by,
            "starts_at": s.starts_at, "ends_at": s.ends_at, "schedule": s.schedule,
            "exempt_critical": s.exempt_critical, "expired_at": s.expired_at,
            "expired_by": s.expired_by, "held": held}


def overview(tx: Tx, config: Config, now: datetime, state: str = "current") -> list[dict[str, Any]]:
    """Every silence (:func:`describe`; ``held``: the triggered incidents it holds), the config
    file's first; ``state``: ``current`` (active and pending), ``active``, ``pending``,
    ``expired`` or ``all``."""
    tz = config.school.tz

    def held(silence_id: str) -> int:  # incidents still waiting on it
        return sum(1 for i in tx.held_by(silence_id)
                   if (inc := tx.get_incident(i)) is not None and inc.state == "triggered")

    rows = [describe(from_config(c, tz), "config", now, tz, held(c.id)) for c in config.silences]
    rows += [describe(s, "api", now, tz, held(s.id))
             for s in tx.list_silences(None if state in ("all", "expired") else now)]
    if state == "current":
        return [r for r in rows if r["state"] != "expired"]
    return rows if state == "all" else [r for r in rows if r["state"] == state]
