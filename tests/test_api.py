"""The HTTP API: a real Daemon (fake clock for the engine, real SQLite file) serving on
127.0.0.1 in the test's event loop, talked to over a real socket with httpx."""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import structlog
from pydantic import SecretStr

from escalator.clock import FakeClock
from escalator.config import ConfigError, load_config
from escalator.config.settings import Settings
from escalator.delivery.channels import DeliveryResult, DeliveryStatus
from escalator.service.daemon import Daemon
from escalator.testing import Harness
from escalator.web.app import create_app
from escalator.web.auth import Credentials
from escalator.web.limits import BodyLimit
from escalator.web.server import parse_listen

from .conftest import CASES, FIXTURES, case

ADMIN = "adm-8f2c1e0b9d7a4c65"  # ESCALATOR_API_TOKEN
OPS = "ops-41b7d2f09a8e6c33"  # api.tokens.ops (admin, from a file)
SOURCE = "src-5d9e3a7c1f0b2e84"  # api.tokens.morning-check (a source token)
ROUTING_KEY = case("compat/pagerduty_v2_trigger.json")["routing_key"]

API_YAML = """
api:
  tokens:
    morning-check: {token_env: TEST_ESCALATOR_SOURCE_TOKEN}
    ops: {token_file: ops.token, admin: true}
  pagerduty:
    gate: {routing_key_env: TEST_ESCALATOR_PD_KEY}
"""


