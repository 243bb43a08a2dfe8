"""The duty roster (docs/rosters.md, issue 16.7): rotations with hand-over times and holidays
from the school calendar, overrides and swaps kept in the store, ``duty_officer`` and
roster-backed roles resolved when a step fires, gaps warned by check-config, the CLI and the
API. On the fake clock with a real SQLite file; the API over a real socket."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace

import httpx
import pytest
import structlog
from pydantic import SecretStr

from escalator import cli
from escalator.clock import FakeClock
from escalator.config import check_config, load_config
from escalator.config.models import DutyShift
from escalator.config.settings import Settings
from escalator.school import roster
from escalator.school.roster import Roster, RosterError
from escalator.service.daemon import Daemon
from escalator.store import SQLiteStore
from escalator.testing import Harness

CONFIG = """
school:
  name: 测试小学
  calendar:
    overrides: {2026-12-07: holiday}
roles:
  night_guard: {name: 夜间值守}
people:
  - {id: zhang, name: 张老师, contacts: [{channel: sms, to: "13800000001"}]}
  - {id: wang, name: 王老师, contacts: [{channel: sms, to: "13800000002"}]}
  - {id: li, name: 李老师, contacts: [{channel: sms, to: "13800000003"}]}
  - {id: zhao, name: 赵主任, contacts: [{channel: sms, to: "13800000004"}]}
  - {id: qian, name: 钱保安, contacts: [{channel: sms, to: "13800000005"}]}
  - {id: sun, name: 孙保安, contacts: [{channel: sms, to: "13800000006"}]}
  - {id: zhou, name: 周保安, roles: [night_guard], contacts: [{channel: sms, to: "13800000007"}]}
  - {id: t32, name: 三二班班主任, roles: [class_teacher], classes: ["3-2"], contacts: [{channel: sms, to: "13800000008"}]}
channels:
  sms: {type: console}
rosters:
  rotations:
    school_days:
      name: 工作日行政值班
      every: day
      handover: "08:00"
      start: 2026-11-30
      people: [zhang, wang, li]
      days: school_days
    holidays:
      name: 节假日值班
      every: week
      handover: "08:00"
      start: 2026-11-28
      people: [zhao]
      days: holidays
    guards:
      role: night_guard
      every: week
      handover: "18:00"
      start: 2026-11-30
      people: [qian, sun]
policies:
  fire:
    steps:
      - {targets: [duty_officer], timeout: 600}
      - {targets: [night_guard], mode: inform}
  nobody:
    steps:
      - {targets: [class_teacher], timeout: 600}
routes:
  - match: {labels: {flow: nobody}}
    policy: nobody
  - default: true
    policy: fire
