"""The web console over HTTP (no browser: tests/test_console_browser.py drives one): a real
Daemon (fake clock, real SQLite file) serving on 127.0.0.1, talked to with httpx. Sign-in by
one-time link, sessions, CSRF, roles and pupils' data, the actions through the engine, the
ledger download, and no request leaving the server (/docs included). Notes and assignment
(issue 16 point 8) through the API and the ledger are here too."""

from __future__ import annotations

import asyncio
import csv
import io
import re
from types import SimpleNamespace
from urllib.parse import urlsplit

import httpx
import pytest
from pydantic import SecretStr

from escalator.clock import FakeClock
from escalator.config import load_config
from escalator.config.settings import Settings
from escalator.delivery.channels import DeliveryStatus
from escalator.service.daemon import Daemon
from escalator.testing import Harness, RecordingChannel
from escalator.web.console import signin

from .test_api import ADMIN, API_YAML, bearer, env, until, write_config  # noqa: F401

ROLES = {"head": "administrator", "g-3": "viewer"}
FEVER = {"kind": "suspected_case", "category": "infectious_disease", "severity": "high",
         "summary": "3-2 班 王小明 发热 38.5℃", "class_id": "3-2", "grade": "3",
         "dedup_key": "case/3-2/wxm"}


def console_yaml(text: str) -> str:
    """engine.yaml with console access: 张校长 administrator, 三年级组长 viewer."""
    for pid, access in ROLES.items():
        text = re.sub(rf"\{{id: {re.escape(pid)}, ", f"{{id: {pid}, access: {access}, ", text)
    return text


@pytest.fixture
async def site(tmp_path, env):  # noqa: F811
    path = write_config(tmp_path)
    path.write_text(console_yaml(path.read_text(encoding="utf-8")), encoding="utf-8")
    config = load_config(path)
    settings = Settings(state_dir=tmp_path / "state", http_listen="127.0.0.1:0",
                        api_token=SecretStr(ADMIN))
    clock = FakeClock(Harness.START)
    daemon = Daemon(config, settings, clock=clock)
    task = asyncio.create_task(daemon.run())
    await until(lambda: getattr(daemon, "http_port", None) or task.done())
    assert not task.done(), task.exception()
    channel = RecordingChannel("main")
    daemon.delivery.channels["main"] = channel
    base = f"http://127.0.0.1:{daemon.http_port}"
    async with httpx.AsyncClient(base_url=base, timeout=30) as api:
        yield SimpleNamespace(daemon=daemon, base=base, clock=clock, channel=channel, api=api)
    daemon.stop()
    await asyncio.wait_for(task, 30)


def form_token(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]*)"', html).group(1)


async def cli_link(site, person_id: str) -> str:
    """A link as ``escalator login-link`` makes it (on the test server's port)."""
    url = await site.daemon.db(signin.issue_link, site.daemon.store, site.daemon.config,
                               site.daemon.settings, person_id, site.clock.now())
    assert url.startswith("http://127.0.0.1:0/login/")  # http_listen: the test's port 0
    return site.base + urlsplit(url).path


async def sign_in(site, person_id: str) -> httpx.AsyncClient:
    """A client signed in as ``person_id`` through a link made like ``escalator login-link``."""
    url = await cli_link(site, person_id)
    client = httpx.AsyncClient(base_url=site.base, timeout=30)
    page = await client.get(url)
    r = await client.post(url, data={"csrf": form_token(page.text)})
    assert r.status_code == 303 and r.headers["location"] == "/", r.text
    return client


async def open_fever(site) -> int:
    r = await site.api.post("/api/v1/events", json=FEVER, headers=bearer(ADMIN))
    assert r.status_code == 202, r.text
    return r.json()["incident_id"]


async def timeline(site, iid: int) -> list[dict]:
    r = await site.api.get(f"/api/v1/incidents/{iid}", headers=bearer(ADMIN))
    return r.json()["timeline"]


# ------------------------------------------------------------------ sign-in


