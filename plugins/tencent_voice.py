"""Voice calls through Tencent Cloud Voice Messaging Service (腾讯云语音消息, API 2020-09-02
``SendTtsVoice``, 语音通知 with a text-to-speech template), with its official SDK — for
``critical`` incidents at night (docs/replies.md "Voice calls").

Audience ``person``; a contact method's ``to`` is the mobile number (sent as E.164: a bare
11-digit number gets ``+86``). Optional extra: ``pip install 'escalator[tencent-voice]'``
(``tencentcloud-sdk-python-vms``); the SDK is imported when a channel is built, and without it
building one is a ``ValueError`` naming the extra.

Tencent speaks only an approved template (``template_id``) of a voice application
(``voice_sdk_app_id``); its variables are positional, so ``params`` lists the escalator value
for each in order (``escalator/delivery/sms_template.py``), cut to ``max_param_chars``
(default 12). ``play_times`` (1–3, default 3).

Which messages call: ``severities`` (default ``[critical]``) and ``hours``
(:mod:`escalator.delivery.voice`); any other message is refused at once, so the delivery stage
fails over to the recipient's next contact method (their SMS).

Answers: a ``SendStatus`` with a ``CallId`` → delivered (the call was placed; whether it was
picked up Tencent reports through its status callback, which escalator does not read). A
``LimitExceeded.*``, ``RequestLimitExceeded``, ``InternalError.*`` code, a non-200 HTTP answer,
a timeout or connection error → retryable; any other code (``AuthFailure.*``, an unapproved
template, a bad number, no balance) → permanent. The SecretKey is never sent (requests are
TC3-HMAC-SHA256 signed), and is masked in ``repr`` and scrubbed from details.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import Field

from escalator.delivery.channel_base import ChannelBase
from escalator.delivery.channels import DeliveryResult, DeliveryStatus, Message
from escalator.delivery.options import ChannelOptions
from escalator.delivery.sms_template import provider_mobile, template_values
from escalator.delivery.tencent_sdk import TencentOptions, client, error_result, load
from escalator.delivery.voice import VoiceFilter, refusal
from escalator.hookspecs import hookimpl


class TencentVoiceOptions(TencentOptions, VoiceFilter):
    voice_sdk_app_id: str = Field(min_length=1)
    sign_name: str = "-"  # a voice call has no SMS signature; kept for the shared options
    play_times: int = Field(3, ge=1, le=3)
    endpoint: str = "vms.tencentcloudapi.com"


class TencentVoiceChannel(ChannelBase):
    """One ``SendTtsVoice`` call per message; see the module docstring. ``now``: the clock the
    ``hours`` window is read from (aware UTC; replaceable in tests)."""

    type_name: ClassVar[str] = "tencent_voice"
    audience: ClassVar[str] = "person"
    options_model: ClassVar[type[ChannelOptions]] = TencentVoiceOptions
    secret_options: ClassVar[frozenset[str]] = frozenset({"secret_id", "secret_key"})
    max_body_chars: ClassVar[int | None] = None
    """The text is the approved template; each variable is cut to ``max_param_chars``."""

    options: TencentVoiceOptions

    def __init__(self, channel_id: str, options: dict[str, Any]) -> None:
        super().__init__(channel_id, options)
        self._sdk = load(self.type_name, "tencent-voice", "tencentcloud.vms.v20200902.vms_client",
                         "tencentcloud.vms.v20200902.models")
        self.now: Callable[[], datetime] = lambda: datetime.now(UTC)

    def template_params(self, message: Message) -> list[str]:
        """The ``TemplateParamSet`` for ``message``."""
        o = self.options
        return template_values(message, o.params, o.max_param_chars, o.missing)

    def _call(self, phone: str, params: list[str], context: str) -> Any:
        o = self.options
        request = self._sdk[-1].SendTtsVoiceRequest()
        request.TemplateId = o.template_id
        request.TemplateParamSet = params
        request.CalledNumber = phone
        request.VoiceSdkAppid = o.voice_sdk_app_id
        request.PlayTimes = o.play_times
        request.SessionContext = context
        return client(self._sdk, "VmsClient", o).SendTtsVoice(request)

    async def send(self, message: Message) -> DeliveryResult:
        if (why := refusal(self.options, message, self.now())) is not None:
            return self.result(DeliveryStatus.failed_permanent, why)
        phone = provider_mobile(message.address, plus=True)
        if phone is None:
            return self.result(DeliveryStatus.failed_permanent,
                               f"address {message.address!r} is not a phone number")
        try:
            response = await asyncio.to_thread(self._call, phone, self.template_params(message),
                                               f"escalator-{message.notification_id}")
        except Exception as e:  # TencentCloudSDKException for every failure, network ones too
            return error_result(self, e)
        status = response.SendStatus
        if status is None or not status.CallId:
            return self.result(DeliveryStatus.failed_retryable, "Tencent answered without a call id")
        return self.result(DeliveryStatus.delivered, f"Tencent Ok (CallId {status.CallId}; call placed)")


@hookimpl
def register_channels(register):
    register(TencentVoiceChannel)
