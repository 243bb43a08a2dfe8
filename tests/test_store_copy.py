"""``escalator store copy`` (escalator/store/copy.py): a school's SQLite database with a row in
every table — built by driving the engine on the fake clock (events, incidents, step runs,
notifications, deliveries, timelines, acknowledgements, notes) and, for the school's other rows,
through the store's interface — copied into a scratch PostgreSQL database, then read back
through the Store interface and the ledger export and compared; the daemon then runs on the
copy. The CLI as a subprocess."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from escalator.school import ledger
from escalator.store import open_store
from escalator.store.base import (
    CaseFact,
    ConsoleSession,
    EwCase,
    IncidentGroup,
    ReplyCode,
    Silence,
    Store,
)
from escalator.store.copy import CopyRefused, copy_to_postgres
from escalator.testing import Harness

from .test_api import env  # noqa: F401  (the fixture: no ESCALATOR_* from outside)
from .test_ledger import build, set_deadlines

T = datetime(2026, 11, 30, 1, 0, tzinfo=UTC)
WIDE = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 12, 31, tzinfo=UTC))


def fill_school_rows(store: Store, ids: dict[str, int]) -> None:
    """The school's rows the ledger's build does not make, through the store's interface."""
    fever, other = ids["fever"], ids["other1"]
    with store.transaction() as tx:
        tx.add_spool_file(sha256="ab" * 32, name="考勤-1130.csv", taken_at=T, events=3)
        tx.heartbeat_watched_since("zero-report", date(2026, 11, 1))
        tx.record_heartbeat("zero-report", date(2026, 11, 29), T, "ev-hb")
        tx.mark_heartbeat_missed("zero-report", date(2026, 11, 30), other)
        for n, subject in enumerate(("s-1", "s-2", "s-3")):
            fact = CaseFact(f"ev-c{n}", "class:3-2", "fever", subject, date(2026, 11, 30),
                            T + timedelta(minutes=n))
            tx.add_case_fact(fact)
            tx.add_cluster_member(fever, fact, T + timedelta(minutes=10))
        tx.add_cluster_groups(fever, "class:3-2", ["fever", "respiratory"])
        tx.ew_add_case(EwCase("ev-c0", "all", date(2026, 11, 30), "3-2", "3", None, "d" * 64, 40))
        tx.ew_record_signal("all/class:3-2", date(2026, 11, 30), fever, ["C1", "C2"], T)
        tx.ew_add_outbreak(fever, "influenza", "class:3-2", date(2026, 11, 28), T)
        tx.ew_link(fever, other, T)
        tx.insert_silence(Silence(id="s1", matchers=['place=~"1号楼.*"'], starts_at=T,
                                  ends_at=T + timedelta(days=2), created_by="cli:head",
                                  comment="1号楼消防改造", created_at=T,
                                  schedule={"weekdays": [1, 3], "nth": [], "start": "08:00",
                                            "end": "10:00"}))
        tx.hold_incident(ids["last_night"], "s1", T + timedelta(days=2))
        tx.add_group(IncidentGroup(incident_id=ids["next_day"], group_key="grp/3-2", route=0,
                                   values={"class_id": "3-2"}, update_at=T))
        tx.add_group_member(ids["next_day"], "member-1", T)
        first = tx.add_roster_override(role="duty_officer", person="t-wang", replaces="duty",
                                       starts_at=T, ends_at=T + timedelta(hours=8),
                                       created_by="cli:head", created_at=T, comment="张老师替")
        tx.add_roster_override(role="duty_officer", person="duty", replaces="t-wang",
                               starts_at=T + timedelta(days=1), ends_at=T + timedelta(days=1, hours=8),
                               created_by="cli:head", created_at=T, swap_id=first)
        tx.cancel_roster_override(first, T + timedelta(hours=1), "cli:head")
        tx.add_login_token("tok-digest", "head", T, T + timedelta(days=400))
        tx.add_session("sess-digest", ConsoleSession("head", "csrf-1", T, T + timedelta(days=400)))
        tx.beat_node("esc-a", T, 400 * 86400)  # several daemons (migration 12)
        tx.take_lease("daily-purge", "esc-a", T, 400 * 86400)
        tx.put_rate_window("main/13800000001", [T, T + timedelta(seconds=5)])
        n = tx.notifications_of(fever)[0]
        tx.put_reply_code(ReplyCode(n.recipient_kind, n.recipient_id, "a", fever, n.id,
                                    n.ack_token, T))


