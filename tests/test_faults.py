"""Fault tests against real parts: an aiosmtpd server on 127.0.0.1 that is down for a stretch,
a real HTTP SMS gateway answering 500, and a real SQLite file that cannot grow
(``PRAGMA max_page_count``). Time goes through the injected clock (:class:`FakeClock` via
:class:`~escalator.testing.Harness`); nothing sleeps to wait. ``docs/reliability.md`` names
what each test shows.

The retry tests with fake channels are in ``tests/test_delivery.py``; these check the same
pipeline with the built-in channels talking to real servers, and the store failing for real.
"""

from __future__ import annotations

import asyncio
import email
import json
import os
import random
import sqlite3
from datetime import datetime
from email import policy
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from escalator.clock import FakeClock
from escalator.config import load_config
from escalator.config.models import DeliverySection
from escalator.config.settings import Settings
from escalator.delivery.pipeline import RETRY_DEADLINE, RETRY_MAX_DELAY
from escalator.events import Event
from escalator.intake.sources import SourceContext
from escalator.intake.spool.source import SpoolSource
from escalator.plugins import collect, get_plugin_manager
from escalator.service.daemon import SEND_BATCH, Daemon, build_channels
from escalator.store.sqlite import from_db
from escalator.testing import Harness, RecordingChannel
from escalator.web.server import serve
from tests.channel_servers import Answer, HTTPRecorder, SMTPServer
from tests.conftest import FIXTURES, case

CONFIG = """
school:
  name: 测试小学
people:
  - {id: wang, name: 王老师, contacts: [{channel: mail, to: wang@school.example}]}
  - {id: li, name: 李老师, contacts: [{channel: mail, to: li@school.example}]}
  - {id: doc, name: 赵校医, contacts: [{channel: sms, to: "13800000004"}, {channel: mail, to: doc@school.example}]}
channels:
  mail:
    type: email
    options: {host: 127.0.0.1, port: SMTP_PORT, timeout: 5, from: "示例小学 <escalator@school.example>"}
  sms:
    type: sms_http
    options: {url: "SMS_URL/sms", timeout: 5}
duty_roster:
  - {person: doc}
policies:
  wang: {steps: [{targets: [person:wang], mode: inform}]}
  li: {steps: [{targets: [person:li], mode: inform}]}
  doc: {steps: [{targets: [person:doc], mode: inform}]}
routes:
  - {match: {labels: {to: wang}}, policy: wang}
  - {match: {labels: {to: li}}, policy: li}
  - {default: true, policy: doc}
"""
"""王老师 and 李老师 by email only; 赵校医 by SMS, then email (the next contact method)."""


def event(to: str, n: int) -> Event:
    return Event.model_validate({"kind": "incident", "category": "accident",
                                 "summary": f"事件 {to} {n}", "dedup_key": f"{to}/{n}",
                                 "labels": {"to": to}})


def harness(tmp_path: Path, smtp_port: int, sms_url: str, seed: int = 7) -> Harness:
    """A harness whose channels are the real built-in ``email`` and ``sms_http`` channels."""
    path = tmp_path / "escalator.yaml"
    text = CONFIG.replace("SMTP_PORT", str(smtp_port)).replace("SMS_URL", sms_url)
    path.write_text(text, encoding="utf-8")
    config = load_config(path)
    h = Harness(config, tmp_path / "escalator.sqlite3")
    h.delivery.channels = build_channels(config, collect(get_plugin_manager(entry_points=False)))
    h.delivery.rng = random.Random(seed)
    return h


def rows(h: Harness) -> list[Any]:
    """Every notification row, by id."""
    with h.store.transaction() as tx:
        ids = [r[0] for r in tx.c.execute("SELECT DISTINCT incident_id FROM notifications")]
        return sorted((n for i in ids for n in tx.notifications_of(i)), key=lambda n: n.id)


