"""Channel plugins against real servers on 127.0.0.1: SMTP (aiosmtpd), HTTP (robots, SMS
gateway, Apprise's json:// target) and real files (smstools spool). No network mocks."""

from __future__ import annotations

import base64
import email
import errno
import hashlib
import hmac
import logging
import os
import stat
import time
import uuid
import weakref
from email import policy
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from escalator_plugins.apprise_channel import AppriseChannel
from escalator_plugins.dingtalk import DingTalkChannel
from escalator_plugins.email import EmailChannel
from escalator_plugins.feishu import FeishuChannel
from escalator_plugins.sms_http import SmsHttpChannel
from escalator_plugins.smstools import SmsToolsChannel
from escalator_plugins.wecom import WeComChannel

from escalator.config import ConfigError, load_config
from escalator.config.load import check_config
from escalator.config.settings import Settings
from escalator.delivery.channels import DeliveryStatus, Message
from escalator.delivery.http import classify_http, shared_client
from escalator.delivery.options import Redactor, mask
from escalator.delivery.ratelimit import RateLimit, RateLimiter
from escalator.delivery.text import fit_sms, fit_text, sms_segments, utf8_len
from escalator.plugins import collect, get_plugin_manager
from escalator.service.daemon import Daemon, plugin_problems
from tests.channel_servers import Answer, HTTPRecorder, SMTPServer, free_port

D, R, P = DeliveryStatus.delivered, DeliveryStatus.failed_retryable, DeliveryStatus.failed_permanent
ROOT = Path(__file__).resolve().parents[1]

ACK = "确认链接：https://escalator.school.example/ack/AbC123"
TITLE = "【特急】传染病疑似病例 #12"
BODY = "事件 #12：传染病\n班级：3-2\n发生时间：2026-11-30 07:48\n请立即核实处置，并确认。\n" + ACK


def msg(address: str = "-", *, title: str = TITLE, body: str = BODY, ack: str | None = ACK,
        name: str = "王丽") -> Message:
    return Message(notification_id=7, incident_id=12, channel_id="c", address=address,
                   recipient_name=name, title=title, body=body, ack_hint=ack)


def secret(label: str) -> str:
    """A unique secret (also a unique robot identity, so rate-limit windows never mix)."""
    return f"{label}-{uuid.uuid4().hex}"


@pytest.fixture
def http():
    with HTTPRecorder() as server:
        yield server


@pytest.fixture
def smtp():
    with SMTPServer() as server:
        yield server


# ---------------------------------------------------------------------------------------------
# every channel: registration, declared schema, options, masking
# ---------------------------------------------------------------------------------------------

ALL = {
    "email": (EmailChannel, {"host": "127.0.0.1", "from": "学校 <a@school.example>",
                             "username": "u", "password": "pw-SECRET-1"}),
    "dingtalk": (DingTalkChannel, {"access_token": "tok-SECRET-2", "secret": "SEC-SECRET-3"}),
    "wecom": (WeComChannel, {"key": "key-SECRET-4"}),
    "feishu": (FeishuChannel, {"token": "tok-SECRET-5", "secret": "sig-SECRET-6"}),
    "apprise": (AppriseChannel, {"urls": ["json://user:pw-SECRET-7@127.0.0.1:9/"]}),
    "sms_http": (SmsHttpChannel, {"url": "http://127.0.0.1:9/send", "token": "tok-SECRET-8",
                                  "headers": {"X-Api-Key": "hdr-SECRET-9"}}),
    "smstools": (SmsToolsChannel, {"outgoing": "/var/spool/sms/outgoing"}),
}


def test_all_registered_as_builtins_with_declared_schema():
    registry = collect(get_plugin_manager(entry_points=False))
    for name, (cls, _) in ALL.items():
        assert registry.channels[name] is cls
        assert cls.audience in ("person", "group")
        assert set(cls.secret_options) <= set(cls.options_model.model_fields) | {"from"}
        assert hasattr(cls, "max_body_chars") and hasattr(cls, "max_body_bytes")
    assert {n for n, (c, _) in ALL.items() if c.audience == "group"} == {"dingtalk", "wecom", "feishu"}
    assert WeComChannel.max_body_bytes == 2048
    assert DingTalkChannel.rate_limits[0].count == 20


@pytest.mark.parametrize("name", sorted(ALL))
def test_unknown_option_is_named_and_no_value_echoed(name):
    cls, options = ALL[name]
    with pytest.raises(ValueError) as e:
        cls("c", {**options, "bogus_option": "v-SECRET-X"})
    text = str(e.value)
    assert "'bogus_option'" in text and "unknown option" in text
    assert "SECRET" not in text


@pytest.mark.parametrize("name", sorted(ALL))
def test_repr_masks_every_secret(name):
    cls, options = ALL[name]
    shown = repr(cls("c", options))
    assert "SECRET" not in shown
    assert name != "smstools" or "/var/spool/sms/outgoing" in shown  # non-secrets stay visible
    for key in cls.secret_options:
        if key in options:
            assert "***" in shown


