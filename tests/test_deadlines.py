"""Legal reporting deadlines (escalator/deadlines.py): a notifiable diagnosis reaches the CDC at
once; a school cluster must reach the CDC and the education bureau within 24 h of its first
case (2006 rule); a public-health emergency within 2 h (《突发公共卫生事件应急条例》第十九、二十条).
At the deadline less the lead time the engine tells a level not yet told (timeline
``deadline_escalation``); the timer is a row and survives a restart. Fake clock, real SQLite."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from pydantic import SecretStr

from escalator.clock import FakeClock
from escalator.config import load_config
from escalator.config.models import Config, Policy, Step
from escalator.config.settings import Settings
from escalator.engine.simulate import simulate
from escalator.events import Event
from escalator.school import ledger
from escalator.school.deadlines import describe, status
from escalator.service.daemon import Daemon
from escalator.store import SQLiteStore
from escalator.testing import Harness

from .conftest import case

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "clusters.yaml"
SH = ZoneInfo("Asia/Shanghai")
DAY1 = ["events/fever_cluster_day1_1.json", "events/fever_cluster_day1_2.json",
        "events/fever_cluster_day1_3.json"]
FIRST_CASE = datetime(2026, 11, 30, 7, 48, tzinfo=SH)  # fever_cluster_day1_1.json
REQUIRED = ["区疾控", "区教育局"]


def at(day: str, hhmm: str) -> datetime:
    return datetime.fromisoformat(f"{day}T{hhmm}").replace(tzinfo=SH)


@pytest.fixture
def config() -> Config:
    return load_config(FIXTURE)


@pytest.fixture
def slow(config) -> Config:
    """The cluster chain with 12 h levels: it would reach the CDC 24 h after it opened."""
    config.policies["cluster"] = Policy(steps=[
        Step(targets=["school_doctor"], timeout=12 * 3600, mode="report"),
        Step(targets=["leadership"], timeout=12 * 3600, mode="report"),
        Step(targets=["district_cdc", "education_bureau"], timeout=3600, mode="report"),
    ])
    for policy in config.policies.values():  # no reminders: the deadline timer is the next timer
        policy.remind_every = None
    return config


def harness(config: Config, db: Path, when: datetime) -> Harness:
    return Harness(config, db, clock=FakeClock(when))


def cluster_of(h: Harness) -> Any:
    with h.store.transaction() as tx:
        [inc] = [i for i in tx.list_incidents(("triggered", "acknowledged", "resolved"), 100)
                 if i.dedup_key.startswith("cluster/")]
    return inc


def told_on(h: Harness, incident_id: int) -> list[tuple[str, str]]:
    with h.store.transaction() as tx:
        return [(n.recipient_name, n.purpose) for n in tx.notifications_of(incident_id)]


def detail(h: Harness, incident_id: int, type_: str) -> dict[str, Any]:
    with h.store.transaction() as tx:
        [entry] = [t for t in tx.timeline(incident_id) if t.type == type_]
    return entry.detail


def diagnosed(sid: str = "S-2023-0150", diagnosis: str = "流行性腮腺炎") -> dict[str, Any]:
    return {"kind": "suspected_case", "category": "infectious_disease", "class_id": "3-2",
            "summary": "三年级2班 1名学生经医院诊断", "subject": {"id": sid},
            "symptoms": ["parotid_swelling", "fever"], "diagnosis": diagnosis,
            "occurred_at": at("2026-11-30", "08:00").isoformat()}


async def test_a_notifiable_diagnosis_reaches_the_cdc_at_once(config, tmp_path):
    h = harness(config, tmp_path / "db.sqlite3", at("2026-11-30", "10:00"))
    r = await h.send(diagnosed())
    assert r.status == "created"
    # the case chain starts at the class teacher as before, and the CDC is told at once
    assert h.told() == ["王老师", "区疾控"]
    assert told_on(h, r.incident_id)[1] == ("区疾控", "deadline")
    tl = h.timeline(r.incident_id)
    assert tl.index("notifiable_disease") < tl.index("deadline_escalation")
    assert detail(h, r.incident_id, "notifiable_disease")["diagnosis"] == "流行性腮腺炎"
    inc = h.incident(r.incident_id)
    assert inc.deadline_rule == "notifiable_disease"
    assert inc.deadline_at == inc.deadline_met_at == at("2026-11-30", "10:00")
    assert inc.deadline_check_at is None
    await h.advance(3600)  # nothing told twice
    assert h.told().count("区疾控") == 1


async def test_a_diagnosis_that_is_not_notifiable_sets_no_deadline(config, tmp_path):
    h = harness(config, tmp_path / "db.sqlite3", at("2026-11-30", "10:00"))
    r = await h.send(diagnosed(diagnosis="普通感冒"))
    assert h.told() == ["王老师"] and h.incident(r.incident_id).deadline_at is None


@pytest.mark.parametrize("diagnosis", ["hfmd", "HFMD (clinical)", "疑似HFMD",
                                       "hand, foot and mouth disease", "COVID-19", "Measles"])
async def test_an_english_notifiable_diagnosis_reaches_the_cdc_at_once(config, tmp_path,
                                                                        diagnosis):
    h = harness(config, tmp_path / "db.sqlite3", at("2026-11-30", "10:00"))
    r = await h.send(diagnosed(diagnosis=diagnosis))
    assert h.told() == ["王老师", "区疾控"]
    assert h.incident(r.incident_id).deadline_rule == "notifiable_disease"


@pytest.mark.parametrize("diagnosis", ["common cold", "flu-like",
                                       "stomach flu", "parainfluenza", "atb-resistant otitis",
                                       "hfmdx"])
async def test_english_words_inside_other_words_are_not_notifiable(config, tmp_path, diagnosis):
    h = harness(config, tmp_path / "db.sqlite3", at("2026-11-30", "10:00"))
    r = await h.send(diagnosed(diagnosis=diagnosis))
    assert h.told() == ["王老师"] and h.incident(r.incident_id).deadline_at is None


async def test_a_slow_chain_is_overtaken_at_the_deadline_less_the_lead(slow, tmp_path):
    h = harness(slow, tmp_path / "db.sqlite3", at("2026-11-30", "10:20"))
    for name in DAY1:
        await h.send(case(name))
    cluster = cluster_of(h)
    deadline = FIRST_CASE + timedelta(hours=24)
    assert cluster.deadline_at == deadline
    assert cluster.deadline_check_at == deadline - timedelta(hours=1)  # lead: 1h (fixture)
    await h.advance(13 * 3600)  # 23:20: the doctor's level timed out, the leadership told
    assert h.engine.next_due() == deadline - timedelta(hours=1)  # the deadline timer is next
    h.clock.set(deadline - timedelta(hours=1, seconds=1))
    await h.settle()
    assert [n for n, _ in told_on(h, cluster.id)] == ["赵校医", "张校长"]
    assert "deadline_escalation" not in h.timeline(cluster.id)
    await h.advance(1)  # 2026-12-01 06:48 local
    assert told_on(h, cluster.id)[2:] == [("区疾控", "deadline"), ("区教育局", "deadline")]
    assert {m.recipient_name for m in h.channel.sent[-2:]} == set(REQUIRED)
    for m in h.channel.sent[-2:]:  # the message says why it comes now, and by when
        assert "【报告时限】" in m.body and "法定报告时限：2026-12-01 07:48" in m.body
    assert all("【报告时限】" not in m.body for m in h.channel.sent[:-2])
    first = next(m for m in h.channel.sent if m.incident_id == cluster.id)  # the school doctor
    assert "法定报告时限：2026-12-01 07:48" in first.body
    esc = detail(h, cluster.id, "deadline_escalation")
    assert esc["targets"] == ["district_cdc", "education_bureau"]
    assert esc["rule"] == "school_cluster" and esc["recipients"] == REQUIRED
    cluster = h.incident(cluster.id)
    assert cluster.deadline_met_at == deadline - timedelta(hours=1) <= cluster.deadline_at
    assert cluster.step_index == 1  # the walk itself goes on unchanged
    await h.advance(3 * 3600)
    assert h.timeline(cluster.id).count("deadline_escalation") == 1


async def test_an_acknowledged_escalate_chain_still_meets_the_deadline(slow, tmp_path):
    slow.policies["cluster"] = Policy(steps=[
        Step(targets=["school_doctor"], timeout=3600, mode="escalate")])
    h = harness(slow, tmp_path / "db.sqlite3", at("2026-11-30", "10:20"))
    for name in DAY1:
        await h.send(case(name))
    cluster = cluster_of(h)
    h.engine.acknowledge(cluster.id, actor="doc", via="test")
    await h.advance(24 * 3600)
    assert [n for n, p in told_on(h, cluster.id) if p == "deadline"] == REQUIRED
    assert [m.recipient_name for m in h.channel.sent if m.incident_id == cluster.id][-2:] == REQUIRED


async def test_a_resolved_incident_is_not_escalated(slow, tmp_path):
    h = harness(slow, tmp_path / "db.sqlite3", at("2026-11-30", "10:20"))
    for name in DAY1:
        await h.send(case(name))
    cluster = cluster_of(h)
    h.engine.resolve(cluster.id, actor="doc", via="test")
    await h.advance(30 * 3600)
    assert "deadline_escalation" not in h.timeline(cluster.id)
    assert h.incident(cluster.id).deadline_met_at is None
    # the timeline says the legal report was never made when it was resolved
    got = detail(h, cluster.id, "resolved_before_report")
    assert got["rule"] == "school_cluster" and got["notify"] == ["district_cdc", "education_bureau"]
    assert datetime.fromisoformat(got["deadline"]) == FIRST_CASE + timedelta(hours=24)


async def test_resolving_after_the_report_was_made_says_nothing_more(config, tmp_path):
    h = harness(config, tmp_path / "db.sqlite3", at("2026-11-30", "10:20"))
    await h.send(diagnosed())  # notifiable: the CDC is told at once, the deadline met
    with h.store.transaction() as tx:
        [inc] = tx.list_incidents(("triggered",), 10)
    assert inc.deadline_met_at is not None
    h.engine.resolve(inc.id, actor="doc", via="test")
    assert "resolved_before_report" not in h.timeline(inc.id)


async def test_a_false_alarm_resolved_before_the_report_is_not_a_missed_deadline(slow, tmp_path):
    h = harness(slow, tmp_path / "db.sqlite3", at("2026-11-30", "10:20"))
    for name in DAY1:
        await h.send(case(name))
    cluster = cluster_of(h)
    deadline = FIRST_CASE + timedelta(hours=24)
    assert status(cluster, h.clock.now()) == "pending"
    await h.advance(3600)  # 11:20: the school doctor finds it a false alarm
    h.engine.resolve(cluster.id, actor="doc", via="test")
    assert "resolved_before_report" in h.timeline(cluster.id)
    for now in (at("2026-11-30", "11:30"), deadline, deadline + timedelta(days=30)):
        h.clock.set(now)
        await h.settle()
        inc = h.incident(cluster.id)
        assert inc.deadline_met_at is None
        assert status(inc, now) == "resolved_unreported"
        assert describe(inc, SH, now) == (
            "deadline 2026-12-01 07:48 (school_cluster: district_cdc, education_bureau), "
            "resolved, not reported: resolved 2026-11-30 11:20")
    assert "deadline_escalation" not in h.timeline(cluster.id)


async def test_resolved_after_the_deadline_passed_unreported_is_missed(slow, tmp_path):
    db = tmp_path / "db.sqlite3"
    before = harness(slow, db, at("2026-11-30", "10:20"))
    for name in DAY1:
        await before.send(case(name))
    before.close()  # the daemon is down through the deadline check and the deadline
    after = harness(slow, db, at("2026-12-01", "09:00"))
    inc = cluster_of(after)
    after.engine.resolve(inc.id, actor="doc", via="test")  # before the overdue timer fires
    await after.settle()
    inc = after.incident(inc.id)
    assert inc.deadline_met_at is None and inc.resolved_at > inc.deadline_at
    assert "resolved_before_report" in after.timeline(inc.id)
    assert status(inc, after.clock.now()) == "missed"
    assert describe(inc, SH, after.clock.now()).endswith(", missed: not told")
    after.close()


async def test_status_is_the_ledgers_word(slow, tmp_path):
    """deadlines.status and ledger.deadline_status are one rule: the same word for the same
    incident, at every time."""
    h = harness(slow, tmp_path / "db.sqlite3", at("2026-11-30", "10:20"))
    for name in DAY1:
        await h.send(case(name))
    cluster = cluster_of(h)
    h.close()
    base = cluster.deadline_at
    for met, resolved, state in [(None, None, "triggered"), (0, None, "acknowledged"),
                                 (3, 2, "resolved"), (None, -1, "resolved"),
                                 (None, 1, "resolved"), (None, 0, "resolved")]:
        inc = replace(cluster, state=state,
                      deadline_met_at=None if met is None else base + timedelta(hours=met),
                      resolved_at=None if resolved is None else base + timedelta(hours=resolved))
        for hours in (-1, 0, 1, 48):
            now = base + timedelta(hours=hours)
            assert status(inc, now) == ledger.deadline_status(
                inc.deadline_at, inc.deadline_met_at, now, inc.resolved_at)


async def test_the_deadline_timer_survives_a_restart(slow, tmp_path):
    db = tmp_path / "db.sqlite3"
    before = harness(slow, db, at("2026-11-30", "10:20"))
    for name in DAY1:
        await before.send(case(name))
    cluster_id = cluster_of(before).id
    before.close()  # the daemon stops; it is down when the deadline check comes
    after = harness(slow, db, at("2026-12-01", "07:00"))
    assert after.incident(cluster_id).deadline_check_at == FIRST_CASE + timedelta(hours=23)
    assert "deadline_escalation" not in after.timeline(cluster_id)
    await after.settle()
    assert "deadline_escalation" in after.timeline(cluster_id)
    assert {m.recipient_name for m in after.channel.sent} >= set(REQUIRED)
    inc = after.incident(cluster_id)
    assert inc.deadline_met_at == at("2026-12-01", "07:00") <= inc.deadline_at  # still in time
    after.close()


async def test_a_restart_after_the_deadline_shows_it_missed(slow, tmp_path):
    db = tmp_path / "db.sqlite3"
    before = harness(slow, db, at("2026-11-30", "10:20"))
    for name in DAY1:
        await before.send(case(name))
    before.close()
    after = harness(slow, db, at("2026-12-01", "09:00"))
    await after.settle()
    inc = cluster_of(after)
    assert inc.deadline_met_at == at("2026-12-01", "09:00") > inc.deadline_at
    with after.store.transaction() as tx:
        from escalator.school.deadlines import status
        assert status(tx.get_incident(inc.id), at("2026-12-01", "09:00")) == "missed"
    after.close()


async def test_a_public_health_emergency_has_two_hours(config, tmp_path):
    h = harness(config, tmp_path / "db.sqlite3", at("2026-11-30", "10:00"))
    r = await h.send({"kind": "incident", "category": "food_safety", "severity": "critical",
                      "summary": "食堂午餐后多名学生呕吐", "affected_count": 12,
                      "occurred_at": at("2026-11-30", "09:50").isoformat()})
    inc = h.incident(r.incident_id)
    assert inc.deadline_rule == "public_health_emergency"
    assert inc.deadline_at == at("2026-11-30", "11:50")
    await h.advance(49 * 60)  # 10:49: before 11:50 less the 1h lead
    assert "deadline_escalation" not in h.timeline(r.incident_id)
    await h.advance(60)
    assert "deadline_escalation" in h.timeline(r.incident_id)
    assert [n for n, p in told_on(h, r.incident_id) if p == "deadline"] == REQUIRED


async def test_without_a_deadlines_section_match_rules_are_off(engine_config, tmp_path):
    h = Harness(engine_config, tmp_path / "db.sqlite3")
    r = await h.send({"kind": "incident", "category": "infectious_disease", "severity": "critical",
                      "summary": "x"})
    assert h.incident(r.incident_id).deadline_at is None
    h.close()


def test_the_migration_adds_the_deadline_columns(tmp_path):
    store = SQLiteStore(tmp_path / "db.sqlite3")
    assert store.schema_version() >= 4
    cols = {r[1] for r in store._conn.execute("PRAGMA table_info(incidents)")}
    assert {"deadline_at", "deadline_met_at", "deadline_check_at"} <= cols
    tables = {r[0] for r in store._conn.execute("SELECT name FROM sqlite_master")}
    assert {"case_facts", "cluster_members"} <= tables
    store.close()


def test_simulate_shows_the_deadline(config):
    ev = Event.model_validate(diagnosed())
    rows = simulate(config, ev, horizon_seconds=3600)
    deadline_rows = [r for r in rows if r.step == "deadline"]
    assert [r.recipient for r in deadline_rows] == ["区疾控",
                                                    "[legal deadline: district_cdc told]"]
    assert deadline_rows[0].mode == "notifiable_disease"


def cli(tmp_path: Path) -> Any:
    """The real CLI (a subprocess) on the clusters fixture, with its state under ``tmp_path``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ESCALATOR_")}
    env.update({"ESCALATOR_STATE_DIR": str(tmp_path / "state"), "ESCALATOR_CONFIG": str(FIXTURE)})

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "escalator.cli", *args], capture_output=True,
                              text=True, env=env, timeout=60)

    return run


