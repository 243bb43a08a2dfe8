"""The voice-call channels (``aliyun_voice`` 语音通知, ``tencent_voice`` 语音消息) through their
official SDKs against a real HTTP server on 127.0.0.1 answering the JSON the real API answers; which messages call
(``severities``, ``hours``) and the failover to SMS for the rest, through the real delivery
stage on a fake clock."""

from __future__ import annotations

import json
import logging
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from escalator_plugins.aliyun_voice import AliyunVoiceChannel

from escalator.delivery.channels import DeliveryStatus, Message
from escalator.plugins import collect, get_plugin_manager
from tests.channel_servers import Answer, HTTPRecorder, free_port

D, R, P = DeliveryStatus.delivered, DeliveryStatus.failed_retryable, DeliveryStatus.failed_permanent

VALUES = {"id": 31, "severity": "特急", "severity_level": "critical", "category": "安全事故",
          "class_id": None, "place": "3号宿舍楼", "summary": "宿舍楼烟感报警，疑似起火",
          "step": {"number": 1, "name": "值班领导"}}


def msg(severity: str = "critical", address: str = "13800000000") -> Message:
    return Message(notification_id=9, incident_id=31, channel_id="voice", address=address,
                   recipient_name="李校长", title="【特急】安全事故 #31", body="…", ack_hint=None,
                   values={**VALUES, "severity_level": severity})


@pytest.fixture
def secret() -> str:
    return f"SECRET-{uuid.uuid4().hex}"


@pytest.fixture
def http():
    with HTTPRecorder() as server:
        yield server


@pytest.fixture
def voice(http, secret):
    pytest.importorskip("alibabacloud_dyvmsapi20170525")

    def make(**extra):
        options = {"access_key_id": "LTAI5tVoiceKeyId", "access_key_secret": secret,
                   "tts_code": "TTS_287000001", "called_show_number": "057100000000",
                   "params": {"no": "id", "cat": "category", "where": "place"},
                   "endpoint": f"127.0.0.1:{http.port}", "protocol": "http", "timeout": 5}
        return AliyunVoiceChannel("voice", {**options, **extra})
    return make


def answer(code: str, message: str = "", status: int = 200) -> Answer:
    body = {"Code": code, "Message": message or code, "RequestId": "V1-R2"}
    if code == "OK":
        body["CallId"] = "116012354148^10281378****"
    return Answer(status=status, body=body)


def at(hour: int, minute: int = 0) -> datetime:
    """School-local (UTC+8) ``hour:minute`` on 2026-12-07, as aware UTC."""
    return datetime(2026, 12, 7, (hour - 8) % 24, minute, tzinfo=UTC)


def test_registered_as_builtin_person_channels_that_take_no_replies():
    from escalator_plugins.tencent_voice import TencentVoiceChannel

    channels = collect(get_plugin_manager(entry_points=False)).channels
    assert channels["aliyun_voice"] is AliyunVoiceChannel
    assert channels["tencent_voice"] is TencentVoiceChannel
    for cls in (AliyunVoiceChannel, TencentVoiceChannel):
        assert cls.audience == "person" and not cls.takes_replies


async def test_a_critical_message_places_a_call_with_the_template_values(voice, http):
    http.answer(answer("OK"))
    result = await voice().send(msg(address="+86 138-0000-0000"))
    assert result.status is D and "CallId" in result.detail and "call placed" in result.detail
    req = http.requests[0]
    assert req.headers["x-acs-action"] == "SingleCallByTts"
    assert req.headers["authorization"].startswith("ACS3-HMAC-SHA256")  # signed, key not sent
    q = req.query  # an RPC call: parameters in the query string
    assert q["CalledNumber"] == ["13800000000"] and q["CalledShowNumber"] == ["057100000000"]
    assert q["TtsCode"] == ["TTS_287000001"] and q["PlayTimes"] == ["3"]
    assert q["OutId"] == ["escalator-9"]
    assert json.loads(q["TtsParam"][0]) == {"no": "31", "cat": "安全事故", "where": "3号宿舍楼"}


async def test_other_severities_and_hours_are_refused_without_a_call(voice, http):
    http.answer(*[answer("OK")] * 3)
    ch = voice(hours={"start": "21:00", "end": "07:00"})
    result = await ch.send(msg("high"))
    assert result.status is P and "not for severity high" in result.detail
    ch.now = lambda: at(14, 30)  # school hours: the SMS will do
    result = await ch.send(msg())
    assert result.status is P and "not at 14:30" in result.detail
    assert http.requests == []
    ch.now = lambda: at(3, 34)  # 03:34, a critical incident: call
    assert (await ch.send(msg())).status is D
    ch.now = lambda: at(21, 0)
    assert (await ch.send(msg())).status is D
    ch.now = lambda: at(7, 0)
    assert (await ch.send(msg())).status is P
    assert len(http.requests) == 2
    both = voice(severities=["critical", "high"])
    assert (await both.send(msg("high"))).status is D