def ledger(h: Harness, notification_id: int) -> list[tuple[str, str]]:
    with h.store.transaction() as tx:
        return [(r[0], r[1]) for r in tx.c.execute(
            "SELECT outcome, detail FROM deliveries WHERE notification_id = ? ORDER BY id",
            (notification_id,))]


def last_attempt(h: Harness, notification_id: int) -> datetime:
    with h.store.transaction() as tx:
        (at,) = tx.c.execute("SELECT MAX(at) FROM deliveries WHERE notification_id = ?",
                             (notification_id,)).fetchone()
    return from_db(at)


def mail_to(server: SMTPServer) -> list[tuple[str, int]]:
    """(recipient, incident id) of every message the SMTP server accepted, in arrival order."""
    out = []
    for m in server.messages:
        parsed = email.message_from_bytes(m.data, policy=policy.default)
        out.append((m.rcpt_tos[0], int(parsed["X-Escalator-Incident"])))
    return out


# --------------------------------------------------------------------------------------------
# SMTP server down for a stretch, then back
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 7, 42])
async def test_smtp_down_then_back_delivers_every_message_in_order_per_recipient(tmp_path, seed):
    smtp = SMTPServer()  # its port is chosen, nothing listens there yet: the server is down
    with HTTPRecorder() as sms:
        h = harness(tmp_path, smtp.port, sms.url, seed)
        try:
            order = {"wang": [], "li": []}
            for n in range(4):  # several incidents to each person while the server is down
                for to in ("wang", "li"):
                    r = h.engine.ingest(event(to, n), source="test")
                    order[to].append(r.incident_id)
                    await h.settle()
                    h.clock.advance(1)
            down = 120.0  # two minutes of outage: every row has failed at least twice
            await h.advance(down)
            before = rows(h)
            assert len(before) == 8 and {n.status for n in before} == {"pending"}
            heads = {n.id for n in before if n.incident_id in (order["wang"][0], order["li"][0])}
            for n in before:  # every failed attempt is a ledger row naming the refusal
                attempts = ledger(h, n.id)
                assert len(attempts) == n.attempts
                assert {o for o, _ in attempts} <= {"failed_retryable"}
                assert all("Connect" in d for _, d in attempts), attempts
                if n.id in heads:  # the first message to each person is retried...
                    assert n.attempts >= 2
                else:  # ...the later ones wait behind it, in order, without an attempt
                    assert n.attempts == 0 and n.due_at >= h.clock.now()

            with smtp:  # the server is back
                await h.advance(RETRY_MAX_DELAY * 1.2 + 1)  # the longest wait before a retry
                after = rows(h)
                assert {n.status for n in after} == {"delivered"}  # none lost, none failed over
                assert len(after) == 8 and len(smtp.messages) == 8  # each exactly once
                got = mail_to(smtp)
                for to in ("wang", "li"):
                    incidents = [i for rcpt, i in got if rcpt == f"{to}@school.example"]
                    assert incidents == order[to], (to, got)
                for n in after:
                    outcomes = [o for o, _ in ledger(h, n.id)]
                    assert outcomes == ["failed_retryable"] * (n.attempts - 1) + ["delivered"]
                assert sms.requests == []  # email people were never failed over
        finally:
            h.close()


# --------------------------------------------------------------------------------------------
# SMS gateway answering 500
# --------------------------------------------------------------------------------------------


def failing(status: int = 500) -> Answer:
    return Answer(status, {"error": "gateway busy"})


