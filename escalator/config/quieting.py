"""Config models and the matcher language for keeping quiet when escalator should
(docs/silences.md): silences and maintenance windows, inhibit rules, and the matchers both use.

Matchers follow Alertmanager's (``prometheus/alertmanager`` "matchers"): ``name=value``,
``name!=value``, ``name=~regex``, ``name!~regex``; a value may be double-quoted (JSON string
rules). A regex must match the whole value (anchored, as Alertmanager's). ``name`` is one of the
event fields in :data:`FIELDS`, else a label (``labels.NAME`` names a label explicitly); a name
the event lacks reads as the empty string, so ``building=""`` matches events without it.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from escalator.events import Event

FIELDS = ("kind", "category", "severity", "source", "place", "class_id", "grade", "dormitory",
          "drill")
"""The event fields a matcher (or a route's ``group_by``) may name; any other name is a label."""

OPS = ("=~", "!~", "!=", "=")
_MATCHER = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.\-]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$")


@dataclass(frozen=True)
class Matcher:
    """One matcher: ``name`` ``op`` ``value`` (``op`` one of :data:`OPS`)."""

    name: str
    op: str
    value: str
    _regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def matches(self, subject: Mapping[str, str]) -> bool:
        """Whether ``subject`` (name → text, from :func:`subject_of`) satisfies this matcher."""
        got = subject.get(self.name, "")
        if self._regex is not None:
            return (self._regex.fullmatch(got) is not None) == (self.op == "=~")
        return (got == self.value) == (self.op == "=")

    def __str__(self) -> str:
        return f"{self.name}{self.op}{json.dumps(self.value, ensure_ascii=False)}"


@functools.lru_cache(maxsize=4096)
def parse_matcher(text: str) -> Matcher:
    """``'place=~"1号楼.*"'`` → :class:`Matcher` (parsed once per text: cached). Raises
    ``ValueError`` naming what is wrong (no operator, a bad quoted value, a regex that does not
    compile)."""
    m = _MATCHER.match(text)
    if m is None:
        raise ValueError(f"{text!r} is not a matcher: write name=value, name!=value, "
                         "name=~regex or name!~regex")
    name, op, value = m.groups()
    if value.startswith('"'):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(f"{text!r}: the quoted value is not closed or has a bad escape") from None
        if not isinstance(value, str):
            raise ValueError(f"{text!r}: the value must be text")
    regex = None
    if op in ("=~", "!~"):
        try:
            regex = re.compile(value)
        except re.error as e:
            raise ValueError(f"{text!r}: bad regular expression ({e})") from None
    return Matcher(name, op, value, regex)


def parse_matchers(texts: list[str]) -> list[Matcher]:
    """Every matcher of ``texts`` (:func:`parse_matcher`); ``ValueError`` names the first bad one."""
    return [parse_matcher(t) for t in texts]


def subject_of(event: Event, source: str) -> dict[str, str]:
    """What matchers read of ``event`` stored from ``source``: the fields of :data:`FIELDS`
    (enums as their codes, ``drill`` as ``true``/``false``), every label under its own name
    (a field wins over a label of the same name) and under ``labels.NAME``."""
    out: dict[str, str] = {}
    for k, v in event.labels.items():
        out[k] = v
        out[f"labels.{k}"] = v
    for name in FIELDS:
        value = source if name == "source" else getattr(event, name)
        if isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif value is not None:
            out[name] = getattr(value, "value", value)
        else:
            out.pop(name, None)
    return out


def subject_of_body(body: Mapping[str, Any], source: str) -> dict[str, str]:
    """:func:`subject_of` for a stored event's JSON ``body`` (as the store keeps it: codes as
    text) recorded from ``source``, without validating the event again."""
    out: dict[str, str] = {}
    for k, v in (body.get("labels") or {}).items():
        out[k] = str(v)
        out[f"labels.{k}"] = str(v)
    for name in FIELDS:
        value = source if name == "source" else body.get(name)
        if name == "drill":
            out[name] = "true" if value else "false"
        elif name == "severity" and value is None:
            out[name] = "medium"
        elif value is not None:
            out[name] = str(value)
        else:
            out.pop(name, None)
    return out