@pytest.mark.parametrize("cls,options,fragment", [
    (DingTalkChannel, {"access_token": "t-SECRET", "base_url": "ftp://x"}, "option base_url"),
    (DingTalkChannel, {"access_token": "t-SECRET", "timeout": 99}, "option timeout"),
    (WeComChannel, {}, "option key: required"),
    (EmailChannel, {"host": "h", "from": "x", "password": "p-SECRET"}, "option from"),
    (EmailChannel, {"host": "h", "from": "a@b.example", "tls": True, "starttls": True}, "choose one"),
    (EmailChannel, {"host": "h", "from": "a@b.example", "password": "p-SECRET"}, "without option username"),
    (SmsHttpChannel, {"url": "http://x/", "body": {"m": "{message}"}}, "unknown placeholder"),
    (SmsHttpChannel, {"url": "http://x/", "body": {"m": "{to.__class__}"}}, "unknown placeholder"),
    (SmsHttpChannel, {"url": "http://x/", "success_value": "0"}, "needs option success_json_path"),
    (SmsHttpChannel, {"url": "http://x/", "method": "GET", "body": {"a": "{to}"}}, "GET"),
    (SmsToolsChannel, {"outgoing": "relative/dir"}, "absolute"),
    (AppriseChannel, {"urls": "nosuchscheme://tok-SECRET@host/"}, "scheme 'nosuchscheme'"),
])
def test_bad_options_are_named(cls, options, fragment):
    with pytest.raises(ValueError) as e:
        cls("c", options)
    assert fragment in str(e.value)
    assert "SECRET" not in str(e.value)


def test_example_config_channel_options_are_accepted(monkeypatch):
    """config/example.yaml's channel blocks build with the real channel classes (secrets from
    *_env / *_file replaced by stand-ins)."""
    config, problems = check_config(ROOT / "config" / "example.yaml")
    assert config is not None, problems
    registry = collect(get_plugin_manager(entry_points=False))
    assert config.channels
    for cid, ch in config.channels.items():
        options = {(k[:-4] if k.endswith("_env") else k[:-5] if k.endswith("_file") else k):
                   ("stand-in-secret" if k.endswith(("_env", "_file")) else v)
                   for k, v in ch.options.items()}
        channel = registry.channels[ch.type](cid, options)
        assert "stand-in-secret" not in repr(channel)


# secrets from *_env / *_file: checked structurally when the config loads, for real at start

APPRISE_CONFIG = """\
school:
  name: 测试小学
  classes: ["1-1"]
channels:
  console: {type: console}
  grp:
    type: apprise
    options: {urls_env: GRP_URL, audience: group}
people:
  - id: t1
    name: 王老师
    roles: [class_teacher]
    classes: ["1-1"]
    contacts: [{channel: console, to: "t1"}, {channel: grp, to: "-"}]
policies:
  main:
    steps:
      - targets: [class_teacher]
routes:
  - policy: main
    default: true
"""


def apprise_config(tmp_path: Path, options: str = "{urls_env: GRP_URL, audience: group}") -> Path:
    path = tmp_path / "escalator.yaml"
    path.write_text(APPRISE_CONFIG.replace("{urls_env: GRP_URL, audience: group}", options),
                    encoding="utf-8")
    return path


@pytest.mark.parametrize("options,env", [
    ("{urls_env: GRP_URL, audience: group}", {"GRP_URL": "json://127.0.0.1:9911/"}),
    ("{urls_file: grp_url, audience: group}", {}),
])
def test_apprise_urls_from_env_or_file_load_and_the_daemon_gets_the_real_url(
        tmp_path, monkeypatch, options, env):
    """The documented form (docs/channels.md): the stand-in checked at load time is not the
    real URL, and must not be judged as one."""
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    (tmp_path / "grp_url").write_text("json://127.0.0.1:9911/\n", encoding="utf-8")
    config = load_config(apprise_config(tmp_path, options))  # also the CLI's check-config path:
    assert plugin_problems(config, collect(get_plugin_manager(entry_points=False))) == []
    daemon = Daemon(config, Settings(state_dir=tmp_path / "state"),
                    plugin_manager=get_plugin_manager(entry_points=False))
    try:
        channel = daemon.delivery.channels["grp"]
        assert isinstance(channel, AppriseChannel)
        assert channel.options.urls == ["json://127.0.0.1:9911/"]
        assert channel.audience == "group"
    finally:
        daemon.store.close()


def test_apprise_bad_real_url_fails_at_start_naming_the_option_not_the_value(
        tmp_path, monkeypatch, caplog):
    bad = "nosuchscheme://host/SECRET-token"  # Apprise's own log line would show it unmasked
    monkeypatch.setenv("GRP_URL", bad)
    config = load_config(apprise_config(tmp_path))  # the value is not read at load time
    caplog.set_level(logging.DEBUG, logger="apprise")
    with pytest.raises(ConfigError) as e:
        Daemon(config, Settings(state_dir=tmp_path / "state"),
               plugin_manager=get_plugin_manager(entry_points=False))
    text = str(e.value)
    assert "channels.grp.options" in text
    assert "option urls (from urls_env)" in text and "does not understand" in text
    assert "scheme 'nosuchscheme'" in text
    assert "SECRET" not in text and bad not in text
    assert "SECRET" not in caplog.text  # Apprise's own "Unparseable URL …" line is held back


@pytest.mark.parametrize("type_,options", [
    ("apprise", {"urls_env": "V", "audience": "group"}),
    ("apprise", {"urls_file": "f"}),
    ("dingtalk", {"access_token_file": "f", "secret_env": "V"}),
    ("wecom", {"key_env": "V"}),
    ("feishu", {"token_file": "f", "secret_env": "V"}),
    ("sms_http", {"url": "https://gw.example/send", "token_env": "V"}),
    ("sms_http", {"url_env": "V"}),  # any option may come from the environment
    ("aliyun_sms", {"access_key_id_env": "V", "access_key_secret_env": "W",
                    "template_code": "SMS_1", "sign_name": "示例小学"}),
    ("tencent_sms", {"secret_id_env": "V", "secret_key_env": "W", "sdk_app_id": "1400000000",
                     "template_id": "1", "sign_name": "示例小学"}),
    ("email", {"host": "smtp.example", "from": "a@b.example", "username": "u",
               "password_env": "V"}),
    ("email", {"host": "smtp.example", "from_env": "V"}),
])
def test_secret_sourced_options_pass_the_load_time_check(type_, options):
    registry = collect(get_plugin_manager(entry_points=False))
    registry.channels[type_].options_model.check_unresolved(options)