async def test_sms_gateway_500_then_200_is_delivered_on_retry(tmp_path):
    with SMTPServer() as smtp, HTTPRecorder() as sms:
        sms.answer(failing(), failing(), failing())  # then the default: 200
        h = harness(tmp_path, smtp.port, sms.url)
        try:
            inc = h.engine.ingest(event("doc", 1), source="test").incident_id
            await h.settle()
            await h.advance(RETRY_MAX_DELAY)
            (n,) = rows(h)
            assert (n.incident_id, n.channel, n.status, n.attempts) == (inc, "sms", "delivered", 4)
            assert len(sms.requests) == 4  # every attempt reached the gateway, one at a time
            assert {r.json()["to"] for r in sms.requests} == {"13800000004"}
            outcomes = ledger(h, n.id)
            assert [o for o, _ in outcomes] == ["failed_retryable"] * 3 + ["delivered"]
            assert all(d.startswith("HTTP 500") for _, d in outcomes[:3])
            assert smtp.messages == []  # no failover
            assert "failover" not in h.timeline(inc)
        finally:
            h.close()


async def test_sms_gateway_500_past_the_deadline_fails_over_to_email(tmp_path):
    with SMTPServer() as smtp, HTTPRecorder(default=failing()) as sms:
        h = harness(tmp_path, smtp.port, sms.url)
        try:
            t0 = h.clock.now()
            first = h.engine.ingest(event("doc", 1), source="test").incident_id
            await h.settle()
            h.clock.advance(30)
            second = h.engine.ingest(event("doc", 2), source="test").incident_id  # same person
            await h.settle()
            await h.advance(RETRY_DEADLINE - 60)
            assert smtp.messages == []  # still retrying SMS within the deadline
            await h.advance(60 + RETRY_MAX_DELAY * 1.2 + 1)
            by_incident = {i: [n for n in rows(h) if n.incident_id == i] for i in (first, second)}
            for inc, (sms_row, mail_row) in by_incident.items():
                assert (sms_row.channel, sms_row.status) == ("sms", "failed")
                assert (mail_row.channel, mail_row.status, mail_row.contact_index) == ("mail", "delivered", 1)
                assert mail_row.ack_token == sms_row.ack_token + ".1"
                tl = h.timeline(inc)
                assert tl.index("failover") < tl.index("notified")
                assert ledger(h, mail_row.id) == [("delivered", ledger(h, mail_row.id)[0][1])]
            head = by_incident[first][0]
            assert head.attempts >= 5 and len(ledger(h, head.id)) == head.attempts
            assert {o for o, _ in ledger(h, head.id)} == {"failed_retryable"}
            assert (last_attempt(h, head.id) - t0).total_seconds() >= RETRY_DEADLINE  # not before it
            # the second message waited behind the first and failed over with it, not one
            # whole deadline later
            follower = by_incident[second][0]
            assert (last_attempt(h, follower.id) - last_attempt(h, head.id)).total_seconds() <= RETRY_MAX_DELAY * 1.2
            assert 1 <= follower.attempts <= 2, follower
            assert [r for r, _ in mail_to(smtp)] == ["doc@school.example"] * 2
            assert [i for _, i in mail_to(smtp)] == [first, second]  # in order, by email too
            assert len(sms.requests) == head.attempts + follower.attempts
        finally:
            h.close()


# --------------------------------------------------------------------------------------------
# the store cannot write: a real SQLite file at its PRAGMA max_page_count
# --------------------------------------------------------------------------------------------

ADMIN = "adm-3c9e51d07b2a4f68"


def sample(n: int) -> dict[str, Any]:
    """The fever sample with a dedup key of fixed width (so every body has the same size)."""
    return {**case("events/fever_single.json"), "dedup_key": f"fill-{n:06d}"}


