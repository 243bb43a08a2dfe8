"""Config models of who is on duty and when people may be woken (``rosters``, ``quiet_hours``).

Kept apart from :mod:`escalator.config.models`, which includes them in :class:`Config`:
``rosters`` (docs/rosters.md) — rotations of people for a role (``duty_officer`` or an
administrator-defined role), read by :mod:`escalator.school.roster`; ``quiet_hours``
(docs/quiet-hours.md) — which messages wait for the school morning, read by
:mod:`escalator.delivery.quiet_hours`. Cross-references (people, roles, channels) are checked by
:mod:`escalator.config.checks`.
"""

from __future__ import annotations

from datetime import date, time
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from escalator.events import Severity

_Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Rotation(_Model):
    """One rotation (轮值): ``people`` take turns at ``role`` in their order, ``every`` ``day``
    or ``week``, handing over at ``handover`` (school-local time). The first turn (``people[0]``)
    starts on ``start`` at ``handover``; nobody of this rotation is on duty before it.

    ``days``: ``all`` (every day); ``school_days`` — only on school days of the school calendar
    (:class:`escalator.school.calendar.SchoolCalendar`: weekends, public holidays and 调休 are
    off, make-up workdays on); a daily rotation then moves on only on school days;
    ``holidays`` — only on the days that are not school days (假期值班). A shift belongs to
    the day it started on: the night after Friday's 08:00 hand-over is Friday's."""

    name: str | None = None
    role: _Id = "duty_officer"
    every: Literal["day", "week"] = "week"
    handover: time = time(8, 0)
    start: date
    people: list[_Id] = Field(min_length=1)
    days: Literal["all", "school_days", "holidays"] = "all"


class RostersConfig(_Model):
    """``rosters`` (docs/rosters.md): ``rotations`` (id → :class:`Rotation`) and
    ``gap_check_days`` — how many days ahead ``check-config`` looks for times nobody is on duty
    for a role a step targets (0: not checked). Overrides and swaps are kept in the store
    (``escalator roster override``, ``POST /api/v1/roster/overrides``)."""

    rotations: dict[_Id, Rotation] = Field(default_factory=dict)
    gap_check_days: int = Field(default=14, ge=0, le=366)


class QuietHoursConfig(_Model):
    """``quiet_hours`` (docs/quiet-hours.md; PagerDuty's urgency and support hours): outside the
    school hours of a school day (``school.calendar``), a non-urgent message on one of
    ``channels`` (channel ids; omitted: every channel) waits until the next school day's
    ``school_hours.start`` — deferred, never dropped. Urgent: an incident whose severity is in
    ``urgent`` (default ``critical`` and ``high``), unless its route says ``urgency: low``; a
    route with ``urgency: high`` makes every severity urgent. ``enabled: false`` turns it off."""

    enabled: bool = True
    urgent: list[Severity] = Field(default_factory=lambda: [Severity.critical, Severity.high])
    channels: list[_Id] | None = None

    @model_validator(mode="after")
    def _some_channel(self) -> QuietHoursConfig:
        if self.channels is not None and not self.channels:
            raise ValueError("channels: list at least one channel id, or leave it out for all")
        return self
