"""The duty roster (值班表, docs/rosters.md): who holds ``duty_officer`` (or another
roster-backed role) at a moment, from the config's rotations and fixed shifts and the store's
overrides and swaps — resolved when a step fires (:class:`RosterRule`).

Who is on duty as ``role`` at an instant, in this order:

1. **scheduled**: each rotation of ``role`` (``rosters.rotations``, :class:`Rotation`): the
   person whose turn it is, when the rotation is on that day (``days``: every day, school days
   only or holidays only — the school calendar, :class:`~escalator.school.calendar.SchoolCalendar`);
   for ``duty_officer`` also every fixed ``duty_roster`` shift covering the instant;
2. **overrides** in force (the store's ``roster_overrides``, oldest first): one with
   ``replaces`` puts its person in that person's place (张老师 替 李老师) — no change when the
   replaced person is not on duty then; one without adds its person. A swap is two overrides.

A shift belongs to the school-local day it started on: the first turn of a rotation starts on
its ``start`` date at ``handover``; a daily rotation moves on at each hand-over of a day it is
on (so one on school days skips weekends and holidays), a weekly one every 7 days.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, ClassVar

from escalator.config.duty import Rotation
from escalator.config.models import Config
from escalator.engine.rules import EngineOps, Rule
from escalator.engine.targets import Recipient, on_duty
from escalator.events import OCCURRED_MAX_YEAR, OCCURRED_MIN_YEAR
from escalator.i18n import _
from escalator.school.calendar import SchoolCalendar
from escalator.store.base import Incident, RosterOverride, Tx

DUTY_OFFICER = "duty_officer"
MAX_OVERRIDE_DAYS = 366
"""Longest override (days)."""
_EPSILON = timedelta(microseconds=1)


class RosterError(ValueError):
    """A roster request that cannot be kept: ``field`` names the input, ``str()`` says why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def roster_roles(config: Config) -> list[str]:
    """The roles the roster answers for: ``duty_officer``, then every rotation's role."""
    return list(dict.fromkeys([DUTY_OFFICER, *(r.role for r in config.rosters.rotations.values())]))


@dataclass(frozen=True)
class Shift:
    """A span ``[start, end)`` (aware UTC) in which the same ``people`` (person ids, in order)
    are on duty as ``role``; ``overrides``: the ids of the overrides that changed it."""

    role: str
    start: datetime
    end: datetime
    people: tuple[str, ...]
    overrides: tuple[int, ...] = ()


