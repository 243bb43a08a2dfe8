"""Heartbeat monitors (escalator/heartbeats.py) with the demo's daily zero report (零报告):
expected by 09:30 + 30 min on school days, else an incident walks school doctor → leadership.
Fake clock, real SQLite, no sleeps."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from escalator.clock import FakeClock
from escalator.config import load_config
from escalator.config.models import Config
from escalator.testing import Harness

from .conftest import case

ROOT = Path(__file__).resolve().parent.parent
SH = ZoneInfo("Asia/Shanghai")
DOCTOR = "赵春梅"


@pytest.fixture
def demo() -> Config:
    return load_config(ROOT / "config" / "demo.yaml")


def at(day: str, hhmm: str) -> datetime:
    return datetime.fromisoformat(f"{day}T{hhmm}").replace(tzinfo=SH)


def harness(config: Config, db: Path, when: datetime) -> Harness:
    return Harness(config, db, clock=FakeClock(when), heartbeats=True)


def leaders(config: Config) -> set[str]:
    return {p.name for p in config.people if "leadership" in p.roles}


def incidents(h: Harness) -> list[Any]:
    with h.store.transaction() as tx:
        return tx.list_incidents(("triggered", "acknowledged", "resolved"), 100)


def zero_report(day: str = "2026-11-30") -> dict[str, Any]:
    """The sample zero report (source daily-report, no monitor label) for ``day``."""
    ev = case("events/zero_report.json")
    ev["occurred_at"] = f"{day}T09:30:00+08:00"
    ev["dedup_key"] = f"zero-report/{day}"
    return ev


async def test_a_zero_report_on_time_opens_nothing(demo, tmp_path):
    h = harness(demo, tmp_path / "db.sqlite3", at("2026-11-30", "09:10"))
    r = await h.send(zero_report(), source="spool")
    assert r.status == "logged" and r.incident_id is None
    await h.advance(6 * 3600)  # to 15:10, well past the 10:00 deadline
    assert incidents(h) == [] and h.told() == []


async def test_a_ping_labelled_with_the_monitor_counts(demo, tmp_path):
    h = harness(demo, tmp_path / "db.sqlite3", at("2026-11-30", "09:10"))
    # what GET /api/v1/heartbeats/zero_report/ping records
    await h.send({"kind": "heartbeat", "category": "other", "summary": "heartbeat zero_report",
                  "labels": {"monitor": "zero_report"}}, source="api-token")
    await h.advance(3 * 3600)
    assert incidents(h) == []


async def test_a_heartbeat_for_another_monitor_does_not_count(demo, tmp_path):
    h = harness(demo, tmp_path / "db.sqlite3", at("2026-11-30", "09:10"))
    await h.send({"kind": "heartbeat", "category": "other", "summary": "ping",
                  "labels": {"monitor": "morning-check-app"}, "source": "daily-report"})
    await h.advance(3 * 3600)
    assert len(incidents(h)) == 1


async def test_a_missing_report_opens_an_incident_at_the_deadline_and_walks_its_policy(demo, tmp_path):
    h = harness(demo, tmp_path / "db.sqlite3", at("2026-11-30", "07:48"))
    await h.settle()
    h.clock.set(at("2026-11-30", "09:59:59"))
    await h.settle()
    assert incidents(h) == []
    h.clock.set(at("2026-11-30", "10:00"))  # 09:30 + 30 min grace
    await h.settle()
    [inc] = incidents(h)
    assert inc.dedup_key == "heartbeat/zero_report/2026-11-30"
    assert (inc.kind, inc.category, inc.severity) == ("heartbeat", "infectious_disease", "high")
    assert inc.policy_id == "heartbeat" and "传染病疫情零报告" in inc.summary
    assert inc.created_at == at("2026-11-30", "10:00")
    assert h.told() == [DOCTOR]
    await h.advance(20)  # the doctor's step times out: the leadership group is told
    assert set(h.told()[1:]) == leaders(demo) and len(h.told()) == 1 + len(leaders(demo))
    await h.advance(3600)  # later checks the same day open nothing more
    assert len(incidents(h)) == 1


async def test_the_report_arriving_late_resolves_the_incident(demo, tmp_path):
    h = harness(demo, tmp_path / "db.sqlite3", at("2026-11-30", "10:00"))
    await h.settle()
    [inc] = incidents(h)
    assert h.told() == [DOCTOR]
    await h.advance(5)
    r = await h.send(zero_report(), source="spool")
    assert r.status == "logged"
    inc = h.incident(inc.id)
    assert inc.state == "resolved" and inc.resolved_by == "spool"
    tl = h.timeline(inc.id)
    assert tl[-2:] == ["heartbeat_received", "resolved"]
    with h.store.transaction() as tx:
        why = tx.timeline(inc.id)[-2].detail
    assert why == {"monitor": "zero_report", "date": "2026-11-30", "event_id": r.event_id}
    await h.advance(3600)  # the walk stopped: nobody else is told, nothing reopens
    assert h.told() == [DOCTOR]
    assert len(incidents(h)) == 1


async def test_a_report_for_another_day_does_not_resolve_it(demo, tmp_path):
    h = harness(demo, tmp_path / "db.sqlite3", at("2026-11-30", "10:00"))
    await h.settle()
    await h.send(zero_report("2026-11-27"))
    [inc] = incidents(h)
    assert inc.state == "triggered"


@pytest.mark.parametrize("day", ["2026-10-01",   # 国庆节 (a Thursday)
                                 "2026-11-28",   # an ordinary Saturday
                                 "2026-11-29"])  # an ordinary Sunday
async def test_not_expected_on_a_day_without_school(demo, tmp_path, day):
    h = harness(demo, tmp_path / "db.sqlite3", at(day, "07:00"))
    await h.settle()
    await h.advance(16 * 3600)
    assert incidents(h) == []


async def test_expected_on_a_make_up_saturday(demo, tmp_path):
    h = harness(demo, tmp_path / "db.sqlite3", at("2026-10-10", "07:00"))  # 国庆调休上班
    await h.settle()
    await h.advance(4 * 3600)
    [inc] = incidents(h)
    assert inc.dedup_key == "heartbeat/zero_report/2026-10-10"


async def test_a_missed_report_is_noticed_after_a_restart(demo, tmp_path):
    db = tmp_path / "db.sqlite3"
    before = harness(demo, db, at("2026-11-30", "07:48"))
    await before.settle()
    assert incidents(before) == []
    before.close()  # the daemon is down from 07:48 until 11:00, across the deadline
    after = harness(demo, db, at("2026-11-30", "11:00"))
    await after.settle()
    [inc] = incidents(after)
    assert inc.dedup_key == "heartbeat/zero_report/2026-11-30" and after.told() == [DOCTOR]
    after.close()
    again = harness(demo, db, at("2026-11-30", "11:05"))  # another restart: no second incident
    await again.settle()
    assert len(incidents(again)) == 1
    again.close()


async def test_a_report_that_came_while_nobody_checked_is_honoured_after_a_restart(demo, tmp_path):
    db = tmp_path / "db.sqlite3"
    h = Harness(demo, db, clock=FakeClock(at("2026-11-30", "09:00")))  # no heartbeat checks
    await h.send(zero_report(), source="spool")
    h.close()
    after = harness(demo, db, at("2026-11-30", "11:00"))
    await after.settle()
    assert incidents(after) == []


async def test_days_missed_during_a_long_outage_are_each_noticed(demo, tmp_path):
    db = tmp_path / "db.sqlite3"
    h = harness(demo, db, at("2026-11-26", "08:00"))  # Thursday
    await h.settle()
    h.close()
    after = harness(demo, db, at("2026-11-30", "10:30"))  # Monday
    await after.settle()
    keys = sorted(i.dedup_key for i in incidents(after))
    assert keys == [f"heartbeat/zero_report/{d}" for d in ("2026-11-26", "2026-11-27", "2026-11-30")]


async def test_a_fresh_monitor_does_not_reach_back_before_it_was_watched(demo, tmp_path):
    h = harness(demo, tmp_path / "db.sqlite3", at("2026-11-30", "08:00"))
    await h.settle()
    assert incidents(h) == []  # 2026-11-27 (Friday) had no report, but nobody watched then
    h.clock.set(h.clock.now() + timedelta(hours=2))
    await h.settle()
    assert [i.dedup_key for i in incidents(h)] == ["heartbeat/zero_report/2026-11-30"]


async def test_the_daemon_loop_checks_heartbeats_and_warns_about_an_unknown_year(demo, tmp_path):
    from structlog.testing import capture_logs

    from escalator.config.settings import Settings
    from escalator.service.daemon import Daemon

    settings = Settings(state_dir=tmp_path / "state", http_listen="off")
    with capture_logs() as logs:
        daemon = Daemon(demo, settings, clock=FakeClock(at("2026-11-30", "10:00")))
    assert not [e for e in logs if e["event"] == "school_calendar_incomplete"]
    try:
        await daemon.step()
        with daemon.store.transaction() as tx:
            inc = tx.open_incident_by_key("heartbeat/zero_report/2026-11-30")
        assert inc is not None and inc.state == "triggered"
    finally:
        daemon.store.close()
    with capture_logs() as logs:  # 2099: chinesecalendar has no data, no overrides in the demo
        daemon = Daemon(demo, Settings(state_dir=tmp_path / "s2", http_listen="off"),
                        clock=FakeClock(at("2099-01-05", "08:00")))
    daemon.store.close()
    [warning] = [e for e in logs if e["event"] == "school_calendar_incomplete"]
    assert "2099" in warning["detail"]
