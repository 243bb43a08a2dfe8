"""SMS through a generic HTTP gateway (an operator's or a vendor's "短信网关" HTTP API).

Audience ``person``. A contact method's ``to`` is the mobile number.

The request is described by options: ``url``, ``method``, ``headers`` (values secret),
``token`` (secret; sent as ``Authorization: Bearer …``), ``query`` (values secret), and
``body`` — a mapping sent as JSON (``body_format: json``, default) or as a form
(``form``), or a string sent as is (``raw``). Strings in ``query`` and ``body`` may use the
placeholders ``{to}`` (the mobile number) and ``{text}`` (the message); ``{{`` and ``}}`` are
literal braces. Substitution is plain text replacement, never ``str.format`` (no attribute
access) and never code; a JSON body gets the values JSON-encoded, a form or query
URL-encoded. Any other placeholder is an option error.

The text is ``signature`` + title + newline + body, fitted to ``max_segments`` SMS parts
(default 3): one part holds 70 UCS-2 characters (Chinese) or 160 GSM-7 ones, a part of a
longer message 67 or 153 (3GPP TS 23.038/23.040; Chinese carriers bill ≤70 characters as one
message, longer ones per 67). The acknowledge link is kept whole; the middle is cut with "…".

Success: HTTP 2xx and, when ``success_json_path`` is set, the JSON value at that dotted path
(``result.code``; list items by index) equal to ``success_value`` (compared as text; true /
false in lower case). Failure mapping: timeout, connection error, HTTP 5xx, 408, 425, 429,
or a value listed in ``retry_values`` → retryable; other HTTP 4xx, 3xx, or a 2xx whose
value is neither the success value nor a retry value → permanent (with the value in the
detail). The Aliyun and Tencent Cloud SMS APIs (signed requests, templates) have their own
channels: `aliyun_sms` and `tencent_sms` (optional extras `escalator[aliyun]`, `[tencent]`).
"""

from __future__ import annotations

import json
from string import Formatter
from typing import Any, ClassVar, Literal
from urllib.parse import urlencode

from pydantic import Field, field_validator, model_validator

from escalator.delivery.channel_base import ChannelBase
from escalator.delivery.channels import DeliveryResult, DeliveryStatus, Message
from escalator.delivery.http import HTTP_ERRORS, Answer, classify_http, http_request, read_json
from escalator.delivery.options import ChannelOptions, check_http_url
from escalator.delivery.text import fit_sms, message_text, normalise_mobile, short
from escalator.hookspecs import hookimpl

PLACEHOLDERS = frozenset({"to", "text"})
DEFAULT_BODY: dict[str, Any] = {"to": "{to}", "text": "{text}"}


def template_parts(template: str) -> list[tuple[str, str | None]]:
    """``template`` split into (literal, placeholder or None). Raises ``ValueError`` for a
    placeholder other than ``{to}`` / ``{text}``, a conversion or format spec, or an unmatched
    brace."""
    parts: list[tuple[str, str | None]] = []
    try:
        parsed = list(Formatter().parse(template))
    except ValueError as e:
        raise ValueError(f"bad template: {e} (write {{{{ and }}}} for literal braces)") from None
    for literal, field, spec, conversion in parsed:
        if field is None:
            parts.append((literal, None))
            continue
        if field not in PLACEHOLDERS or spec or conversion:
            raise ValueError(f"unknown placeholder {{{field}}} (only {{to}} and {{text}})")
        parts.append((literal, field))
    return parts


def substitute(template: str, values: dict[str, str]) -> str:
    """``template`` with ``{to}``/``{text}`` replaced by ``values`` (no escaping here)."""
    return "".join(lit + (values[f] if f else "") for lit, f in template_parts(template))


def substitute_tree(tree: Any, values: dict[str, str]) -> Any:
    """Every string inside ``tree`` (mappings, lists) substituted; other values kept."""
    if isinstance(tree, str):
        return substitute(tree, values)
    if isinstance(tree, dict):
        return {k: substitute_tree(v, values) for k, v in tree.items()}
    if isinstance(tree, list):
        return [substitute_tree(v, values) for v in tree]
    return tree


def check_tree(tree: Any) -> None:
    """Raise ``ValueError`` if any string inside ``tree`` is a bad template."""
    if isinstance(tree, str):
        template_parts(tree)
    elif isinstance(tree, dict):
        for v in tree.values():
            check_tree(v)
    elif isinstance(tree, list):
        for v in tree:
            check_tree(v)


def json_path(data: Any, path: str) -> tuple[bool, Any]:
    """(found, value) at dotted ``path`` in ``data``; list items by their index."""
    cur = data
    for step in path.split("."):
        if isinstance(cur, dict) and step in cur:
            cur = cur[step]
        elif isinstance(cur, list) and step.lstrip("-").isdigit() and -len(cur) <= int(step) < len(cur):
            cur = cur[int(step)]
        else:
            return False, None
    return True, cur