@pytest.mark.parametrize("type_,options,fragment", [
    ("apprise", {"urlz_env": "V"}, "unknown option 'urlz_env'"),
    ("apprise", {"urls_env": "V", "audience": "crowd"}, "option audience"),
    ("apprise", {"urls": "json://127.0.0.1:9/", "urls_env": "V"},
     "option urls: given more than once (urls, urls_env)"),
    ("sms_http", {"url": "https://gw.example/send", "headers_env": "V"},
     "option headers (from headers_env)"),  # a mapping cannot come from a string
    ("email", {"host": "smtp.example", "from": "a@b.example", "password_env": "V"},
     "option password (from password_env): given without option username"),
    ("wecom", {}, "option key: required"),
])
def test_structural_errors_of_secret_sourced_options_are_still_reported(type_, options, fragment):
    registry = collect(get_plugin_manager(entry_points=False))
    with pytest.raises(ValueError) as e:
        registry.channels[type_].options_model.check_unresolved(options)
    assert fragment in str(e.value)


# ---------------------------------------------------------------------------------------------
# the channel kit: options, text, http, ratelimit
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text,limit,measure,expected", [
    ("abcdef", 6, len, "abcdef"),
    ("abcdefgh", 6, len, "abcde…"),
    ("一二三四五", 9, utf8_len, "一二…"),          # 2×3 bytes + 3-byte marker
    ("一二三四五", 10, utf8_len, "一二…"),         # never half a character
    ("a😀b😀c", 4, lambda s: len(s.encode("utf-16-be")) // 2, "a😀…"),  # SMS units: 😀 is 2
])
def test_fit_text_table(text, limit, measure, expected):
    out = fit_text(text, limit, measure=measure)
    assert out == expected
    assert measure(out) <= limit


def test_fit_text_keeps_the_tail_and_its_line_break():
    text = "x" * 100 + "\n" + ACK
    out = fit_text(text, 60, keep_tail=ACK)
    assert out.endswith("…\n" + ACK) and len(out) <= 60


@pytest.mark.parametrize("text,encoding,segments", [
    ("", "auto", 0),
    ("字" * 70, "auto", 1),
    ("字" * 71, "auto", 2),
    ("字" * 134, "auto", 2),
    ("字" * 135, "auto", 3),
    ("a" * 160, "auto", 1),
    ("a" * 161, "auto", 2),
    ("a" * 70, "ucs2", 1),
    ("a" * 71, "ucs2", 2),
    ("{" * 80, "auto", 1),      # GSM-7 extension characters count two septets
    ("{" * 81, "auto", 2),
    ("😀" * 35, "auto", 1),     # outside the BMP: two UTF-16 units each
    ("😀" * 36, "auto", 2),
])
def test_sms_segments_table(text, encoding, segments):
    assert sms_segments(text, encoding) == segments


@pytest.mark.parametrize("max_segments,limit", [(1, 70), (2, 134), (3, 201)])
def test_fit_sms_chinese(max_segments, limit):
    text = "晨检发现发热学生，" * 40 + "\n" + ACK
    out = fit_sms(text, max_segments, keep_tail=ACK)
    assert sms_segments(out) == max_segments and len(out) <= limit
    assert out.endswith(ACK) if len(ACK) < limit - 2 else True


@pytest.mark.parametrize("status,expected", [
    (200, None), (204, None), (301, P), (400, P), (401, P), (404, P), (408, R), (429, R),
    (500, R), (502, R), (503, R),
])
def test_classify_http_table(status, expected):
    assert classify_http(status) == expected


def test_rate_limiter_windows_on_a_fake_clock():
    now = [1000.0]
    lim = RateLimiter([RateLimit(3, 60.0), RateLimit(2, 1.0)], now=lambda: now[0])
    assert lim.try_acquire() == 0 and lim.try_acquire() == 0
    assert lim.try_acquire() == pytest.approx(1.0)   # 2 a second
    now[0] += 1.0
    assert lim.try_acquire() == 0
    now[0] += 1.0
    assert lim.try_acquire() == pytest.approx(58.0)  # 3 a minute: the first expires at 1060
    now[0] += 58.0
    assert lim.try_acquire() == 0


def test_redactor_catches_url_encoded_secrets():
    r = Redactor(["a+b/c=="])
    assert r.scrub("sign=a%2Bb%2Fc%3D%3D and a+b/c== and a%2Bb%2Fc%3D%3D") == "sign=*** and *** and ***"


# ---------------------------------------------------------------------------------------------
# DingTalk
# ---------------------------------------------------------------------------------------------


def dingtalk(http: HTTPRecorder, **extra: Any) -> DingTalkChannel:
    return DingTalkChannel("dingtalk", {"access_token": secret("tok"), "base_url": http.url + "/robot/send",
                                        **extra})


