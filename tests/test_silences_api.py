"""Silences through the HTTP API (docs/silences.md): a real daemon on 127.0.0.1 (fake clock,
real SQLite file) talked to with httpx — create, list, expire, the rights and the errors."""

from __future__ import annotations

import asyncio
import json

import pytest

from .test_api import ADMIN, API_YAML, SOURCE, bearer, env, incident, write_config  # noqa: F401
from .test_api import api as api  # noqa: F401  (the fixture)

STANDING = """
silences:
  - id: fire_alarm_test
    matchers: ['source="fire_panel"']
    comment: 消防报警系统月度测试
    schedule: {weekdays: [1], nth: [1], start: "14:00", end: "15:00"}
"""

FIRE = {"kind": "incident", "category": "fire", "severity": "high", "summary": "1号楼 火警",
        "place": "1号楼"}


@pytest.fixture(autouse=True)
def standing_window(monkeypatch):
    """The API fixture's config, with a standing window in it."""
    import tests.test_api as base

    monkeypatch.setattr(base.write_config, "__defaults__", (API_YAML + STANDING,))


async def post(client, path, body, token=ADMIN):
    return await client.post(path, content=json.dumps(body, ensure_ascii=False).encode(),
                             headers={**bearer(token), "Content-Type": "application/json"})


async def eventually(check, tries: int = 2000):
    """Await ``check()`` (a coroutine) until true: the daemon's timer lane runs on its own."""
    for _ in range(tries):
        if await check():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not met in time")


async def test_a_silence_made_through_the_api_holds_and_its_expiry_releases(api):
    c = api.client
    ends = (api.clock.now().replace(microsecond=0)).isoformat().replace("+00:00", "Z")
    r = await post(c, "/api/v1/silences", {"matchers": ['place="1号楼"'], "comment": "1号楼检修",
                                           "ends_at": ends})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "ends_at"
    r = await post(c, "/api/v1/silences", {"matchers": ['place="1号楼"'], "comment": "1号楼检修",
                                           "ends_at": "2026-12-01T08:00:00+08:00"})
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["state"] == "active" and made["created_by"] == "admin" and made["origin"] == "api"
    listed = (await c.get("/api/v1/silences", headers=bearer(ADMIN))).json()
    assert [(s["id"], s["origin"], s["state"]) for s in listed] == [
        ("fire_alarm_test", "config", "pending"), (made["id"], "api", "active")]
    event = await post(c, "/api/v1/events", FIRE, token=SOURCE)
    iid = event.json()["incident_id"]
    detail = await incident(c, iid)
    assert [t["type"] for t in detail["timeline"]] == ["triggered", "silenced"]
    assert detail["notifications"] == []
    assert (await c.get("/api/v1/silences", headers=bearer(ADMIN))).json()[1]["held"] == 1
    r = await c.delete(f"/api/v1/silences/{made['id']}", headers=bearer(ADMIN))
    assert r.status_code == 200 and r.json() == {"id": made["id"], "released": 1}

    async def walking():
        return "silence_ended" in [t["type"] for t in (await incident(c, iid))["timeline"]]

    await eventually(walking)
    assert (await incident(c, iid))["notifications"]
    r = await post(c, f"/api/v1/silences/{made['id']}/expire", {})
    assert r.status_code == 404
    assert [s["id"] for s in (await c.get("/api/v1/silences?state=expired",
                                          headers=bearer(ADMIN))).json()] == [made["id"]]


async def test_silences_are_for_administrators_and_bad_ones_name_the_field(api):
    c = api.client
    assert (await c.get("/api/v1/silences")).status_code == 401
    assert (await c.get("/api/v1/silences", headers=bearer(SOURCE))).status_code == 403
    r = await post(c, "/api/v1/silences", {"matchers": ["place"], "comment": "x",
                                           "ends_at": "2026-12-01T08:00:00Z"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "matchers"
    r = await post(c, "/api/v1/silences", {"matchers": ["place=1"], "comment": "x",
                                           "schedule": {"weekdays": [9], "start": "14:00",
                                                        "end": "15:00"}})
    assert r.status_code == 422 and "schedule" in r.json()["errors"][0]["field"]
    r = await post(c, "/api/v1/silences", {"matchers": ["place=1"], "comment": "x",
                                           "ends_at": "2026-12-01T08:00:00Z", "extra": 1})
    assert r.status_code == 422
    r = await c.delete("/api/v1/silences/fire_alarm_test", headers=bearer(ADMIN))
    assert r.status_code == 409 and "config file" in r.json()["detail"]
    assert (await c.delete("/api/v1/silences/nope", headers=bearer(ADMIN))).status_code == 404
