"""Time and truth (issue 13, point 4): a time in the future is taken with a warning and never
counted from; the ledger and the monthly report count incidents by the school-local day they
occurred, the received time beside; register times as written; a zero report that contradicts
the day's records is flagged (零报告与登记不符). Real SQLite store, real HTTP server, the
injectable clock."""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime, timedelta

import pytest

from escalator.config import load_config
from escalator.config.models import IntakeSection
from escalator.intake.registers import parse_register
from escalator.school.ledger import ledger_tables, monthly_report
from escalator.testing import Harness

from .conftest import CASES, ROOT, case
from .test_api import ADMIN, SOURCE, api, bearer, env  # noqa: F401 (fixtures)

KEY = bytes(range(32))
TZ_OFFSET = "+08:00"


@functools.cache
def demo_config():
    return load_config(ROOT / "config/demo.yaml")


@pytest.fixture
def demo(tmp_path):
    h = Harness(demo_config(), tmp_path / "db" / "escalator.sqlite3")
    yield h
    h.close()


def local(day: int, hm: str, month: int = 11) -> str:
    return f"2026-{month:02d}-{day:02d}T{hm}:00{TZ_OFFSET}"


def fever(pupil: str, occurred: str, cls: str = "3-2", **more) -> dict:
    return {"kind": "suspected_case", "category": "infectious_disease", "summary": "发热",
            "class_id": cls, "symptoms": ["fever"], "subject": {"id": pupil},
            "occurred_at": occurred, **more}


# --- a time in the future ------------------------------------------------------------------


async def test_a_time_two_days_ahead_is_taken_with_a_warning_over_http(api):  # noqa: F811
    ahead = (api.clock.now() + timedelta(days=2)).isoformat()
    r = await api.client.post("/api/v1/events", headers=bearer(SOURCE), json={
        "kind": "incident", "category": "accident", "summary": "摔伤", "occurred_at": ahead})
    assert r.status_code == 202
    [w] = r.json()["warnings"]
    assert w["code"] == "occurred_in_future" and w["field"] == "occurred_at"
    assert "2天" in w["message"] and "2026-12-02 07:48" in w["message"]
    inc = (await api.client.get(f"/api/v1/incidents/{r.json()['incident_id']}",
                                headers=bearer(ADMIN))).json()
    [entry] = [t for t in inc["timeline"] if t["type"] == "input_warning"]
    assert entry["detail"]["warnings"] == r.json()["warnings"]
    with api.daemon.store.transaction() as tx:
        [ev] = tx.events_of(inc["id"])
    # the time received is used; the time as written is kept
    assert datetime.fromisoformat(ev["body"]["occurred_at"]) == api.clock.now()
    assert ev["body"]["labels"]["occurred_at_as_sent"] == ahead


async def test_a_few_minutes_ahead_is_no_warning_but_still_never_the_future(harness):
    ahead = harness.clock.now() + timedelta(minutes=5)
    r = await harness.send({"kind": "incident", "category": "accident", "summary": "摔伤",
                            "occurred_at": ahead.isoformat()})
    assert r.warnings == ()
    with harness.store.transaction() as tx:
        [ev] = tx.events_of(r.incident_id)
    assert datetime.fromisoformat(ev["body"]["occurred_at"]) == harness.clock.now()


async def test_the_skew_is_configurable(tmp_path, engine_config):
    config = engine_config.model_copy(update={"intake": IntakeSection(future_skew=86400)})
    h = Harness(config, tmp_path / "db.sqlite3")
    try:
        r = await h.send({"kind": "incident", "category": "accident", "summary": "摔伤",
                          "occurred_at": (h.clock.now() + timedelta(hours=3)).isoformat()})
        assert r.warnings == ()
        r = await h.send({"kind": "incident", "category": "accident", "summary": "摔伤2",
                          "occurred_at": (h.clock.now() + timedelta(days=2)).isoformat()})
        assert [w["code"] for w in r.warnings] == ["occurred_in_future"]
    finally:
        h.close()


async def test_a_legal_deadline_never_counts_from_the_future(demo):
    """A critical infectious-disease report (public-health emergency: 2 h, 突发公共卫生事件应急
    条例 §19) dated a day ahead: the 2 h count from when it was received."""
    received = demo.clock.now()
    r = await demo.send(fever("S-1", local(1, "08:00", 12), severity="critical"))
    assert r.warnings and r.warnings[0]["code"] == "occurred_in_future"
    assert demo.incident(r.incident_id).deadline_at == received + timedelta(hours=2)


# --- the ledger and the monthly report count by the day a case occurred --------------------