async def test_dingtalk_signs_and_posts_group_text(http):
    http.answer(Answer(200, {"errcode": 0, "errmsg": "ok"}))
    sec = secret("SEC")
    ch = dingtalk(http, secret=sec)
    result = await ch.send(msg("+86 138-0013-8000"))
    assert result.status == D, result
    req = http.requests[0]
    assert req.method == "POST" and req.path == "/robot/send"
    assert req.query["access_token"] == [ch.options.access_token]
    ts = req.query["timestamp"][0]
    expected = base64.b64encode(hmac.new(sec.encode(), f"{ts}\n{sec}".encode(), hashlib.sha256).digest()).decode()
    assert req.query["sign"] == [expected]
    assert "+" not in req.raw_query.split("sign=")[1].split("&")[0]  # URL-encoded once
    assert abs(int(ts) - time.time() * 1000) < 60_000  # milliseconds
    body = req.json()
    assert body["msgtype"] == "text"
    assert body["text"]["content"] == f"{TITLE}\n{BODY}"  # nothing added: no name, no summary
    assert body["at"] == {"atMobiles": ["13800138000"], "isAtAll": False}
    assert "王丽" not in req.body.decode()
    assert req.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize("address,at,note", [
    ("-", {"atMobiles": [], "isAtAll": False}, ""),
    ("", {"atMobiles": [], "isAtAll": False}, ""),
    ("all", {"atMobiles": [], "isAtAll": True}, ""),
    ("13800138000", {"atMobiles": ["13800138000"], "isAtAll": False}, ""),
    ("wang.li", {"atMobiles": [], "isAtAll": False}, "not a mobile number"),
])
async def test_dingtalk_mentions(http, address, at, note):
    http.answer(Answer(200, {"errcode": 0, "errmsg": "ok"}))
    result = await dingtalk(http).send(msg(address))
    assert result.status == D
    assert http.requests[0].json()["at"] == at
    assert (note in result.detail) if note else ("mention" not in result.detail)
    assert "timestamp" not in http.requests[0].query  # no secret, no signature


async def test_dingtalk_keyword_prepended_once(http):
    http.answer(Answer(200, {"errcode": 0}), Answer(200, {"errcode": 0}))
    await dingtalk(http, keyword="校园安全").send(msg())
    await dingtalk(http, keyword="传染病").send(msg())
    assert http.requests[0].json()["text"]["content"].startswith("校园安全\n" + TITLE)
    assert http.requests[1].json()["text"]["content"] == f"{TITLE}\n{BODY}"  # already there


@pytest.mark.parametrize("status,body,expected", [
    (200, {"errcode": 0, "errmsg": "ok"}, D),
    (200, {"errcode": 130101, "errmsg": "send too fast, exceed 20 times per minute"}, R),
    (200, {"errcode": 130101}, R),  # by the code alone
    (200, {"errcode": 410100, "errmsg": "发送速度太快而限流"}, R),
    (200, {"errcode": -1, "errmsg": "系统繁忙"}, R),
    (200, {"errcode": 310000, "errmsg": "keywords not in content"}, P),
    (200, {"errcode": 310000, "errmsg": "sign not match"}, P),
    (200, {"errcode": 300001, "errmsg": "token is not exist"}, P),
    (200, {"errcode": 400102, "errmsg": "机器人已停用"}, P),
    (200, {"errcode": 430102, "errmsg": "含有不合适的文本"}, P),
    (200, b"<html>captive portal</html>", R),
    (404, {"errmsg": "not found"}, P),
    (429, b"", R),
    (500, b"", R),
    (503, {"errcode": 0}, R),
])
async def test_dingtalk_answer_table(http, status, body, expected):
    http.answer(Answer(status, body))
    result = await dingtalk(http).send(msg())
    assert result.status == expected, result
    if isinstance(body, dict) and "errcode" in body and status == 200:
        assert f"errcode {body['errcode']}" in result.detail


async def test_dingtalk_holds_back_the_21st_message_in_a_minute(http):
    http.default = Answer(200, {"errcode": 0, "errmsg": "ok"})
    ch = dingtalk(http)
    now = [5000.0]
    ch.limiter.now = lambda: now[0]
    for _ in range(20):
        assert (await ch.send(msg())).status == D
    held = await ch.send(msg())
    assert held.status == R and "20 messages a minute" in held.detail
    assert held.retry_after == pytest.approx(60.0) and held.held_back  # typed, not parsed
    assert len(http.requests) == 20  # the 21st never reached DingTalk
    now[0] += 60.0
    assert (await ch.send(msg())).status == D
    # the window belongs to the robot, not the channel object: a reload shares it
    again = DingTalkChannel("other", {"access_token": ch.options.access_token, "base_url": http.url})
    assert again.limiter is ch.limiter


async def test_the_shared_http_client_is_closed_when_its_last_channel_is(http, monkeypatch):
    """``aclose`` releases the channel's count on the loop's one HTTP client: the client stays
    open while another channel may still use it — also one built (by a reload) that has not
    sent yet — and closes (its connections too) with the last."""
    import weakref

    from escalator.delivery import http as kit_http

    monkeypatch.setattr(kit_http, "_USERS", weakref.WeakSet())  # only this test's channels
    http.default = Answer(200, {"errcode": 0, "errmsg": "ok"})
    old = dingtalk(http)
    assert (await old.send(msg())).status == D
    client = shared_client()
    new = dingtalk(http)  # the reload's channel, no send yet
    await old.aclose()
    await old.aclose()  # twice: counted once
    assert not client.closed
    await new.aclose()
    assert client.closed
    assert (await old.send(msg())).status == D  # a later send gets a new client
    assert shared_client() is not client