class Roster:
    """The roster of ``config`` with ``overrides`` (from the store, for the times asked).
    ``counted``: a cache of each rotation's days counted so far, to share between rosters of
    the same ``config`` (the rule keeps one per config)."""

    def __init__(self, config: Config, overrides: Sequence[RosterOverride] = (),
                 counted: dict[str, tuple[date, int]] | None = None) -> None:
        self.config = config
        self.tz = config.school.tz
        self.calendar = SchoolCalendar(config)
        self.overrides = sorted((o for o in overrides if o.cancelled_at is None),
                                key=lambda o: (o.starts_at, o.id))
        self._counted: dict[str, tuple[date, int]] = {} if counted is None else counted

    # ----------------------------------------------------------------- rotations

    def _on(self, rot: Rotation, day: date) -> bool:
        if rot.days == "all":
            return True
        return self.calendar.is_school_day(day) == (rot.days == "school_days")

    def _days_on(self, rid: str, rot: Rotation, day: date) -> int:
        """How many days of ``rot`` were on in ``[rot.start, day)`` (cached, counted forward)."""
        first, count = self._counted.get(rid, (rot.start, 0))
        if first > day:
            first, count = rot.start, 0
        d = first
        while d < day:
            count += self._on(rot, d)
            d += timedelta(days=1)
        self._counted[rid] = (day, count)
        return count

    def turn(self, rid: str, rot: Rotation, at: datetime) -> str | None:
        """The person of rotation ``rid`` on duty at ``at`` (aware), or None."""
        local = at.astimezone(self.tz)
        day = local.date() if local.time() >= rot.handover else local.date() - timedelta(days=1)
        if day < rot.start or not self._on(rot, day):
            return None
        k = ((day - rot.start).days // 7 if rot.every == "week"
             else self._days_on(rid, rot, day))
        return rot.people[k % len(rot.people)]

    def scheduled(self, role: str, at: datetime) -> list[str]:
        """Person ids on duty as ``role`` at ``at`` by the config alone (rotations, then fixed
        ``duty_roster`` shifts for ``duty_officer``), without duplicates."""
        ids = [p for rid, rot in self.config.rosters.rotations.items()
               if rot.role == role and (p := self.turn(rid, rot, at)) is not None]
        if role == DUTY_OFFICER:
            local = at.astimezone(self.tz)
            ids += [s.person for s in self.config.duty_roster if on_duty(s, local)]
        return list(dict.fromkeys(ids))

    # ----------------------------------------------------------------- overrides

    def in_force(self, role: str, at: datetime) -> list[RosterOverride]:
        """The overrides of ``role`` in force at ``at``, oldest first."""
        return [o for o in self.overrides if o.role == role and o.starts_at <= at < o.ends_at]

    def on_duty(self, role: str, at: datetime) -> tuple[list[str], list[int]]:
        """Person ids on duty as ``role`` at ``at`` (aware), and the ids of the overrides that
        changed the scheduled ones (module docstring)."""
        people = self.scheduled(role, at)
        used: list[int] = []
        for o in self.in_force(role, at):
            if o.replaces is None:
                if o.person not in people:
                    people.append(o.person)
                    used.append(o.id)
            elif o.replaces in people:
                i = people.index(o.replaces)
                if o.person in people:
                    people.pop(i)
                else:
                    people[i] = o.person
                used.append(o.id)
        return people, used

    # ----------------------------------------------------------------- spans

    def _boundaries(self, role: str, start: datetime, end: datetime) -> list[datetime]:
        first = start.astimezone(self.tz).date() - timedelta(days=1)
        last = end.astimezone(self.tz).date() + timedelta(days=1)
        times: set[time] = {time(0, 0)}
        times.update(r.handover for r in self.config.rosters.rotations.values() if r.role == role)
        if role == DUTY_OFFICER:
            for s in self.config.duty_roster:
                times.update((s.start, s.end))
        out: set[datetime] = {start}
        day = first
        while day <= last:
            out.update(datetime.combine(day, t, self.tz).astimezone(UTC) for t in times)
            day += timedelta(days=1)
        for o in self.overrides:
            if o.role == role:
                out.update((o.starts_at, o.ends_at))
        return sorted(b for b in out if start <= b < end)

    def shifts(self, role: str, start: datetime, end: datetime) -> list[Shift]:
        """Who is on duty as ``role`` over ``[start, end)`` (aware), as consecutive
        :class:`Shift` spans (a span with nobody is a gap)."""
        out: list[Shift] = []
        marks = self._boundaries(role, start, end)
        for i, b in enumerate(marks):
            people, used = self.on_duty(role, b)
            stop = marks[i + 1] if i + 1 < len(marks) else end
            if out and out[-1].people == tuple(people) and out[-1].overrides == tuple(used):
                out[-1] = Shift(role, out[-1].start, stop, out[-1].people, out[-1].overrides)
            else:
                out.append(Shift(role, b.astimezone(UTC), stop.astimezone(UTC), tuple(people),
                                 tuple(used)))
        return out

    def gaps(self, role: str, start: datetime, end: datetime) -> list[Shift]:
        """The spans in ``[start, end)`` with nobody on duty as ``role``."""
        return [s for s in self.shifts(role, start, end) if not s.people]

    def day_shift(self, role: str, day: date) -> tuple[datetime, datetime]:
        """The span of ``role``'s shift that starts on the school-local ``day`` (aware UTC):
        hand-over to hand-over of its first rotation, else the whole day (00:00–24:00)."""
        rot = next((r for r in self.config.rosters.rotations.values() if r.role == role), None)
        at = rot.handover if rot is not None else time(0, 0)
        start = datetime.combine(day, at, self.tz)
        return start.astimezone(UTC), (start + timedelta(days=1)).astimezone(UTC)


# --------------------------------------------------------------------------------------------
# the rule: duty_officer and roster-backed roles at fire time
# --------------------------------------------------------------------------------------------


class RosterRule(Rule):
    """Resolves ``duty_officer`` and every role a rotation fills when a step fires: who is on
    duty at that moment (:meth:`Roster.on_duty`, overrides read from the store). When an
    override changed who is told, the timeline gets ``roster_override`` naming it."""

    name: ClassVar[str] = "roster"

    def __init__(self) -> None:
        self._counted: tuple[Config | None, dict[str, tuple[date, int]]] = (None, {})
        """Each rotation's days counted so far, for the config they were counted under."""

    def recipients(self, ops: EngineOps, tx: Tx, incident: Incident, role: str,
                   opening: Mapping[str, Any] | None) -> list[Recipient] | None:
        config = ops.config
        if role not in roster_roles(config):
            return None
        now = ops.now
        if self._counted[0] is not config:  # a reload may change rotations or the calendar
            self._counted = (config, {})
        roster = Roster(config, tx.roster_overrides(now, now + _EPSILON, role), self._counted[1])
        ids, used = roster.on_duty(role, now)
        if used:
            ops.add_timeline(incident.id, "roster_override", None,
                             {"role": role, "overrides": used, "on_duty": ids})
        people = [p for pid in ids if (p := config.person(pid)) is not None]
        return [Recipient("person", p.id, p.name, tuple(p.contacts)) for p in people]