async def test_a_link_asked_for_goes_to_the_persons_own_first_contact_and_works_once(site):
    c = httpx.AsyncClient(base_url=site.base, timeout=30)
    assert (await c.get("/", follow_redirects=False)).headers["location"] == "/login"
    page = await c.get("/login")
    r = await c.post("/login", data={"person_id": "t-li", "csrf": form_token(page.text)})
    assert r.status_code == 200 and "10 分钟" in r.text
    [msg] = site.channel.sent
    assert msg.address == "13800000002" and msg.recipient_name == "李老师"  # first method only
    link = re.search(r"(http://\S+/login/\S+)", msg.body).group(1)
    shown = await c.get(link)  # a prefetch signs nobody in
    assert shown.status_code == 200 and "escalator_session" not in shown.headers.get("set-cookie", "")
    r = await c.post(link, data={"csrf": form_token(shown.text)})
    assert r.status_code == 303
    cookie = r.headers["set-cookie"]
    assert "escalator_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Secure" not in cookie  # plain http on 127.0.0.1
    assert "李老师" in (await c.get("/")).text
    again = httpx.AsyncClient(base_url=site.base, timeout=30)
    shown = await again.get(link)
    assert (await again.post(link, data={"csrf": form_token(shown.text)})).status_code == 403


async def test_an_unknown_person_gets_the_same_answer_and_no_message(site):
    c = httpx.AsyncClient(base_url=site.base, timeout=30)
    page = await c.get("/login")
    r = await c.post("/login", data={"person_id": "nobody", "csrf": form_token(page.text)})
    assert r.status_code == 200 and "10 分钟" in r.text and site.channel.sent == []


async def test_a_link_expires_after_ten_minutes(site):
    url = await cli_link(site, "doc")
    site.clock.advance(signin.LINK_SECONDS + 1)
    c = httpx.AsyncClient(base_url=site.base, timeout=30)
    shown = await c.get(url)
    assert (await c.post(url, data={"csrf": form_token(shown.text)})).status_code == 403


async def test_sign_in_attempts_are_rate_limited_per_address(site):
    c = httpx.AsyncClient(base_url=site.base, timeout=30)
    token = form_token((await c.get("/login")).text)
    codes = [(await c.post("/login", data={"person_id": f"x{i}", "csrf": token})).status_code
             for i in range(signin.ATTEMPTS_PER_ADDRESS.count + 1)]
    assert codes[:-1] == [200] * signin.ATTEMPTS_PER_ADDRESS.count and codes[-1] == 429
    site.clock.advance(signin.ATTEMPTS_PER_ADDRESS.per_seconds)
    assert (await c.post("/login", data={"person_id": "x", "csrf": token})).status_code == 200


async def test_the_login_form_needs_its_token(site):
    c = httpx.AsyncClient(base_url=site.base, timeout=30)
    await c.get("/login")
    r = await c.post("/login", data={"person_id": "t-li", "csrf": "forged"})
    assert r.status_code == 403 and site.channel.sent == []


async def test_sign_out_ends_the_session_in_the_store(site):
    c = await sign_in(site, "doc")
    token = form_token((await c.get("/")).text)
    cookie = c.cookies["escalator_session"]
    r = await c.post("/logout", data={"csrf": token})
    assert r.status_code == 303 and r.headers["location"] == "/login"
    stale = httpx.AsyncClient(base_url=site.base, cookies={"escalator_session": cookie})
    assert (await stale.get("/", follow_redirects=False)).status_code == 303
    assert (await stale.get("/today.frag")).status_code == 401


async def test_a_person_with_access_none_cannot_sign_in(site):
    site.daemon.config.person("t-wang").access = "none"
    with pytest.raises(LookupError):
        signin.issue_link(site.daemon.store, site.daemon.config, site.daemon.settings,
                          "t-wang", site.clock.now())


# ------------------------------------------------------------------ acting


