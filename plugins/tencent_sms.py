"""SMS through Tencent Cloud SMS (腾讯云短信, API 2021-01-11 ``SendSms``), with its official SDK.

Audience ``person``; a contact method's ``to`` is the mobile number (sent as E.164: a bare
11-digit number gets ``+86``). Optional extra: ``pip install 'escalator[tencent]'``
(``tencentcloud-sdk-python-sms``); the SDK is imported when a channel is built, and without it
building one is a ``ValueError`` naming the extra.

Tencent sends only an approved signature (``sign_name``) and template (``template_id``) of an
SMS application (``sdk_app_id``); template variables are positional (``{1}``, ``{2}``, …), so
option ``params`` lists the escalator value for each in order (``plugins/sms_template.py``),
cut to ``max_param_chars`` (default 12; see docs/channels.md for the source). The SDK call runs
in a thread, once (no SDK retryer).

Answers: the number's ``SendStatus.Code`` ``Ok`` → delivered; a ``LimitExceeded.*`` or
``RequestLimitExceeded`` code, ``InternalError.*``, a non-200 HTTP answer, a timeout or
connection error → retryable; any other code (``AuthFailure.*``, an unapproved signature or
template, a bad number or parameter, no balance) → permanent. The SecretKey is never sent
(requests are TC3-HMAC-SHA256 signed) and is masked in ``repr`` and scrubbed from details.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from pydantic import Field

from escalator.delivery.channel_base import ChannelBase
from escalator.delivery.channels import DeliveryResult, DeliveryStatus, Message
from escalator.delivery.options import ChannelOptions
from escalator.delivery.sms_template import provider_mobile, template_values
from escalator.delivery.tencent_sdk import TencentOptions, classify_code, client, error_result, load
from escalator.delivery.text import short
from escalator.hookspecs import hookimpl


class TencentSmsOptions(TencentOptions):
    sdk_app_id: str = Field(min_length=1)
    endpoint: str = "sms.tencentcloudapi.com"


class TencentSmsChannel(ChannelBase):
    """One ``SendSms`` call per message; see the module docstring."""

    type_name: ClassVar[str] = "tencent_sms"
    audience: ClassVar[str] = "person"
    takes_replies: ClassVar[bool] = True
    options_model: ClassVar[type[ChannelOptions]] = TencentSmsOptions
    secret_options: ClassVar[frozenset[str]] = frozenset({"secret_id", "secret_key"})
    max_body_chars: ClassVar[int | None] = None
    """The text is the approved template; each variable is cut to ``max_param_chars``."""

    options: TencentSmsOptions

    def __init__(self, channel_id: str, options: dict[str, Any]) -> None:
        super().__init__(channel_id, options)
        self._sdk = load(self.type_name, "tencent", "tencentcloud.sms.v20210111.sms_client",
                         "tencentcloud.sms.v20210111.models")

    def template_params(self, message: Message) -> list[str]:
        """The ``TemplateParamSet`` for ``message``."""
        o = self.options
        return template_values(message, o.params, o.max_param_chars, o.missing)

    def _send(self, phone: str, params: list[str]) -> Any:
        o = self.options
        request = self._sdk[-1].SendSmsRequest()
        request.PhoneNumberSet = [phone]
        request.SmsSdkAppId = o.sdk_app_id
        request.SignName = o.sign_name
        request.TemplateId = o.template_id
        request.TemplateParamSet = params
        return client(self._sdk, "SmsClient", o).SendSms(request)

    async def send(self, message: Message) -> DeliveryResult:
        phone = provider_mobile(message.address, plus=True)
        if phone is None:
            return self.result(DeliveryStatus.failed_permanent,
                               f"address {message.address!r} is not a phone number")
        try:
            response = await asyncio.to_thread(self._send, phone, self.template_params(message))
        except Exception as e:  # TencentCloudSDKException for every failure, network ones too
            return error_result(self, e)
        statuses = response.SendStatusSet or []
        if not statuses:
            return self.result(DeliveryStatus.failed_retryable, "Tencent answered without a send status")
        s = statuses[0]
        detail = f"Tencent {s.Code}" + (f": {short(s.Message, 120)}" if s.Message else "")
        if s.Code == "Ok":
            detail += f" (SerialNo {s.SerialNo})"
        return self.result(classify_code(str(s.Code)), detail)


@hookimpl
def register_channels(register):
    register(TencentSmsChannel)