# --------------------------------------------------------------------------------------------
# overrides and swaps (CLI, API)
# --------------------------------------------------------------------------------------------


def _check_year(field: str, when: date) -> None:
    """Roster dates and times lie in the years events may carry (2000–2100)."""
    if not OCCURRED_MIN_YEAR <= when.year <= OCCURRED_MAX_YEAR:
        raise RosterError(field, _("year {year} is out of range ({first}–{last})").format(
            year=when.year, first=OCCURRED_MIN_YEAR, last=OCCURRED_MAX_YEAR))


def _check_role(config: Config, role: str) -> None:
    if role not in roster_roles(config):
        raise RosterError("role", _("role {role!r} has no roster (duty_officer, or the role of "
                                    "a rosters.rotations entry)").format(role=role))


def _check_person(config: Config, field: str, pid: str) -> None:
    if config.person(pid) is None:
        raise RosterError(field, _("unknown person {person!r}").format(person=pid))


def period(config: Config, role: str, *, day: date | None = None,
           start: datetime | None = None, end: datetime | None = None) -> tuple[datetime, datetime]:
    """The span an override covers, aware UTC: the shift of the school-local ``day``
    (:meth:`Roster.day_shift`), or ``start``–``end`` (naive: school-local). Raises
    :class:`RosterError` naming the field when it is missing, empty or longer than
    :data:`MAX_OVERRIDE_DAYS`."""
    tz = config.school.tz
    if day is not None:
        if start is not None or end is not None:
            raise RosterError("date", _("give either a date or a start and an end, not both"))
        _check_year("date", day)
        return Roster(config).day_shift(role, day)
    if start is None or end is None:
        raise RosterError("start" if start is None else "end",
                          _("give a date, or a start and an end"))
    _check_year("start", start)
    _check_year("end", end)
    s, e = (t if t.tzinfo else t.replace(tzinfo=tz) for t in (start, end))
    if e <= s:
        raise RosterError("end", _("the end is not after the start"))
    if e - s > timedelta(days=MAX_OVERRIDE_DAYS):
        raise RosterError("end", _("an override covers at most {days} days").format(
            days=MAX_OVERRIDE_DAYS))
    return s.astimezone(UTC), e.astimezone(UTC)


def _replaced_on_duty(tx: Tx, config: Config, role: str, replaces: str, start: datetime,
                      end: datetime) -> bool:
    roster = Roster(config, tx.roster_overrides(start, end, role))
    return any(replaces in s.people for s in roster.shifts(role, start, end))


def add_override(tx: Tx, config: Config, *, role: str, person: str, start: datetime,
                 end: datetime, by: str, at: datetime, replaces: str | None = None,
                 comment: str | None = None) -> int:
    """Store an override (``person`` on duty as ``role`` over ``[start, end)``, aware UTC; in
    place of ``replaces`` when given) in ``tx``; returns its id. Raises :class:`RosterError`
    naming the field: an unknown role, person or replaced person, the same person twice, or a
    replaced person who is not on duty as ``role`` at any time of the span."""
    _check_role(config, role)
    _check_person(config, "person", person)
    if replaces is not None:
        _check_person(config, "replaces", replaces)
        if replaces == person:
            raise RosterError("replaces", _("a person cannot stand in for themselves"))
        if not _replaced_on_duty(tx, config, role, replaces, start, end):
            raise RosterError("replaces", _("{name} is not on duty as {role} at any time of "
                                            "that span").format(name=_name(config, replaces),
                                                                role=role))
    return tx.add_roster_override(role=role, person=person, replaces=replaces, starts_at=start,
                                  ends_at=end, created_by=by, created_at=at, comment=comment)