async def build_school(config: Any, path: Path) -> dict[str, int]:
    """A SQLite school database at ``path`` with a row in every table; returns the incidents'
    ids by name (:func:`tests.test_ledger.build`)."""
    h = Harness(config, path)
    try:
        ids = await build(h)
        set_deadlines(h, ids)
        h.engine.add_note(ids["fever"], text="已通知家长", actor="cli:doc", via="cli")
        h.engine.assign(ids["fever"], person_id="doc", actor="cli:head", via="cli")
        fill_school_rows(h.store, ids)
    finally:
        h.close()
    conn = sqlite3.connect(path)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"
                                             " AND name NOT LIKE 'sqlite_%'")]
        empty = [t for t in tables if conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] == 0]
    finally:
        conn.close()
    # a table no row reaches would be copied untested: give it a row above when one is added
    assert empty == [], f"tables without a row: {empty}"
    return ids


def snapshot(store: Store, config: Any, ids: dict[str, int]) -> dict[str, Any]:
    """Everything readable through the Store interface (and the ledger export), as plain data."""
    out: dict[str, Any] = {}
    with store.transaction() as tx:
        incidents = tx.list_incidents(("triggered", "acknowledged", "resolved"), 10_000)
        out["incidents"] = [asdict(i) for i in incidents]
        for i in incidents:
            notes = tx.notifications_of(i.id)
            out[f"incident {i.id}"] = {
                "events": tx.events_of(i.id),
                "timeline": [asdict(e) for e in tx.timeline(i.id)],
                "notifications": [asdict(n) for n in notes],
                "deliveries": [[asdict(d) for d in tx.deliveries_of(n.id)] for n in notes],
                "step": asdict(s) if (s := tx.latest_step_run(i.id)) else None,
                "members": [asdict(m) for m in tx.cluster_members(i.id)],
                "groups": tx.cluster_groups(i.id),
                "hold": tx.silence_hold(i.id),
                "group": asdict(g) if (g := tx.incident_group(i.id)) else None,
            }
            for n in notes:
                out[f"reply codes {n.recipient_kind}/{n.recipient_id}"] = [
                    asdict(r) for r in tx.reply_codes_of(n.recipient_kind, n.recipient_id)]
        out["counts"] = tx.count_incidents()
        out["next_due"] = tx.next_due()
        out["spool"] = tx.spool_file_seen("ab" * 32)
        out["heartbeats"] = [asdict(d) for d in tx.heartbeat_days_between(date(2026, 1, 1),
                                                                           date(2027, 1, 1))]
        out["facts"] = [asdict(f) for f in tx.case_facts("class:3-2", "fever", date(2026, 11, 1),
                                                         date(2026, 12, 31))]
        out["ew"] = (tx.ew_window_count("all", "class:3-2", date(2026, 11, 1), date(2026, 12, 31)),
                     tx.ew_signal("all/class:3-2", date(2026, 11, 30)),
                     tx.ew_open_outbreak("influenza", "class:3-2"), tx.ew_first_date())
        out["silences"] = [asdict(s) for s in tx.list_silences(None)]
        out["roster"] = [asdict(r) for r in tx.roster_overrides(*WIDE, cancelled=True)]
        out["session"] = tx.get_session("sess-digest", T)
        out["health"] = [asdict(c) for c in tx.channel_health(WIDE[0])]
        out["nodes"] = tx.live_nodes(T)
        out["rate"] = tx.rate_window("main/13800000001")
    out["ledger"] = [(t.key, t.rows) for t in ledger.ledger_tables(
        store, config, date(2026, 10, 1), date(2026, 12, 31), T)]
    out["report"] = ledger.monthly_report(store, config, "2026-11", T)
    return out


@pytest.fixture
async def school(engine_config, tmp_path):
    path = tmp_path / "escalator.sqlite3"
    ids = await build_school(engine_config, path)
    return path, ids


