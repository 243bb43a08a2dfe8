"""Replies from the phone through a real daemon (fake clock for the engine, real SQLite file,
real uvicorn server): the SMS webhooks of the generic gateway, Aliyun and Tencent Cloud, with
escalator's SMS going to (and its answers coming back through) a real ``sms_http`` channel
pointed at a local HTTP server; e-mail replies from the spool folder, answered through a real
``email`` channel to a local aiosmtpd server (docs/replies.md)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import structlog
from pydantic import SecretStr

from escalator.clock import FakeClock
from escalator.config import load_config
from escalator.config.settings import Settings
from escalator.delivery.replies import ReplyDesk
from escalator.delivery.reply_mail import read_folder, read_mail
from escalator.plugins import collect, get_plugin_manager
from escalator.service.daemon import Daemon
from escalator.testing import Harness
from tests.channel_servers import HTTPRecorder, SMTPServer
from tests.test_replies import SmsRecorder

FIXTURES = Path(__file__).resolve().parent / "fixtures"
ADMIN = "adm-2c5e8a1f7b3d9046"
GW_SECRET = "gw-3f9a1c7e5b2d8046aa"
ALI_SECRET = "ali-8d2e6b0c4a9f1735bb"
TC_SECRET = "tc-5b1d9f3a7c2e6048cc"
WANG = "13800000001"
FALL = {"kind": "incident", "category": "accident", "severity": "high",
        "summary": "3-2班一名学生在操场摔伤，右臂疼痛", "class_id": "3-2", "dedup_key": "fall/1"}


def config_text(sms_url: str, smtp_port: int) -> str:
    base = (FIXTURES / "engine.yaml").read_text(encoding="utf-8")
    channels = (f"  main: {{type: sms_http, options: {{url: '{sms_url}/send', signature: '【测试小学】'}}}}\n"
                f"  backup: {{type: email, options: {{host: 127.0.0.1, port: {smtp_port}, "
                "from: 'escalator <esc@school.example>', html: false}}\n")
    assert "  main: {type: console}\n  backup: {type: console}\n" in base
    base = base.replace("  main: {type: console}\n  backup: {type: console}\n", channels)
    return base + """
replies:
  webhooks:
    gateway: {type: sms_http, secret_env: TEST_REPLY_GW, answer_channel: main}
    aliyun: {type: aliyun, secret_file: aliyun.secret, answer_channel: main}
    tencent: {type: tencent, secret_env: TEST_REPLY_TC, answer_channel: main}
    short: {type: aliyun, secret_env: TEST_REPLY_SHORT}
  email: {spool_dir: mail-replies, answer_channel: backup, poll_seconds: 3600}
"""


async def until(predicate, timeout: float = 10.0) -> None:
    """Poll ``predicate`` with short awaits (only for real servers and the daemon's lanes)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


@pytest.fixture
def servers():
    with HTTPRecorder() as sms, SMTPServer() as smtp:
        yield SimpleNamespace(sms=sms, smtp=smtp)


@pytest.fixture
def config_path(tmp_path, servers, monkeypatch):
    for key in list(os.environ):
        if key.startswith("ESCALATOR_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("TEST_REPLY_GW", GW_SECRET)
    monkeypatch.setenv("TEST_REPLY_TC", TC_SECRET)
    monkeypatch.setenv("TEST_REPLY_SHORT", "too-short")
    (tmp_path / "aliyun.secret").write_text(ALI_SECRET + "\n", encoding="utf-8")
    path = tmp_path / "escalator.yaml"
    path.write_text(config_text(servers.sms.url, servers.smtp.port), encoding="utf-8")
    return path


@pytest.fixture
async def api(tmp_path, config_path, servers):
    config = load_config(config_path)
    settings = Settings(state_dir=tmp_path / "state", http_listen="127.0.0.1:0",
                        api_token=SecretStr(ADMIN))
    clock = FakeClock(Harness.START)
    daemon = Daemon(config, settings, clock=clock)
    task = asyncio.create_task(daemon.run())
    await until(lambda: getattr(daemon, "http_port", None) or task.done())
    assert not task.done(), task.exception()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.http_port}", timeout=30) as c:
        yield SimpleNamespace(daemon=daemon, client=c, clock=clock, sms=servers.sms,
                              smtp=servers.smtp, tmp=tmp_path)
    daemon.stop()
    await asyncio.wait_for(task, 30)


def texts(sms: HTTPRecorder) -> list[tuple[str, str]]:
    """``(to, text)`` of every SMS the gateway got."""
    return [(r.json()["to"], r.json()["text"]) for r in sms.requests]


def signed(body: bytes, stamp: int, secret: str = GW_SECRET) -> dict[str, str]:
    mac = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Escalator-Timestamp": str(stamp), "X-Escalator-Signature": f"sha256={mac}",
            "Content-Type": "application/json"}