def as_text(value: Any) -> str:
    """A JSON value as text for comparison: booleans lower case, numbers as written."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


class SmsHttpOptions(ChannelOptions):
    """See the module docstring. ``timeout`` in seconds (0 < t ≤ 25); ``max_segments`` 1–10."""

    url: str
    method: Literal["POST", "GET", "PUT"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    token: str | None = None
    query: dict[str, str] = Field(default_factory=dict)
    body: dict[str, Any] | str | None = None
    body_format: Literal["json", "form", "raw"] = "json"
    signature: str = ""
    success_json_path: str | None = None
    success_value: str | int | bool | None = None
    retry_values: list[str | int] = Field(default_factory=list)
    max_segments: int = Field(3, ge=1, le=10)
    timeout: float = Field(10.0, gt=0, le=25)

    check_url = field_validator("url")(check_http_url)

    @field_validator("method", mode="before")
    @classmethod
    def upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def check_templates(self) -> SmsHttpOptions:
        for name in ("query", "body"):
            try:
                check_tree(getattr(self, name))
            except ValueError as e:
                raise ValueError(f"option {name}: {e}") from None
        body = self.effective_body
        if self.method == "GET" and self.body is not None:
            raise ValueError("option body: a GET request has no body; put {to}/{text} in option query")
        if self.body_format == "raw" and not isinstance(body, str):
            raise ValueError("option body: body_format raw needs a string body")
        if self.body_format in ("json", "form") and isinstance(body, str):
            raise ValueError(f"option body: body_format {self.body_format} needs a mapping body")
        if self.body_format == "form" and any(not isinstance(v, str | int | float) for v in body.values()):
            raise ValueError("option body: a form body has only text values")
        if self.success_value is not None and not self.success_json_path:
            raise ValueError("option success_value: needs option success_json_path")
        if self.success_json_path and self.success_value is None:
            raise ValueError("option success_json_path: needs option success_value")
        return self

    @property
    def effective_body(self) -> dict[str, Any] | str:
        """``body``, or the default ``{"to": "{to}", "text": "{text}"}``."""
        return DEFAULT_BODY if self.body is None else self.body


class SmsHttpChannel(ChannelBase):
    """One HTTP request per SMS, as the options describe; see the module docstring."""

    type_name: ClassVar[str] = "sms_http"
    audience: ClassVar[str] = "person"
    takes_replies: ClassVar[bool] = True
    options_model: ClassVar[type[ChannelOptions]] = SmsHttpOptions
    secret_options: ClassVar[frozenset[str]] = frozenset({"headers", "token", "query"})
    max_body_chars: ClassVar[int | None] = None
    """Counted in SMS parts instead: ``max_segments`` (70 / 67 UCS-2 characters a part)."""

    options: SmsHttpOptions

    def text(self, message: Message) -> str:
        """The SMS text for ``message``: signature, title, body, fitted to ``max_segments``.
        The signature appears once: a title that already carries it (a guardian's
        ``【示例小学】…``) loses its own copy."""
        text, tail = message_text(message)
        sig = self.options.signature
        if sig and sig in text:
            text = text.replace(sig, "", 1)
        return fit_sms(sig + text, self.options.max_segments, keep_tail=tail)

    def request(self, to: str, text: str) -> dict[str, Any]:
        """Keyword arguments for :func:`http_request`: method, url, params, headers, body."""
        o = self.options
        values = {"to": to, "text": text}
        headers = dict(o.headers)
        if o.token:
            headers["Authorization"] = f"Bearer {o.token}"
        kwargs: dict[str, Any] = {"method": o.method, "url": o.url, "headers": headers}
        if o.query:
            kwargs["params"] = substitute_tree(o.query, values)
        if o.method != "GET":
            body = substitute_tree(o.effective_body, values)
            if o.body_format == "json":
                kwargs["json_body"] = body
            elif o.body_format == "form":
                kwargs["content"] = urlencode({k: str(v) for k, v in body.items()}).encode("utf-8")
                headers.setdefault("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
            else:
                kwargs["content"] = body.encode("utf-8")
                headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        return kwargs

    def judge(self, response: Answer) -> tuple[DeliveryStatus, str]:
        """Status and detail for the gateway's answer (see the module docstring)."""
        by_http = classify_http(response.status_code)
        if by_http is not None:
            return by_http, f"HTTP {response.status_code}: {short(response.text, 100)}"
        o = self.options
        if not o.success_json_path:
            return DeliveryStatus.delivered, f"HTTP {response.status_code}"
        data = read_json(response)
        if data is None:
            try:
                data = response.json()
            except ValueError:
                return DeliveryStatus.failed_permanent, (
                    f"HTTP {response.status_code} but the answer is not JSON: {short(response.text, 80)}")
        found, value = json_path(data, o.success_json_path)
        shown = short(json.dumps(value, ensure_ascii=False), 80) if found else "missing"
        where = f"{o.success_json_path}={shown}"
        if found and as_text(value) == as_text(o.success_value):
            return DeliveryStatus.delivered, f"HTTP {response.status_code}, {where}"
        if found and as_text(value) in {as_text(v) for v in o.retry_values}:
            return DeliveryStatus.failed_retryable, f"gateway answered {where}"
        return DeliveryStatus.failed_permanent, f"gateway answered {where}"

    async def send(self, message: Message) -> DeliveryResult:
        to = normalise_mobile(message.address)
        if to is None:
            return self.result(DeliveryStatus.failed_permanent,
                               f"address {message.address!r} is not a phone number")
        kwargs = self.request(to, self.text(message))
        try:
            response = await http_request(kwargs.pop("method"), kwargs.pop("url"),
                                          timeout=self.options.timeout, **kwargs)
        except HTTP_ERRORS as e:
            return self.failure(e)
        status, detail = self.judge(response)
        return self.result(status, detail)


@hookimpl
def register_channels(register):
    register(SmsHttpChannel)
