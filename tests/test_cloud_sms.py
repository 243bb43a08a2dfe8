"""Aliyun and Tencent Cloud SMS channels through their official SDKs, against a real HTTP server
on 127.0.0.1 answering the JSON the real APIs answer. Each SDK test is skipped when that SDK is
not installed (the ``test`` extra pulls both)."""

from __future__ import annotations

import json
import logging
import sys
import uuid

import pytest
from escalator_plugins.aliyun_sms import AliyunSmsChannel
from escalator_plugins.tencent_sms import TencentSmsChannel

from escalator.delivery.channels import DeliveryStatus, Message
from escalator.plugins import collect, get_plugin_manager
from tests.channel_servers import Answer, HTTPRecorder, free_port

D, R, P = DeliveryStatus.delivered, DeliveryStatus.failed_retryable, DeliveryStatus.failed_permanent
TENCENT_JSON = "application/json"  # exactly what the API sends; the SDK reads errors only then

VALUES = {"id": 12, "severity": "特急", "category": "传染病", "class_id": "3-2", "place": None,
          "summary": "三年级二班晨检发现发热学生三名并伴有咳嗽症状，已送医务室观察，请校医尽快到场复核并联系家长",
          "step": {"number": 2, "name": "校医"}, "ack_url": "https://esc.school.example/ack/AbC123"}


def msg(address: str = "13800000000", values: dict | None = VALUES) -> Message:
    return Message(notification_id=7, incident_id=12, channel_id="c", address=address,
                   recipient_name="王丽", title="【特急】传染病 #12", body="…",
                   ack_hint="https://esc.school.example/ack/AbC123", values=values)


@pytest.fixture
def secret() -> str:
    return f"SECRET-{uuid.uuid4().hex}"


@pytest.fixture
def http():
    with HTTPRecorder() as server:
        yield server


@pytest.fixture
def aliyun(http, secret):
    pytest.importorskip("alibabacloud_dysmsapi20170525")

    def make(**extra):
        options = {"access_key_id": "LTAI5tTestKeyId", "access_key_secret": secret,
                   "sign_name": "示例小学", "template_code": "SMS_123456789",
                   "params": {"no": "id", "cat": "category", "cls": "class_id", "where": "place",
                              "what": "summary", "step": "step.name"},
                   "endpoint": f"127.0.0.1:{http.port}", "protocol": "http", "timeout": 5}
        return AliyunSmsChannel("sms", {**options, **extra})
    return make


@pytest.fixture
def tencent(http, secret):
    pytest.importorskip("tencentcloud.sms")

    def make(**extra):
        options = {"secret_id": "AKIDTestSecretId", "secret_key": secret, "sdk_app_id": "1400000001",
                   "sign_name": "示例小学", "template_id": "2001234",
                   "params": ["id", "category", "summary", "place"],
                   "endpoint": f"127.0.0.1:{http.port}", "protocol": "http", "timeout": 5}
        return TencentSmsChannel("sms", {**options, **extra})
    return make


def aliyun_answer(code: str, message: str = "", status: int = 200) -> Answer:
    body = {"Code": code, "Message": message or code, "RequestId": "A1B2-C3D4"}
    if code == "OK":
        body["BizId"] = "900619746936498440^0"
    return Answer(status=status, body=body)


def tencent_status(code: str, message: str = "") -> Answer:
    return Answer(body={"Response": {"SendStatusSet": [{
        "SerialNo": "2028:f825e6b16e23f73f4123" if code == "Ok" else "", "PhoneNumber": "+8613800000000",
        "Fee": 1 if code == "Ok" else 0, "SessionContext": "", "Code": code,
        "Message": message or code, "IsoCode": "CN"}], "RequestId": "a0aabda6-cf91-4f3e-a81f-9198114a2279"}},
        content_type=TENCENT_JSON)


def tencent_error(code: str, message: str = "") -> Answer:
    return Answer(body={"Response": {"Error": {"Code": code, "Message": message or code},
                                     "RequestId": "b9d5ac8b-6a43-4b1f-8f55-6a3b5a6a8a1c"}},
                  content_type=TENCENT_JSON)