def _matchers(v: list[str]) -> list[str]:
    parse_matchers(v)
    return v


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WeeklySchedule(_Model):
    """A window that comes back: on ``weekdays`` (1=Mon … 7=Sun), optionally only the ``nth``
    such day of the month (1 = first … 5, -1 = last: the fire-alarm test "every first Monday"),
    from ``start`` to ``end`` (school-local; ``end`` ≤ ``start`` crosses midnight)."""

    weekdays: list[Annotated[int, Field(ge=1, le=7)]] = Field(min_length=1)
    nth: list[Annotated[int, Field(ge=-1, le=5)]] = Field(default_factory=list)
    start: time
    end: time

    @field_validator("nth")
    @classmethod
    def _no_zero(cls, v: list[int]) -> list[int]:
        if 0 in v:
            raise ValueError("0 is not an occurrence: use 1 … 5, or -1 for the last")
        return v

    @model_validator(mode="after")
    def _not_empty(self) -> WeeklySchedule:
        if self.start == self.end:
            raise ValueError("start and end are the same time: the window would be a whole day "
                             "or nothing — give two different times")
        return self

    def _day_counts(self, d: date) -> bool:
        if d.isoweekday() not in self.weekdays:
            return False
        if not self.nth:
            return True
        occurrence = (d.day - 1) // 7 + 1
        last = (d + timedelta(days=7)).month != d.month
        return occurrence in self.nth or (last and -1 in self.nth)

    def window_end(self, at: datetime, tz: tzinfo) -> datetime | None:
        """The end (aware, in ``tz``) of the window that contains ``at`` (aware), or None
        when ``at`` is outside every window."""
        local = at.astimezone(tz)
        for back in (0, 1):
            d = local.date() - timedelta(days=back)
            if not self._day_counts(d):
                continue
            start = datetime.combine(d, self.start, tz)
            end_day = d if self.end > self.start else d + timedelta(days=1)
            end = datetime.combine(end_day, self.end, tz)
            if start <= local < end:
                return end
        return None


class SilenceConfig(_Model):
    """A standing silence in the config file (``silences:``): ``matchers`` (all must match),
    from ``starts_at`` to ``ends_at`` (aware times; naive ones in the school's zone) or on a
    weekly ``schedule`` (inside ``starts_at``..``ends_at`` when given), who made it and why.
    ``exempt_critical`` (default true): a ``critical`` event is never silenced by it."""

    id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")]
    matchers: Annotated[list[str], Field(min_length=1)]
    comment: Annotated[str, Field(min_length=1, max_length=500)]
    created_by: Annotated[str, Field(min_length=1, max_length=100)] = "config"
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    schedule: WeeklySchedule | None = None
    exempt_critical: bool = True

    _check_matchers = field_validator("matchers")(_matchers)

    @model_validator(mode="after")
    def _bounded(self) -> SilenceConfig:
        if self.schedule is None and self.ends_at is None:
            raise ValueError("a silence needs ends_at or a schedule (a silence without an end "
                             "would keep everyone quiet for ever)")
        s, e = self.starts_at, self.ends_at
        if s and e and (s.tzinfo is None) == (e.tzinfo is None) and e <= s:
            raise ValueError("ends_at must be after starts_at")
        return self


class InhibitRule(_Model):
    """An inhibit rule (Alertmanager's ``inhibit_rules``): while an incident whose opening
    event matches ``source_matchers`` is open, a new event matching ``target_matchers`` with
    the same values of every name in ``equal`` is attached to it instead of opening its own."""

    source_matchers: Annotated[list[str], Field(min_length=1)]
    target_matchers: Annotated[list[str], Field(min_length=1)]
    equal: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(default_factory=list)

    _check_sources = field_validator("source_matchers")(_matchers)
    _check_targets = field_validator("target_matchers")(_matchers)


GROUP_FIELDS = ("group", "count", "first")
"""What a route's ``group_summary`` may name besides its ``group_by`` names: the group's values
joined (``group``), how many members (``count``), the first member's summary (``first``)."""


def check_group_summary(template: str, group_by: list[str]) -> None:
    """Raise ``ValueError`` when ``template`` (``str.format`` text, e.g.
    ``"{place} 共 {count} 个探测器报警"``) names anything but ``group_by`` and
    :data:`GROUP_FIELDS`, or is not valid format text."""
    names = {n: "x" for n in group_by} | {n: "x" for n in GROUP_FIELDS}
    try:
        template.format_map(_Strict(names))
    except KeyError as e:
        raise ValueError(f"group_summary names {e.args[0]!r}, which is neither in group_by nor "
                         f"one of {', '.join(GROUP_FIELDS)}") from None
    except (ValueError, IndexError) as e:
        raise ValueError(f"group_summary is not valid format text ({e})") from None


class _Strict(dict[str, Any]):
    def __missing__(self, key: str) -> Any:
        raise KeyError(key)