def query(db: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@pytest.fixture
async def full(tmp_path, monkeypatch):
    """A daemon on a fake clock whose HTTP API listens on 127.0.0.1 and whose spool folder is
    read by a spool source, with a database that cannot grow past its size now
    (``set_limit``); delivery to :class:`RecordingChannel`; steps driven by the test."""
    for key in [k for k in os.environ if k.startswith("ESCALATOR_")]:
        monkeypatch.delenv(key)
    config = load_config(FIXTURES / "engine.yaml")
    # one message per event and step timers from the fire, as the test counts messages and
    # fills the file to its last page (digests and the step-wait cap: tests/test_delivery.py)
    config = config.model_copy(update={"delivery": DeliverySection(digest={"enabled": False},
                                                                   step_wait_cap=0)})
    for chain in config.policies.values():  # walks end (no reminders): "every walk to its end"
        chain.remind_every = None
    settings = Settings(state_dir=tmp_path / "state", spool_dir=tmp_path / "spool",
                        http_listen="127.0.0.1:0", api_token=SecretStr(ADMIN))
    daemon = Daemon(config, settings, clock=FakeClock(Harness.START))
    channel = RecordingChannel()
    daemon.delivery.channels = {cid: channel for cid in config.channels}
    server = asyncio.create_task(serve(daemon))
    deadline = asyncio.get_running_loop().time() + 15
    while daemon.http_port is None and not server.done():  # only for the server to start
        assert asyncio.get_running_loop().time() < deadline, "server did not start"
        await asyncio.sleep(0.005)
    ctx = SourceContext(settings=settings, config=config, clock=daemon.clock,
                        ingest=daemon.ingest, ingest_file=daemon.ingest_file)
    spool = SpoolSource("spool", {"settle": 0, "inotify": False}, ctx)
    conn = daemon.store.inner._conn

    def set_limit(pages: int | None) -> None:
        """Cap the file at ``pages`` pages (None: its size now); raise it again to recover."""
        pages = pages or conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.http_port}", timeout=30,
                                 headers={"Authorization": f"Bearer {ADMIN}"}) as client:
        yield SimpleNamespace(daemon=daemon, client=client, spool=spool, channel=channel,
                              set_limit=set_limit, db=settings.database,
                              incoming=tmp_path / "spool" / "incoming", root=tmp_path / "spool")
    server.cancel()
    await asyncio.gather(server, return_exceptions=True)
    daemon.store.close()


def whole(db: Path) -> None:
    """Nothing half-written: the file checks out, and every stored event that opened or joined
    an incident has the incident, its step run and its notification rows."""
    assert query(db, "PRAGMA integrity_check") == [("ok",)]
    assert query(db, "PRAGMA foreign_key_check") == []
    assert query(db, "SELECT COUNT(*) FROM events e LEFT JOIN incidents i ON i.id = e.incident_id"
                     " WHERE e.incident_id IS NOT NULL AND i.id IS NULL") == [(0,)]
    assert query(db, "SELECT COUNT(*) FROM incidents i WHERE NOT EXISTS (SELECT 1 FROM step_runs s"
                     " WHERE s.incident_id = i.id) OR NOT EXISTS (SELECT 1 FROM notifications n"
                     " WHERE n.incident_id = i.id) OR NOT EXISTS (SELECT 1 FROM events e"
                     " WHERE e.id = i.first_event_id)") == [(0,)]


