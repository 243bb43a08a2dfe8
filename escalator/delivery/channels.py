"""The channel contract: what a channel plugin is given and what it answers.

A channel class has ``type_name`` (str), ``audience`` (``"person"`` or ``"group"``), an
``__init__(channel_id: str, options: dict)`` (options with secrets already resolved; raise
``ValueError`` for bad options), and ``async send(message) -> DeliveryResult``. A channel never
retries: it says whether a failure is retryable, and the delivery stage decides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Protocol


class DeliveryStatus(StrEnum):
    delivered = "delivered"
    failed_retryable = "failed_retryable"
    failed_permanent = "failed_permanent"


@dataclass(frozen=True)
class DeliveryResult:
    """A channel's answer: ``status`` and a short ``detail`` for the ledger (no secrets)."""

    status: DeliveryStatus
    detail: str = ""


@dataclass(frozen=True)
class Message:
    """A rendered notification for one recipient.

    ``address``: the contact method's ``to``; ``title`` and ``body``: rendered text (already
    PII-minimised for the channel's audience); ``ack_hint``: how to acknowledge, or None for
    ``inform`` steps; ``drill``: an exercise (应急演练); ``values``: the render stage's template
    variables (:func:`escalator.delivery.render.template_vars`, minimised for the channel's audience) for
    channels that send a provider's pre-approved template (Aliyun, Tencent Cloud SMS), or None
    when the delivery stage does not pass them.
    """

    notification_id: int
    incident_id: int
    channel_id: str
    address: str
    recipient_name: str
    title: str
    body: str
    ack_hint: str | None
    drill: bool = False
    values: Mapping[str, Any] | None = None


class Channel(Protocol):
    type_name: ClassVar[str]
    audience: ClassVar[str]

    def __init__(self, channel_id: str, options: dict[str, Any]) -> None: ...

    async def send(self, message: Message) -> DeliveryResult: ...