async def test_confirming_from_the_console_cancels_pending_sends_like_the_api(site):
    site.channel.outcomes.extend([DeliveryStatus.failed_retryable] * 3)  # the SMS waits to retry
    iid = await open_fever(site)
    c = await sign_in(site, "t-wang")
    page = await c.get(f"/incidents/{iid}")
    assert "第1级" in page.text
    await until(lambda: site.channel.sent)
    with site.daemon.store.transaction() as tx:
        assert [(n.status, n.attempts) for n in tx.notifications_of(iid)] == [("pending", 1)]
    r = await c.post(f"/incidents/{iid}", data={"csrf": form_token(page.text), "action": "ack"})
    assert r.status_code == 303 and r.headers["location"].endswith("done=step_confirmed")
    with site.daemon.store.transaction() as tx:
        first = tx.notifications_of(iid)[0]
    assert first.status == "cancelled"
    confirmed = [t for t in await timeline(site, iid) if t["type"] == "step_confirmed"]
    assert confirmed[0]["actor"] == "t-wang" and confirmed[0]["detail"]["via"] == "console"
    assert "第1级已确认" in (await c.get(f"/incidents/{iid}")).text


async def test_notes_assignment_and_resolve_with_a_reason_are_in_the_timeline(site):
    iid = await open_fever(site)
    c = await sign_in(site, "doc")
    token = form_token((await c.get(f"/incidents/{iid}")).text)
    await c.post(f"/incidents/{iid}", data={"csrf": token, "action": "note",
                                           "text": "已电话联系家长，<b>居家观察</b>"})
    await c.post(f"/incidents/{iid}", data={"csrf": token, "action": "assign",
                                           "person_id": "t-wang"})
    r = await c.post(f"/incidents/{iid}", data={"csrf": token, "action": "assign",
                                               "person_id": "ghost"})
    assert r.status_code == 422 and "person_id" in r.text
    page = (await c.get(f"/incidents/{iid}")).text
    assert "备注：已电话联系家长，&lt;b&gt;居家观察&lt;/b&gt;" in page  # escaped
    assert "指派给 王老师" in page and "负责人：王老师" in page
    await c.post(f"/incidents/{iid}", data={"csrf": token, "action": "resolve",
                                           "reason": "误报：体温复测正常"})
    types = [(t["type"], t["actor"]) for t in await timeline(site, iid)
             if t["type"] in ("note", "assigned", "resolved")]
    assert types == [("note", "doc"), ("assigned", "doc"), ("note", "doc"),
                          ("resolved", "doc")]


async def test_several_incidents_are_resolved_together_with_one_reason(site):
    ids = []
    for i in range(3):
        r = await site.api.post("/api/v1/events", headers=bearer(ADMIN), json={
            **FEVER, "dedup_key": f"case/{i}", "summary": f"case {i}"})
        ids.append(r.json()["incident_id"])
    c = await sign_in(site, "head")
    token = form_token((await c.get("/")).text)
    r = await c.post("/resolve", data={"csrf": token, "reason": "晨检登记重复录入",
                                       "id": [str(ids[0]), str(ids[2])]})
    assert r.status_code == 303
    states = {}
    for iid in ids:
        detail = (await site.api.get(f"/api/v1/incidents/{iid}", headers=bearer(ADMIN))).json()
        states[iid] = detail["state"]
        if iid != ids[1]:
            assert detail["timeline"][-2]["detail"]["text"] == "晨检登记重复录入"
    assert states == {ids[0]: "resolved", ids[1]: "triggered", ids[2]: "resolved"}
    assert (await c.post("/resolve", data={"csrf": token, "id": [str(ids[1])]})).status_code == 422


async def test_forms_without_the_session_token_or_from_another_site_are_refused(site):
    iid = await open_fever(site)
    c = await sign_in(site, "head")
    token = form_token((await c.get("/")).text)
    r = await c.post(f"/incidents/{iid}", data={"action": "resolve"})
    assert r.status_code == 403
    r = await c.post(f"/incidents/{iid}", data={"action": "resolve", "csrf": "x" + token})
    assert r.status_code == 403
    r = await c.post(f"/incidents/{iid}", data={"action": "resolve", "csrf": token},
                     headers={"Origin": "http://evil.example"})
    assert r.status_code == 403
    assert [t["type"] for t in await timeline(site, iid)][-1] != "resolved"


async def test_a_viewer_sees_no_names_and_may_not_act_or_see_settings(site):
    iid = await open_fever(site)
    c = await sign_in(site, "g-3")
    page = await c.get(f"/incidents/{iid}")
    assert "王小明" not in page.text and "王小明" not in (await c.get("/")).text
    assert 'value="ack"' not in page.text
    r = await c.post(f"/incidents/{iid}", data={"csrf": form_token(page.text), "action": "ack"})
    assert r.status_code == 403
    assert (await c.get("/settings")).status_code == 403
    assert (await c.get("/ledger/download?format=csv")).status_code == 403
    assert [t["type"] for t in await timeline(site, iid)][-1] != "step_confirmed"