def add_swap(tx: Tx, config: Config, *, role: str, first: str, first_day: date, second: str,
             second_day: date, by: str, at: datetime, comment: str | None = None) -> list[int]:
    """A swap (换班): ``second`` takes ``first``'s shift of ``first_day`` and ``first`` takes
    ``second``'s shift of ``second_day`` — two overrides, withdrawn together. Returns their
    ids. Raises :class:`RosterError` as :func:`add_override`."""
    try:
        a_start, a_end = period(config, role, day=first_day)
    except RosterError as e:
        raise RosterError("first_date", str(e)) from None
    try:
        b_start, b_end = period(config, role, day=second_day)
    except RosterError as e:
        raise RosterError("second_date", str(e)) from None
    try:
        one = add_override(tx, config, role=role, person=second, replaces=first, start=a_start,
                           end=a_end, by=by, at=at, comment=comment)
    except RosterError as e:  # name the swap's own fields
        field = {"person": "second", "replaces": "first"}.get(e.field, e.field)
        raise RosterError(field, str(e)) from None
    if not _replaced_on_duty(tx, config, role, second, b_start, b_end):
        raise RosterError("second_date", _("{name} is not on duty as {role} on {day}").format(
            name=_name(config, second), role=role, day=second_day))
    two = tx.add_roster_override(role=role, person=first, replaces=second, starts_at=b_start,
                                 ends_at=b_end, created_by=by, created_at=at, comment=comment,
                                 swap_id=one)
    return [one, two]


def shifts_between(tx: Tx, config: Config, first: date, last: date,
                   roles: Iterable[str] | None = None) -> list[Shift]:
    """Every roster-backed role's (or ``roles``') shifts over the school-local dates
    ``first..last`` (both included), overrides from ``tx``; by role, then time."""
    tz = config.school.tz
    _check_year("from", first)
    _check_year("to", last)
    start = datetime.combine(first, time(0, 0), tz).astimezone(UTC)
    end = datetime.combine(last + timedelta(days=1), time(0, 0), tz).astimezone(UTC)
    roles = list(roles) if roles is not None else roster_roles(config)
    for role in roles:
        _check_role(config, role)
    roster = Roster(config, tx.roster_overrides(start, end))
    return [s for role in roles for s in roster.shifts(role, start, end)]


def gap_warnings(config: Config, now: datetime, days: int) -> list[tuple[str, Shift]]:
    """``(role, gap)`` for every span of the next ``days`` days from ``now`` with nobody on duty
    as a roster-backed role that has a schedule (rotations, or ``duty_roster`` for
    ``duty_officer``) and is in use (a step targets it, or a rotation fills it), by the config
    alone (overrides are not read). A role with no schedule at all is check-config's
    "resolves to nobody" error instead."""
    targeted = {t.split(":", 1)[-1] for p in config.policies.values() for s in p.steps
                for t in s.targets}
    rotating = {rot.role for rot in config.rosters.rotations.values()}
    scheduled = rotating | ({DUTY_OFFICER} if config.duty_roster else set())
    used = [r for r in roster_roles(config) if r in scheduled and (r in targeted or r in rotating)]
    roster = Roster(config)
    end = now + timedelta(days=days)
    return [(role, gap) for role in used for gap in roster.gaps(role, now, end)]


# --------------------------------------------------------------------------------------------
# words
# --------------------------------------------------------------------------------------------


def _name(config: Config, pid: str) -> str:
    p = config.person(pid)
    return p.name if p is not None else pid


def local_text(config: Config, at: datetime) -> str:
    """``at`` as school-local ``YYYY-MM-DD HH:MM``."""
    return at.astimezone(config.school.tz).strftime("%Y-%m-%d %H:%M")


def shift_row(config: Config, shift: Shift) -> dict[str, Any]:
    """A shift for the API and the CLI: role, start and end (UTC ISO and school-local), the
    people (id and name; no contacts) and the overrides in force."""
    return {"role": shift.role, "start": shift.start, "end": shift.end,
            "start_local": local_text(config, shift.start),
            "end_local": local_text(config, shift.end),
            "people": [{"id": p, "name": _name(config, p)} for p in shift.people],
            "overrides": list(shift.overrides)}


def override_text(config: Config, o: RosterOverride) -> str:
    """One override in the school's words: ``张老师 替 李老师 值班 2026-12-08 08:00 至 …``."""
    zh = config.school.language == "zh"
    who = _name(config, o.person)
    span = (f"{local_text(config, o.starts_at)} 至 {local_text(config, o.ends_at)}" if zh
            else f"{local_text(config, o.starts_at)} to {local_text(config, o.ends_at)}")
    if o.replaces is not None:
        other = _name(config, o.replaces)
        return (f"{who} 替 {other}（{o.role}）{span}" if zh
                else f"{who} stands in for {other} ({o.role}) {span}")
    return f"{who} 加入值班（{o.role}）{span}" if zh else f"{who} also on duty ({o.role}) {span}"