async def until(predicate, timeout: float = 10.0) -> None:
    """Poll ``predicate`` with short awaits (only for a real server to start)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


def write_config(tmp_path: Path, extra: str = API_YAML) -> Path:
    path = tmp_path / "escalator.yaml"
    path.write_text((FIXTURES / "engine.yaml").read_text(encoding="utf-8") + extra, encoding="utf-8")
    (tmp_path / "ops.token").write_text(OPS + "\n", encoding="utf-8")
    return path


@pytest.fixture
def env(monkeypatch):
    for key in list(os.environ):
        if key.startswith("ESCALATOR_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("TEST_ESCALATOR_SOURCE_TOKEN", SOURCE)
    monkeypatch.setenv("TEST_ESCALATOR_PD_KEY", ROUTING_KEY)
    return monkeypatch


@pytest.fixture
async def api(tmp_path, env):
    config = load_config(write_config(tmp_path))
    settings = Settings(state_dir=tmp_path / "state", http_listen="127.0.0.1:0",
                        api_token=SecretStr(ADMIN))
    clock = FakeClock(Harness.START)
    daemon = Daemon(config, settings, clock=clock)
    task = asyncio.create_task(daemon.run())
    await until(lambda: getattr(daemon, "http_port", None) or task.done())
    assert not task.done(), task.exception()
    base = f"http://127.0.0.1:{daemon.http_port}"
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        yield SimpleNamespace(daemon=daemon, client=client, clock=clock, base=base)
    daemon.stop()
    await asyncio.wait_for(task, 30)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def post_case(client: httpx.AsyncClient, name: str, token: str = SOURCE) -> httpx.Response:
    return await client.post("/api/v1/events", content=(CASES / name).read_bytes(),
                             headers={**bearer(token), "Content-Type": "application/json"})


async def incident(client: httpx.AsyncClient, incident_id: int) -> dict:
    r = await client.get(f"/api/v1/incidents/{incident_id}", headers=bearer(ADMIN))
    assert r.status_code == 200, r.text
    return r.json()


# ------------------------------------------------------------------ events


async def test_every_sample_event_is_accepted_with_the_right_status(api):
    c = api.client
    got = {}
    for name in ["fever_single", "fever_cluster_day1_1", "fever_cluster_day1_2",
                 "fever_cluster_day1_3", "fire_alarm", "food_safety", "bullying", "zero_report",
                 "duplicate_a", "duplicate_b"]:
        r = await post_case(c, f"events/{name}.json")
        assert r.status_code == 202, (name, r.text)
        got[name] = r.json()
        assert set(got[name]) == {"event_id", "incident_id", "status", "dedup_key", "warnings"}
    created = ["fever_single", "fever_cluster_day1_1", "fever_cluster_day1_3", "fire_alarm",
               "food_safety", "bullying", "duplicate_a"]
    assert {n: got[n]["status"] for n in created} == dict.fromkeys(created, "created")
    # one pupil counts once: S-2023-0142 of fever_single is the second case of the cluster
    assert got["fever_cluster_day1_2"]["status"] == "deduplicated"
    assert got["fever_cluster_day1_2"]["incident_id"] == got["fever_single"]["incident_id"]
    # the same fire alarm twice: one incident, the second counted
    assert got["duplicate_b"]["status"] == "deduplicated"
    assert got["duplicate_b"]["incident_id"] == got["duplicate_a"]["incident_id"]
    assert got["duplicate_b"]["dedup_key"] == "fire-gw/main-1F/detector-7"
    # the zero report is logged, no incident
    assert got["zero_report"] == {**got["zero_report"], "status": "logged", "incident_id": None}
    assert (await incident(c, got["duplicate_a"]["incident_id"]))["event_count"] == 2
    fever = await incident(c, got["fever_single"]["incident_id"])
    assert fever["category"] == "infectious_disease" and fever["event_count"] == 2
    triggered = [t for t in fever["timeline"] if t["type"] == "triggered"]
    assert triggered[0]["actor"] == "morning-check"  # the token's name is the source
    assert fever["notifications"][0]["recipient_name"] == "王老师"
    assert all("ack_token" not in n for n in fever["notifications"])
    listing = (await c.get("/api/v1/incidents", headers=bearer(ADMIN))).json()
    assert len(listing) == len(created)


async def test_a_list_of_events_gets_a_list_of_answers_in_one_transaction(api):
    events = [case("events/bullying.json"), case("events/food_safety.json")]
    r = await api.client.post("/api/v1/events", json=events, headers=bearer(SOURCE))
    assert r.status_code == 202
    assert [x["status"] for x in r.json()] == ["created", "created"]
    bad = [case("events/fire_alarm.json"), {**case("events/bullying.json"), "severity": "urgent"}]
    r = await api.client.post("/api/v1/events", json=bad, headers=bearer(SOURCE))
    assert r.status_code == 422
    assert [e["field"] for e in r.json()["errors"]] == ["[1].severity"]
    listing = (await api.client.get("/api/v1/incidents", headers=bearer(ADMIN))).json()
    assert "fire" not in [i["category"] for i in listing]  # all or nothing


@pytest.mark.parametrize("name, status, fields, words", [
    ("bad/wrong_types.json", 422, {"severity", "occurred_at"}, []),
    ("bad/unknown_kind.json", 422, {"kind"},
     ["earthquake_drill", "incident", "suspected_case", "absence", "heartbeat"]),
    ("bad/huge_summary.json", 422, {"summary"}, ["500"]),
    ("bad/truncated.json", 400, {"(body)"}, ["JSON"]),
    ("bad/not_json.txt", 400, {"(body)"}, ["JSON"]),
])
async def test_every_bad_sample_is_rejected_naming_its_fields(api, name, status, fields, words):
    r = await post_case(api.client, name)
    assert r.status_code == status, r.text
    body = r.json()
    assert {e["field"] for e in body["errors"]} == fields
    text = json.dumps(body, ensure_ascii=False)
    assert all(w in text for w in words), text
    assert r.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize("content", [
    b"", b"   ", b"\xff\xfe{", b"[]", b"42", b"NaN", b'{"a": Infinity}', b"[" * 50_000,
    b'{"kind": "incident", "category": "other", "summary": "\\ud800"}', b"1" * 5000,
])
async def test_malformed_bodies_are_4xx_never_5xx(api, content):
    r = await api.client.post("/api/v1/events", content=content, headers=bearer(SOURCE))
    assert 400 <= r.status_code < 500, (content[:20], r.status_code, r.text)
    assert r.json()["errors"]


async def test_a_time_out_of_range_is_a_422_naming_occurred_at(api):
    ev = {**case("events/bullying.json"), "occurred_at": "0001-01-01T00:00:00+01:00"}
    r = await api.client.post("/api/v1/events", json=ev, headers=bearer(SOURCE))
    assert r.status_code == 422
    assert [e["field"] for e in r.json()["errors"]] == ["occurred_at"]


# ------------------------------------------------------------------ auth


async def test_credentials_401_403_and_what_each_token_may_do(api):
    c = api.client
    ev = case("events/bullying.json")
    r = await c.post("/api/v1/events", json=ev)
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    r = await c.post("/api/v1/events", json=ev, headers=bearer("not-a-token"))
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    r = await c.post("/api/v1/events", json=ev, headers={"Authorization": f"Basic {SOURCE}"})
    assert r.status_code == 401
    r = await c.post("/api/v1/events", json=ev, headers=bearer(SOURCE))
    assert r.status_code == 202
    iid = r.json()["incident_id"]
    for method, path in [("GET", "/api/v1/incidents"), ("GET", f"/api/v1/incidents/{iid}"),
                         ("POST", f"/api/v1/incidents/{iid}/acknowledge"),
                         ("POST", f"/api/v1/incidents/{iid}/resolve")]:
        r = await c.request(method, path, headers=bearer(SOURCE))
        assert r.status_code == 403, (path, r.text)
        assert (await c.request(method, path)).status_code == 401
    assert (await incident(c, iid))["state"] == "triggered"
    r = await c.get("/api/v1/incidents", headers=bearer(OPS))  # an admin token from the config
    assert r.status_code == 200 and [i["id"] for i in r.json()] == [iid]
    r = await c.post("/api/v1/events", json=case("events/fire_alarm.json"), headers=bearer(OPS))
    assert r.status_code == 202  # administrators may submit too
    for path in ("/healthz", "/metrics", "/docs", "/openapi.json"):
        assert (await c.get(path)).status_code == 200, path


async def test_tokens_are_never_logged(api):
    with structlog.testing.capture_logs() as logs:
        for token in (SOURCE, ADMIN, "wrong-" + SOURCE):
            await api.client.post("/api/v1/events", json=case("events/bullying.json"),
                                  headers=bearer(token))
            await api.client.get("/api/v1/incidents", headers=bearer(token))
        await api.client.post("/v2/enqueue", json={**case("compat/pagerduty_v2_trigger.json"),
                                                   "routing_key": "wrong-" + ROUTING_KEY})
        await api.client.post("/v2/enqueue", json=case("compat/pagerduty_v2_trigger.json"))
    text = repr(logs)
    assert any(e["event"] == "api_auth_failed" for e in logs)
    assert any(e["event"] == "event_ingested" for e in logs)
    for secret in (SOURCE, ADMIN, OPS, ROUTING_KEY):
        assert secret not in text


def test_credentials_name_a_missing_secret_but_never_show_one(tmp_path, env):
    env.delenv("TEST_ESCALATOR_SOURCE_TOKEN")
    config = load_config(write_config(tmp_path))
    with pytest.raises(ValueError, match="api.tokens.morning-check.*TEST_ESCALATOR_SOURCE_TOKEN"):
        Credentials.load(config, Settings(api_token=SecretStr(ADMIN)))
    env.setenv("TEST_ESCALATOR_SOURCE_TOKEN", "")
    with pytest.raises(ValueError, match="morning-check: the token is empty") as e:
        Credentials.load(config, Settings())
    assert OPS not in str(e.value)
    creds = Credentials.load(load_config(write_config(tmp_path, "")), Settings())
    assert creds.bearer("") is None and creds.bearer("anything") is None  # no token: nobody


def test_api_section_needs_exactly_one_secret_source(tmp_path):
    path = write_config(tmp_path, "api:\n  tokens:\n    x: {token_env: A, token_file: b}\n"
                                  "  pagerduty:\n    y: {}\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    text = str(e.value)
    assert "api.tokens.x" in text and "api.pagerduty.y" in text and "exactly one" in text


def test_listen_addresses():
    assert parse_listen("127.0.0.1:8765") == ("127.0.0.1", 8765)
    assert parse_listen("[::1]:0") == ("::1", 0)
    for bad in ("8765", "localhost", "host:http", ":80", "1.2.3.4:70000"):
        with pytest.raises(ValueError, match="host:port"):
            parse_listen(bad)


# ------------------------------------------------------------------ limits


async def test_bodies_over_the_limit_are_413_by_length_and_when_chunked(api):
    limit = api.daemon.config.api.max_body_bytes
    assert limit == 1 << 20
    ev = json.dumps(case("events/bullying.json")).encode()
    big = ev[:-1] + b', "details": "' + b"x" * limit + b'"}'
    r = await api.client.post("/api/v1/events", content=big, headers=bearer(SOURCE))
    assert r.status_code == 413 and "1048576" in r.json()["detail"]

    async def chunks():
        for i in range(0, len(big), 65536):
            yield big[i:i + 65536]

    r = await api.client.post("/api/v1/events", content=chunks(), headers=bearer(SOURCE))
    assert r.status_code == 413 and "1048576" in r.json()["detail"]
    r = await api.client.post("/v2/enqueue", content=big)
    assert r.status_code == 413
    # and the server goes on
    r = await api.client.post("/api/v1/events", content=ev, headers=bearer(SOURCE))
    assert r.status_code == 202


async def _through_body_limit(messages: list[dict], headers: list[tuple[bytes, bytes]]) -> tuple[
        list[dict], int]:
    """Run an app that reads the whole body behind :class:`BodyLimit` (limit 1024) with these
    request ``messages``; a receive() after them waits forever, as uvicorn's does until the
    client goes away. Returns what was sent and how many receive() calls were made."""
    queue = list(messages)
    calls = 0

    async def receive() -> dict:
        nonlocal calls
        calls += 1
        if queue:
            return queue.pop(0)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def app(scope, receive, send) -> None:
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"read"})

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
    await asyncio.wait_for(BodyLimit(app, lambda: 1024)(scope, receive, send), 5)
    return sent, calls


async def test_body_limit_never_waits_for_more_than_the_client_sends():
    # the part that passes the limit is the last one: nothing to drain, answer at once
    sent, calls = await _through_body_limit(
        [{"type": "http.request", "body": b"x" * 2000, "more_body": False}], [])
    assert sent[0]["status"] == 413 and calls == 1
    # more parts follow: read (and dropped) up to 4 × the limit, then 413
    sent, calls = await _through_body_limit(
        [{"type": "http.request", "body": b"x" * 600, "more_body": True} for _ in range(3)]
        + [{"type": "http.request", "body": b"", "more_body": False}], [])
    assert sent[0]["status"] == 413 and calls == 4
    # Content-Length over the limit, client waiting for 100 Continue: nothing is read
    sent, calls = await _through_body_limit([], [(b"content-length", b"2000"), (b"expect", b"100-continue")])
    assert sent[0]["status"] == 413 and calls == 0
    # far over the limit: answered at once, nothing read
    sent, calls = await _through_body_limit([], [(b"content-length", b"999999")])
    assert sent[0]["status"] == 413 and calls == 0
    sent, calls = await _through_body_limit([], [(b"content-length", b"12x")])
    assert sent[0]["status"] == 400
    sent, calls = await _through_body_limit(
        [{"type": "http.request", "body": b"x" * 1000, "more_body": False}], [(b"content-length", b"1000")])
    assert sent[0]["status"] == 200 and sent[1]["body"] == b"read"


async def test_a_chunked_body_within_the_limit_is_read_whole(api):
    body = json.dumps(case("events/food_safety.json"), ensure_ascii=False).encode()

    async def chunks():
        for i in range(0, len(body), 7):
            yield body[i:i + 7]

    r = await api.client.post("/api/v1/events", content=chunks(), headers=bearer(SOURCE))
    assert r.status_code == 202 and r.json()["status"] == "created"


# ------------------------------------------------------------------ incidents


async def test_acknowledge_and_resolve_through_the_api(api):
    c = api.client
    iid = (await post_case(c, "events/bullying.json")).json()["incident_id"]  # escalate chain
    r = await c.post(f"/api/v1/incidents/{iid}/acknowledge", headers=bearer(ADMIN))
    assert r.status_code == 200
    assert r.json() == {"incident_id": iid, "outcome": "acknowledged", "state": "acknowledged"}
    r = await c.post(f"/api/v1/incidents/{iid}/acknowledge", headers=bearer(OPS))
    assert r.json()["outcome"] == "already_acknowledged"
    r = await c.post(f"/api/v1/incidents/{iid}/resolve", headers=bearer(OPS))
    assert r.json() == {"incident_id": iid, "outcome": "resolved", "state": "resolved"}
    detail = await incident(c, iid)
    assert detail["acknowledged_by"] == "admin" and detail["resolved_by"] == "ops"
    assert [t["type"] for t in detail["timeline"]][-2:] == ["acknowledged", "resolved"]
    assert (await c.get("/api/v1/incidents", headers=bearer(ADMIN))).json() == []
    r = await c.get("/api/v1/incidents", params={"state": "resolved"}, headers=bearer(ADMIN))
    assert [i["id"] for i in r.json()] == [iid]
    r = await c.get("/api/v1/incidents", params={"state": "all", "limit": 1}, headers=bearer(ADMIN))
    assert len(r.json()) == 1
    for path in ("/api/v1/incidents/999", "/api/v1/incidents/999/acknowledge",
                 "/api/v1/incidents/999/resolve"):
        r = await c.request("GET" if path.endswith("999") else "POST", path, headers=bearer(ADMIN))
        assert r.status_code == 404 and "no incident 999" in r.json()["detail"]
    r = await c.get("/api/v1/incidents", params={"state": "bogus"}, headers=bearer(ADMIN))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "query.state"
    r = await c.get(f"/api/v1/incidents/{2**70}", headers=bearer(ADMIN))
    assert r.status_code == 422


async def submit_link(c, token: str, **fields: str):
    """Open a message's link and submit its form (with the page's CSRF value and cookie)."""
    shown = await c.get(f"/ack/{token}")
    found = re.search(r'name="csrf" value="([^"]+)"', shown.text)
    return await c.post(f"/ack/{token}", data={"csrf": found[1] if found else "", **fields})


async def test_acknowledge_link_get_shows_and_post_acknowledges(api):
    c = api.client
    iid = (await post_case(c, "events/bullying.json")).json()["incident_id"]
    with api.daemon.store.transaction() as tx:
        [n] = tx.notifications_of(iid)
    assert n.recipient_id == "t-li"  # the class teacher of 5-1

    def sent() -> bool:  # the delivery lane sends it meanwhile
        with api.daemon.store.transaction() as tx:
            return tx.get_notification(n.id).status == "delivered"

    await until(sent)
    before = await incident(c, iid)
    for _ in range(2):  # a chat app prefetching the link changes nothing
        page = await c.get(f"/ack/{n.ack_token}")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert f"#{iid}" in page.text and "学生欺凌" in page.text and "bullying" in page.text
        assert 'method="post"' in page.text and "Acknowledge" in page.text
        assert "课间" not in page.text  # the free-text summary is not shown on the page
        assert page.headers["referrer-policy"] == "no-referrer"
    after = await incident(c, iid)
    assert after["state"] == "triggered" and after["timeline"] == before["timeline"]
    assert (await c.post(f"/ack/{n.ack_token}")).status_code == 403  # no form of this page
    assert (await incident(c, iid))["state"] == "triggered"
    done = await submit_link(c, n.ack_token)
    assert done.status_code == 200 and "已确认" in done.text and "Acknowledged" in done.text
    detail = await incident(c, iid)
    assert detail["state"] == "acknowledged" and detail["acknowledged_by"] == "t-li"
    assert detail["timeline"][-1]["detail"]["via"] == "link"
    again = await c.get(f"/ack/{n.ack_token}")
    assert "此事件已由李老师于" in again.text and 'method="post"' not in again.text
    assert (await submit_link(c, n.ack_token)).text.count("was acknowledged by 李老师") == 1
    for token in ("nope", "x" * 500):
        assert (await c.get(f"/ack/{token}")).status_code == 404
        assert (await c.post(f"/ack/{token}")).status_code == 404


def test_acknowledge_pages_escape_what_they_show():
    from escalator.web.pages import page
    box = {"id": 7, "drill": False, "state": "triggered", "state_zh": "待处理", "severity": "high",
           "severity_zh": "紧急", "category_zh": "<i>x</i>", "category_en": "a&b", "kind_zh": "k"}
    html = page("ack.html", incident=box, recipient='<script>alert("x")</script>', level=1,
                outcome=None, token='"><img src=x>', button=("确认收到并处理", "Acknowledge"),
                form="decide", csrf="c", next_names="<b>区疾控</b>", error=None).body.decode()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<i>x</i>" not in html and "a&amp;b" in html
    assert '"><img' not in html and 'action="&#34;&gt;&lt;img src=x&gt;"' in html
    assert "<b>区疾控</b>" not in html and "&lt;b&gt;区疾控" in html


async def test_acknowledge_link_on_a_report_step_confirms_the_level(api):
    c = api.client
    iid = (await post_case(c, "events/fever_single.json")).json()["incident_id"]
    with api.daemon.store.transaction() as tx:
        [n] = tx.notifications_of(iid)
    r = await submit_link(c, n.ack_token)
    assert r.status_code == 200 and "已上报，已通知第2级" in r.text
    detail = await incident(c, iid)
    assert detail["state"] == "triggered" and detail["step"] == 2
    assert "step_confirmed" in [t["type"] for t in detail["timeline"]]


# ------------------------------------------------------------------ heartbeats


async def test_heartbeat_ping_records_a_logged_event(api):
    for method in ("GET", "POST"):
        r = await api.client.request(method, "/api/v1/heartbeats/morning-check-app/ping",
                                     headers=bearer(SOURCE))
        assert r.status_code == 202, r.text
        assert r.json()["status"] == "logged" and r.json()["monitor"] == "morning-check-app"
        with api.daemon.store.transaction() as tx:
            ev = tx.get_event(r.json()["event_id"])
        assert ev["kind"] == "heartbeat" and ev["body"]["labels"] == {"monitor": "morning-check-app"}
        assert ev["source"] == "morning-check"
    r = await api.client.get("/api/v1/heartbeats/bad name!/ping", headers=bearer(SOURCE))
    assert r.status_code == 422
    assert (await api.client.get("/api/v1/heartbeats/x/ping")).status_code == 401


# ------------------------------------------------------------------ compat


async def test_pagerduty_trigger_then_resolve_closes_the_incident(api):
    c = api.client
    api.clock.advance(24 * 3600)  # after the gateway's timestamp (2026-11-30 21:47 local)
    r = await c.post("/v2/enqueue", content=(CASES / "compat/pagerduty_v2_trigger.json").read_bytes())
    assert r.status_code == 202
    assert r.json() == {"status": "success", "message": "Event processed",
                        "dedup_key": "access-gate/north/forced-open"}
    [inc] = (await c.get("/api/v1/incidents", headers=bearer(ADMIN))).json()
    assert inc["severity"] == "critical" and inc["category"] == "other"
    assert inc["summary"] == "北门门禁被强行打开"
    assert inc["dedup_key"] == "pagerduty/gate/access-gate/north/forced-open"
    with api.daemon.store.transaction() as tx:
        [ev] = tx.events_of(inc["id"])
    assert ev["source"] == "gate"
    assert ev["body"]["labels"] == {"camera": "N-02", "duration_s": "35", "source": "access-gate-north",
                                    "component": "gate", "group": "campus-security",
                                    "class": "intrusion"}
    again = await c.post("/v2/enqueue", json=case("compat/pagerduty_v2_trigger.json"))
    assert again.status_code == 202
    assert (await incident(c, inc["id"]))["event_count"] == 2
    r = await c.post("/v2/enqueue", content=(CASES / "compat/pagerduty_v2_resolve.json").read_bytes())
    assert r.status_code == 202 and r.json()["dedup_key"] == "access-gate/north/forced-open"
    detail = await incident(c, inc["id"])
    assert detail["state"] == "resolved" and detail["resolved_by"] == "gate"


async def test_pagerduty_mappings_and_errors_answer_like_pagerduty(api):
    c = api.client
    trigger = case("compat/pagerduty_v2_trigger.json")
    payload = {**trigger["payload"], "severity": "warning",
               "custom_details": {"category": "public_security"}}
    r = await c.post("/v2/enqueue", json={**trigger, "dedup_key": None, "payload": payload})
    assert r.status_code == 202 and len(r.json()["dedup_key"]) == 32  # generated, as PD does
    [inc] = (await c.get("/api/v1/incidents", headers=bearer(ADMIN))).json()
    assert inc["category"] == "public_security" and inc["severity"] == "medium"
    r = await c.post("/v2/enqueue", json={**trigger, "event_action": "acknowledge",
                                          "dedup_key": r.json()["dedup_key"]})
    assert r.status_code == 202
    assert (await incident(c, inc["id"]))["state"] == "acknowledged"

    def invalid(r: httpx.Response) -> list[str]:
        assert r.status_code == 400, r.text
        body = r.json()
        assert body["status"] == "invalid event" and body["message"] == "Event object is invalid"
        return body["errors"]

    assert invalid(await c.post("/v2/enqueue", json={**trigger, "routing_key": "x" * 32})) == [
        "Invalid routing key"]
    assert "routing_key" in invalid(await c.post("/v2/enqueue", json={"event_action": "trigger"}))[0]
    errors = invalid(await c.post("/v2/enqueue", json={
        **trigger, "payload": {"severity": "bad", "source": "x"}}))
    assert any("payload.summary" in e for e in errors) and any("payload.severity" in e for e in errors)
    assert "dedup_key" in invalid(await c.post("/v2/enqueue", json={
        "routing_key": ROUTING_KEY, "event_action": "resolve"}))[0]
    assert "payload" in invalid(await c.post("/v2/enqueue", json={
        "routing_key": ROUTING_KEY, "event_action": "trigger"}))[0]
    assert "JSON" in invalid(await c.post("/v2/enqueue", content=b'{"routing_key": '))[0]
    assert invalid(await c.post("/v2/enqueue", json=[trigger]))
    r = await c.post("/v2/enqueue", json={**trigger, "dedup_key": "other",
                                          "payload": {**trigger["payload"], "summary": "长" * 1000}})
    assert r.status_code == 202  # PD allows 1024 characters; ours are cut to 500 with "…"
    long = [i for i in (await c.get("/api/v1/incidents", headers=bearer(ADMIN))).json()
            if i["dedup_key"].endswith("/other")]
    assert len(long[0]["summary"]) == 500 and long[0]["summary"].endswith("…")


async def test_alertmanager_webhook_one_event_per_alert(api):
    c = api.client
    body = (CASES / "compat/alertmanager_webhook.json").read_bytes()
    r = await c.post("/api/v1/alertmanager", content=body, headers=bearer(SOURCE))
    assert r.status_code == 200, r.text
    firing, resolved = r.json()["results"]
    assert firing["status"] == "created" and firing["fingerprint"] == "5c1e8d0a9b2f4e31"
    assert firing["dedup_key"] == "alertmanager/5c1e8d0a9b2f4e31"
    # the resolved alert's fingerprint has no open incident: a logged no-op
    assert resolved["status"] == "ignored" and resolved["incident_id"] is None
    inc = await incident(c, firing["incident_id"])
    assert inc["severity"] == "high" and inc["category"] == "other"  # warning → high
    assert inc["summary"] == "Filesystem /var on records-01 has 3% space left"
    with api.daemon.store.transaction() as tx:
        [ev] = tx.events_of(inc["id"])
    assert ev["body"]["labels"]["instance"] == "records-01:9100" and ev["source"] == "morning-check"
    # Alertmanager repeats the firing alert: counted; then it resolves: closed
    doc = json.loads(body)
    assert (await c.post("/api/v1/alertmanager", json=doc, headers=bearer(SOURCE))).json()[
        "results"][0]["status"] == "deduplicated"
    doc["alerts"][0]["status"] = "resolved"
    r = await c.post("/api/v1/alertmanager", json=doc, headers=bearer(SOURCE))
    assert r.json()["results"][0]["status"] == "resolved"
    assert (await incident(c, inc["id"]))["state"] == "resolved"


async def test_alertmanager_mappings_and_errors(api):
    c = api.client
    alert = {"status": "firing", "labels": {"alertname": "CanteenFridgeWarm", "severity": "critical",
                                            "category": "food_safety"},
             "annotations": {}, "startsAt": "2026-11-30T04:00:00Z"}
    r = await c.post("/api/v1/alertmanager", json={"version": "4", "alerts": [alert]},
                     headers=bearer(SOURCE))
    res = r.json()["results"][0]
    assert len(res["fingerprint"]) == 16  # no fingerprint sent: derived from the labels
    inc = await incident(c, res["incident_id"])
    assert (inc["severity"], inc["category"], inc["summary"]) == ("critical", "food_safety",
                                                                 "CanteenFridgeWarm")
    many = {"version": "4", "alerts": [{"status": "firing", "fingerprint": "f1",
                                        "labels": {f"l{i}": "v" * 900 for i in range(80)}}]}
    r = await c.post("/api/v1/alertmanager", json=many, headers=bearer(SOURCE))
    assert r.status_code == 200
    with api.daemon.store.transaction() as tx:
        ev = tx.get_event(r.json()["results"][0]["event_id"])
    assert len(ev["body"]["labels"]) == 50 and {len(v) for v in ev["body"]["labels"].values()} == {500}
    assert ev["body"]["severity"] == "medium" and ev["body"]["summary"] == "Alertmanager alert"
    r = await c.post("/api/v1/alertmanager", json={"alerts": [{"status": "burning"}]},
                     headers=bearer(SOURCE))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "alerts[0].status"
    r = await c.post("/api/v1/alertmanager", json={"version": "3", "alerts": []}, headers=bearer(SOURCE))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "version"
    assert (await c.post("/api/v1/alertmanager", json={"alerts": []})).status_code == 401


# ------------------------------------------------------------------ health, metrics, docs


async def test_healthz_answers_from_memory_naming_a_stuck_lane_or_a_lost_store(api, monkeypatch):
    c, daemon = api.client, api.daemon
    await daemon.step()
    r = await c.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok" and "failing" not in r.json()
    assert r.json()["database"]["backend"] == "sqlite" and r.json()["database"]["reachable"]

    release = asyncio.Event()

    class Hanging:  # a send that does not come back: the delivery lane has work, no progress
        async def send(self, message):
            await release.wait()
            return DeliveryResult(DeliveryStatus.delivered, "late")

    daemon.delivery.channels = {cid: Hanging() for cid in daemon.config.channels}
    await post_case(c, "events/bullying.json")
    await until(lambda: daemon.runloop.delivery_lane.busy)

    class BrokenStore:  # /healthz never reads the store
        def transaction(self):
            raise OSError("disk I/O error")

    with monkeypatch.context() as m:
        m.setattr(daemon, "store", BrokenStore())
        assert (await c.get("/healthz")).status_code == 200  # busy, not stuck yet
        api.clock.advance(31)
        r = await c.get("/healthz")
    assert r.status_code == 503  # (a timer pass in flight across the 31 s jump may be named too)
    assert "31 s" in r.json()["failing"]["delivery"] and "store" not in r.json()["failing"]
    release.set()  # (and a timer pass caught across the jump finishes too)
    await until(lambda: not daemon.runloop.delivery_lane.busy and not daemon.runloop.timers.busy)
    assert (await c.get("/healthz")).status_code == 200

    daemon._store_lost("the WAL file x was deleted while escalator had it open")
    r = await c.get("/healthz")
    assert r.status_code == 503 and set(r.json()["failing"]) == {"store"}
    assert "WAL file" in r.json()["failing"]["store"]


async def test_metrics_families_have_values_after_traffic(api):
    c, daemon = api.client, api.daemon
    await post_case(c, "events/bullying.json")  # escalate chain: 60 s timeout
    await post_case(c, "events/zero_report.json")
    await post_case(c, "events/duplicate_a.json")
    await post_case(c, "events/duplicate_b.json")
    await daemon.step()  # deliver what is due
    api.clock.advance(75)  # the bullying step is 15 s overdue
    await daemon.step()
    text = (await c.get("/metrics")).text

    def value(sample: str) -> float:
        m = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.M)
        assert m, f"{sample} not in\n{text}"
        return float(m.group(1))

    assert value('escalator_events_total{outcome="created",source="morning-check"}') == 2
    assert value('escalator_events_total{outcome="logged",source="morning-check"}') == 1
    assert value('escalator_events_total{outcome="deduplicated",source="morning-check"}') == 1
    assert value('escalator_incidents_open{state="triggered"}') == 2
    assert value('escalator_incidents_open{state="acknowledged"}') == 0
    assert value('escalator_notifications_total{channel="main",outcome="delivered"}') >= 3
    assert value("escalator_step_fire_lag_seconds_count") >= 1
    assert value("escalator_step_fire_lag_seconds_sum") >= 15
    assert value('escalator_step_fire_lag_seconds_bucket{le="10.0"}') == 0


async def test_openapi_and_docs_are_served(api):
    spec = (await api.client.get("/openapi.json")).json()
    for path in ("/api/v1/events", "/api/v1/incidents", "/api/v1/incidents/{incident_id}",
                 "/api/v1/incidents/{incident_id}/acknowledge", "/api/v1/incidents/{incident_id}/resolve",
                 "/api/v1/heartbeats/{name}/ping", "/ack/{token}", "/v2/enqueue",
                 "/api/v1/alertmanager", "/healthz", "/metrics"):
        assert path in spec["paths"], path
    assert {"Event", "PdEvent", "AmWebhook", "Kind", "Category"} <= set(spec["components"]["schemas"])
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    # the intake route reads its caller itself (no dependency): its security is still stated,
    # as on the routes that use the dependency, and its answers are still described
    intake = spec["paths"]["/api/v1/events"]["post"]
    assert intake["security"] == spec["paths"]["/api/v1/incidents"]["get"]["security"]
    assert {"202", "401", "413", "422"} <= set(intake["responses"])
    docs = await api.client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


# ------------------------------------------------------------------ daemon wiring


async def test_http_off_starts_no_server(tmp_path, env):
    config = load_config(write_config(tmp_path))
    settings = Settings(state_dir=tmp_path / "state", http_listen="off")
    daemon = Daemon(config, settings, clock=FakeClock(Harness.START))
    task = asyncio.create_task(daemon.run())
    await until(lambda: getattr(daemon, "last_loop_at", None) is not None)
    assert "http" not in {t.get_name() for t in asyncio.all_tasks()}
    assert getattr(daemon, "http_port", None) is None
    daemon.stop()
    await asyncio.wait_for(task, 10)


def test_every_route_and_dependency_runs_in_the_loop_thread(tmp_path, env):
    # FastAPI runs a plain function in a worker thread; the store is used from one thread only
    import inspect

    from fastapi.routing import APIRoute

    from escalator.web.routers import ack, compat, events, incidents, ops, replies, roster, silences

    config = load_config(write_config(tmp_path))
    daemon = Daemon(config, Settings(state_dir=tmp_path / "state"), clock=FakeClock())
    try:
        app = create_app(daemon)
    finally:
        daemon.store.close()

    def calls(dependant):
        for dep in dependant.dependencies:
            yield dep.call
            yield from calls(dep)

    routes = [r for m in (ack, compat, events, incidents, ops, roster, silences, replies)
              for r in m.router.routes]
    assert {r.path for r in routes if isinstance(r, APIRoute)} == set(app.openapi()["paths"])
    for route in routes:
        for call in [route.endpoint, *calls(route.dependant)]:
            assert inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(
                type(call).__call__), (route.path, call)


def test_create_app_refuses_an_unreadable_secret(tmp_path, env):
    env.delenv("TEST_ESCALATOR_PD_KEY")
    config = load_config(write_config(tmp_path))
    daemon = Daemon(config, Settings(state_dir=tmp_path / "state"), clock=FakeClock())
    try:
        with pytest.raises(ValueError, match="api.pagerduty.gate"):
            create_app(daemon)
    finally:
        daemon.store.close()


async def test_reload_re_reads_tokens(api, env):
    env.setenv("TEST_ESCALATOR_SOURCE_TOKEN", "rotated-" + SOURCE)
    assert api.daemon.reload()
    ev = case("events/bullying.json")
    assert (await api.client.post("/api/v1/events", json=ev, headers=bearer(SOURCE))).status_code == 401
    r = await api.client.post("/api/v1/events", json=ev, headers=bearer("rotated-" + SOURCE))
    assert r.status_code == 202


# ------------------------------------------------------------------ schemathesis


def _fuzz(base: str, failures: list[str]) -> int:
    """Every operation of the served schema, positive and negative cases, a few each."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    count = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(max_examples=12, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def check(case) -> None:
                if isinstance(case.body, dict) and "routing_key" in case.body:
                    case.body["routing_key"] = ROUTING_KEY  # reach past the key check
                response = case.call(base_url=base, headers=bearer(ADMIN), timeout=30)
                if response.status_code >= 500:
                    failures.append(f"{case.operation.label}: {response.status_code} "
                                    f"{case.as_curl_command()}")

            try:
                check()
            except Unsatisfiable:
                # nothing to make invalid (no parameters, no body): positive cases only
                assert mode == GenerationMode.NEGATIVE, operation.label
                continue
            count += 1
    return count


async def test_schemathesis_finds_no_server_errors(api):
    failures: list[str] = []
    operations = await asyncio.to_thread(_fuzz, api.base, failures)
    assert operations >= 12 + 6
    assert failures == []
    assert (await api.client.get("/healthz")).status_code in (200, 503)
