"""Feishu (飞书) custom group robot: posts a text message to one group chat.

Audience ``group``: the delivery stage renders the message for a group (no free-text summary,
no pupil data) and this channel adds nothing personal. A contact method's ``to`` is an
optional Feishu ``open_id`` / ``user_id`` to @-mention (``<at user_id="…"></at>``), ``all`` to
@-mention everyone, or empty / ``-`` for no mention. Feishu custom robots cannot @-mention by
mobile number: a mobile number is sent without a mention (noted in the detail).

Source of every rule: Feishu's custom-robot guide ("自定义机器人使用指南",
open.feishu.cn/document/client-docs/bot-v3/add-custom-bot): ``POST …/bot/v2/hook/TOKEN`` with
``{"msg_type": "text", "content": {"text": …}}``; with 签名校验 the body also carries
``timestamp`` (seconds) and ``sign = base64(HMAC-SHA256(key=f"{timestamp}\\n{secret}",
msg=b""))``, accepted within an hour of Feishu's clock; request bodies at most 20 KB; 100
requests a minute and 5 a second per robot. Answers: ``{"code": 0, "msg": "success"}`` (older
robots: ``StatusCode`` / ``StatusMessage``); 19001 invalid token, 19021 signature or timestamp
failed, 19022 IP not allowed, 19024 keyword missing, 9499 "Bad Request" (a payload Feishu
cannot parse), 11232 frequency limited.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from typing import Any, ClassVar

from pydantic import Field, field_validator

from escalator.delivery.channel_base import ChannelBase
from escalator.delivery.channels import DeliveryResult, DeliveryStatus, Message
from escalator.delivery.http import HTTP_ERRORS, classify_robot_answer, http_request
from escalator.delivery.options import ChannelOptions, check_http_url
from escalator.delivery.ratelimit import RateLimit, shared_limiter
from escalator.delivery.text import NO_ADDRESS, fit_text, json_len, message_text, normalise_mobile
from escalator.hookspecs import hookimpl

DEFAULT_BASE_URL = "https://open.feishu.cn/open-apis/bot/v2/hook/"

RETRYABLE_CODES: dict[int, str] = {
    11232: "frequency limited (100 a minute, 5 a second per robot)",
}
"""codes after which the same message may succeed later; a 9499 whose message says "too many
requests" is retryable too (by its words), a plain 9499 "Bad Request" is not."""

KNOWN_CODES: dict[int, str] = {
    19001: "invalid webhook token",
    19021: "signature check failed, or the timestamp is over an hour off",
    19022: "IP not allowed",
    19024: "keyword missing from the text",
    9499: "request rejected",
}
"""codes explained in the detail; permanent unless listed in RETRYABLE_CODES."""

ENVELOPE_BYTES = 512
"""Room left in the 20 KB body for everything but the text (JSON keys, timestamp, sign)."""

MENTION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def feishu_sign(secret: str, timestamp_s: int) -> str:
    """``sign``: base64 of HMAC-SHA256 whose *key* is ``f"{timestamp_s}\\n{secret}"`` (UTF-8)
    over an empty message — Feishu's algorithm, unlike DingTalk's."""
    key = f"{timestamp_s}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode("ascii")


class FeishuOptions(ChannelOptions):
    """``token`` (secret; the last path segment of the webhook URL), ``secret`` (secret; the
    签名校验 secret, if set on the robot), ``keyword`` (a custom keyword the robot requires;
    prepended when the text lacks it), ``base_url`` (the webhook URL up to the token),
    ``timeout`` (seconds, 0 < t ≤ 25)."""

    token: str = Field(min_length=1)
    secret: str | None = None
    keyword: str | None = None
    base_url: str = DEFAULT_BASE_URL
    timeout: float = Field(10.0, gt=0, le=25)

    check_base_url = field_validator("base_url")(check_http_url)


class FeishuChannel(ChannelBase):
    """Posts ``{"msg_type": "text", "content": {"text": …}}`` (+ ``timestamp``, ``sign``).

    Text = [mention] title, newline, body, fitted so the JSON body stays within 20 KB (the
    text's JSON-escaped bytes ≤ :attr:`max_body_bytes` − :data:`ENVELOPE_BYTES`), keeping the
    acknowledge hint. Answer mapping: code 0 → delivered; 11232 or a "too many / frequency"
    message, HTTP 5xx, 408/429, timeouts, connection errors → retryable; 19001, 19021,
    19022, 19024, 9499 "Bad Request", any other code and other HTTP 4xx → permanent.
    """

    type_name: ClassVar[str] = "feishu"
    audience: ClassVar[str] = "group"
    options_model: ClassVar[type[ChannelOptions]] = FeishuOptions
    secret_options: ClassVar[frozenset[str]] = frozenset({"token", "secret"})
    max_body_bytes: ClassVar[int | None] = 20 * 1024
    rate_limits: ClassVar[tuple[RateLimit, ...]] = (
        RateLimit(100, 60.0, "Feishu custom robot: 100 requests a minute"),
        RateLimit(5, 1.0, "Feishu custom robot: 5 requests a second"),
    )

    options: FeishuOptions

    def __init__(self, channel_id: str, options: dict[str, Any]) -> None:
        super().__init__(channel_id, options)
        self.limiter = shared_limiter(self.type_name, self.options.token, self.rate_limits)

    @property
    def url(self) -> str:
        """The webhook URL: ``base_url`` + ``/`` + token (secret: never log it)."""
        return self.options.base_url.rstrip("/") + "/" + self.options.token

    def payload(self, message: Message, now_s: int | None = None) -> tuple[dict[str, Any], str]:
        """The JSON body for ``message`` and a note for the detail (e.g. a skipped mention)."""
        text, tail = message_text(message)
        if self.options.keyword and self.options.keyword not in text:
            text = f"{self.options.keyword}\n{text}"
        note = ""
        address = message.address.strip()
        if address.lower() in ("all", "@all"):
            text = '<at user_id="all">所有人</at> ' + text
        elif address not in NO_ADDRESS:
            if normalise_mobile(address) is not None or not MENTION_ID.match(address):
                note = "; no @-mention: Feishu robots mention by open_id/user_id, not by mobile"
            else:
                text = f'<at user_id="{address}"></at> ' + text
        limit = (self.max_body_bytes or 20 * 1024) - ENVELOPE_BYTES
        text = fit_text(text, limit, measure=json_len, keep_tail=tail)
        body: dict[str, Any] = {"msg_type": "text", "content": {"text": text}}
        if self.options.secret:
            ts = int(time.time()) if now_s is None else now_s
            body.update(timestamp=str(ts), sign=feishu_sign(self.options.secret, ts))
        return body, note

    async def send(self, message: Message) -> DeliveryResult:
        if (held := self.held_back("Feishu allows 100 requests a minute and 5 a second per robot")
                ) is not None:
            return held
        body, note = self.payload(message)
        try:
            response = await http_request("POST", self.url, json_body=body, timeout=self.options.timeout)
        except HTTP_ERRORS as e:
            return self.failure(e)
        status, detail = classify_robot_answer(
            response, service="feishu", code_keys=("code", "StatusCode"),
            msg_keys=("msg", "StatusMessage"), retryable=RETRYABLE_CODES, known=KNOWN_CODES)
        return self.result(status, detail + (note if status == DeliveryStatus.delivered else ""))


@hookimpl
def register_channels(register):
    register(FeishuChannel)
