"""WeCom (企业微信) group robot: posts a text message to one group chat.

Audience ``group``: the delivery stage renders the message for a group (no free-text summary,
no pupil data) and this channel adds nothing personal. A contact method's ``to`` is an
optional mobile number of a group member to @-mention, ``all`` (or ``@all``) to @-mention
everyone, or empty / ``-`` for no mention.

Source of every rule: WeCom's group-robot guide ("群机器人配置说明",
developer.work.weixin.qq.com/document/path/91770): ``POST …/cgi-bin/webhook/send?key=KEY``;
``text.content`` at most 2,048 bytes of UTF-8; ``mentioned_mobile_list`` (``"@all"`` for
everyone); a robot may send 20 messages a minute. Error codes from WeCom's global code list
(path/90313): -1 system busy, 45009 API frequency over the limit, 93000 invalid webhook URL.
WeCom robots have no request signing: the key is the only credential.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, field_validator

from escalator.delivery.channel_base import ChannelBase
from escalator.delivery.channels import DeliveryResult, DeliveryStatus, Message
from escalator.delivery.http import HTTP_ERRORS, classify_robot_answer, http_request
from escalator.delivery.options import ChannelOptions, check_http_url
from escalator.delivery.ratelimit import RateLimit, shared_limiter
from escalator.delivery.text import NO_ADDRESS, fit_text, message_text, normalise_mobile, utf8_len
from escalator.hookspecs import hookimpl

DEFAULT_BASE_URL = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send"

RETRYABLE_CODES: dict[int, str] = {
    -1: "WeCom busy",
    45009: "API frequency over the limit (20 messages a minute per robot)",
}
"""errcodes after which the same message may succeed later."""

KNOWN_CODES: dict[int, str] = {
    93000: "invalid webhook URL: the key is wrong or the robot was removed",
    40008: "invalid message type",
    44004: "empty content",
    40058: "invalid parameter",
}
"""errcodes explained in the detail; all are permanent (anything not in RETRYABLE_CODES is)."""


class WeComOptions(ChannelOptions):
    """``key`` (secret; the value after ``key=`` in the webhook URL), ``base_url`` (the
    webhook without query; a local test server in tests), ``timeout`` (seconds, 0 < t ≤ 25)."""

    key: str = Field(min_length=1)
    base_url: str = DEFAULT_BASE_URL
    timeout: float = Field(10.0, gt=0, le=25)

    check_base_url = field_validator("base_url")(check_http_url)


class WeComChannel(ChannelBase):
    """Posts ``{"msgtype": "text", "text": {"content": …, "mentioned_mobile_list": […]}}``.

    Text = title, newline, body, fitted to 2,048 UTF-8 bytes (whole characters, keeping the
    acknowledge hint). Answer mapping: errcode 0 → delivered; -1, 45009 or a "freq / too
    many" message, HTTP 5xx, 408/429, timeouts, connection errors → retryable; any other
    errcode (93000 …) and other HTTP 4xx → permanent.
    """

    type_name: ClassVar[str] = "wecom"
    audience: ClassVar[str] = "group"
    options_model: ClassVar[type[ChannelOptions]] = WeComOptions
    secret_options: ClassVar[frozenset[str]] = frozenset({"key"})
    max_body_bytes: ClassVar[int | None] = 2048
    rate_limits: ClassVar[tuple[RateLimit, ...]] = (
        RateLimit(20, 60.0, "WeCom group robot: 20 messages a minute"),
    )

    options: WeComOptions

    def __init__(self, channel_id: str, options: dict[str, Any]) -> None:
        super().__init__(channel_id, options)
        self.limiter = shared_limiter(self.type_name, self.options.key, self.rate_limits)

    def payload(self, message: Message) -> tuple[dict[str, Any], str]:
        """The JSON body for ``message`` and a note for the detail (e.g. a skipped mention)."""
        text, tail = message_text(message)
        text = fit_text(text, self.max_body_bytes or 2048, measure=utf8_len, keep_tail=tail)
        content: dict[str, Any] = {"content": text}
        note = ""
        address = message.address.strip()
        if address.lower() in ("all", "@all"):
            content["mentioned_mobile_list"] = ["@all"]
        elif address not in NO_ADDRESS:
            mobile = normalise_mobile(address)
            if mobile is None:
                note = "; no @-mention: address is not a mobile number"
            else:
                content["mentioned_mobile_list"] = [mobile.removeprefix("+86")]
        return {"msgtype": "text", "text": content}, note

    async def send(self, message: Message) -> DeliveryResult:
        if (held := self.held_back("WeCom allows 20 messages a minute per robot")) is not None:
            return held
        body, note = self.payload(message)
        try:
            response = await http_request("POST", self.options.base_url,
                                          params={"key": self.options.key}, json_body=body,
                                          timeout=self.options.timeout)
        except HTTP_ERRORS as e:
            return self.failure(e)
        status, detail = classify_robot_answer(
            response, service="wecom", code_keys=("errcode",), msg_keys=("errmsg",),
            retryable=RETRYABLE_CODES, known=KNOWN_CODES)
        return self.result(status, detail + (note if status == DeliveryStatus.delivered else ""))


@hookimpl
def register_channels(register):
    register(WeComChannel)
