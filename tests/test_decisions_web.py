"""Decisions over HTTP against a real daemon on a local port: the API's decision endpoint and
the acknowledge page's two buttons, its CSRF check, and what a link opened again says."""
# ruff: noqa: F811  (the api fixture of tests/test_api.py, imported)

from __future__ import annotations

from .test_api import ADMIN, api, bearer, env, incident, post_case, submit_link  # noqa: F401


def notifications(api, iid: int) -> list:
    with api.daemon.store.transaction() as tx:
        return tx.notifications_of(iid)


async def test_the_decision_endpoint(api):
    c = api.client
    iid = (await post_case(c, "events/fever_single.json")).json()["incident_id"]
    url = f"/api/v1/incidents/{iid}/decision"
    r = await c.post(url, json={"decision": "handled"}, headers=bearer(ADMIN))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "reason"
    r = await c.post(url, json={"decision": "maybe"}, headers=bearer(ADMIN))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body.decision"
    r = await c.post(url, json={"decision": "report"})
    assert r.status_code == 401
    assert (await incident(c, iid))["state"] == "triggered"
    r = await c.post(url, json={"decision": "report"}, headers=bearer(ADMIN))
    assert r.status_code == 200 and r.json()["outcome"] == "step_confirmed"
    assert (await incident(c, iid))["step"] == 2
    r = await c.post(url, json={"decision": "handled", "reason": "家长已接回，排除传染病"},
                     headers=bearer(ADMIN))
    assert r.json() == {"incident_id": iid, "outcome": "handled", "state": "resolved"}
    detail = await incident(c, iid)
    handled = next(t for t in detail["timeline"] if t["type"] == "handled_here")
    assert handled["detail"]["reason"] == "家长已接回，排除传染病" and handled["detail"]["step"] == 1
    assert handled["detail"]["via"] == "api"
    r = await c.post("/api/v1/incidents/999/decision", json={"decision": "report"},
                     headers=bearer(ADMIN))
    assert r.status_code == 404


async def test_the_page_offers_both_decisions_and_takes_handled_with_a_reason(api):
    c = api.client
    iid = (await post_case(c, "events/fever_single.json")).json()["incident_id"]
    [n] = notifications(api, iid)
    page = await c.get(f"/ack/{n.ack_token}")
    assert "上报上一级" in page.text and "本级已处置，无需上报" in page.text
    assert 'name="reason"' in page.text and "将立即通知：校医" in page.text
    assert page.headers["set-cookie"].startswith("escalator_csrf=")
    assert "samesite=strict" in page.headers["set-cookie"].lower()
    missing = await submit_link(c, n.ack_token, decision="handled", reason=" ")
    assert missing.status_code == 422 and "请填写无需上报的原因" in missing.text
    assert (await incident(c, iid))["state"] == "triggered"
    done = await submit_link(c, n.ack_token, decision="handled", reason="复测体温正常")
    assert done.status_code == 200 and "本级已处置，无需上报" in done.text
    detail = await incident(c, iid)
    assert detail["state"] == "resolved" and detail["resolved_by"] == "t-wang"
    again = await c.get(f"/ack/{n.ack_token}")
    assert "本级已由王老师于" in again.text and "处置，无需上报" in again.text
    assert 'method="post"' not in again.text and "复测体温正常" not in again.text


async def test_a_cross_site_form_is_refused(api):
    c = api.client
    iid = (await post_case(c, "events/fever_single.json")).json()["incident_id"]
    [n] = notifications(api, iid)
    shown = await c.get(f"/ack/{n.ack_token}")
    csrf = shown.text.split('name="csrf" value="')[1].split('"')[0]
    r = await c.post(f"/ack/{n.ack_token}", data={"csrf": csrf},
                     headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    r = await c.post(f"/ack/{n.ack_token}", data={"csrf": "forged"})
    assert r.status_code == 403
    assert (await incident(c, iid))["step"] == 1
    r = await c.post(f"/ack/{n.ack_token}", data={"csrf": csrf}, headers={"Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 200 and "已上报，已通知第2级" in r.text


async def test_a_link_of_a_level_passed_by_its_timeout_says_so_and_changes_nothing(api):
    c = api.client
    iid = (await post_case(c, "events/fever_single.json")).json()["incident_id"]
    [n] = notifications(api, iid)
    for _ in range(2):  # delivered (its 60 s count from then), then the 60 s run out
        await api.daemon.step()
        api.clock.advance(61)
    await api.daemon.step()  # the school doctor is told
    assert len(notifications(api, iid)) == 2
    page = await c.get(f"/ack/{n.ack_token}")
    assert "本级于" in page.text and "超时未答复，已通知第2级" in page.text
    assert "本级已超时上报" not in page.text and 'method="post"' not in page.text
    r = await submit_link(c, n.ack_token, decision="report")
    assert "超时未答复" in r.text
    detail = await incident(c, iid)
    assert detail["step"] == 2 and "step_confirmed_late" not in [t["type"] for t in detail["timeline"]]


async def test_a_link_page_numbers_levels_as_the_messages_do_when_a_copy_comes_between(
        tmp_path, env):
    """A copy (inform step) between two levels is not a level: the page of the school doctor's
    link says 第2级, and once its time ran out, that 第3级 was told (not 第3级 / 第4级)."""
    import asyncio
    from types import SimpleNamespace

    import httpx
    from pydantic import SecretStr

    from escalator.config import load_config
    from escalator.config.settings import Settings
    from escalator.service.daemon import Daemon
    from escalator.testing import Harness

    from .test_api import FakeClock, until, write_config

    path = write_config(tmp_path)
    text = path.read_text(encoding="utf-8").replace(
        "      - {targets: [class_teacher], timeout: 60, mode: report}\n",
        "      - {targets: [class_teacher], timeout: 60, mode: report}\n"
        "      - {targets: [duty_officer], mode: inform}\n", 1)
    path.write_text(text, encoding="utf-8")
    clock = FakeClock(Harness.START)
    daemon = Daemon(load_config(path), Settings(state_dir=tmp_path / "state",
                                                http_listen="127.0.0.1:0",
                                                api_token=SecretStr(ADMIN)), clock=clock)
    task = asyncio.create_task(daemon.run())
    await until(lambda: getattr(daemon, "http_port", None) or task.done())
    api = SimpleNamespace(daemon=daemon)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.http_port}",
                                     timeout=30) as c:
            iid = (await post_case(c, "events/fever_single.json")).json()["incident_id"]
            for _ in range(2):  # the class teacher's 60 s, then the school doctor's 120 s
                await daemon.step()
                clock.advance(61)
                await daemon.step()
                clock.advance(121)
            await daemon.step()
            doctor = next(n for n in notifications(api, iid) if n.recipient_id == "doc")
            page = await c.get(f"/ack/{doctor.ack_token}")
            assert "致：赵校医 · 第2级" in page.text, page.text
            assert "超时未答复，已通知第3级" in page.text, page.text
    finally:
        daemon.stop()
        await asyncio.wait_for(task, 30)
