"""DingTalk (钉钉) custom group robot: posts a text message to one group chat.

Audience ``group``: the delivery stage renders the message for a group (no free-text summary,
no pupil data) and this channel adds nothing personal. A contact method's ``to`` is an
optional mobile number of a group member to @-mention, ``all`` to @-mention everyone, or empty
/ ``-`` for no mention.

Source of every rule: DingTalk's custom-robot guide ("自定义机器人发送群消息",
open.dingtalk.com/document/orgapp/custom-robots-send-group-messages) and its 加签 (signing)
section: ``sign = urlencode(base64(HMAC-SHA256(key=secret, msg=f"{timestamp}\\n{secret}")))``
with ``timestamp`` in milliseconds, both sent as query parameters next to ``access_token``; the
timestamp must be within an hour of DingTalk's clock. A robot may send 20 messages a minute;
past that DingTalk blocks it for 10 minutes — so this channel holds the 21st back locally
(a retryable failure) rather than trip the block.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any, ClassVar

from pydantic import Field, field_validator

from escalator.delivery.channel_base import ChannelBase
from escalator.delivery.channels import DeliveryResult, DeliveryStatus, Message
from escalator.delivery.http import HTTP_ERRORS, classify_robot_answer, http_request
from escalator.delivery.options import ChannelOptions, check_http_url
from escalator.delivery.ratelimit import RateLimit, shared_limiter
from escalator.delivery.text import NO_ADDRESS, fit_text, message_text, normalise_mobile, utf8_len
from escalator.hookspecs import hookimpl

DEFAULT_BASE_URL = "https://oapi.dingtalk.com/robot/send"

RETRYABLE_CODES: dict[int, str] = {
    -1: "DingTalk busy",
    130101: "sent too fast: over 20 messages a minute, DingTalk blocks the robot for 10 minutes",
    410100: "sent too fast, rate limited",
}
"""errcodes after which the same message may succeed later."""

KNOWN_CODES: dict[int, str] = {
    310000: "security check failed: keyword missing, signature wrong, timestamp off by over an "
            "hour, or IP not allowed",
    300001: "access token invalid",
    400013: "group dissolved",
    400101: "access token does not exist",
    400102: "robot disabled",
    400105: "message type not supported",
    400106: "robot does not exist",
    430101: "content has an unsafe link",
    430102: "content has unsuitable text",
    430103: "content has an unsuitable image",
    430104: "content unsuitable",
}
"""errcodes explained in the detail; all are permanent (anything not in RETRYABLE_CODES is)."""


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """The ``sign`` query value *before* URL encoding: base64 of HMAC-SHA256 with key ``secret``
    over ``f"{timestamp_ms}\\n{secret}"`` (UTF-8). The HTTP client URL-encodes it once."""
    digest = hmac.new(secret.encode("utf-8"), f"{timestamp_ms}\n{secret}".encode(),
                      hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


class DingTalkOptions(ChannelOptions):
    """``access_token`` (secret; the value after ``access_token=`` in the webhook URL),
    ``secret`` (secret; the ``SEC…`` signing secret when 加签 is on), ``keyword`` (a custom
    keyword the robot requires; prepended when the text lacks it), ``base_url`` (the webhook
    without query; a local test server in tests), ``timeout`` (seconds, 0 < t ≤ 25)."""

    access_token: str = Field(min_length=1)
    secret: str | None = None
    keyword: str | None = None
    base_url: str = DEFAULT_BASE_URL
    timeout: float = Field(10.0, gt=0, le=25)

    check_base_url = field_validator("base_url")(check_http_url)


class DingTalkChannel(ChannelBase):
    """Posts ``{"msgtype": "text", "text": {"content": …}, "at": {…}}`` to the group robot.

    Text = title, newline, body, fitted to :attr:`max_body_bytes` (UTF-8) keeping the
    acknowledge hint whole. Answer mapping: errcode 0 → delivered; -1, 130101, 410100 or a
    "too fast / rate limit" message, HTTP 5xx, 408/429, timeouts, connection errors →
    retryable; any other errcode (310000, 300001, 4001xx, 4301xx …) and other HTTP 4xx →
    permanent.
    """

    type_name: ClassVar[str] = "dingtalk"
    audience: ClassVar[str] = "group"
    options_model: ClassVar[type[ChannelOptions]] = DingTalkOptions
    secret_options: ClassVar[frozenset[str]] = frozenset({"access_token", "secret"})
    max_body_bytes: ClassVar[int | None] = 20_000
    """DingTalk's guide states no exact text limit; 20,000 bytes is the figure client
    libraries use (Apprise's dingtalk plugin: 19,985 characters)."""
    rate_limits: ClassVar[tuple[RateLimit, ...]] = (
        RateLimit(20, 60.0, "DingTalk custom robot: 20 messages a minute, then blocked 10 minutes"),
    )

    options: DingTalkOptions

    def __init__(self, channel_id: str, options: dict[str, Any]) -> None:
        super().__init__(channel_id, options)
        self.limiter = shared_limiter(self.type_name, self.options.access_token, self.rate_limits)

    def payload(self, message: Message) -> tuple[dict[str, Any], str]:
        """The JSON body for ``message`` and a note for the detail (e.g. a skipped mention)."""
        text, tail = message_text(message)
        if self.options.keyword and self.options.keyword not in text:
            text = f"{self.options.keyword}\n{text}"
        text = fit_text(text, self.max_body_bytes or 20_000, measure=utf8_len, keep_tail=tail)
        at: dict[str, Any] = {"atMobiles": [], "isAtAll": False}
        note = ""
        address = message.address.strip()
        if address.lower() in ("all", "@all"):
            at["isAtAll"] = True
        elif address not in NO_ADDRESS:
            mobile = normalise_mobile(address)
            if mobile is None:
                note = "; no @-mention: address is not a mobile number"
            else:
                at["atMobiles"] = [mobile.removeprefix("+86")]
        return {"msgtype": "text", "text": {"content": text}, "at": at}, note

    def params(self, now_ms: int | None = None) -> dict[str, str]:
        """Query parameters: ``access_token`` and, with a secret, ``timestamp`` and ``sign``."""
        out = {"access_token": self.options.access_token}
        if self.options.secret:
            ts = int(time.time() * 1000) if now_ms is None else now_ms
            out.update(timestamp=str(ts), sign=dingtalk_sign(self.options.secret, ts))
        return out

    async def send(self, message: Message) -> DeliveryResult:
        if (held := self.held_back("DingTalk allows 20 messages a minute per robot")) is not None:
            return held
        body, note = self.payload(message)
        try:
            response = await http_request("POST", self.options.base_url, params=self.params(),
                                          json_body=body, timeout=self.options.timeout)
        except HTTP_ERRORS as e:
            return self.failure(e)
        status, detail = classify_robot_answer(
            response, service="dingtalk", code_keys=("errcode",), msg_keys=("errmsg",),
            retryable=RETRYABLE_CODES, known=KNOWN_CODES)
        return self.result(status, detail + (note if status == DeliveryStatus.delivered else ""))


@hookimpl
def register_channels(register):
    register(DingTalkChannel)
