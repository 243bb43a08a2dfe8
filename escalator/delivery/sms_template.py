"""Shared by the cloud SMS channels (``aliyun_sms``, ``tencent_sms``): template parameters.

Both providers send only pre-approved templates (签名 + 模板); a channel's options map each
template variable to an escalator value by name (:data:`VALUE_NAMES`, from
:func:`escalator.delivery.render.template_vars`, which never carries a pupil's id or name). Each value
is cut to the provider's per-variable limit with "…" (the acknowledge link is never cut: a
cut link is useless, and the provider then refuses the message, which fails over).

This module registers nothing; it is not a plugin.
"""

from __future__ import annotations

import importlib
import logging
from types import ModuleType
from typing import Any, Literal

from pydantic import Field, field_validator

from escalator.delivery.channels import Message
from escalator.delivery.options import ChannelOptions
from escalator.delivery.text import fit_text, normalise_mobile

VALUE_NAMES = frozenset({
    "id", "severity", "category", "kind", "summary", "class_id", "grade", "place", "occurred",
    "step.number", "step.name", "event_count", "ack_url", "recipient_name", "title",
    "school", "symptoms", "action", "contact", "reply_code",
})
"""Escalator values a template variable may take: the keys of ``template_vars`` (``step`` as
``step.number`` / ``step.name``) and the rendered ``title``. ``summary`` is free text written by
a teacher and may name a pupil: map it only if the template and the recipients warrant it.
``reply_code`` is the recipient's reply code (``a``; docs/replies.md) for a template such as
"回复1${code}确认"; ``action`` and ``contact`` exist only in guardians' messages (``escalator.delivery.render.guardian_vars``,
where ``summary`` and ``step`` are empty): give guardians a channel with its own template."""


def check_value_names(names: list[str]) -> list[str]:
    """``names`` if each is in :data:`VALUE_NAMES`, else ``ValueError`` naming the unknown ones."""
    unknown = [n for n in names if n not in VALUE_NAMES]
    if unknown:
        raise ValueError(f"unknown value{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(repr(u) for u in unknown)} (known: {', '.join(sorted(VALUE_NAMES))})")
    return names


def lookup(message: Message, name: str) -> str | None:
    """The escalator value ``name`` for ``message`` as text, or None when it has none.

    Without ``message.values`` (a delivery stage that does not pass them) only ``id``,
    ``title``, ``recipient_name`` and ``ack_url`` are known."""
    if name == "title":
        return message.title or None
    values = message.values
    if values is None:
        values = {"id": message.incident_id, "recipient_name": message.recipient_name,
                  "ack_url": message.ack_hint.split("\n")[0]
                  if (message.ack_hint or "").startswith("http") else None}
    head, _, tail = name.partition(".")
    value: Any = values.get(head)
    if tail:
        value = value.get(tail) if isinstance(value, dict) else None
    if value is None or value == "":
        return None
    return str(value)


def template_values(message: Message, names: list[str], limit: int, missing: str) -> list[str]:
    """The value of each of ``names`` (``missing`` when it has none), cut to ``limit`` characters
    (every character counts 1, as both providers count); ``ack_url`` is never cut."""
    out = []
    for name in names:
        value = lookup(message, name)
        if value is None:
            value = missing
        elif name != "ack_url":
            value = fit_text(" ".join(value.split()), limit)
        out.append(value)
    return out


def provider_mobile(address: str, *, plus: bool) -> str | None:
    """``address`` as the provider wants it: a bare 11-digit mainland number gets ``+86`` when
    ``plus`` (Tencent: E.164), and loses ``+86``/``+`` otherwise (Aliyun); None if no number."""
    number = normalise_mobile(address)
    if number is None:
        return None
    if plus:
        return number if number.startswith("+") else f"+86{number}" if len(number) == 11 else f"+{number}"
    if number.startswith("+86") and len(number) == 14:
        return number[3:]
    return number.lstrip("+")


def load_sdk(type_name: str, extra: str, *modules: str) -> list[ModuleType]:
    """Import the provider SDK's ``modules``, or raise ``ValueError`` naming the extra to install."""
    try:
        return [importlib.import_module(m) for m in modules]
    except ImportError:
        raise ValueError(f"the {type_name} channel needs its provider SDK: "
                         f"pip install 'escalator[{extra}]'") from None


class _NoDebug(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.DEBUG


_NO_DEBUG = _NoDebug()


def quiet_sdk_debug(logger_name: str) -> None:
    """Drop the DEBUG lines of an SDK's logger: they carry each request and answer whole (the
    mobile number, the template parameters, the key id, whatever the service echoes), which
    escalator's own logs never hold."""
    lg = logging.getLogger(logger_name)
    if _NO_DEBUG not in lg.filters:
        lg.addFilter(_NO_DEBUG)


class CloudSmsOptions(ChannelOptions):
    """Options both cloud SMS channels share (see docs/channels.md)."""

    sign_name: str = Field(min_length=1)
    endpoint: str = Field(min_length=1)
    protocol: Literal["https", "http"] = "https"
    max_param_chars: int = Field(ge=1, le=500)
    missing: str = Field("-", min_length=1)
    timeout: float = Field(10.0, gt=0, le=25)

    @field_validator("endpoint")
    @classmethod
    def host_only(cls, value: str) -> str:
        if "/" in value or value != value.strip():
            raise ValueError("a host name (and :port), without scheme or path; set option protocol")
        return value