async def open_fall(api, **extra) -> int:
    r = await api.client.post("/api/v1/events", json={**FALL, **extra},
                              headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 202, r.text
    return r.json()["incident_id"]


async def state(api, iid: int) -> str:
    r = await api.client.get(f"/api/v1/incidents/{iid}", headers={"Authorization": f"Bearer {ADMIN}"})
    return r.json()["state"]


# ------------------------------------------------------------------ the generic gateway


async def test_sms_reply_1a_through_the_gateway_acknowledges_and_is_answered(api):
    iid = await open_fall(api)
    await until(lambda: len(api.sms.requests) >= 1)
    to, text = texts(api.sms)[0]
    assert to == WANG and text.startswith("【测试小学】")
    assert text.endswith("回复 1a 确认（停止升级）")  # an escalate step: "1" is the answer
    body = json.dumps({"from": "+86 138 0000 0001", "text": "1A", "id": "gw-77"}).encode()
    stamp = int(api.clock.now().timestamp())
    r = await api.client.post("/replies/gateway", content=body, headers=signed(body, stamp))
    assert r.status_code == 200 and r.json() == {"received": 1}
    assert await state(api, iid) == "acknowledged"
    await until(lambda: len(api.sms.requests) >= 2)
    assert texts(api.sms)[1] == ("+8613800000001", "【测试小学】事件 #1 已确认，升级已停止。")


async def test_the_gateway_refuses_bad_signatures_and_names_bad_fields(api):
    body = json.dumps({"from": WANG, "text": "1a"}).encode()
    now = int(api.clock.now().timestamp())
    post = api.client.post
    assert (await post("/replies/gateway", content=body,
                       headers={"Content-Type": "application/json"})).status_code == 401
    assert (await post("/replies/gateway", content=body,
                       headers=signed(body, now, "x" * 20))).status_code == 401
    tampered = body.replace(b"1a", b"3a")
    assert (await post("/replies/gateway", content=tampered,
                       headers=signed(body, now))).status_code == 401
    assert (await post("/replies/gateway", content=body,
                       headers=signed(body, now - 400))).status_code == 401  # a replay
    assert (await post("/replies/nobody", content=body, headers=signed(body, now))).status_code == 404
    assert (await post(f"/replies/gateway/{GW_SECRET}", content=body)).status_code == 404
    bad = json.dumps({"text": "1a"}).encode()
    r = await post("/replies/gateway", content=bad, headers=signed(bad, now))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "from"
    junk = b"{not json"
    assert (await post("/replies/gateway", content=junk, headers=signed(junk, now))).status_code == 400
    assert api.sms.requests == []  # nothing answered, nothing acted on


# ------------------------------------------------------------------ Aliyun and Tencent Cloud


async def test_aliyun_uplink_batch_with_the_secret_in_the_path(api):
    iid = await open_fall(api)
    await until(lambda: len(api.sms.requests) >= 1)
    push = [{"phone_number": "13912345678", "send_time": "2026-11-30 07:50:00", "content": "1a",
             "sign_name": "测试小学", "dest_code": "1234", "sequence_id": 1234567890},
            {"phone_number": WANG, "send_time": "2026-11-30 07:50:01", "content": "确认 a",
             "sign_name": "测试小学", "dest_code": "1234", "sequence_id": 1234567891}]
    r = await api.client.post(f"/replies/aliyun/{ALI_SECRET}", json=push)
    assert r.status_code == 200 and r.json() == {"code": 0, "msg": "接收成功"}
    assert await state(api, iid) == "acknowledged"
    await until(lambda: len(api.sms.requests) >= 3)
    answered = dict(texts(api.sms)[1:])
    assert "未登记" in answered["13912345678"]
    assert answered[WANG] == "【测试小学】事件 #1 已确认，升级已停止。"
    for wrong in ("x" * 20, ALI_SECRET[:-1], TC_SECRET):
        assert (await api.client.post(f"/replies/aliyun/{wrong}", json=push)).status_code == 404
    assert (await api.client.post("/replies/aliyun", json=push)).status_code == 404
    # a webhook whose secret is too short is off: the same 404 as a wrong secret
    assert (await api.client.post("/replies/short/too-short", json=push)).status_code == 404
    r = await api.client.post(f"/replies/aliyun/{ALI_SECRET}", json=[{"content": "1a"}])
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "[0].phone_number"


async def test_tencent_reply_callback(api):
    iid = await open_fall(api)
    await until(lambda: len(api.sms.requests) >= 1)
    body = {"extend": "", "mobile": WANG, "nationcode": "86", "sign": "测试小学", "text": "１ａ",
            "time": int(api.clock.now().timestamp())}
    r = await api.client.post(f"/replies/tencent/{TC_SECRET}", json=body)
    assert r.status_code == 200 and r.json() == {"result": 0, "errmsg": "OK"}
    assert await state(api, iid) == "acknowledged"
    r = await api.client.post(f"/replies/tencent/{TC_SECRET}", json={"mobile": WANG})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "text"
    assert (await api.client.post(f"/replies/tencent/{ALI_SECRET}", json=body)).status_code == 404


async def test_secrets_and_reply_texts_never_reach_the_log(api):
    with structlog.testing.capture_logs() as logs:
        await open_fall(api)
        await until(lambda: len(api.sms.requests) >= 1)
        await api.client.post(f"/replies/aliyun/{ALI_SECRET}x", json=[])
        await api.client.post(f"/replies/tencent/{TC_SECRET}",
                              json={"mobile": WANG, "nationcode": "86", "text": "1a 王小明"})
        await until(lambda: len(api.sms.requests) >= 2)
    text = str(logs)
    assert ALI_SECRET not in text and TC_SECRET not in text and "王小明" not in text
    assert WANG not in text
    events = [line["event"] for line in logs]
    assert "reply_webhook_refused" in events and "reply_handled" in events


async def test_the_webhooks_are_in_the_openapi_document(api):
    paths = (await api.client.get("/openapi.json")).json()["paths"]
    assert "/replies/{name}" in paths and "/replies/{name}/{secret}" in paths


# ------------------------------------------------------------------ e-mail replies


def eml(sender: str, body: str, subject: str = "Re: 【高】安全事故 #1", **headers: str) -> bytes:
    extra = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
    return (f"From: {sender}\r\nTo: esc@school.example\r\nSubject: {subject}\r\n{extra}"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\n" + body).encode("utf-8")


def test_a_mail_is_read_above_the_quoted_message():
    mail = read_mail(eml("李老师 <Li@Example.edu>", "1a\r\n\r\n> 测试小学 事件 #1：…\r\n"))
    assert (mail.sender, mail.text, mail.automatic) == ("Li@Example.edu", "1a", False)
    assert read_mail(eml("li@example.edu", "> quoted only\r\n", subject="Re: 2b")).text == "2b"
    assert read_mail(eml("li@example.edu", "1a", Auto_Submitted="auto-replied")).automatic
    assert read_mail(eml("li@example.edu", "1a", Precedence="bulk")).automatic
    assert not read_mail(eml("li@example.edu", "1a", Auto_Submitted="no")).automatic
    with pytest.raises(ValueError, match="From"):
        read_mail(b"Subject: x\r\n\r\n1a")


async def test_mail_replies_from_the_spool_folder(tmp_path, config_path, servers):
    config = load_config(config_path)
    registry = collect(get_plugin_manager(entry_points=False))
    email = registry.channels["email"]("backup", config.channels["backup"].options)

    h = Harness(config, tmp_path / "db.sqlite3")
    h.delivery.channels = {"main": SmsRecorder(), "backup": email}  # 李老师: SMS, then e-mail
    await h.send({**FALL, "class_id": "5-1", "dedup_key": "fall/5-1"})  # 李老师
    folder = tmp_path / "mail-replies"
    folder.mkdir()
    (folder / "001.eml").write_bytes(eml("李老师 <LI@example.edu>", "1a\r\n> 原消息\r\n"))
    (folder / "002.eml").write_bytes(eml("li@example.edu", "我不在办公室", Auto_Submitted="auto-replied"))
    (folder / "003.eml").write_bytes(eml("stranger@example.com", "1a"))
    (folder / "004.eml").write_bytes(b"\x00 not a mail")
    (folder / ".partial").write_bytes(b"being written")
    desk = ReplyDesk(h.engine)

    async def db(fn, *args):
        return fn(*args)

    handled = await read_folder(folder, desk, db, email, "backup")
    assert [x.outcome for x in handled] == ["acknowledged", "unknown_sender"]
    assert h.incident(1).state == "acknowledged" and h.incident(1).acknowledged_by == "t-li"
    with h.store.transaction() as tx:
        assert tx.timeline(1)[-1].detail["via"] == "email"
    assert sorted(p.name for p in (folder / "done").iterdir()) == ["001.eml", "002.eml", "003.eml"]
    assert [p.name for p in (folder / "failed").iterdir()] == ["004.eml"]
    assert (folder / ".partial").exists()
    [answer] = servers.smtp.messages  # the known sender only: no backscatter to strangers
    assert answer.rcpt_tos == ["li@example.edu"]
    msg = message_from_bytes(answer.data, policy=default_policy)
    assert "事件 #1 已确认" in msg.get_content()
    assert msg["Auto-Submitted"] == "auto-generated"  # so their auto-reply does not loop
    assert await read_folder(folder, desk, db, email, "backup") == []  # each mail once
    h.close()


async def test_the_daemon_reads_the_mail_folder_as_an_input(api):
    assert "reply-mail" in [t.get_name() for t in api.daemon._inputs]


# ------------------------------------------------------------------ e-mail replies over IMAP


@pytest.fixture
def imap_server():
    """A real IMAP server (pymap's in-memory backend) on 127.0.0.1, user ``esc`` / ``pw``."""
    import shutil
    import socket
    import subprocess
    import sys
    import time

    exe = Path(sys.executable).parent / "pymap"  # in the test extra: missing is a failure
    assert exe.exists() or shutil.which("pymap"), "pymap missing: pip install -e '.[test]'"
    from tests.channel_servers import free_port
    port = free_port()
    proc = subprocess.Popen([str(exe if exe.exists() else shutil.which("pymap")), "--host",
                             "127.0.0.1", "--port", str(port), "--no-tls", "dict",
                             "--demo-user", "esc", "--demo-password", "pw"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:  # a real server starting: wait until it accepts connections
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise AssertionError("pymap did not start") from None
            time.sleep(0.05)
    yield port
    proc.terminate()
    proc.wait(10)


async def test_mail_replies_from_an_imap_mailbox(tmp_path, config_path, servers, imap_server):
    import imaplib

    from escalator.config.replies import ReplyImap
    from escalator.delivery.reply_mail import read_imap

    config = load_config(config_path)
    email = collect(get_plugin_manager(entry_points=False)).channels["email"](
        "backup", config.channels["backup"].options)
    h = Harness(config, tmp_path / "db.sqlite3")
    h.delivery.channels = {"main": SmsRecorder(), "backup": email}  # 李老师: SMS, then e-mail
    await h.send({**FALL, "class_id": "5-1", "dedup_key": "fall/5-1"})
    box = imaplib.IMAP4("127.0.0.1", imap_server)
    box.login("esc", "pw")
    for data in (eml("李老师 <li@example.edu>", "1a\r\n> 原消息\r\n"),
                 eml("li@example.edu", "外出", Auto_Submitted="auto-replied"),
                 eml("stranger@example.com", "1a")):
        assert box.append("INBOX", None, None, data)[0] == "OK"
    box.logout()
    options = ReplyImap(host="127.0.0.1", port=imap_server, tls=False, username="esc",
                        password_env="UNUSED")
    desk = ReplyDesk(h.engine)

    async def db(fn, *args):
        return fn(*args)

    handled = await read_imap(options, "pw", desk, db, email, "backup")
    assert [x.outcome for x in handled] == ["acknowledged", "unknown_sender"]
    assert h.incident(1).acknowledged_by == "t-li"
    assert [m.rcpt_tos for m in servers.smtp.messages] == [["li@example.edu"]]
    assert await read_imap(options, "pw", desk, db, email, "backup") == []  # flagged \Seen
    with pytest.raises(imaplib.IMAP4.error):
        await read_imap(options, "wrong", desk, db, email, "backup")
    h.close()