"""


def beijing(text: str) -> datetime:
    """A school-local time (Asia/Shanghai, UTC+8) as aware UTC."""
    return (datetime.fromisoformat(text) - timedelta(hours=8)).replace(tzinfo=UTC)


@pytest.fixture
def config_path(tmp_path):
    path = tmp_path / "roster.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


@pytest.fixture
def config(config_path):
    return load_config(config_path)


@pytest.fixture
def h(config, tmp_path):
    harness = Harness(config, tmp_path / "escalator.sqlite3")
    yield harness
    harness.close()


def alarm(n: int = 0, flow: str = "fire") -> dict:
    return {"kind": "incident", "category": "fire", "severity": "critical", "class_id": "5-1",
            "summary": f"1号楼烟感报警 {n}", "dedup_key": f"{flow}/{n}", "labels": {"flow": flow}}


def override(h: Harness, **kw) -> int:
    with h.store.transaction() as tx:
        return roster.add_override(tx, h.config, by="admin", at=h.clock.now(), **kw)


# ------------------------------------------------------------------ rotations


@pytest.mark.parametrize("at, expected", [
    ("2026-11-28T07:59", []),             # before the first hand-over: nobody
    ("2026-11-30T07:59", ["zhao"]),       # Sunday's holiday shift runs to Monday's hand-over
    ("2026-11-30T08:00", ["zhang"]),      # Monday
    ("2026-12-01T07:59", ["zhang"]),      # the night belongs to Monday's shift
    ("2026-12-01T08:00", ["wang"]),       # Tuesday
    ("2026-12-02T12:00", ["li"]),         # Wednesday
    ("2026-12-03T12:00", ["zhang"]),      # Thursday: round again
    ("2026-12-05T07:59", ["wang"]),       # Friday night, still Friday's shift
    ("2026-12-05T08:00", ["zhao"]),       # Saturday: the holiday rotation
    ("2026-12-07T12:00", ["zhao"]),       # Monday 12-07, a holiday by the school calendar
    ("2026-12-08T12:00", ["li"]),         # Tuesday 12-08: school days only count (5 → li)
])
def test_who_is_on_duty_by_the_rotations_and_the_school_calendar(config, at, expected):
    assert Roster(config).on_duty("duty_officer", beijing(at)) == (expected, [])


def test_a_weekly_rotation_hands_over_at_its_time(config):
    r = Roster(config)
    assert r.on_duty("night_guard", beijing("2026-12-07T17:59"))[0] == ["qian"]
    assert r.on_duty("night_guard", beijing("2026-12-07T18:00"))[0] == ["sun"]


def test_the_fixed_duty_roster_still_counts_for_the_duty_officer(config):
    config.duty_roster = [DutyShift(person="qian", start="18:00", end="07:00")]
    assert Roster(config).on_duty("duty_officer", beijing("2026-12-01T03:00"))[0] == [
        "zhang", "qian"]


# ------------------------------------------------------------------ at fire time


async def test_the_duty_officer_is_resolved_when_the_step_fires(h):
    h.clock.set(beijing("2026-12-01T10:00"))  # Tuesday: 王老师
    await h.send(alarm(1))
    h.clock.set(beijing("2026-12-02T10:00"))  # Wednesday: 李老师
    await h.send(alarm(2))
    assert [n for n in h.told() if n.endswith("老师")] == ["王老师", "李老师"]


async def test_an_override_puts_zhang_in_lis_place_on_december_8(h):
    h.clock.set(beijing("2026-12-01T09:00"))
    start, end = roster.period(h.config, "duty_officer", day=date(2026, 12, 8))
    assert (start, end) == (beijing("2026-12-08T08:00"), beijing("2026-12-09T08:00"))
    oid = override(h, role="duty_officer", person="zhang", replaces="li", start=start, end=end,
                   comment="李老师外出培训")
    h.clock.set(beijing("2026-12-08T15:20"))
    inc = (await h.send(alarm())).incident_id
    assert h.told()[0] == "张老师"
    assert "李老师" not in h.told()
    with h.store.transaction() as tx:
        [entry] = [t for t in tx.timeline(inc) if t.type == "roster_override"]
    assert entry.detail == {"role": "duty_officer", "overrides": [oid], "on_duty": ["zhang"]}
    h.clock.set(beijing("2026-12-09T08:00"))  # the override is over: the rotation again
    await h.send(alarm(9))
    # Wednesday 12-09, the 7th school day: 张老师 in turn (and 孙保安, incident 1's inform step)
    assert set(h.told()[-2:]) == {"张老师", "孙保安"}


async def test_a_roster_backed_role_reaches_only_whoever_is_on_duty(h):
    h.clock.set(beijing("2026-12-01T10:00"))
    await h.send(alarm())
    await h.advance(600)  # the inform step: night_guard
    assert h.told() == ["王老师", "钱保安"]  # not 周保安, who holds the role but is not rostered


async def test_a_target_with_nobody_tells_the_duty_officer_of_the_roster(h):
    h.clock.set(beijing("2026-12-05T10:00"))  # Saturday: the holiday rotation
    inc = (await h.send(alarm(flow="nobody"))).incident_id
    assert h.told() == ["赵主任"]
    with h.store.transaction() as tx:
        assert [n.purpose for n in tx.notifications_of(inc)] == ["target_unresolved"]


async def test_nobody_on_duty_is_target_unresolved(h):
    h.clock.set(beijing("2026-11-28T07:00"))  # before the rotations start
    inc = (await h.send(alarm())).incident_id
    assert "target_unresolved" in h.timeline(inc)


# ------------------------------------------------------------------ swaps, cancels, refusals


def test_a_swap_trades_two_shifts_and_is_withdrawn_whole(h):
    with h.store.transaction() as tx:
        ids = roster.add_swap(tx, h.config, role="duty_officer", first="li",
                              first_day=date(2026, 12, 2), second="zhang",
                              second_day=date(2026, 12, 3), by="admin", at=h.clock.now())
    with h.store.transaction() as tx:
        r = Roster(h.config, tx.roster_overrides(beijing("2026-12-01T00:00"),
                                                 beijing("2026-12-05T00:00")))
    assert r.on_duty("duty_officer", beijing("2026-12-02T12:00")) == (["zhang"], [ids[0]])
    assert r.on_duty("duty_officer", beijing("2026-12-03T12:00")) == (["li"], [ids[1]])
    with h.store.transaction() as tx:
        assert sorted(tx.cancel_roster_override(ids[0], h.clock.now(), "admin")) == sorted(ids)
        r = Roster(h.config, tx.roster_overrides(beijing("2026-12-01T00:00"),
                                                 beijing("2026-12-05T00:00")))
    assert r.on_duty("duty_officer", beijing("2026-12-02T12:00"))[0] == ["li"]


@pytest.mark.parametrize("kw, field", [
    (dict(role="cook", person="zhang"), "role"),
    (dict(role="duty_officer", person="nobody"), "person"),
    (dict(role="duty_officer", person="zhang", replaces="zhao"), "replaces"),  # not on duty then
    (dict(role="duty_officer", person="li", replaces="li"), "replaces"),
])
def test_an_override_that_cannot_be_kept_names_its_field(h, kw, field):
    start, end = beijing("2026-12-08T08:00"), beijing("2026-12-09T08:00")
    with pytest.raises(RosterError) as e, h.store.transaction() as tx:
        roster.add_override(tx, h.config, start=start, end=end, by="admin", at=h.clock.now(), **kw)
    assert e.value.field == field


def test_a_period_is_a_date_or_a_span(config):
    with pytest.raises(RosterError, match="not after"):
        roster.period(config, "duty_officer", start=datetime(2026, 12, 8, 9), end=datetime(2026, 12, 8, 8))
    with pytest.raises(RosterError) as e:
        roster.period(config, "duty_officer", start=datetime(2026, 12, 8, 9))
    assert e.value.field == "end"
    assert roster.period(config, "night_guard", day=date(2026, 12, 8))[0] == beijing(
        "2026-12-08T18:00")


# ------------------------------------------------------------------ show and gaps


def test_shifts_list_spans_with_people_and_the_overrides(h):
    start, end = beijing("2026-12-08T08:00"), beijing("2026-12-09T08:00")
    oid = override(h, role="duty_officer", person="zhang", replaces="li", start=start, end=end)
    with h.store.transaction() as tx:
        rows = [roster.shift_row(h.config, s) for s in roster.shifts_between(
            tx, h.config, date(2026, 12, 7), date(2026, 12, 8), ["duty_officer"])]
    assert [(r["start_local"], r["end_local"], [p["name"] for p in r["people"]], r["overrides"])
            for r in rows] == [
        ("2026-12-07 00:00", "2026-12-08 08:00", ["赵主任"], []),
        ("2026-12-08 08:00", "2026-12-09 00:00", ["张老师"], [oid]),
    ]


def test_check_config_warns_of_gaps_in_the_next_days(tmp_path):
    text = CONFIG.replace("      days: holidays\n", "      days: holidays\n      start: 2099-01-01\n"
                          ).replace("      start: 2026-11-28\n", "")
    path = tmp_path / "gaps.yaml"
    path.write_text(text, encoding="utf-8")
    _, problems = check_config(path)
    [gap] = [p for p in problems if p.path == "rosters"]
    assert gap.level == "warning"
    assert "nobody is on duty as duty_officer in the next 14 days" in gap.message
    assert "08:00 to" in gap.message


def test_check_config_names_unknown_people_and_roles_in_rotations(tmp_path):
    text = CONFIG.replace("people: [qian, sun]", "people: [qian, ghost]").replace(
        "role: night_guard\n", "role: cook\n")
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    _, problems = check_config(path)
    errors = {(p.path, p.message) for p in problems if p.level == "error"}
    assert ("rosters.rotations.guards.role",
            "unknown role 'cook' (duty_officer, or a role defined in roles:)") in errors
    assert ("rosters.rotations.guards.people[1]", "unknown person 'ghost'") in errors


# ------------------------------------------------------------------ CLI


@pytest.fixture
def restored_logging():
    """structlog as it was before the test (``cli.main`` binds the captured stderr)."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def test_cli_override_then_show(config_path, tmp_path, monkeypatch, capsys, restored_logging):
    monkeypatch.setenv("ESCALATOR_STATE_DIR", str(tmp_path / "state"))
    (tmp_path / "state").mkdir()
    SQLiteStore(tmp_path / "state" / "escalator.sqlite3").close()  # the daemon ran once
    base = ["--config", str(config_path)]
    assert cli.main(["roster", "override", *base, "--person", "zhang", "--replaces", "li",
                     "--date", "2026-12-08", "--comment", "李老师外出培训"]) == 0
    out = capsys.readouterr().out
    assert "override #1: 张老师 替 李老师（duty_officer）2026-12-08 08:00 至 2026-12-09 08:00" in out
    assert cli.main(["roster", "show", *base, "--from", "2026-12-08", "--to", "2026-12-08",
                     "--role", "duty_officer"]) == 0
    out = capsys.readouterr().out
    assert "赵主任" in out and "张老师" in out and "#1" in out  # 00:00–08:00: Monday's shift
    assert cli.main(["roster", "overrides", *base, "--from", "2026-12-01"]) == 0
    assert "李老师外出培训" in capsys.readouterr().out
    assert cli.main(["roster", "override", *base, "--person", "zhang", "--replaces", "zhao",
                     "--date", "2026-12-08"]) == cli.EXIT_USAGE
    assert "--replaces: 赵主任 is not on duty" in capsys.readouterr().err
    assert cli.main(["roster", "cancel", *base, "1"]) == 0
    assert cli.main(["roster", "cancel", *base, "1"]) == cli.EXIT_FAIL