@pytest.mark.parametrize("reply, status", [
    (answer("isv.BUSINESS_LIMIT_CONTROL", "触发流控"), R),
    (answer("Throttling.User", "Request was denied due to user flow control.", 400), R),
    (answer("ServiceUnavailable", "The request has failed due to a temporary failure.", 503), R),
    (answer("isv.TTS_TEMPLATE_ILLEGAL", "TTS模板不合法"), P),
    (answer("isv.MOBILE_NUMBER_ILLEGAL", "号码格式非法"), P),
    (answer("isv.AMOUNT_NOT_ENOUGH", "余额不足"), P),
    (answer("InvalidAccessKeyId.NotFound", "Specified access key is not found.", 404), P),
])
async def test_answers_mapped(voice, http, reply, status):
    http.answer(reply)
    result = await voice().send(msg())
    assert result.status is status and reply.body["Code"] in result.detail


async def test_connection_refused_is_retryable(voice):
    assert (await voice(endpoint=f"127.0.0.1:{free_port()}").send(msg())).status is R


async def test_secret_never_in_repr_details_logs_or_requests(voice, http, secret, caplog):
    caplog.set_level(logging.DEBUG)
    ch = voice()
    assert secret not in repr(ch) and "LTAI5tVoiceKeyId" not in repr(ch)
    http.answer(answer("SignatureDoesNotMatch", f"Specified signature is not matched: {secret}", 400))
    result = await ch.send(msg())
    assert result.status is P and secret not in result.detail and "***" in result.detail
    assert secret not in caplog.text
    assert all(secret.encode() not in r.body and secret not in r.raw_query for r in http.requests)


def test_bad_options_are_named():
    pytest.importorskip("alibabacloud_dyvmsapi20170525")
    base = {"access_key_id": "i", "access_key_secret": "s", "tts_code": "TTS_1"}
    with pytest.raises(ValueError, match="pupil_name"):
        AliyunVoiceChannel("c", {**base, "params": {"n": "pupil_name"}})
    with pytest.raises(ValueError, match="severities"):
        AliyunVoiceChannel("c", {**base, "severities": ["urgent"]})
    with pytest.raises(ValueError, match="play_times"):
        AliyunVoiceChannel("c", {**base, "play_times": 5})


def test_missing_sdk_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "alibabacloud_dyvmsapi20170525.client", None)
    with pytest.raises(ValueError, match=r"pip install 'escalator\[aliyun-voice\]'"):
        AliyunVoiceChannel("c", {"access_key_id": "i", "access_key_secret": "s", "tts_code": "TTS_1"})


async def test_through_the_delivery_stage_a_refused_message_fails_over_to_sms(voice, http, tmp_path):
    """李老师 (tests/fixtures/engine.yaml) has ``main`` first, then ``backup``: with ``main`` a
    voice channel, a critical incident calls her; a high one goes on at once to ``backup``."""
    from escalator.config import load_config
    from escalator.testing import Harness, RecordingChannel

    http.answer(answer("OK"))
    h = Harness(load_config(Path(__file__).parent / "fixtures" / "engine.yaml"),
                tmp_path / "db.sqlite3")
    sms = RecordingChannel()
    h.delivery.channels = {"main": voice(), "backup": sms}
    fall = {"kind": "incident", "category": "accident", "class_id": "5-1",
            "summary": "5-1班学生摔伤"}
    await h.send({**fall, "severity": "high", "dedup_key": "fall/1"})
    assert [m.address for m in sms.sent] == ["li@example.edu"] and http.requests == []
    await h.send({**fall, "severity": "critical", "dedup_key": "fall/2"})
    assert len(http.requests) == 1 and http.requests[0].query["CalledNumber"] == ["13800000002"]
    assert len(sms.sent) == 1
    with h.store.transaction() as tx:
        [first] = [n for n in tx.notifications_of(1) if n.contact_index == 0]
        [attempt] = tx.deliveries_of(first.id)
    assert "not for severity high" in attempt.detail
    h.close()


# ---------------------------------------------------------------------------------------------
# Tencent Cloud (tencent_voice, 语音消息 SendTtsVoice)
# ---------------------------------------------------------------------------------------------