def test_cli_incidents_shows_the_deadline(tmp_path):
    event = tmp_path / "case.json"
    event.write_text(json.dumps(diagnosed()), encoding="utf-8")
    run = cli(tmp_path)

    assert run("send", str(event)).returncode == 0
    show = run("incidents", "1")
    assert show.returncode == 0, show.stderr
    assert "deadline " in show.stdout and "(notifiable_disease: district_cdc), met: told" in show.stdout
    assert "deadline_escalation" in show.stdout


def test_cli_incidents_shows_a_false_alarm_resolved_before_the_report(tmp_path):
    event = tmp_path / "alarm.json"  # a public-health emergency (2 h), occurring now
    event.write_text(json.dumps({"kind": "incident", "category": "food_safety",
                                 "severity": "critical", "summary": "食堂疑似食物中毒（误报）"}),
                     encoding="utf-8")
    run = cli(tmp_path)

    assert run("send", str(event)).returncode == 0
    assert "not told yet" in run("incidents", "1").stdout
    resolved = run("resolve", "1")
    assert resolved.returncode == 0 and "resolved_before_report" in resolved.stderr
    show = run("incidents", "1")
    assert show.returncode == 0, show.stderr
    assert "(public_health_emergency: district_cdc, education_bureau), resolved, not reported: " \
        "resolved " in show.stdout


