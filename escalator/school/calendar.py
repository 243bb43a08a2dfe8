"""The school calendar: which dates are school days, and the school hours (docs/school-rules.md).

A date is a school day when, in this order:

1. ``school.calendar.overrides`` names it: ``school_day`` or ``holiday`` — the administrator's
   word wins over everything (e.g. the State Council's schedule for a year not yet in the
   library, or a day the school closes);
2. ``school.calendar.terms`` are given and the date is in none of them (a vacation): not a
   school day;
3. otherwise it is a workday in the ``chinesecalendar`` library (weekends, public holidays and
   调休 make-up workdays, from the State Council's notices);
4. a year the library has no data for (it raises ``NotImplementedError``): Monday–Friday.
   :meth:`SchoolCalendar.warnings` names such a year unless the administrator entered an
   override for it; it never raises.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

import chinese_calendar

from escalator.config.models import Config, DayOverride

SOURCE = "chinesecalendar (https://github.com/LKI/chinese-calendar)"


def library_knows(year: int) -> bool:
    """Whether the ``chinesecalendar`` library has holiday data for ``year``."""
    try:
        chinese_calendar.is_workday(date(year, 1, 1))
    except NotImplementedError:
        return False
    return True


@functools.lru_cache(maxsize=8192)
def library_workday(day: date) -> bool | None:
    """The library's answer for ``day``, or None for a year it has no data for (cached: the
    library checks its whole table on every call, ~0.2 ms; a rotation counts school days from
    its start at every step that fires)."""
    try:
        return bool(chinese_calendar.is_workday(day))
    except NotImplementedError:
        return None


def calendar_in_use(config: Config) -> bool:
    """Whether anything reads the calendar (a heartbeat monitor expecting school days only,
    early warning's school-day series, quiet hours, or a rotation on school days or holidays)."""
    return (any(m.school_days_only for m in config.heartbeats.values())
            or (config.early_warning is not None and config.early_warning.enabled)
            or (config.quiet_hours is not None and config.quiet_hours.enabled)
            or any(r.days != "all" for r in config.rosters.rotations.values()))


def startup_warnings(config: Config, today: date) -> list[str]:
    """The calendar warnings for ``config`` on ``today`` (none when nothing reads it)."""
    if not calendar_in_use(config):
        return []
    cal = SchoolCalendar(config)
    return cal.warnings(cal.years_in_use(today))


class SchoolCalendar:
    """The school's calendar from ``config.school.calendar``."""

    def __init__(self, config: Config) -> None:
        self.tz = config.school.tz
        self.calendar = config.school.calendar

    def is_school_day(self, day: date) -> bool:
        """Whether ``day`` (a school-local date) is a school day (see the module's rules)."""
        override = self.calendar.overrides.get(day)
        if override is not None:
            return override == DayOverride.school_day
        terms = self.calendar.terms
        if terms and not any(t.start <= day <= t.end for t in terms):
            return False
        workday = library_workday(day)
        return day.weekday() < 5 if workday is None else workday

    def is_school_hours(self, at: datetime) -> bool:
        """Whether ``at`` (aware; naive is read as school-local) falls in the school hours of a
        school day."""
        local = at.astimezone(self.tz) if at.tzinfo else at.replace(tzinfo=self.tz)
        hours = self.calendar.school_hours
        return self.is_school_day(local.date()) and hours.start <= local.time() < hours.end

    def opens_at(self, at: datetime, horizon_days: int = 400) -> datetime | None:
        """The first instant at or after ``at`` (aware) inside the school hours of a school day,
        as aware UTC: ``at`` itself during school hours, else the next school day's
        ``school_hours.start`` (today's, before it starts). None when no school day comes within
        ``horizon_days`` (quiet hours then hold nothing back)."""
        local = at.astimezone(self.tz)
        if self.is_school_hours(local):
            return at.astimezone(UTC)
        hours = self.calendar.school_hours
        day = local.date() if local.time() < hours.start else local.date() + timedelta(days=1)
        for _ in range(horizon_days):
            if self.is_school_day(day):
                return datetime.combine(day, hours.start, self.tz).astimezone(UTC)
            day += timedelta(days=1)
        return None

    def warnings(self, years: Iterable[int]) -> list[str]:
        """One message per year in ``years`` the library has no data for and no override names:
        school days in it are Monday–Friday, without public holidays or make-up days."""
        covered = {d.year for d in self.calendar.overrides}
        return [
            f"the holiday calendar has no data for {year} and school.calendar.overrides names "
            f"no date in {year}: school days in {year} are taken as Monday–Friday (enter the "
            f"State Council's holiday schedule for {year} in school.calendar.overrides, or "
            f"upgrade chinesecalendar)"
            for year in sorted(set(years))
            if year not in covered and not library_knows(year)
        ]

    def years_in_use(self, today: date) -> list[int]:
        """The years worth checking: ``today``'s, and every year a configured term touches."""
        years = {today.year}
        for t in self.calendar.terms:
            years.update(range(t.start.year, t.end.year + 1))
        return sorted(years)