async def test_store_full_refuses_inputs_with_503_keeps_the_spool_file_and_recovers(full):
    c, daemon = full.client, full.daemon
    accepted: list[str] = []
    for n in range(40):  # accepted before the disk filled; their messages are not sent yet
        r = await c.post("/api/v1/events", json={**sample(n), "dedup_key": f"early-{n:06d}"})
        assert r.status_code == 202, r.text
        accepted.append(r.json()["event_id"])
    full.set_limit(None)
    refused = None
    for n in range(2000):  # the store fills up under load
        r = await c.post("/api/v1/events", json=sample(n))
        if r.status_code != 202:
            refused = (n, r)
            break
        accepted.append(r.json()["event_id"])
    assert refused is not None, "the store never filled up"
    n, r = refused
    # a clear refusal, not a 500 traceback
    assert r.status_code == 503, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert "full" in body["detail"] and "nothing was stored" in body["detail"], body
    assert body["errors"][0]["field"] == "(store)"
    assert int(r.headers["retry-after"]) > 0
    again = await c.post("/api/v1/events", json=sample(n))  # a client's retry: refused again
    assert again.status_code == 503
    # nothing half-written: every 202 is stored, the refused ones are not, the file is whole
    stored = {e for (e,) in query(full.db, "SELECT id FROM events")}
    assert stored == set(accepted)
    whole(full.db)

    # a spool file that arrives now stays in incoming/ to be retried; the log says why
    (full.incoming / "fever.json").write_text(json.dumps(sample(999_999), ensure_ascii=False),
                                             encoding="utf-8")
    with capture_logs() as logs:
        assert await full.spool.scan_once() == 0
    assert [p.name for p in full.incoming.iterdir()] == ["fever.json"]
    assert list((full.root / "failed").iterdir()) == []
    deferred = [e for e in logs if e["event"] == "spool_file_deferred"]
    assert deferred and "full" in deferred[0]["reason"], logs
    # the engine loop: the messages of accepted events are sent until recording one fails;
    # then each pass fails at once (logged, Daemon._loop goes on) and sends nothing more
    with capture_logs() as logs:
        for _ in range(3):
            await step_quietly(daemon)
    assert "database or disk is full" in daemon.last_error
    assert [e for e in logs if e["event"] == "notification_delivered"]  # some went out first
    statuses = dict(query(full.db, "SELECT status, COUNT(*) FROM notifications GROUP BY status"))
    sent = [m.notification_id for m in full.channel.sent]
    assert len(sent) == len(set(sent)) < len(accepted)  # no more sends while the store is full
    # the ones sent whose ledger rows could not be written (one batch of sends, recorded in
    # one transaction) stay "sending" (kept in memory to be recorded, never re-sent
    # meanwhile); the rows claimed but not sent are pending again
    assert 1 <= statuses.get("sending", 0) <= SEND_BATCH, statuses
    assert len(sent) == statuses["delivered"] + statuses["sending"], statuses
    assert statuses["pending"] == len(accepted) - len(sent)
    whole(full.db)
    daemon.clock.advance(31)  # no delivery pass has got through for 30 s: health names the lane
    r = await c.get("/healthz")
    assert r.status_code == 503 and set(r.json()["failing"]) == {"delivery"}, r.text

    # writes succeed again: the same inputs are accepted and delivery goes on
    full.set_limit(1_000_000)
    r = await c.post("/api/v1/events", json=sample(n))
    assert r.status_code == 202, r.text
    assert await full.spool.scan_once() == 1  # its retry delay (30 s) has passed
    assert list(full.incoming.iterdir()) == []
    assert [p.name for p in (full.root / "processed").glob("*/*")] == ["fever.json"]
    total = len(accepted) + 2
    assert query(full.db, "SELECT COUNT(*) FROM events") == [(total,)]
    assert query(full.db, "SELECT COUNT(*) FROM spool_files") == [(1,)]
    for _ in range(100):  # every walk to its end, sending each step's messages
        await daemon.step()
        if (due := daemon.engine.next_due()) is None:
            break
        daemon.clock.set(max(due, daemon.clock.now()))
    statuses = dict(query(full.db, "SELECT status, COUNT(*) FROM notifications GROUP BY status"))
    assert set(statuses) == {"delivered"}, statuses  # none left sending or pending
    sent = [m.notification_id for m in full.channel.sent]
    assert len(sent) == len(set(sent)) == statuses["delivered"]  # each exactly once
    recorded = query(full.db, "SELECT notification_id FROM deliveries WHERE outcome = 'delivered'"
                              " ORDER BY notification_id")
    assert [i for (i,) in recorded] == sorted(sent)  # and each sent one is in the ledger
    assert (await c.get("/healthz")).status_code == 200
    whole(full.db)


async def step_quietly(daemon: Daemon) -> None:
    """One pass of the engine loop as :meth:`Daemon._loop` runs it: an error is logged, not
    raised."""
    try:
        await daemon.step()
    except Exception as e:  # noqa: BLE001 - what the loop does
        daemon.last_error = f"engine: {type(e).__name__}: {e}"
