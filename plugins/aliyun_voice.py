"""Voice calls through Alibaba Cloud Voice Service (阿里云语音服务, Dyvmsapi ``SingleCallByTts``,
语音通知 with a text-to-speech template), with its official SDK — for ``critical`` incidents at
night, when an SMS may sleep on a bedside table (docs/replies.md "Voice calls").

Audience ``person``; a contact method's ``to`` is the mobile number. Optional extra:
``pip install 'escalator[aliyun-voice]'`` (``alibabacloud-dyvmsapi20170525``); the SDK is
imported when a channel is built, and without it building one is a ``ValueError`` naming the
extra.

Aliyun speaks only an approved TTS template (``tts_code``, ``TTS_…``); option ``params`` maps
each template variable to an escalator value (as for ``aliyun_sms``: ``escalator/delivery/
sms_template.py``), cut to ``max_param_chars`` (default 20). ``called_show_number``: the
number shown to the callee (a number bought in the console; empty: the public pool's).
``play_times`` (1–3, default 3), ``volume`` (0–100), ``speed`` (-500–500).

Which messages call: ``severities`` (default ``[critical]``) and ``hours``
(:mod:`escalator.delivery.voice`); any other message is refused at once, so the delivery stage
fails over to the recipient's next contact method (their SMS). Put the voice contact method
first for people who must be woken.

Answers: body ``Code`` ``OK`` → delivered: the call was placed (whether it was picked up,
Aliyun reports later through its call-status callback, which escalator does not read: the walk
goes on until someone acknowledges). A flow-control code, HTTP 5xx, a timeout or connection
error → retryable; any other code (template, number, AccessKey, balance) → permanent. The
AccessKey secret is never sent (requests are HMAC-signed), and is masked in ``repr`` and
scrubbed from details.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
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
from escalator.delivery.voice import VoiceFilter, refusal
from escalator.hookspecs import hookimpl

RETRYABLE_CODES = frozenset({
    "isv.BUSINESS_LIMIT_CONTROL",  # per-number flow control
    "isp.SYSTEM_ERROR", "isp.RAM_PERMISSION_DENY_TEMP", "ServiceUnavailable", "InternalError",
})
RETRYABLE_PREFIXES = ("Throttling",)


def classify_code(code: str, status: int | None = None) -> DeliveryStatus:
    """What an Aliyun ``Code`` (and HTTP status, for an error answer) says."""
    if code == "OK" and status is None:
        return DeliveryStatus.delivered
    if code in RETRYABLE_CODES or code.startswith(RETRYABLE_PREFIXES) or (status or 0) >= 500:
        return DeliveryStatus.failed_retryable
    return DeliveryStatus.failed_permanent


class AliyunVoiceOptions(CloudSmsOptions, VoiceFilter):
    access_key_id: str = Field(min_length=1)
    access_key_secret: str = Field(min_length=1)
    tts_code: str = Field(min_length=1)
    sign_name: str = "-"  # a voice call has no SMS signature; kept for the shared options
    params: dict[str, str] = Field(default_factory=dict)
    called_show_number: str | None = None
    play_times: int = Field(3, ge=1, le=3)
    volume: int = Field(100, ge=0, le=100)
    speed: int = Field(0, ge=-500, le=500)
    region_id: str = "cn-hangzhou"
    endpoint: str = "dyvmsapi.aliyuncs.com"
    max_param_chars: int = Field(20, ge=1, le=500)

    @field_validator("params")
    @classmethod
    def known_values(cls, value: dict[str, str]) -> dict[str, str]:
        check_value_names(list(value.values()))
        return value


class AliyunVoiceChannel(ChannelBase):
    """One ``SingleCallByTts`` call per message; see the module docstring. ``now``: the clock
    the ``hours`` window is read from (aware UTC; replaceable in tests)."""

    type_name: ClassVar[str] = "aliyun_voice"
    audience: ClassVar[str] = "person"
    options_model: ClassVar[type[ChannelOptions]] = AliyunVoiceOptions
    secret_options: ClassVar[frozenset[str]] = frozenset({"access_key_id", "access_key_secret"})
    max_body_chars: ClassVar[int | None] = None
    """The text is the approved TTS template; each variable is cut to ``max_param_chars``."""

    options: AliyunVoiceOptions

    def __init__(self, channel_id: str, options: dict[str, Any]) -> None:
        super().__init__(channel_id, options)
        self._sdk = load_sdk(self.type_name, "aliyun-voice", "alibabacloud_dyvmsapi20170525.client",
                             "alibabacloud_dyvmsapi20170525.models",
                             "alibabacloud_tea_openapi.models", "darabonba.runtime")
        quiet_sdk_debug("darabonba-core")
        self.now: Callable[[], datetime] = lambda: datetime.now(UTC)

    def refusal(self, message: Message) -> str | None:
        """Why ``message`` does not call now (``severities``, ``hours``), or None if it does."""
        return refusal(self.options, message, self.now())

    def tts_param(self, message: Message) -> str:
        """The ``TtsParam`` JSON for ``message``."""
        o = self.options
        values = template_values(message, list(o.params.values()), o.max_param_chars, o.missing)
        return json.dumps(dict(zip(o.params, values, strict=True)), ensure_ascii=False)

    def _call(self, phone: str, param: str, out_id: str) -> Any:
        client_mod, models, openapi, runtime = self._sdk
        o = self.options
        config = openapi_config(openapi, o)
        request = models.SingleCallByTtsRequest(
            called_number=phone, called_show_number=o.called_show_number, tts_code=o.tts_code,
            tts_param=param, play_times=o.play_times, volume=o.volume, speed=o.speed,
            out_id=out_id)
        return client_mod.Client(config).single_call_by_tts_with_options(
            request, runtime.RuntimeOptions())

    async def send(self, message: Message) -> DeliveryResult:
        if (why := self.refusal(message)) is not None:
            return self.result(DeliveryStatus.failed_permanent, why)
        phone = provider_mobile(message.address, plus=False)
        if phone is None:
            return self.result(DeliveryStatus.failed_permanent,
                               f"address {message.address!r} is not a phone number")
        try:
            response = await asyncio.to_thread(self._call, phone, self.tts_param(message),
                                               f"escalator-{message.notification_id}")
        except Exception as e:  # the SDK raises its own classes (escalator.delivery.aliyun_sdk)
            return error_result(self, e, classify_code)
        body = response.body
        return body_result(self, body, classify_code, f"CallId {body.call_id}; call placed")


@hookimpl
def register_channels(register):
    register(AliyunVoiceChannel)