def test_both_registered_as_builtin_person_channels():
    registry = collect(get_plugin_manager(entry_points=False))
    assert registry.channels["aliyun_sms"] is AliyunSmsChannel
    assert registry.channels["tencent_sms"] is TencentSmsChannel
    assert AliyunSmsChannel.audience == TencentSmsChannel.audience == "person"


# ---------------------------------------------------------------------------------------------
# Aliyun
# ---------------------------------------------------------------------------------------------


async def test_aliyun_success_sends_fitted_template_params(aliyun, http):
    http.answer(aliyun_answer("OK"))
    result = await aliyun().send(msg("+86 138-0000-0000"))
    assert result.status is D and "BizId" in result.detail
    req = http.requests[0]
    fields = req.query  # SendSms is an RPC call: its parameters are in the query string
    assert fields["PhoneNumbers"] == ["13800000000"]
    assert fields["SignName"] == ["示例小学"] and fields["TemplateCode"] == ["SMS_123456789"]
    params = json.loads(fields["TemplateParam"][0])
    assert params["no"] == "12" and params["cat"] == "传染病" and params["cls"] == "3-2"
    assert params["where"] == "-"  # a value the incident has not: the `missing` text
    assert params["step"] == "校医"
    assert len(params["what"]) == 35 and params["what"].endswith("…")
    assert params["what"].startswith("三年级二班晨检")


async def test_aliyun_max_param_chars_and_fallback_without_values(aliyun, http):
    http.answer(aliyun_answer("OK"))
    ch = aliyun(max_param_chars=4, params={"no": "id", "t": "title", "cat": "category"})
    assert (await ch.send(msg(values=None))).status is D
    params = json.loads(http.requests[0].query["TemplateParam"][0])
    assert params == {"no": "12", "t": "【特急…", "cat": "-"}


@pytest.mark.parametrize("answer, status", [
    (aliyun_answer("isv.BUSINESS_LIMIT_CONTROL", "触发小时级流控Permits:5"), R),
    (aliyun_answer("isv.DAY_LIMIT_CONTROL", "触发日发送限额"), R),
    (aliyun_answer("Throttling.User", "Request was denied due to user flow control.", 400), R),
    (aliyun_answer("ServiceUnavailable", "The request has failed due to a temporary failure.", 503), R),
    (aliyun_answer("isv.SMS_TEMPLATE_ILLEGAL", "模板不合法(不存在或被拉黑)"), P),
    (aliyun_answer("isv.SMS_SIGNATURE_ILLEGAL", "签名不合法(不存在或被拉黑)"), P),
    (aliyun_answer("isv.MOBILE_NUMBER_ILLEGAL", "非法手机号"), P),
    (aliyun_answer("isv.AMOUNT_NOT_ENOUGH", "账户余额不足"), P),
    (aliyun_answer("InvalidAccessKeyId.NotFound", "Specified access key is not found.", 404), P),
])
async def test_aliyun_answers_mapped(aliyun, http, answer, status):
    http.answer(answer)
    result = await aliyun().send(msg())
    assert result.status is status
    assert answer.body["Code"] in result.detail


async def test_aliyun_connection_refused_is_retryable(aliyun):
    result = await aliyun(endpoint=f"127.0.0.1:{free_port()}").send(msg())
    assert result.status is R


async def test_aliyun_secret_never_in_repr_details_or_logs(aliyun, http, secret, caplog):
    caplog.set_level(logging.DEBUG)
    ch = aliyun()
    assert secret not in repr(ch) and "LTAI5tTestKeyId" not in repr(ch)
    http.answer(aliyun_answer("SignatureDoesNotMatch", f"Specified signature is not matched: {secret}", 400))
    result = await ch.send(msg())
    assert result.status is P and secret not in result.detail and "***" in result.detail
    assert secret not in caplog.text
    assert all(secret.encode() not in r.body and secret not in r.raw_query for r in http.requests)


async def test_aliyun_bad_address_and_options():
    pytest.importorskip("alibabacloud_dysmsapi20170525")
    base = {"access_key_id": "id", "access_key_secret": "s", "sign_name": "x", "template_code": "SMS_1"}
    with pytest.raises(ValueError, match="pupil_name"):
        AliyunSmsChannel("c", {**base, "params": {"n": "pupil_name"}})
    with pytest.raises(ValueError, match="endpoint"):
        AliyunSmsChannel("c", {**base, "endpoint": "https://dysmsapi.aliyuncs.com/"})
    result = await AliyunSmsChannel("c", base).send(msg("-"))
    assert result.status is P and "not a phone number" in result.detail


