"""SMS through Alibaba Cloud SMS (阿里云短信服务, Dysmsapi ``SendSms``), with its official SDK.

Audience ``person``; a contact method's ``to`` is the mobile number. Optional extra:
``pip install 'escalator[aliyun]'`` (``alibabacloud-dysmsapi20170525``); the SDK is imported
when a channel is built, and without it building one is a ``ValueError`` naming the extra.

Aliyun sends only an approved signature (``sign_name``) and template (``template_code``,
``SMS_…``); option ``params`` maps each template variable to an escalator value
(``plugins/sms_template.py``), cut to ``max_param_chars`` (default 35: the per-variable limit of
notification templates; see docs/channels.md for the source). The SDK call runs in a thread,
once (the SDK's own retries are off: only the delivery stage retries).

Answers: body ``Code`` ``OK`` → delivered; a throttling/flow-control code, HTTP 5xx, a timeout
or connection error → retryable; any other code (bad signature name, template, parameters,
number, AccessKey, balance) → permanent. The AccessKey secret is never sent (requests are
HMAC-signed) and is masked in ``repr`` and scrubbed from details.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, ClassVar

from pydantic import Field, field_validator

from escalator.delivery.aliyun_sdk import body_result, error_result, openapi_config
from escalator.delivery.channel_base import ChannelBase
from escalator.delivery.channels import DeliveryResult, DeliveryStatus, Message
from escalator.delivery.options import ChannelOptions
from escalator.delivery.sms_template import (
    CloudSmsOptions,
    check_value_names,
    load_sdk,
    provider_mobile,
    quiet_sdk_debug,
    template_values,
)
from escalator.hookspecs import hookimpl

RETRYABLE_CODES = frozenset({
    "isv.BUSINESS_LIMIT_CONTROL",  # per-number flow control (1/min, 5/h, 10/day by default)
    "isv.DAY_LIMIT_CONTROL",
    "isp.SYSTEM_ERROR",
    "ServiceUnavailable",
    "InternalError",
})
RETRYABLE_PREFIXES = ("Throttling",)


def classify_code(code: str, status: int | None = None) -> DeliveryStatus:
    """What an Aliyun ``Code`` (and HTTP status, for an error answer) says."""
    if code == "OK" and status is None:
        return DeliveryStatus.delivered
    if code in RETRYABLE_CODES or code.startswith(RETRYABLE_PREFIXES) or (status or 0) >= 500:
        return DeliveryStatus.failed_retryable
    return DeliveryStatus.failed_permanent


class AliyunSmsOptions(CloudSmsOptions):
    access_key_id: str = Field(min_length=1)
    access_key_secret: str = Field(min_length=1)
    template_code: str = Field(min_length=1)
    params: dict[str, str] = Field(default_factory=dict)
    region_id: str = "cn-hangzhou"
    endpoint: str = "dysmsapi.aliyuncs.com"
    max_param_chars: int = Field(35, ge=1, le=500)

    @field_validator("params")
    @classmethod
    def known_values(cls, value: dict[str, str]) -> dict[str, str]:
        check_value_names(list(value.values()))
        return value


class AliyunSmsChannel(ChannelBase):
    """One ``SendSms`` call per message; see the module docstring."""

    type_name: ClassVar[str] = "aliyun_sms"
    audience: ClassVar[str] = "person"
    takes_replies: ClassVar[bool] = True
    options_model: ClassVar[type[ChannelOptions]] = AliyunSmsOptions
    secret_options: ClassVar[frozenset[str]] = frozenset({"access_key_id", "access_key_secret"})
    max_body_chars: ClassVar[int | None] = None
    """The text is the approved template; each variable is cut to ``max_param_chars``."""

    options: AliyunSmsOptions

    def __init__(self, channel_id: str, options: dict[str, Any]) -> None:
        super().__init__(channel_id, options)
        self._sdk = load_sdk(self.type_name, "aliyun", "alibabacloud_dysmsapi20170525.client",
                             "alibabacloud_dysmsapi20170525.models",
                             "alibabacloud_tea_openapi.models", "darabonba.runtime")
        quiet_sdk_debug("darabonba-core")

    def template_param(self, message: Message) -> str:
        """The ``TemplateParam`` JSON for ``message``."""
        o = self.options
        values = template_values(message, list(o.params.values()), o.max_param_chars, o.missing)
        return json.dumps(dict(zip(o.params, values, strict=True)), ensure_ascii=False)

    def _send(self, phone: str, param: str) -> Any:
        client_mod, models, openapi, runtime = self._sdk
        o = self.options
        config = openapi_config(openapi, o)
        request = models.SendSmsRequest(phone_numbers=phone, sign_name=o.sign_name,
                                        template_code=o.template_code, template_param=param)
        return client_mod.Client(config).send_sms_with_options(request, runtime.RuntimeOptions())

    async def send(self, message: Message) -> DeliveryResult:
        phone = provider_mobile(message.address, plus=False)
        if phone is None:
            return self.result(DeliveryStatus.failed_permanent,
                               f"address {message.address!r} is not a phone number")
        try:
            response = await asyncio.to_thread(self._send, phone, self.template_param(message))
        except Exception as e:  # the SDK raises its own classes (escalator.delivery.aliyun_sdk)
            return error_result(self, e, classify_code)
        body = response.body
        return body_result(self, body, classify_code, f"BizId {body.biz_id}")


@hookimpl
def register_channels(register):
    register(AliyunSmsChannel)