async def test_every_row_is_copied_and_reads_back_the_same_through_the_store(
        school, engine_config, pg_url):
    path, ids = school
    conn = sqlite3.connect(path)  # the last timeline entry deleted: its id is never used again
    gone = conn.execute("SELECT MAX(id) FROM timeline").fetchone()[0]
    conn.execute("DELETE FROM timeline WHERE id = ?", (gone,))
    conn.commit()
    done = copy_to_postgres(path, pg_url)
    expected = {t: conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0]
                for t in (d.table for d in done)}
    conn.close()
    assert {d.table: d.rows for d in done} == expected
    assert all(d.rows == d.copied for d in done)
    assert "sqlite_sequence" not in expected and len(done) >= 20

    source, target = open_store(path), open_store(pg_url)
    try:
        before, after = snapshot(source, engine_config, ids), snapshot(target, engine_config, ids)
        assert after["incidents"] and after["ledger"][0][1]  # not two empty stores
        for key in before:
            assert after[key] == before[key], key
        with source.transaction() as a, target.transaction() as b:  # a used token stays used
            assert a.take_login_token("tok-digest", T) == b.take_login_token("tok-digest", T) == "head"
            assert not b.take_lease("daily-purge", "esc-b", T, 60)  # the copied lease holds
        # new rows continue after the copied ids (sequences were moved past them)
        with target.transaction() as tx:
            new = tx.insert_incident(**{**{k: v for k, v in asdict(tx.get_incident(ids["fever"])).items()
                                           if k != "id"}, "dedup_key": "after-the-copy",
                                        "state": "resolved"})
            override = tx.add_roster_override(role="duty_officer", person="doc", replaces=None,
                                              starts_at=T, ends_at=T + timedelta(hours=1),
                                              created_by="t", created_at=T)
            tx.add_timeline(new, T, "note", "t", {"text": "after the copy"})
            entry = tx.timeline(new)[-1]
        assert new > max(i["id"] for i in before["incidents"])
        assert entry.id > gone
        assert override > max(r["id"] for r in before["roster"])
    finally:
        source.close()
        target.close()


async def test_a_target_with_rows_is_refused_naming_the_tables_and_left_as_it_was(
        school, pg_url):
    path, _ids = school
    copy_to_postgres(path, pg_url)
    with pytest.raises(CopyRefused, match=r"not empty \(rows in .*incidents"):
        copy_to_postgres(path, pg_url)
    target = open_store(pg_url)
    try:
        with target.transaction() as tx:
            assert len(tx.list_incidents(("triggered", "acknowledged", "resolved"), 1000)) == 9
    finally:
        target.close()


async def test_a_failed_copy_leaves_the_target_empty_and_can_be_run_again(school, pg_url):
    path, ids = school
    conn = sqlite3.connect(path)  # a row PostgreSQL refuses (an integer column holding text)
    conn.execute("UPDATE notifications SET attempts = 'many' WHERE id = 1")
    conn.commit()
    from escalator.store.base import StoreUnavailable

    with pytest.raises(StoreUnavailable, match="attempts|integer"):
        copy_to_postgres(path, pg_url)
    target = open_store(pg_url)
    try:
        with target.transaction() as tx:
            assert tx.list_incidents(("triggered", "acknowledged", "resolved"), 10) == []
    finally:
        target.close()
    conn.execute("UPDATE notifications SET attempts = 1 WHERE id = 1")
    conn.commit()
    conn.close()
    assert copy_to_postgres(path, pg_url)


def run_cli(*args: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "escalator.cli", *args, "--lang", "en"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(extra or {})})


@pytest.mark.usefixtures("env")
async def test_cli_copies_prints_the_counts_and_the_daemon_runs_on_the_copy(
        school, pg_url, tmp_path):
    from pydantic import SecretStr

    from escalator.config import load_config
    from escalator.config.settings import Settings
    from escalator.service.daemon import Daemon

    from .test_api import ADMIN, SOURCE, until, write_config

    path, ids = school
    r = run_cli("store", "copy", "--from", str(path), "--to", pg_url)
    assert r.returncode == 0, r.stderr
    assert "every count matches" in r.stdout
    lines = {line.split()[0]: line.split()[1:] for line in r.stdout.splitlines()[2:-1]}
    assert lines["incidents"] == ["9", "9"] and lines["timeline"][0] == lines["timeline"][1]
    r = run_cli("store", "copy", "--from", str(path), "--to", pg_url)
    assert r.returncode == 1 and "not empty" in r.stderr

    config = load_config(write_config(tmp_path))
    settings = Settings(state_dir=tmp_path / "state", http_listen="127.0.0.1:0",
                        api_token=SecretStr(ADMIN), database_url=pg_url)
    daemon = Daemon(config, settings)
    task = asyncio.create_task(daemon.run())
    try:
        await until(lambda: daemon.http_port or task.done(), timeout=30)
        assert not task.done(), task.exception()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.http_port}") as c:
            health = (await c.get("/healthz")).json()
            assert health["database"]["backend"] == "postgresql", health
            r = await c.post("/api/v1/events", headers={"Authorization": f"Bearer {SOURCE}"},
                             json={"kind": "incident", "category": "accident",
                                   "summary": "复制以后的第一件事", "class_id": "5-1"})
            assert r.status_code == 202, r.text
            assert r.json()["incident_id"] > max(ids.values())
            r = await c.get(f"/api/v1/incidents/{ids['fever']}",
                            headers={"Authorization": f"Bearer {ADMIN}"})
            assert r.status_code == 200 and r.json()["id"] == ids["fever"]
    finally:
        daemon.stop()
        await asyncio.wait_for(task, 30)
