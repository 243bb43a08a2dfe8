"""The channel contract: what a channel plugin is given and what it answers.

A channel class has ``type_name`` (str), ``audience`` (``"person"`` or ``"group"``), an
``__init__(channel_id: str, options: dict)`` (options with secrets already resolved; raise
``ValueError`` for bad options), ``async send(message) -> DeliveryResult`` and
``async aclose()`` (release connections and clients; called once the daemon no longer uses the
channel: after a reload replaced it, and at stop). A channel never retries: it says whether a
failure is retryable — or, when it held the message back unsent for a rate limit, after how
many seconds to try again (``retry_after``) — and the delivery stage decides.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Protocol

import structlog

log = structlog.get_logger("escalator.delivery.channels")


class DeliveryStatus(StrEnum):
    delivered = "delivered"
    failed_retryable = "failed_retryable"
    failed_permanent = "failed_permanent"


@dataclass(frozen=True)
class DeliveryResult:
    """A channel's answer: ``status`` and a short ``detail`` for the ledger (no secrets).

    ``retry_after`` (seconds), with ``failed_retryable``: the channel did not send the message
    but held it back for a rate limit, and there is room again after that many seconds; the
    delivery stage then delays the row like its own throttle, without counting an attempt or
    using up the retry deadline. ``None``: the channel tried (an ordinary answer).
    """

    status: DeliveryStatus
    detail: str = ""
    retry_after: float | None = None

    @property
    def held_back(self) -> bool:
        """Whether the channel held the message back unsent (see ``retry_after``)."""
        return self.status == DeliveryStatus.failed_retryable and self.retry_after is not None


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
    """What the daemon expects of a channel class and its instances (see the module docstring)."""

    type_name: ClassVar[str]
    audience: ClassVar[str]

    def __init__(self, channel_id: str, options: dict[str, Any]) -> None: ...

    async def send(self, message: Message) -> DeliveryResult: ...

    async def aclose(self) -> None: ...


async def aclose_all(channels: Iterable[Any]) -> None:
    """Call ``aclose()`` on each of ``channels`` (one that has none — a plugin written before
    ``aclose`` was part of the contract — is skipped). A channel's exception is logged, never
    raised, so one bad channel does not keep the others open. A channel serving several ids is
    closed once."""
    for channel in {id(c): c for c in channels}.values():
        close = getattr(channel, "aclose", None)
        if close is None:
            continue
        try:
            await close()
        except Exception:
            log.exception("channel_close_failed", channel=getattr(channel, "channel_id", None))
