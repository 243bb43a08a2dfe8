"""The school calendar (escalator/calendar.py): the chinesecalendar library's workdays, terms,
per-date overrides, a year the library does not know, school hours, and the check-config
warning."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import chinese_calendar
import pytest

from escalator.config import check_config
from escalator.config.models import Config
from escalator.school.calendar import SchoolCalendar, library_knows, startup_warnings

SH = ZoneInfo("Asia/Shanghai")
MAKE_UP_SATURDAY = date(2026, 10, 10)  # 国庆节调休上班 (the State Council's 2026 schedule)
NATIONAL_DAY = date(2026, 10, 1)       # a Thursday, a public holiday
UNKNOWN = 2099  # chinesecalendar 1.11 knows 2004–2026; a far year stays unknown for long


def config(calendar: dict[str, Any] | None = None, **extra: Any) -> Config:
    school: dict[str, Any] = {"name": "测试小学"}
    if calendar is not None:
        school["calendar"] = calendar
    return Config.model_validate({"school": school, "routes": [{"default": True, "policy": "none"}],
                                  **extra})


def test_the_library_is_what_we_think_it_is():
    # the facts the tests below rely on, straight from the library
    assert MAKE_UP_SATURDAY.weekday() == 5 and chinese_calendar.is_workday(MAKE_UP_SATURDAY)
    assert NATIONAL_DAY.weekday() == 3 and chinese_calendar.is_holiday(NATIONAL_DAY)
    with pytest.raises(NotImplementedError):
        chinese_calendar.is_workday(date(UNKNOWN, 3, 1))
    assert library_knows(2026) and not library_knows(UNKNOWN)


def test_a_make_up_saturday_is_a_school_day():
    cal = SchoolCalendar(config())
    assert cal.is_school_day(MAKE_UP_SATURDAY)
    assert not cal.is_school_day(date(2026, 10, 11))  # the Sunday after: an ordinary weekend day
    assert not cal.is_school_day(date(2026, 11, 28))  # an ordinary Saturday


def test_a_public_holiday_is_not_a_school_day():
    cal = SchoolCalendar(config())
    assert not cal.is_school_day(NATIONAL_DAY)
    assert cal.is_school_day(date(2026, 11, 30))  # an ordinary Monday


def test_a_year_the_library_lacks_is_monday_to_friday_with_a_warning():
    cal = SchoolCalendar(config())
    # 2099-01-01 is a Thursday: New Year's Day, but without data it is taken as a school day
    assert cal.is_school_day(date(UNKNOWN, 1, 1))
    assert cal.is_school_day(date(UNKNOWN, 3, 2))       # Monday
    assert not cal.is_school_day(date(UNKNOWN, 3, 7))   # Saturday
    [warning] = cal.warnings([2026, UNKNOWN])
    assert "2099" in warning and "Monday–Friday" in warning and "overrides" in warning
    assert cal.warnings([2026]) == []


def test_overrides_enter_a_schedule_for_a_year_the_library_lacks():
    cal = SchoolCalendar(config({"overrides": {"2099-01-01": "holiday",
                                               "2099-02-21": "school_day"}}))
    assert not cal.is_school_day(date(UNKNOWN, 1, 1))   # entered as a holiday
    assert cal.is_school_day(date(UNKNOWN, 2, 21))      # a Saturday entered as a make-up day
    assert cal.is_school_day(date(UNKNOWN, 3, 2))       # the rest: Monday–Friday
    assert not cal.is_school_day(date(UNKNOWN, 3, 7))
    assert cal.warnings([UNKNOWN]) == []                # the administrator took care of it


def test_terms_make_vacations_and_overrides_win():
    cal = SchoolCalendar(config({
        "terms": [{"start": "2026-09-01", "end": "2027-01-22"}],
        "overrides": {"2026-08-31": "school_day", "2026-11-30": "holiday"},
    }))
    assert cal.is_school_day(date(2026, 9, 1))
    assert not cal.is_school_day(date(2026, 7, 15))      # a Wednesday in the summer vacation
    assert cal.is_school_day(MAKE_UP_SATURDAY)           # in term, a make-up Saturday
    assert cal.is_school_day(date(2026, 8, 31))          # override before the term
    assert not cal.is_school_day(date(2026, 11, 30))     # override in the term
    assert not cal.is_school_day(date(2026, 2, 14))      # a make-up Saturday in the winter vacation
    assert cal.years_in_use(date(2026, 11, 30)) == [2026, 2027]


def test_school_hours():
    cal = SchoolCalendar(config({"school_hours": {"start": "07:30", "end": "17:30"}}))
    monday = datetime(2026, 11, 30, 7, 30, tzinfo=SH)
    assert cal.is_school_hours(monday)
    assert cal.is_school_hours(datetime(2026, 11, 30, 1, 0, tzinfo=UTC))  # 09:00 in Shanghai
    assert not cal.is_school_hours(monday.replace(hour=7, minute=29))
    assert not cal.is_school_hours(monday.replace(hour=17, minute=30))
    assert not cal.is_school_hours(datetime(2026, 10, 1, 10, 0, tzinfo=SH))  # holiday
    assert cal.is_school_hours(datetime(2026, 10, 10, 10, 0))  # naive: read as school-local


HEARTBEAT_YAML = """
school:
  name: 测试小学
  calendar:
    terms: [{start: 2099-02-23, end: 2099-07-03}]
people:
  - {id: doc, name: 赵校医, roles: [school_doctor], contacts: [{channel: main, to: "1"}]}
roles: {school_doctor: {name: 校医}}
channels: {main: {type: console}}
policies:
  hb: {steps: [{targets: [school_doctor]}]}
heartbeats:
  zero_report: {expect_by: "09:30", policy: hb%s}
routes:
  - {default: true, policy: none}
"""


def test_check_config_warns_about_a_year_without_data(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text(HEARTBEAT_YAML % "", encoding="utf-8")
    cfg, problems = check_config(path)
    assert cfg is not None  # a warning, never an error
    [warning] = [p for p in problems if p.path == "school.calendar"]
    assert warning.level == "warning" and "2099" in warning.message
    # a monitor that does not read the calendar: no warning
    path.write_text(HEARTBEAT_YAML % ", school_days_only: false", encoding="utf-8")
    _, problems = check_config(path)
    assert [p for p in problems if p.path == "school.calendar"] == []


def test_check_config_refuses_an_unknown_heartbeat_policy(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text((HEARTBEAT_YAML % "").replace("policy: hb", "policy: nope"), encoding="utf-8")
    cfg, problems = check_config(path)
    assert cfg is None
    assert [p.path for p in problems if p.level == "error"] == ["heartbeats.zero_report.policy"]


def test_startup_warnings_only_when_the_calendar_is_read():
    beats = {"heartbeats": {"zb": {"expect_by": "09:30", "policy": "x"}}}
    assert startup_warnings(config(**beats), date(UNKNOWN, 1, 4))
    assert startup_warnings(config(**beats), date(2026, 11, 30)) == []
    assert startup_warnings(config(), date(UNKNOWN, 1, 4)) == []
