"""Step targets: parsing a target string and resolving it to recipients when a step fires.

Target syntax (config ``steps[].targets[]``):

- ``person:ID`` — one person; ``unit:ID`` — one external unit; ``role:NAME`` — everyone with
  that administrator-defined role;
- a bare name — a relative role (``class_teacher``, ``grade_leader``, ``duty_officer``,
  ``guardian``), else an administrator-defined role, else a unit id.

Relative roles (DESIGN.md "Targets"): ``class_teacher`` of the event's ``class_id`` (without one:
the ``grade_leader`` of its ``grade``); ``grade_leader`` of the event's grade; ``duty_officer``
from the 值班 roster at the moment the step fires. Other relative roles (``guardian``: the
guardians of the incident's single subject) are resolved by a rule
(:meth:`escalator.engine.rules.Rule.recipients`; the engine asks the rules first); here they
resolve to nobody.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from escalator.config.models import RELATIVE_ROLES, Config, ContactMethod, DutyShift

TargetKind = Literal["person", "unit", "role", "relative"]


@dataclass(frozen=True)
class Target:
    """A parsed target: ``kind`` and ``name`` (a person/unit id or a role name)."""

    kind: TargetKind
    name: str


@dataclass(frozen=True)
class Recipient:
    """Who gets a notification: ``kind`` ``person``|``unit``|``guardian``, its id, display name,
    contacts. A guardian's id is ``guardian-N`` (given by the guardian rule).
    ``can_acknowledge``: False for a recipient told without an acknowledge link even in an
    ``escalate``/``report`` step (a guardian)."""

    kind: Literal["person", "unit", "guardian"]
    id: str
    name: str
    contacts: tuple[ContactMethod, ...]
    can_acknowledge: bool = True


class UnknownTarget(ValueError):
    """A target string that names no role, person or unit. ``str()`` says which."""


def parse_target(text: str, config: Config) -> Target:
    """Parse one target string against ``config``; raise :class:`UnknownTarget` if it names nothing."""
    prefix, sep, rest = text.partition(":")
    if sep:
        if prefix == "person":
            if config.person(rest) is None:
                raise UnknownTarget(f"unknown person {rest!r}")
            return Target("person", rest)
        if prefix == "unit":
            if config.unit(rest) is None:
                raise UnknownTarget(f"unknown unit {rest!r}")
            return Target("unit", rest)
        if prefix == "role":
            if rest in RELATIVE_ROLES:
                return Target("relative", rest)
            if rest not in config.roles:
                raise UnknownTarget(f"unknown role {rest!r}")
            return Target("role", rest)
        raise UnknownTarget(f"unknown target type {prefix!r} (use person:, unit: or role:)")
    if text in RELATIVE_ROLES:
        return Target("relative", text)
    if text in config.roles:
        return Target("role", text)
    if config.unit(text) is not None:
        return Target("unit", text)
    raise UnknownTarget(f"unknown role {text!r}")


def on_duty(shift: DutyShift, local: datetime) -> bool:
    """Whether ``shift`` covers the school-local time ``local`` (naive or aware, in the school zone)."""
    t, d = local.time(), local.date()
    if shift.start < shift.end or shift.start == shift.end:
        day = d
        covers = shift.start == shift.end or shift.start <= t < shift.end
    else:  # crosses midnight: the part after midnight belongs to the previous day's shift
        covers = t >= shift.start or t < shift.end
        day = d if t >= shift.start else d.fromordinal(d.toordinal() - 1)
    if not covers:
        return False
    if not shift.weekdays and not shift.dates:
        return True
    return day.isoweekday() in shift.weekdays or day in shift.dates


def _person(config: Config, pid: str) -> Recipient | None:
    p = config.person(pid)
    return Recipient("person", p.id, p.name, tuple(p.contacts)) if p else None


def resolve(
    target: Target,
    config: Config,
    *,
    class_id: str | None,
    grade: str | None,
    at: datetime,
) -> list[Recipient]:
    """Recipients of ``target`` for an event about ``class_id``/``grade`` at ``at`` (aware).

    Returns an empty list when the target resolves to nobody (the caller logs
    ``target_unresolved``), and for a relative role a rule resolves (``guardian``). Order
    follows the config file; no duplicates.
    """
    out: list[Recipient] = []
    if target.kind == "person":
        r = _person(config, target.name)
        out = [r] if r else []
    elif target.kind == "unit":
        u = config.unit(target.name)
        out = [Recipient("unit", u.id, u.name, tuple(u.contacts))] if u else []
    elif target.kind == "role":
        out = [_person(config, p.id) for p in config.people if target.name in p.roles]
    elif target.name == "class_teacher":
        if class_id:
            out = [
                _person(config, p.id)
                for p in config.people
                if "class_teacher" in p.roles and class_id in p.classes
            ]
        else:
            return resolve(Target("relative", "grade_leader"), config, class_id=None, grade=grade, at=at)
    elif target.name == "grade_leader":
        g = grade or (class_id.split("-")[0] if class_id else None)
        if g:
            out = [
                _person(config, p.id)
                for p in config.people
                if "grade_leader" in p.roles and g in p.grades
            ]
    elif target.name == "duty_officer":
        local = at.astimezone(config.school.tz)
        ids = [s.person for s in config.duty_roster if on_duty(s, local)]
        out = [_person(config, pid) for pid in dict.fromkeys(ids)]
    seen: set[str] = set()
    result = []
    for r in out:
        if r is not None and r.id not in seen:
            seen.add(r.id)
            result.append(r)
    return result