# ---------------------------------------------------------------------------------------------
# Tencent Cloud
# ---------------------------------------------------------------------------------------------


async def test_tencent_success_sends_fitted_template_params(tencent, http):
    http.answer(tencent_status("Ok", "send success"))
    result = await tencent().send(msg())
    assert result.status is D and "SerialNo" in result.detail
    req = http.requests[0]
    assert req.headers["x-tc-action"] == "SendSms" and req.headers["authorization"].startswith("TC3-HMAC-SHA256")
    body = req.json()
    assert body["PhoneNumberSet"] == ["+8613800000000"]
    assert body["SmsSdkAppId"] == "1400000001" and body["TemplateId"] == "2001234"
    assert body["SignName"] == "示例小学"
    no, cat, summary, place = body["TemplateParamSet"]
    assert (no, cat, place) == ("12", "传染病", "-")
    assert len(summary) == 12 and summary.endswith("…")


@pytest.mark.parametrize("answer, status", [
    (tencent_status("LimitExceeded.PhoneNumberThirtySecondLimit", "the number of sms messages sent from a single mobile number within 30 seconds exceeds the upper limit"), R),
    (tencent_status("LimitExceeded.PhoneNumberDailyLimit"), R),
    (tencent_error("RequestLimitExceeded", "请求的次数超过了频率限制。"), R),
    (tencent_error("InternalError.Timeout"), R),
    (tencent_status("FailedOperation.TemplateIncorrectOrUnapproved", "template is not approved or request content does not match the approved template content"), P),
    (tencent_status("FailedOperation.SignatureIncorrectOrUnapproved"), P),
    (tencent_status("InvalidParameterValue.IncorrectPhoneNumber"), P),
    (tencent_error("FailedOperation.InsufficientBalanceInSmsPackage"), P),
    (tencent_error("AuthFailure.SecretIdNotFound", "SecretId不存在，请输入正确的密钥。"), P),
])
async def test_tencent_answers_mapped(tencent, http, answer, status):
    http.answer(answer)
    result = await tencent().send(msg())
    assert result.status is status
    resp = answer.body["Response"]
    code = resp["Error"]["Code"] if "Error" in resp else resp["SendStatusSet"][0]["Code"]
    assert code in result.detail


async def test_tencent_http_5xx_and_connection_refused_are_retryable(tencent, http):
    http.answer(Answer(status=502, body=b"<html>502 Bad Gateway</html>", content_type="text/html"))
    assert (await tencent().send(msg())).status is R
    assert (await tencent(endpoint=f"127.0.0.1:{free_port()}").send(msg())).status is R


async def test_tencent_secret_never_in_repr_details_or_logs(tencent, http, secret, caplog):
    caplog.set_level(logging.DEBUG)
    ch = tencent()
    assert secret not in repr(ch) and "AKIDTestSecretId" not in repr(ch)
    http.answer(tencent_error("AuthFailure.SignatureFailure", f"The provided credentials {secret} could not be validated."))
    result = await ch.send(msg())
    assert result.status is P and secret not in result.detail and "***" in result.detail
    assert secret not in caplog.text
    assert all(secret.encode() not in r.body and secret not in str(r.headers) for r in http.requests)


# ---------------------------------------------------------------------------------------------
# without the SDK
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls, module, extra, options", [
    (AliyunSmsChannel, "alibabacloud_dysmsapi20170525.client", "aliyun",
     {"access_key_id": "i", "access_key_secret": "s", "sign_name": "x", "template_code": "SMS_1"}),
    (TencentSmsChannel, "tencentcloud.sms.v20210111.sms_client", "tencent",
     {"secret_id": "i", "secret_key": "s", "sdk_app_id": "1", "sign_name": "x", "template_id": "1"}),
])
def test_missing_sdk_names_the_extra(monkeypatch, cls, module, extra, options):
    monkeypatch.setitem(sys.modules, module, None)  # makes the import raise ImportError
    with pytest.raises(ValueError, match=rf"pip install 'escalator\[{extra}\]'"):
        cls("c", options)