async def test_dingtalk_timeout_and_closed_port_are_retryable(http):
    http.answer(Answer(200, {"errcode": 0}, delay=1.0))
    slow = await dingtalk(http, timeout=0.2).send(msg())
    assert slow.status == R and "timeout" in slow.detail
    closed = DingTalkChannel("d", {"access_token": secret("tok"),
                                   "base_url": f"http://127.0.0.1:{free_port()}/robot/send"})
    result = await closed.send(msg())
    assert result.status == R and "Connect" in result.detail


# ---------------------------------------------------------------------------------------------
# WeCom
# ---------------------------------------------------------------------------------------------


def wecom(http: HTTPRecorder, **extra: Any) -> WeComChannel:
    return WeComChannel("wecom", {"key": secret("key"), "base_url": http.url + "/cgi-bin/webhook/send",
                                  **extra})


async def test_wecom_posts_with_key_and_mention(http):
    http.answer(Answer(200, {"errcode": 0, "errmsg": "ok"}))
    ch = wecom(http)
    result = await ch.send(msg("13800138000"))
    assert result.status == D
    req = http.requests[0]
    assert req.path == "/cgi-bin/webhook/send" and req.query["key"] == [ch.options.key]
    assert req.json() == {"msgtype": "text", "text": {"content": f"{TITLE}\n{BODY}",
                                                     "mentioned_mobile_list": ["13800138000"]}}


async def test_wecom_fits_long_chinese_text_to_2048_bytes(http):
    http.answer(Answer(200, {"errcode": 0}))
    long_body = "班级：3-2\n" + "晨午检发现发热、咳嗽症状，" * 300 + "\n" + ACK
    result = await wecom(http).send(msg("all", body=long_body))
    assert result.status == D
    req = http.requests[0]
    content = req.json()["text"]["content"]
    raw = content.encode("utf-8")
    assert len(raw) <= 2048
    assert len(raw) > 2048 - 12          # the room is used, not wasted
    raw.decode("utf-8", errors="strict")  # whole characters only
    assert content.startswith(TITLE) and content.endswith("…\n" + ACK)
    assert req.json()["text"]["mentioned_mobile_list"] == ["@all"]


@pytest.mark.parametrize("status,body,expected", [
    (200, {"errcode": 0, "errmsg": "ok"}, D),
    (200, {"errcode": 45009, "errmsg": "api freq out of limit"}, R),
    (200, {"errcode": 45009}, R),  # by the code alone
    (200, {"errcode": -1, "errmsg": "system busy"}, R),
    (200, {"errcode": 93000, "errmsg": "invalid webhook url"}, P),
    (200, {"errcode": 40008, "errmsg": "invalid message type"}, P),
    (200, {"errcode": 44004, "errmsg": "empty content"}, P),
    (502, b"bad gateway", R),
    (403, b"forbidden", P),
])
async def test_wecom_answer_table(http, status, body, expected):
    http.answer(Answer(status, body))
    result = await wecom(http).send(msg())
    assert result.status == expected, result


# ---------------------------------------------------------------------------------------------
# Feishu
# ---------------------------------------------------------------------------------------------


def feishu(http: HTTPRecorder, **extra: Any) -> FeishuChannel:
    return FeishuChannel("feishu", {"token": secret("tok"), "base_url": http.url + "/open-apis/bot/v2/hook/",
                                    **extra})


async def test_feishu_signs_in_the_body(http):
    http.answer(Answer(200, {"code": 0, "msg": "success", "data": {}}))
    sec = secret("sig")
    ch = feishu(http, secret=sec)
    result = await ch.send(msg("-"))
    assert result.status == D, result
    req = http.requests[0]
    assert req.path == f"/open-apis/bot/v2/hook/{ch.options.token}"
    body = req.json()
    ts = body["timestamp"]
    key = f"{ts}\n{sec}".encode()
    assert body["sign"] == base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()
    assert abs(int(ts) - time.time()) < 60  # seconds
    assert body["msg_type"] == "text" and body["content"] == {"text": f"{TITLE}\n{BODY}"}


@pytest.mark.parametrize("address,prefix,note", [
    ("ou_7d8a6e6df7621556ce0d21922b676706", '<at user_id="ou_7d8a6e6df7621556ce0d21922b676706"></at> ', ""),
    ("all", '<at user_id="all">所有人</at> ', ""),
    ("13800138000", "", "not by mobile"),
    ("-", "", ""),
])
async def test_feishu_mentions(http, address, prefix, note):
    http.answer(Answer(200, {"code": 0}))
    result = await feishu(http).send(msg(address))
    assert result.status == D
    assert http.requests[0].json()["content"]["text"] == f"{prefix}{TITLE}\n{BODY}"
    assert (note in result.detail) if note else "mention" not in result.detail


@pytest.mark.parametrize("status,body,expected", [
    (200, {"code": 0, "msg": "success", "data": {}}, D),
    (200, {"Extra": None, "StatusCode": 0, "StatusMessage": "success"}, D),
    (200, {"code": 11232, "msg": "create message failed, frequency limited"}, R),
    (200, {"code": 11232}, R),  # by the code alone
    (200, {"code": 9499, "msg": "too many request"}, R),
    (200, {"code": 9499, "msg": "Bad Request", "data": {}}, P),
    (400, {"code": 9499, "msg": "Bad Request"}, P),
    (200, {"code": 19021, "msg": "sign match fail or timestamp is not within one hour from current time"}, P),
    (200, {"code": 19001, "msg": "param invalid: incoming webhook access token invalid"}, P),
    (200, {"code": 19024, "msg": "Key Words Not Found"}, P),
    (504, b"", R),
])
async def test_feishu_answer_table(http, status, body, expected):
    http.answer(Answer(status, body))
    result = await feishu(http).send(msg())
    assert result.status == expected, result