async def test_pupils_names_go_to_their_class_teacher_and_the_school_doctor_only(site):
    iid = await open_fever(site)  # class 3-2
    for pid, sees in [("t-wang", True), ("doc", True), ("head", True), ("t-li", False)]:
        c = await sign_in(site, pid)
        assert ("王小明" in (await c.get(f"/incidents/{iid}")).text) is sees, pid


async def test_today_lists_open_incidents_and_its_live_part_changes_with_them(site):
    c = await sign_in(site, "head")
    before = (await c.get("/today.frag")).text
    assert "当前没有待处理事件" in before
    iid = await open_fever(site)
    after = (await c.get("/today.frag")).text
    assert f"#{iid} 传染病" in after and "班级 3-2" in after and "第1级" in after
    # the card's time is when the incident was opened, not when it occurred (a register
    # dropped a week late must not read as 发生时间 today)
    assert "创建时间" in after and "发生时间" not in after


# ------------------------------------------------------------------ ledger, settings, docs


async def test_the_ledger_downloads_as_csv_and_xlsx_with_notes_and_assignments(site):
    iid = await open_fever(site)
    c = await sign_in(site, "head")
    token = form_token((await c.get(f"/incidents/{iid}")).text)
    await c.post(f"/incidents/{iid}", data={"csrf": token, "action": "note", "text": "复测正常"})
    await c.post(f"/incidents/{iid}", data={"csrf": token, "action": "assign", "person_id": "doc"})
    day = site.clock.now().astimezone(site.daemon.config.school.tz).date()
    r = await c.get(f"/ledger/download?format=csv&table=acknowledgements&from={day}&to={day}")
    assert r.status_code == 200 and r.content.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert rows[0][-1] == "说明"
    assert [(x[2], x[3], x[-1]) for x in rows[1:]] == [("备注", "head", "复测正常"),
                                                      ("指派", "head", "赵校医 (doc)")]
    r = await c.get(f"/ledger/download?format=xlsx&from={day}&to={day}")
    assert r.status_code == 200 and r.content[:2] == b"PK"
    assert "attachment" in r.headers["content-disposition"]
    page = await c.get("/ledger")
    assert page.status_code == 200 and "月报" in page.text


async def test_settings_show_channels_health_and_the_roster_who_is_on_duty(site):
    c = await sign_in(site, "head")
    page = await c.get("/settings")
    assert page.status_code == 200 and "main" in page.text and "backup" in page.text
    roster = await c.get("/roster")
    assert roster.status_code == 200 and "当前值班" in roster.text


async def test_no_page_refers_to_anything_outside_the_server(site):
    iid = await open_fever(site)
    c = await sign_in(site, "head")
    for path in ("/", f"/incidents/{iid}", "/ledger", "/roster", "/settings", "/login", "/docs"):
        r = await c.get(path)
        assert r.status_code == 200, path
        refs = re.findall(r'(?:src|href|action)="([^"]*)"', r.text)
        assert refs and all(not re.match(r"(?i)^(https?:)?//", u) for u in refs), (path, refs)
        assert "cdn" not in r.text.lower(), path
    docs = (await c.get("/docs")).text
    for asset in re.findall(r'(?:src|href)="(/docs/assets/[^"]+)"', docs):
        assert (await c.get(asset)).status_code == 200, asset
    assert '"validatorUrl": null' in docs
    assert "Content-Security-Policy" in (await c.get("/")).headers


async def test_the_language_switch_sets_english(site):
    c = await sign_in(site, "head")
    r = await c.get("/lang/en?next=/roster")
    assert r.status_code == 303 and r.headers["location"] == "/roster"
    assert "On duty now" in (await c.get("/roster")).text
    assert (await c.get("/lang/en?next=//evil.example")).headers["location"] == "/"


# ------------------------------------------------------------------ API: notes and assignment