def test_cli_incidents_lists_a_clusters_members(tmp_path):
    run = cli(tmp_path)

    for i, name in enumerate(DAY1):
        (tmp_path / f"{i}.json").write_text(json.dumps(case(name)), encoding="utf-8")
        assert run("send", str(tmp_path / f"{i}.json")).returncode == 0
    show = run("incidents", "4")  # cases 1–3 opened incidents 1–3; the third opened the cluster
    assert show.returncode == 0, show.stderr
    assert "cluster members 3: 1 (2026-11-30, event " in show.stdout
    assert ", 2 (2026-11-30" in show.stdout and ", 3 (2026-11-30" in show.stdout
    assert "S-2023" not in show.stdout.split("time")[0]  # the header lines name no pupil


async def test_api_incident_shows_the_deadline(config, tmp_path, monkeypatch):
    for key in list(os.environ):
        if key.startswith("ESCALATOR_"):
            monkeypatch.delenv(key)
    admin = "admin-token-for-deadline-tests"
    settings = Settings(state_dir=tmp_path / "state", http_listen="127.0.0.1:0",
                        api_token=SecretStr(admin))
    clock = FakeClock(at("2026-11-30", "10:20"))
    daemon = Daemon(config, settings, clock=clock)
    task = asyncio.create_task(daemon.run())
    for _ in range(2000):
        if getattr(daemon, "http_port", None) or task.done():
            break
        await asyncio.sleep(0.005)
    assert not task.done(), task.exception()
    headers = {"Authorization": f"Bearer {admin}"}
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.http_port}",
                                     timeout=30) as client:
            for name in DAY1:
                r = await client.post("/api/v1/events", json=case(name), headers=headers)
                assert r.status_code == 202, r.text
            listing = (await client.get("/api/v1/incidents", headers=headers)).json()
            [cluster] = [i for i in listing if i["dedup_key"].startswith("cluster/")]
            got = (await client.get(f"/api/v1/incidents/{cluster['id']}", headers=headers)).json()
    finally:
        daemon.stop()
        await asyncio.wait_for(task, 30)
    assert datetime.fromisoformat(got["deadline_at"]) == FIRST_CASE + timedelta(hours=24)
    assert got["deadline_rule"] == "school_cluster"
    assert "cluster_opened" in [t["type"] for t in got["timeline"]]
    members = got["members"]  # the cluster lists its cases, first case first, no pupil id
    assert [m["date"] for m in members] == ["2026-11-30"] * 3
    assert datetime.fromisoformat(members[0]["occurred_at"]) == FIRST_CASE
    assert len({m["incident_id"] for m in members}) == 3 and cluster["id"] not in {
        m["incident_id"] for m in members}
    assert "S-2023" not in json.dumps(members)
