"""Retention (escalator/retention.py): pupils' personal data is purged after
``retention.personal_data_days``; the ledger's figures stay. Real SQLite, fake clock."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from escalator.clock import FakeClock
from escalator.config.models import RetentionSection
from escalator.engine.engine import Submission
from escalator.events import Event
from escalator.school import ledger, retention
from escalator.testing import Harness

from .conftest import FIXTURES, case

SH = ZoneInfo("Asia/Shanghai")
OLD = {"id": "S-OLD-0001", "name": "李小明", "guardian_phone": "13911112222"}
NEW = {"id": "S-NEW-0002", "name": "王小红", "guardian_phone": "13733334444"}
OPEN = {"id": "S-OPEN-0003", "name": "赵小刚", "guardian_phone": "13655556666"}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=SH)


def fever(subject: dict[str, str], when: str) -> dict[str, Any]:
    ev = case("events/fever_single.json")
    ev.update(subject=subject, occurred_at=when, details=f"{subject['name']}昨晚发热")
    return ev


def dump(h: Harness) -> str:
    with h.store.transaction() as tx:
        return "\n".join(tx.c.iterdump())


async def build(h: Harness) -> dict[str, int]:
    """June: an incident about OLD, resolved; a register row; a guardian told (row written
    directly: the roster is not what is tested here); an incident about OPEN left open.
    November: an incident about NEW, resolved."""
    ids = {}
    h.clock.set(at("2026-06-01 08:00"))
    r = await h.send(fever(OLD, "2026-06-01T07:50:00+08:00"))
    ids["old"] = r.incident_id
    await h.advance(100)
    h.engine.acknowledge(r.incident_id, actor="cli:doc", via="cli")
    h.engine.resolve(r.incident_id, actor="cli:doc", via="cli")
    with h.store.transaction() as tx:
        nid = tx.insert_notification(
            incident_id=r.incident_id, step_run_id=None, recipient_kind="guardian",
            recipient_id="guardian-1", recipient_name=f"{OLD['name']}家长",
            channel="main", address=OLD["guardian_phone"], contact_index=0, status="delivered",
            due_at=h.clock.now(), attempts=1, created_at=h.clock.now(),
            ack_token="guardian-token", needs_ack=False, purpose="step")
        tx.add_delivery(notification_id=nid, at=h.clock.now(), outcome="delivered",
                        detail=f"sent to {OLD['guardian_phone']}", body="请关注孩子体温")
    reg = Event.model_validate({**fever(OLD, "2026-06-01T07:50:00+08:00"), "kind": "absence",
                                "summary": "3-2 1名学生事假"})
    [row] = h.engine.ingest_many([Submission(reg, row_key=f"absence/2026-06-01/{OLD['id']}",
                                             ledger_only=True)], source="register")
    assert row.status == "ledger"
    r = await h.send(fever(OPEN, "2026-06-02T07:50:00+08:00") | {"summary": "另一名学生发热"})
    ids["open"] = r.incident_id
    h.clock.set(at("2026-11-20 08:00"))
    r = await h.send(fever(NEW, "2026-11-20T07:50:00+08:00"))
    ids["new"] = r.incident_id
    await h.advance(300)
    h.engine.resolve(r.incident_id, actor="cli:doc", via="cli")
    h.clock.set(at("2026-12-15 12:00"))  # June + 180 days < now; November is not
    return ids


@pytest.fixture
async def built(engine_config, tmp_path):
    h = Harness(engine_config, tmp_path / "escalator.sqlite3")
    ids = await build(h)
    yield h, ids
    h.close()


async def test_purge_removes_old_personal_data_and_keeps_newer_and_open(built, engine_config):
    h, ids = built
    before = dump(h)
    for value in (*OLD.values(), *NEW.values(), *OPEN.values()):
        assert value in before
    counts = retention.purge(h.store, engine_config, h.clock.now())
    after = dump(h)
    for value in OLD.values():
        assert value not in after, value
    for value in (*NEW.values(), *OPEN.values()):
        assert value in after, value
    assert counts.held_open == 1 and counts.notifications == 1
    assert counts.events == 2  # the incident's event and the register row
    with h.store.transaction() as tx:
        old = tx.get_event(tx.get_incident(ids["old"]).first_event_id)
        assert "subject" not in old["body"] and "details" not in old["body"]
        assert old["body"]["summary"] == case("events/fever_single.json")["summary"]
        assert old["body"]["symptoms"] == ["fever", "cough"]
        assert tx.get_incident(ids["old"]).dedup_key.endswith("/subject:-/2026-06-01")
        [guardian] = [n for n in tx.notifications_of(ids["old"]) if n.recipient_kind == "guardian"]
        assert guardian.recipient_name == guardian.address == retention.PURGED
        bodies = {r[0] for r in tx.c.execute(
            "SELECT d.body FROM deliveries d JOIN notifications n ON n.id = d.notification_id "
            "WHERE n.incident_id = ?", (ids["old"],))}
        assert bodies == {retention.PURGED}
        staff = [n for n in tx.notifications_of(ids["old"]) if n.recipient_kind == "person"]
        assert staff and staff[0].recipient_name == "王老师"  # who was told stays
        assert staff[0].address == "13800000001"


async def test_a_purged_register_row_is_still_recognised(built, engine_config):
    h, _ = built
    retention.purge(h.store, engine_config, h.clock.now())
    assert f"absence/2026-06-01/{OLD['id']}" not in dump(h)
    reg = Event.model_validate({**case("events/fever_single.json"), "kind": "absence"})
    [again] = h.engine.ingest_many([Submission(reg, row_key=f"absence/2026-06-01/{OLD['id']}")])
    assert again.status == "duplicate_row"


async def test_report_and_ledger_give_the_same_figures_after_the_purge(built, engine_config):
    h, ids = built
    now = h.clock.now()

    def figures() -> list[dict[str, Any]]:
        out = []
        for month in ("2026-06", "2026-11"):
            r = ledger.monthly_report(h.store, engine_config, month, now)
            out.append({k: v for k, v in r.items() if k != "generated_at"})
        return out

    def shape() -> dict[str, list[int]]:
        t = ledger.ledger_tables(h.store, engine_config, datetime(2026, 6, 1).date(),
                                 datetime(2026, 11, 30).date(), now)
        return {x.key: [row[0] for row in x.rows] for x in t}

    before, rows_before = figures(), shape()
    assert before[0]["total"]["incidents"] == 2 and before[0]["total"]["responded"] == 1
    assert before[0]["total"]["ack_median_seconds"] == 100.0
    retention.purge(h.store, engine_config, now)
    assert figures() == before
    assert shape() == rows_before
    t = ledger.ledger_tables(h.store, engine_config, datetime(2026, 6, 1).date(),
                             datetime(2026, 6, 1).date(), now)
    deliveries = next(x for x in t if x.key == "deliveries")
    texts = {row[2]: row[-1] for row in deliveries.rows}  # incident → text sent
    assert texts[ids["old"]] == "（已按保存期限删除）"
    assert OPEN["name"] in texts[ids["open"]]  # still open: kept


async def test_purge_is_idempotent_and_a_dry_run_changes_nothing(built, engine_config):
    h, _ = built
    before = dump(h)
    dry = retention.purge(h.store, engine_config, h.clock.now(), dry_run=True)
    assert dump(h) == before and dry.changed > 0
    real = retention.purge(h.store, engine_config, h.clock.now())
    assert real == dry
    again = retention.purge(h.store, engine_config, h.clock.now())
    assert again.changed == 0 and again.held_open == 1


async def test_nothing_is_purged_inside_the_retention_period(built, engine_config):
    h, _ = built
    config = engine_config.model_copy(deep=True)
    config.retention.personal_data_days = 365
    before = dump(h)
    assert retention.purge(h.store, config, h.clock.now()).changed == 0
    assert dump(h) == before


async def test_the_purge_logs_counts_only(built, engine_config):
    from structlog.testing import capture_logs

    h, _ = built
    with capture_logs() as logs:
        retention.purge(h.store, engine_config, h.clock.now())
    text = repr(logs)
    assert "personal_data_purged" in text
    for value in OLD.values():
        assert value not in text


async def test_daily_purge_runs_once_per_school_day(built, engine_config):
    h, _ = built
    daily = retention.DailyPurge(h.engine)
    assert daily.run_if_due() is not None
    assert daily.run_if_due() is None  # same school-local date
    h.clock.set(at("2026-12-16 00:01"))
    assert daily.run_if_due() is not None


async def test_the_daemon_loop_purges(engine_config, tmp_path):
    from escalator.config.settings import Settings
    from escalator.service.daemon import Daemon

    state = tmp_path / "state"
    h = Harness(engine_config, state / "escalator.sqlite3")
    await build(h)
    h.close()
    daemon = Daemon(engine_config, Settings(state_dir=state, http_listen="off"),
                    clock=FakeClock(at("2026-12-15 12:00")))
    try:
        await daemon.step()
        with daemon.store.transaction() as tx:
            text = "\n".join(tx.c.iterdump())
        assert OLD["name"] not in text and NEW["name"] in text
    finally:
        daemon.store.close()


def test_retention_config_default_and_bounds():
    assert RetentionSection().personal_data_days == 180
    with pytest.raises(ValidationError):
        RetentionSection(personal_data_days=0)
    with pytest.raises(ValidationError):
        RetentionSection(personal_data_days="forever")


def test_scrub_dedup_key():
    assert retention.scrub_dedup_key("absence/infectious_disease/subject:P-ab/cd/2026-06-01") == \
        "absence/infectious_disease/subject:-/2026-06-01"
    assert retention.scrub_dedup_key("fire/x") == "fire/x"


async def test_cli_purge_dry_run_then_purge(engine_config, tmp_path):
    state = tmp_path / "state"
    h = Harness(engine_config, state / "escalator.sqlite3",
                clock=FakeClock(datetime.now(SH) - timedelta(days=400)))
    r = await h.send(fever(OLD, h.clock.now().isoformat()))
    h.engine.resolve(r.incident_id, actor="cli:doc", via="cli")
    h.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ESCALATOR_")}
    env.update(ESCALATOR_STATE_DIR=str(state), ESCALATOR_CONFIG=str(FIXTURES / "engine.yaml"))

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "escalator.cli", *args], env=env,
                              capture_output=True, text=True, timeout=60)

    dry = run("purge", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("would purge personal data older than 180 days: events 1,")
    done = run("purge")
    assert done.returncode == 0 and done.stdout.startswith("purged personal data"), done.stderr
    h = Harness(engine_config, state / "escalator.sqlite3")
    try:
        assert OLD["name"] not in dump(h) and OLD["id"] not in dump(h)
    finally:
        h.close()
    assert "events 0," in run("purge").stdout


async def test_cluster_pupil_ids_and_timeline_subjects_are_purged(built, engine_config):
    h, ids = built
    with h.store.transaction() as tx:
        inc = tx.get_incident(ids["old"])
        newer = tx.get_incident(ids["new"])
        for incident, subject in ((inc, OLD["id"]), (newer, NEW["id"])):
            tx.c.execute("INSERT INTO case_facts VALUES (?, 'class:3-2', 'respiratory', ?, "
                         "'2026-06-01', '2026-05-31T23:50:00.000000Z')",
                         (incident.first_event_id, subject))
            tx.c.execute("INSERT INTO cluster_members VALUES (?, 'class:3-2', 'respiratory', ?, ?,"
                         " '2026-06-01', '2026-05-31T23:50:00.000000Z', "
                         "'2026-06-01T00:00:00.000000Z')",
                         (incident.id, subject, incident.first_event_id))
            tx.add_timeline(incident.id, h.clock.now(), "cluster_opened", "escalator",
                            {"count": 1, "subjects": [subject], "members": [{"date": "x"}]})
    counts = retention.purge(h.store, engine_config, h.clock.now())
    assert counts.case_facts == 1 and counts.cluster_members == 1
    after = dump(h)
    assert OLD["id"] not in after and NEW["id"] in after
    with h.store.transaction() as tx:
        [entry] = [t for t in tx.timeline(ids["old"]) if t.type == "cluster_opened"]
    assert entry.detail == {"count": 1, "members": [{"date": "x"}]}
    assert retention.purge(h.store, engine_config, h.clock.now()).changed == 0


async def test_a_notes_text_is_purged_with_the_rest_and_the_ledger_says_so(built, engine_config):
    h, ids = built
    for key in ("old", "new"):
        h.engine.add_note(ids[key], text=f"{OLD['name']}家长已接回", actor="doc", via="cli")
    retention.purge(h.store, engine_config, h.clock.now())
    with h.store.transaction() as tx:
        [old] = [t for t in tx.timeline(ids["old"]) if t.type == "note"]
        [new] = [t for t in tx.timeline(ids["new"]) if t.type == "note"]
    assert old.detail == {"via": "cli"} and new.detail["text"] == f"{OLD['name']}家长已接回"
    tables = {t.key: t for t in ledger.ledger_tables(h.store, engine_config, date(2026, 12, 15),
                                                      date(2026, 12, 15), h.clock.now())}
    notes = [row[-1] for row in tables["acknowledgements"].rows if row[2] == "备注"]
    assert notes == ["（已按保存期限删除）", f"{OLD['name']}家长已接回"]