async def test_feishu_body_stays_within_20_kb(http):
    http.answer(Answer(200, {"code": 0}))
    huge = ("班级：3-2\n" * 4000) + ACK
    assert (await feishu(http, secret=secret("s")).send(msg(body=huge))).status == D
    req = http.requests[0]
    assert len(req.body) <= 20 * 1024
    assert req.json()["content"]["text"].endswith(ACK)


# ---------------------------------------------------------------------------------------------
# email
# ---------------------------------------------------------------------------------------------


def mailer(port: int, **extra: Any) -> EmailChannel:
    return EmailChannel("email", {"host": "127.0.0.1", "port": port, "timeout": 5,
                                  "from": "示例小学联防联控 <escalator@school.example>", **extra})


async def test_email_chinese_subject_names_and_both_parts(smtp):
    result = await mailer(smtp.port).send(msg("wangli@school.example"))
    assert result.status == D, result
    assert "accepted by 127.0.0.1" in result.detail
    [captured] = smtp.messages
    assert captured.mail_from == "escalator@school.example"
    assert captured.rcpt_tos == ["wangli@school.example"]
    head = captured.data.split(b"\r\n\r\n", 1)[0]
    assert head.isascii() and b"=?utf-8?" in head  # RFC 2047 encoded words, no raw UTF-8
    parsed = email.message_from_bytes(captured.data, policy=policy.default)
    assert parsed["Subject"] == TITLE
    assert parsed["From"].addresses[0].display_name == "示例小学联防联控"
    assert parsed["From"].addresses[0].addr_spec == "escalator@school.example"
    assert parsed["To"].addresses[0].display_name == "王丽"
    assert parsed["Auto-Submitted"] == "auto-generated"
    assert parsed.get_content_type() == "multipart/alternative"
    plain = parsed.get_body(("plain",)).get_content()
    html = parsed.get_body(("html",)).get_content()
    assert plain.replace("\r\n", "\n").strip() == BODY
    assert "班级：3-2<br>" in html and TITLE in html
    assert '<a href="https://escalator.school.example/ack/AbC123">' in html


async def test_email_html_can_be_turned_off(smtp):
    assert (await mailer(smtp.port, html=False).send(msg("a@school.example"))).status == D
    parsed = email.message_from_bytes(smtp.messages[0].data, policy=policy.default)
    assert parsed.get_content_type() == "text/plain"


@pytest.mark.parametrize("reply,expected", [
    ("451 4.3.0 Mail server temporarily rejected message", R),
    ("452 4.2.2 Mailbox full", R),
    ("550 5.1.1 <nobody@school.example>: Recipient address rejected", P),
    ("553 5.7.1 Relaying denied", P),
])
async def test_email_recipient_replies(smtp, reply, expected):
    smtp.handler.rcpt_reply = reply
    result = await mailer(smtp.port).send(msg("nobody@school.example"))
    assert result.status == expected, result
    assert reply.split()[0] in result.detail
    assert smtp.messages == []


async def test_email_closed_port_is_retryable():
    result = await mailer(free_port()).send(msg("a@school.example"))
    assert result.status == R, result


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_email_auth_and_wrong_password_never_shows_it():
    with SMTPServer(users={"escalator": "right-SECRET-pw"}) as server:
        ok = await mailer(server.port, username="escalator", password="right-SECRET-pw").send(
            msg("a@school.example"))
        assert ok.status == D, ok
        bad = await mailer(server.port, username="escalator", password="wrong-SECRET-pw").send(
            msg("a@school.example"))
        assert bad.status == P and "535" in bad.detail
        assert "SECRET" not in bad.detail
        assert len(server.messages) == 1


@pytest.mark.parametrize("address", ["not-an-address", "王丽@学校.cn", "a@b.example, c@d.example"])
async def test_email_bad_address_is_permanent(smtp, address):
    result = await mailer(smtp.port).send(msg(address))
    assert result.status == P and "address" in result.detail
    assert smtp.messages == []


async def test_email_starttls_required_but_not_offered_is_permanent(smtp):
    result = await mailer(smtp.port, starttls=True).send(msg("a@school.example"))
    assert result.status == P, result
    assert smtp.messages == []


# ---------------------------------------------------------------------------------------------
# Apprise
# ---------------------------------------------------------------------------------------------


async def test_apprise_delivers_to_a_local_json_target(http):
    ch = AppriseChannel("apprise", {"urls": f"json://127.0.0.1:{http.port}/notify"})
    result = await ch.send(msg("-"))
    assert result.status == D, result
    [req] = http.requests
    assert req.path == "/notify"
    payload = req.json()
    assert payload["title"] == TITLE and payload["message"] == BODY


async def test_apprise_failure_is_retryable_and_not_retried_by_apprise(http):
    http.default = Answer(500, {"error": "boom"})
    ch = AppriseChannel("apprise", {"urls": [f"json://127.0.0.1:{http.port}/"]})
    result = await ch.send(msg())
    assert result.status == R and "no reason" in result.detail
    assert len(http.requests) == 1  # Apprise's own retries are off


async def test_apprise_to_placeholder_and_group_audience(http):
    ch = AppriseChannel("apprise", {"urls": [f"json://127.0.0.1:{http.port}/people/{{to}}"],
                                    "audience": "group"})
    assert ch.audience == "group" and AppriseChannel.audience == "person"
    assert (await ch.send(msg("13800138000"))).status == D
    assert http.requests[0].path == "/people/13800138000"
    assert (await ch.send(msg("-"))).status == P  # {to} needs an address


# ---------------------------------------------------------------------------------------------
# SMS over an HTTP gateway
# ---------------------------------------------------------------------------------------------