# ------------------------------------------------------------------ API

ADMIN = "adm-1c9e5a7b3d2f4e60"
SOURCE = "src-7a2b9c4d1e0f3a58"


@pytest.fixture
async def api(tmp_path, monkeypatch):
    import os

    for key in list(os.environ):
        if key.startswith("ESCALATOR_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("TEST_ROSTER_SOURCE", SOURCE)
    path = tmp_path / "roster.yaml"
    path.write_text(CONFIG + "api:\n  tokens:\n    gate: {token_env: TEST_ROSTER_SOURCE}\n",
                    encoding="utf-8")
    settings = Settings(state_dir=tmp_path / "state", http_listen="127.0.0.1:0",
                        api_token=SecretStr(ADMIN))
    clock = FakeClock(beijing("2026-12-01T09:00"))
    daemon = Daemon(load_config(path), settings, clock=clock)
    task = asyncio.create_task(daemon.run())
    while not getattr(daemon, "http_port", None) and not task.done():
        await asyncio.sleep(0.005)  # only for the real server to start
    assert not task.done(), task.exception()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.http_port}",
                                 timeout=30) as client:
        yield SimpleNamespace(daemon=daemon, client=client, clock=clock)
    daemon.stop()
    await asyncio.wait_for(task, 30)


def auth(token: str = ADMIN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_api_override_show_and_cancel(api):
    c = api.client
    assert (await c.get("/api/v1/roster")).status_code == 401
    assert (await c.get("/api/v1/roster", headers=auth(SOURCE))).status_code == 403
    r = await c.post("/api/v1/roster/overrides", headers=auth(), json={
        "person": "zhang", "replaces": "li", "date": "2026-12-08", "comment": "李老师外出培训"})
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["text"] == "张老师 替 李老师（duty_officer）2026-12-08 08:00 至 2026-12-09 08:00"
    assert made["created_by"] == "api:admin"
    r = await c.get("/api/v1/roster", headers=auth(),
                    params={"from": "2026-12-08", "to": "2026-12-08", "role": "duty_officer"})
    assert r.status_code == 200, r.text
    spans = [(s["start_local"], [p["name"] for p in s["people"]], s["overrides"]) for s in r.json()]
    assert spans == [("2026-12-08 00:00", ["赵主任"], []),
                     ("2026-12-08 08:00", ["张老师"], [made["id"]])]
    assert "contacts" not in r.text and "138" not in r.text
    listed = (await c.get("/api/v1/roster/overrides", headers=auth())).json()
    assert [o["id"] for o in listed] == [made["id"]]
    r = await c.delete(f"/api/v1/roster/overrides/{made['id']}", headers=auth())
    assert r.json() == {"cancelled": [made["id"]]}
    assert (await c.delete(f"/api/v1/roster/overrides/{made['id']}",
                           headers=auth())).status_code == 404


async def test_api_refusals_name_the_field_and_change_nothing(api):
    c = api.client
    r = await c.post("/api/v1/roster/overrides", headers=auth(),
                     json={"person": "zhang", "replaces": "zhao", "date": "2026-12-08"})
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "replaces"
    r = await c.post("/api/v1/roster/overrides", headers=auth(), json={"person": "zhang"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "start"
    r = await c.post("/api/v1/roster/overrides", headers=auth(), json={"persn": "zhang"})
    assert r.status_code == 422
    r = await c.get("/api/v1/roster", headers=auth(), params={"from": "2026-12-08",
                                                               "to": "2026-12-01"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "to"
    r = await c.get("/api/v1/roster", headers=auth(), params={"from": "0001-01-01"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "from"
    r = await c.post("/api/v1/roster/overrides", headers=auth(),
                     json={"person": "zhang", "date": "9999-12-31"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "date"
    r = await c.post("/api/v1/roster/swaps", headers=auth(), json={
        "first": "zhao", "first_date": "2026-12-02", "second": "zhang",
        "second_date": "2026-12-03"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "first"
    assert (await c.get("/api/v1/roster/overrides", headers=auth())).json() == []


async def test_api_swap(api):
    r = await api.client.post("/api/v1/roster/swaps", headers=auth(), json={
        "first": "li", "first_date": "2026-12-02", "second": "zhang",
        "second_date": "2026-12-03"})
    assert r.status_code == 201, r.text
    assert [o["text"] for o in r.json()] == [
        "张老师 替 李老师（duty_officer）2026-12-02 08:00 至 2026-12-03 08:00",
        "李老师 替 张老师（duty_officer）2026-12-03 08:00 至 2026-12-04 08:00"]