TENCENT_JSON = "application/json"


@pytest.fixture
def tencent(http, secret):
    pytest.importorskip("tencentcloud.vms")
    from escalator_plugins.tencent_voice import TencentVoiceChannel

    def make(**extra):
        options = {"secret_id": "AKIDVoiceSecretId", "secret_key": secret,
                   "voice_sdk_app_id": "1400000002", "template_id": "1200001",
                   "params": ["id", "category", "place"],
                   "endpoint": f"127.0.0.1:{http.port}", "protocol": "http", "timeout": 5}
        return TencentVoiceChannel("voice", {**options, **extra})
    return make


def tencent_placed() -> Answer:
    return Answer(body={"Response": {"SendStatus": {"CallId": "be2f3a0c-5b8e-4a1d-9c2f-0a1b2c3d4e5f",
                                                    "SessionContext": "escalator-9"},
                                     "RequestId": "c1d2e3f4-0000-4a1d-9c2f-0a1b2c3d4e5f"}},
                  content_type=TENCENT_JSON)


def tencent_error(code: str, message: str = "") -> Answer:
    return Answer(body={"Response": {"Error": {"Code": code, "Message": message or code},
                                     "RequestId": "d9d5ac8b-6a43-4b1f-8f55-6a3b5a6a8a1c"}},
                  content_type=TENCENT_JSON)


async def test_tencent_a_critical_message_places_a_call(tencent, http):
    http.answer(tencent_placed())
    result = await tencent().send(msg())
    assert result.status is D and "CallId" in result.detail
    req = http.requests[0]
    assert req.headers["x-tc-action"] == "SendTtsVoice"
    assert req.headers["authorization"].startswith("TC3-HMAC-SHA256")
    body = req.json()
    assert body["CalledNumber"] == "+8613800000000" and body["VoiceSdkAppid"] == "1400000002"
    assert body["TemplateId"] == "1200001" and body["PlayTimes"] == 3
    assert body["TemplateParamSet"] == ["31", "安全事故", "3号宿舍楼"]
    assert body["SessionContext"] == "escalator-9"


async def test_tencent_refuses_other_severities_and_hours(tencent, http):
    ch = tencent(hours={"start": "22:00", "end": "06:00"})
    assert "not for severity medium" in (await ch.send(msg("medium"))).detail
    ch.now = lambda: at(21, 59)
    assert (await ch.send(msg())).status is P
    assert http.requests == []


@pytest.mark.parametrize("reply, status", [
    (tencent_error("LimitExceeded.FrequencyLimit", "频率超限"), R),
    (tencent_error("RequestLimitExceeded"), R),
    (tencent_error("InternalError.Timeout"), R),
    (tencent_error("FailedOperation.TemplateIncorrectOrUnapproved"), P),
    (tencent_error("InvalidParameterValue.IncorrectPhoneNumber"), P),
    (tencent_error("FailedOperation.InsufficientBalance"), P),
    (tencent_error("AuthFailure.SecretIdNotFound"), P),
])
async def test_tencent_answers_mapped(tencent, http, reply, status):
    http.answer(reply)
    result = await tencent().send(msg())
    assert result.status is status and reply.body["Response"]["Error"]["Code"] in result.detail


async def test_tencent_5xx_refused_and_secret_kept(tencent, http, secret, caplog):
    caplog.set_level(logging.DEBUG)
    http.answer(Answer(status=502, body=b"<html>502</html>", content_type="text/html"))
    assert (await tencent().send(msg())).status is R
    assert (await tencent(endpoint=f"127.0.0.1:{free_port()}").send(msg())).status is R
    ch = tencent()
    assert secret not in repr(ch) and "AKIDVoiceSecretId" not in repr(ch)
    http.answer(tencent_error("AuthFailure.SignatureFailure", f"credentials {secret} invalid"))
    result = await ch.send(msg())
    assert result.status is P and secret not in result.detail and secret not in caplog.text
    assert all(secret.encode() not in r.body and secret not in str(r.headers) for r in http.requests)


def test_tencent_missing_sdk_names_the_extra(monkeypatch):
    from escalator_plugins.tencent_voice import TencentVoiceChannel

    monkeypatch.setitem(sys.modules, "tencentcloud.vms.v20200902.vms_client", None)
    with pytest.raises(ValueError, match=r"pip install 'escalator\[tencent-voice\]'"):
        TencentVoiceChannel("c", {"secret_id": "i", "secret_key": "s", "voice_sdk_app_id": "1",
                                  "template_id": "1"})