async def test_a_case_of_30_november_entered_on_7_december_counts_in_november(demo):
    demo.clock.set(datetime(2026, 12, 7, 1, 0, tzinfo=UTC))  # 09:00 on 7 December
    r = await demo.send(fever("S-1", local(30, "10:00")))
    now = demo.clock.now()
    nov = monthly_report(demo.store, demo.config, "2026-11", now)
    dec = monthly_report(demo.store, demo.config, "2026-12", now)
    assert nov["total"]["incidents"] == 1 and dec["total"]["incidents"] == 0
    [t] = [t for t in ledger_tables(demo.store, demo.config, date(2026, 11, 30),
                                    date(2026, 11, 30), now) if t.key == "incidents"]
    [row] = t.rows
    assert row[0] == r.incident_id
    occurred, opened = row[t.headers.index("发生时间（Asia/Shanghai）")], row[t.headers.index("创建时间（Asia/Shanghai）")]
    assert occurred == datetime(2026, 11, 30, 10, 0)                # when it occurred
    assert opened == datetime(2026, 12, 7, 9, 0)                     # received, beside it
    assert not [t.rows for t in ledger_tables(demo.store, demo.config, date(2026, 12, 7),
                                             date(2026, 12, 7), now) if t.key == "incidents"][0]


async def test_register_times_are_shown_as_written(demo):
    subs = parse_register((CASES / "registers/absence_2026-11-30_gbk.csv").read_bytes(),
                          demo.config, key=KEY)
    subs += parse_register((CASES / "registers/chenwujian_2026-11-30_gb18030.csv").read_bytes(),
                           demo.config, key=KEY)
    demo.engine.ingest_many(subs, source="spool")
    [t] = [t for t in ledger_tables(demo.store, demo.config, date(2026, 11, 30),
                                    date(2026, 11, 30), demo.clock.now()) if t.key == "incidents"]
    shown = {row[t.headers.index("摘要")]: row[t.headers.index("发生时间（Asia/Shanghai）")] for row in t.rows}
    # the absence register's onset times, also the one of the evening before
    assert datetime(2026, 11, 29, 20, 0) in shown.values()
    assert datetime(2026, 11, 30, 6, 30) in shown.values()
    # the morning check gives the day only: a date, never a made-up 00:00
    checks = [v for k, v in shown.items() if "晨检" in k]
    assert checks and all(v == date(2026, 11, 30) and not isinstance(v, datetime) for v in checks)


# --- 零报告与登记不符 ------------------------------------------------------------------------


def zero_report(day: int = 30, at: str = "09:30") -> dict:
    return {**case("events/zero_report.json"), "occurred_at": local(day, at),
            "dedup_key": f"zero-report/2026-11-{day:02d}"}


def mismatches(h: Harness) -> list:
    with h.store.transaction() as tx:
        return [i for i in tx.list_incidents(("triggered", "acknowledged", "resolved"), 50)
                if i.dedup_key.startswith("zero-report-mismatch/")]


async def test_a_zero_report_on_a_day_with_cases_is_flagged_to_the_doctor_and_leadership(demo):
    demo.clock.set(datetime(2026, 11, 30, 1, 35, tzinfo=UTC))  # 09:35
    await demo.send(fever("S-1", local(30, "07:50")))
    await demo.send(fever("S-2", local(30, "08:10"), cls="1-3"))
    demo.channel.sent.clear()
    r = await demo.send(zero_report())
    assert r.status == "logged"                                     # the report itself is kept
    [inc] = mismatches(demo)
    assert inc.dedup_key == "zero-report-mismatch/zero_report/2026-11-30"
    assert "零报告与登记不符" in inc.summary and "2 名学生病例" in inc.summary
    told = sorted(m.recipient_name for m in demo.channel.sent if m.incident_id == inc.id)
    assert told == sorted(["赵春梅", "刘建国", "张伟"])              # school doctor, leadership
    for m in demo.channel.sent:
        assert "S-1" not in m.body and "S-2" not in m.body


async def test_a_true_zero_report_is_not_flagged(demo):
    demo.clock.set(datetime(2026, 11, 30, 1, 35, tzinfo=UTC))
    await demo.send(fever("S-1", local(29, "15:00")))                # the day before
    await demo.send(zero_report())
    assert mismatches(demo) == []


async def test_a_case_entered_after_the_zero_report_that_occurred_before_it_is_flagged(demo):
    demo.clock.set(datetime(2026, 11, 30, 1, 35, tzinfo=UTC))
    await demo.send(zero_report())
    await demo.advance(3 * 3600)                                     # 12:35
    await demo.send(fever("S-3", local(30, "12:30")))
    assert mismatches(demo) == []                                    # after the report: true
    await demo.send(fever("S-1", local(30, "08:00")))                # entered late
    [inc] = mismatches(demo)
    assert "1 名学生病例" in inc.summary


async def test_an_open_cluster_contradicts_a_zero_report(demo):
    demo.clock.set(datetime(2026, 11, 30, 1, 35, tzinfo=UTC))
    for i in range(3):  # three pupils of 3-2 with fever the day before: a cluster, still open
        await demo.send(fever(f"S-{i}", local(29, "10:00")))
    await demo.send(zero_report())
    [inc] = mismatches(demo)
    assert "1 起聚集性疫情未解除" in inc.summary


async def test_a_drill_case_does_not_contradict(demo):
    demo.clock.set(datetime(2026, 11, 30, 1, 35, tzinfo=UTC))
    await demo.send(fever("S-1", local(30, "08:00"), drill=True))
    await demo.send(zero_report())
    assert mismatches(demo) == []
