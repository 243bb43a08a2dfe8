"""The glue the Tencent Cloud channels share (``plugins/tencent_sms.py``,
``plugins/tencent_voice.py``): their common options, loading the SDK, a signed client from a
channel's options, and what an SDK error code says. Each channel keeps its own request and
answer.

Error codes (Tencent Cloud API 3.0, "公共错误码"): ``LimitExceeded.*``,
``RequestLimitExceeded`` and ``InternalError.*`` are worth another try; the SDK names a non-200
HTTP answer ``ServerNetworkError`` and a timeout or connection error ``ClientNetworkError``,
both retryable too. Any other code (``AuthFailure.*``, an unapproved template, a bad number, no
balance) is permanent.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from escalator.delivery.channels import DeliveryResult, DeliveryStatus
from escalator.delivery.sms_template import (
    CloudSmsOptions,
    check_value_names,
    load_sdk,
    quiet_sdk_debug,
)
from escalator.delivery.text import short

RETRYABLE_PREFIXES = ("LimitExceeded", "RequestLimitExceeded", "InternalError",
                      "ClientNetworkError", "ServerNetworkError")
"""Codes worth another try (see the module docstring)."""

_COMMON = ("tencentcloud.common.credential", "tencentcloud.common.profile.http_profile",
           "tencentcloud.common.profile.client_profile")


class TencentOptions(CloudSmsOptions):
    """Options every Tencent Cloud channel has: the API key pair (``secret_id``,
    ``secret_key``; never logged), the approved ``template_id`` and its positional ``params``
    (escalator value names, each cut to ``max_param_chars``), ``region`` and ``endpoint``."""

    secret_id: str = Field(min_length=1)
    secret_key: str = Field(min_length=1)
    template_id: str = Field(min_length=1)
    params: list[str] = Field(default_factory=list)
    region: str = "ap-guangzhou"
    endpoint: str
    max_param_chars: int = Field(12, ge=1, le=500)

    @field_validator("params")
    @classmethod
    def known_values(cls, value: list[str]) -> list[str]:
        return check_value_names(value)


def classify_code(code: str) -> DeliveryStatus:
    """What a Tencent Cloud error or send-status ``Code`` says (``Ok`` → delivered)."""
    if code == "Ok":
        return DeliveryStatus.delivered
    if code.startswith(RETRYABLE_PREFIXES):
        return DeliveryStatus.failed_retryable
    return DeliveryStatus.failed_permanent


def load(type_name: str, extra: str, client_module: str, models_module: str) -> tuple[Any, ...]:
    """The SDK's modules ``(credential, http_profile, client_profile, client, models)``.
    Raises ``ValueError`` naming the extra (``pip install 'escalator[<extra>]'``) when the SDK
    is not installed."""
    sdk = load_sdk(type_name, extra, *_COMMON, client_module, models_module)
    quiet_sdk_debug("tencentcloud_sdk_common")
    return sdk


def client(sdk: tuple[Any, ...], client_class: str, o: TencentOptions) -> Any:
    """A signed (TC3-HMAC-SHA256) client of class ``client_class`` (e.g. ``"SmsClient"``) of
    the SDK ``sdk`` (from :func:`load`) for options ``o``; ``o.timeout`` in seconds (at least 1,
    rounded: the SDK takes whole seconds)."""
    credential, http_profile, client_profile, module, _ = sdk
    http = http_profile.HttpProfile(protocol=o.protocol, endpoint=o.endpoint, reqMethod="POST",
                                    reqTimeout=max(1, round(o.timeout)))
    return getattr(module, client_class)(credential.Credential(o.secret_id, o.secret_key),
                                         o.region, client_profile.ClientProfile(httpProfile=http))


def error_result(channel: Any, e: Exception) -> DeliveryResult:
    """What an exception of the SDK says (``TencentCloudSDKException`` for every failure,
    network ones too: its ``code`` and ``message``)."""
    code = str(getattr(e, "code", None) or type(e).__name__)
    text = getattr(e, "message", None) or str(e)
    return channel.result(classify_code(code), f"Tencent {code}: {short(text, 120)}")