def sms(http: HTTPRecorder, **extra: Any) -> SmsHttpChannel:
    return SmsHttpChannel("sms", {"url": http.url + "/api/v1/send", **extra})


async def test_sms_http_default_json_body_bearer_and_signature(http):
    tok = secret("tok")
    result = await sms(http, token=tok, signature="【示例小学】").send(msg("+86 139-5555-1140"))
    assert result.status == D, result
    req = http.requests[0]
    assert req.method == "POST" and req.path == "/api/v1/send"
    assert req.headers["authorization"] == f"Bearer {tok}"
    body = req.json()
    assert body["to"] == "+8613955551140"
    assert body["text"].startswith("【示例小学】" + TITLE)
    assert body["text"].endswith(ACK)
    assert sms_segments(body["text"]) <= 3


async def test_sms_http_fits_to_max_segments(http):
    long_body = "晨检发现发热学生，" * 80 + "\n" + ACK
    for max_segments, limit in ((1, 70), (3, 201), (5, 335)):
        await sms(http, max_segments=max_segments).send(msg("13800138000", body=long_body))
        text = http.requests[-1].json()["text"]
        assert sms_segments(text) == max_segments and len(text) <= limit
        assert "…" in text
    assert http.requests[-1].json()["text"].endswith(ACK)


async def test_sms_http_form_and_query_templates(http):
    ch = sms(http, query={"apikey": "q-SECRET-key", "mobile": "{to}"},
             body={"content": "{text}", "literal": "{{not a placeholder}}"}, body_format="form")
    assert (await ch.send(msg("13800138000"))).status == D
    req = http.requests[0]
    assert req.query == {"apikey": ["q-SECRET-key"], "mobile": ["13800138000"]}
    assert req.headers["content-type"].startswith("application/x-www-form-urlencoded")
    form = parse_qs(req.body.decode())
    assert form["content"][0].startswith(TITLE) and form["literal"] == ["{not a placeholder}"]
    assert "SECRET" not in repr(ch)


async def test_sms_http_raw_body(http):
    ch = sms(http, body="to={to};msg={text}", body_format="raw")
    assert (await ch.send(msg("13800138000", body="短", ack=None))).status == D
    assert http.requests[0].body.decode() == f"to=13800138000;msg={TITLE}\n短"


@pytest.mark.parametrize("status,body,expected", [
    (200, {}, D), (202, b"queued", D),
    (500, b"", R), (503, b"", R), (429, b"", R), (408, b"", R),
    (400, {"error": "bad number"}, P), (401, b"", P), (404, b"", P),
])
async def test_sms_http_status_table(http, status, body, expected):
    http.answer(Answer(status, body))
    assert (await sms(http).send(msg("13800138000"))).status == expected


@pytest.mark.parametrize("body,expected", [
    ({"result": {"code": "0"}}, D),
    ({"result": {"code": 0}}, D),
    ({"result": {"code": "1001", "msg": "余额不足"}}, P),
    ({"result": {"code": "429"}}, R),
    ({"result": {}}, P),
    (b"OK", P),
])
async def test_sms_http_success_json_path(http, body, expected):
    http.answer(Answer(200, body))
    ch = sms(http, success_json_path="result.code", success_value="0", retry_values=["429"])
    result = await ch.send(msg("13800138000"))
    assert result.status == expected, result


async def test_sms_http_timeout_and_bad_address(http):
    http.answer(Answer(200, {}, delay=1.0))
    assert (await sms(http, timeout=0.2).send(msg("13800138000"))).status == R
    result = await sms(http).send(msg("wangli@school.example"))
    assert result.status == P and "not a phone number" in result.detail


async def test_sms_http_secrets_never_in_details_even_when_echoed(http):
    tok, hdr = secret("tok"), secret("hdr")
    http.answer(Answer(401, {"error": f"bad token {tok} / {hdr}"}))
    ch = sms(http, token=tok, headers={"X-Api-Key": hdr})
    result = await ch.send(msg("13800138000"))
    assert result.status == P
    assert tok not in result.detail and hdr not in result.detail and "***" in result.detail


# ---------------------------------------------------------------------------------------------
# smstools spool
# ---------------------------------------------------------------------------------------------


async def test_smstools_writes_ucs2_spool_file(tmp_path):
    ch = SmsToolsChannel("gsm", {"outgoing": str(tmp_path)})
    result = await ch.send(msg("+86 138 0013 8000"))
    assert result.status == D, result
    [path] = list(tmp_path.iterdir())
    assert path.name.startswith("escalator-7-") and path.name in result.detail
    raw = path.read_bytes()
    header, body = raw.split(b"\n\n", 1)
    assert header == b"To: 8613800138000\nAlphabet: UCS2"
    assert not body.startswith(b"\xfe\xff")  # no byte-order mark
    text = body.decode("utf-16-be")
    assert text == f"{TITLE}\n{BODY}"


async def test_smstools_fits_to_ucs2_segments_even_for_latin_text(tmp_path):
    ch = SmsToolsChannel("gsm", {"outgoing": str(tmp_path), "max_segments": 2})
    assert (await ch.send(msg("13800138000", title="ALERT", body="a" * 500 + "\n" + ACK))).status == D
    [path] = list(tmp_path.iterdir())
    text = path.read_bytes().split(b"\n\n", 1)[1].decode("utf-16-be")
    assert len(text) <= 134 and text.endswith("…\n" + ACK)  # 2 × 67, not 2 × 153 (GSM-7)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