async def test_api_notes_and_assignment(site):
    iid = await open_fever(site)
    a = site.api
    r = await a.post(f"/api/v1/incidents/{iid}/notes", json={"text": "已通知家长"},
                     headers=bearer(ADMIN))
    assert r.json() == {"incident_id": iid, "outcome": "noted", "state": "triggered"}
    r = await a.post(f"/api/v1/incidents/{iid}/assign", json={"person_id": "doc"},
                     headers=bearer(ADMIN))
    assert r.json()["outcome"] == "assigned"
    r = await a.post(f"/api/v1/incidents/{iid}/assign", json={"person_id": "doc"},
                     headers=bearer(ADMIN))
    assert r.json()["outcome"] == "already_assigned"
    r = await a.post(f"/api/v1/incidents/{iid}/assign", json={"person_id": "ghost"},
                     headers=bearer(ADMIN))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "person_id"
    r = await a.post(f"/api/v1/incidents/{iid}/notes", json={"text": "   "}, headers=bearer(ADMIN))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "text"
    r = await a.post(f"/api/v1/incidents/{iid}/notes", json={}, headers=bearer(ADMIN))
    assert r.status_code == 422 and "text" in r.json()["errors"][0]["field"]
    r = await a.post("/api/v1/incidents/999/notes", json={"text": "x"}, headers=bearer(ADMIN))
    assert r.status_code == 404
    r = await a.post(f"/api/v1/incidents/{iid}/notes", json={"text": "x"})
    assert r.status_code == 401
    got = [(t["type"], t["actor"], t["detail"]) for t in await timeline(site, iid)
           if t["type"] in ("note", "assigned")]
    assert got == [("note", "admin", {"text": "已通知家长", "via": "api"}),
                   ("assigned", "admin", {"person_id": "doc", "name": "赵校医", "via": "api"})]


async def test_handled_here_and_report_up_call_engine_decide_as_the_person(site, monkeypatch):
    """The two buttons call ``Engine.decide(id, decision=…, reason=…, actor=…, via=…)``."""
    from escalator.engine.engine import ActionResult

    calls = []

    def decide(incident_id, *, decision, reason=None, actor, via):
        calls.append((incident_id, decision, reason, actor, via))
        return ActionResult(incident_id, "handled" if decision == "handled" else "step_confirmed",
                            "resolved" if decision == "handled" else "triggered")

    monkeypatch.setattr(site.daemon.engine, "decide", decide, raising=False)
    iid = await open_fever(site)
    c = await sign_in(site, "doc")
    token = form_token((await c.get(f"/incidents/{iid}")).text)
    r = await c.post(f"/incidents/{iid}", data={"csrf": token, "action": "handled",
                                               "reason": "家长告知为普通感冒"})
    assert r.status_code == 303 and r.headers["location"].endswith("done=handled")
    await c.post(f"/incidents/{iid}", data={"csrf": token, "action": "report", "reason": ""})
    assert calls == [(iid, "handled", "家长告知为普通感冒", "doc", "console"),
                     (iid, "report", None, "doc", "console")]


def test_the_timeline_names_staff_and_hides_a_guardian_from_who_may_not_see_pupils():
    from escalator.web.console.words import timeline_text

    names = {"t-wang": "王老师"}
    staff = {"recipient": "t-wang", "name": "王老师", "channel": "sms"}
    guardian = {"recipient": "guardian-S-1", "name": "王小明家长", "channel": "sms"}
    assert timeline_text("notified", staff, "zh", names=names, private=True) == "已发送给 王老师（sms）"
    assert "王小明" not in timeline_text("notified", guardian, "zh", names=names, private=True)
    assert "王小明家长" in timeline_text("notified", guardian, "zh", names=names, private=False)
    assert timeline_text("step_fired", {"step": 0, "name": "班主任核实"}, "zh", names=names,
                         private=True) == "第1级通知：班主任核实"
    assert timeline_text("note", {"text": "王小明发热"}, "zh", names=names, private=True) \
        == "备注：（仅限有权限的人员查看）"
    assert timeline_text("some_new_type", {"reason": "x"}, "en", names=names,
                         private=False) == "some_new_type x"