async def test_smstools_rename_is_the_only_way_in(tmp_path, monkeypatch):
    """At the moment of the rename the final name does not exist and the hidden temporary
    file is already complete: smsd can never read a partial file under the final name."""
    import escalator_plugins.smstools as mod

    seen: list[tuple[str, bool, bytes]] = []
    real_rename = os.rename

    def spy(src, dst):
        seen.append((Path(src).name, Path(dst).exists(), Path(src).read_bytes()))
        real_rename(src, dst)

    monkeypatch.setattr(mod.os, "rename", spy)
    ch = SmsToolsChannel("gsm", {"outgoing": str(tmp_path)})
    assert (await ch.send(msg("13800138000"))).status == D
    [(tmp_name, final_existed, content)] = seen
    assert tmp_name.startswith(".") and tmp_name.endswith(".tmp")
    assert final_existed is False
    [final] = list(tmp_path.iterdir())
    assert final.read_bytes() == content


async def test_smstools_failed_write_leaves_nothing(tmp_path, monkeypatch):
    import escalator_plugins.smstools as mod

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(mod.os, "fsync", disk_full)
    result = await SmsToolsChannel("gsm", {"outgoing": str(tmp_path)}).send(msg("13800138000"))
    assert result.status == R and "No space" in result.detail
    assert list(tmp_path.iterdir()) == []


async def test_smstools_missing_folder_and_bad_address_are_permanent(tmp_path):
    missing = await SmsToolsChannel("gsm", {"outgoing": str(tmp_path / "nope")}).send(msg("13800138000"))
    assert missing.status == P
    bad = await SmsToolsChannel("gsm", {"outgoing": str(tmp_path)}).send(msg("王丽"))
    assert bad.status == P and list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# secrets never in details or log lines, whatever happens
# ---------------------------------------------------------------------------------------------


async def test_robot_secrets_never_in_details_or_logs(http, caplog):
    """Success, a refusal whose message echoes the channel's own secrets, a 500, a closed
    port: no detail, repr or log line shows a secret."""
    caplog.set_level(logging.DEBUG)
    made = {
        "dingtalk": lambda base, s1, s2: DingTalkChannel("d", {"access_token": s1, "secret": s2,
                                                               "base_url": base}),
        "wecom": lambda base, s1, s2: WeComChannel("w", {"key": s1, "base_url": base}),
        "feishu": lambda base, s1, s2: FeishuChannel("f", {"token": s1, "secret": s2,
                                                           "base_url": base}),
    }
    texts, used = [], []
    for name, make in made.items():
        s1, s2 = secret(name), secret(name + "-sign")
        used += [s1, s2] if name != "wecom" else [s1]  # WeCom robots have no signing secret
        echo = f"token {s1} or secret {s2} rejected" if name != "wecom" else f"key {s1} rejected"
        for base in (http.url, f"http://127.0.0.1:{free_port()}"):
            ch = make(base, s1, s2)
            http.answers.clear()
            http.answer(Answer(200, {"errcode": 0, "code": 0}),
                        Answer(200, {"errcode": 310000, "errmsg": echo, "code": 19021, "msg": echo}),
                        Answer(500, echo.encode()))
            for _ in range(3):
                texts.append((await ch.send(msg())).detail)
            texts.append(repr(ch))
    assert any(s in t for t in texts for s in ("310000", "19021"))  # the echoes were seen
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for value in used:
        assert all(value not in t for t in texts), value
        assert value not in logged, value


def test_mask_handles_mappings_lists_and_unset():
    shown = mask({"a": "x", "headers": {"K": "v"}, "urls": ["u1", "u2"], "token": None},
                     ["headers", "urls", "token"])
    assert shown == {"a": "x", "headers": {"K": "***"}, "urls": ["***", "***"], "token": None}


def test_proxies_from_the_environment_with_no_proxy_exceptions():
    """The shared client's proxy choice (aiohttp's ``trust_env`` is off: it reads ~/.netrc per
    request): HTTPS_PROXY for https, HTTP_PROXY for http, ALL_PROXY otherwise, NO_PROXY skips."""
    from escalator.delivery.http import proxy_for

    proxies = {"https": "http://proxy.school:3128", "http": "http://proxy.school:8080",
               "no": "localhost,.internal.school"}
    assert proxy_for("https://oapi.dingtalk.com/robot/send", proxies) == "http://proxy.school:3128"
    assert proxy_for("http://sms.example.cn/send", proxies) == "http://proxy.school:8080"
    assert proxy_for("https://gw.internal.school/sms", proxies) is None
    assert proxy_for("http://localhost:8080/x", proxies) is None
    assert proxy_for("https://oapi.dingtalk.com/x", {}) is None
    assert proxy_for("https://a.example/x", {"all": "http://p:1"}) == "http://p:1"


async def test_a_send_goes_through_the_http_proxy_of_the_environment(http, monkeypatch):
    """HTTP_PROXY names the recorder: the gateway's request reaches it in absolute form (a
    host that does not exist, so only the proxy could have answered); NO_PROXY skips it."""
    from escalator.delivery import http as kit_http

    monkeypatch.setenv("HTTP_PROXY", http.url)
    monkeypatch.setenv("NO_PROXY", "nothing.invalid")
    await kit_http.release_client(object())
    monkeypatch.setattr(kit_http, "_CLIENTS", weakref.WeakKeyDictionary())  # a fresh client
    ch = SmsHttpChannel("sms", {"url": "http://sms-gateway.example.invalid/api/v1/send"})
    assert (await ch.send(msg("13955551140"))).status == D
    assert http.requests[-1].path == "/api/v1/send"
    await ch.aclose()