async def test_settings_show_the_last_reload_and_its_errors(site):
    c = await sign_in(site, "head")
    assert "启动以来未重新加载" in (await c.get("/settings")).text
    path = site.daemon.config.source
    good = path.read_text(encoding="utf-8")
    path.write_text(good.replace("policies:", "policies:\n  broken: {steps: []}", 1),
                    encoding="utf-8")
    assert site.daemon.reload() is False
    page = (await c.get("/settings")).text
    assert "最近错误" in page and "policies.broken.steps" in page
    path.write_text(good, encoding="utf-8")
    assert site.daemon.reload() is True
    assert "正常" in (await c.get("/settings")).text


async def test_behind_https_the_session_cookie_is_secure(site):
    url = await cli_link(site, "doc")
    c = httpx.AsyncClient(base_url=site.base, timeout=30)
    shown = await c.get(url)  # (its form cookie would be Secure too: fetched over plain http)
    r = await c.post(url, data={"csrf": form_token(shown.text)},
                     headers={"X-Forwarded-Proto": "https"})
    assert r.status_code == 303 and "Secure" in r.headers["set-cookie"]


async def test_links_for_one_person_are_rate_limited(site):
    sent = 0
    for _ in range(signin.LINKS_PER_PERSON.count + 1):
        c = httpx.AsyncClient(base_url=site.base, timeout=30)  # (under the address limit)
        token = form_token((await c.get("/login")).text)
        r = await c.post("/login", data={"person_id": "t-li", "csrf": token})
        sent += r.status_code == 200
    assert sent == signin.LINKS_PER_PERSON.count and len(site.channel.sent) == sent


def test_the_roster_names_who_is_on_duty_now_and_the_next_shift(tmp_path):
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from escalator.cli import demo_config_path
    from escalator.store import SQLiteStore
    from escalator.web.console import views
    from escalator.web.console.access import Viewer

    config = load_config(demo_config_path())
    monday = datetime(2026, 12, 7, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
    daemon = SimpleNamespace(config=config, clock=FakeClock(monday),
                             store=SQLiteStore(tmp_path / "db.sqlite3"))
    admin = Viewer(config.person("p-zhang-wei"), "x")
    got = views.roster(daemon, admin, "zh")
    [duty] = [r for r in got["duty"] if r["role"] == "值班人员"]
    assert (duty["now"], duty["next"], duty["next_at"]) == (["杨帆"], ["钱刚"], "12-07 18:00")
    zhang = next(p for p in got["people"] if p["name"] == "张伟")
    assert zhang["roles"] == "学校安全工作领导小组" and zhang["contact"] == "139-5555-0002"
    viewer = Viewer(config.person("v-gao-ming"), "x")
    assert all(p["contact"] is None for p in views.roster(daemon, viewer, "zh")["people"])


async def test_handled_here_from_the_console_resolves_with_the_reason(site):
    iid = await open_fever(site)
    c = await sign_in(site, "doc")
    token = form_token((await c.get(f"/incidents/{iid}")).text)
    r = await c.post(f"/incidents/{iid}", data={"csrf": token, "action": "handled", "reason": ""})
    assert r.status_code == 422 and "reason" in r.text
    r = await c.post(f"/incidents/{iid}", data={"csrf": token, "action": "handled",
                                               "reason": "家长告知为普通感冒，已就医"})
    assert r.status_code == 303 and r.headers["location"].endswith("done=handled")
    detail = (await site.api.get(f"/api/v1/incidents/{iid}", headers=bearer(ADMIN))).json()
    assert detail["state"] == "resolved" and detail["resolved_by"] == "doc"
    handled = [t for t in detail["timeline"] if t["type"] == "handled_here"]
    assert handled[0]["actor"] == "doc" and handled[0]["detail"]["reason"] == "家长告知为普通感冒，已就医"
    page = (await c.get(f"/incidents/{iid}")).text
    assert "第1级已处置，无需上报（家长告知为普通感冒，已就医）" in page


def test_the_timeline_uses_the_shared_words_of_silences_and_grouping():
    from escalator.labels import TIMELINE
    from escalator.web.console.words import timeline_text

    assert timeline_text("silenced", {}, "zh", names={}, private=True) == TIMELINE["zh"]["silenced"]
