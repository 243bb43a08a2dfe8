"""The base class of the built-in channels (:class:`ChannelBase`).

A built-in channel is a subclass with a pydantic options model
(:class:`~escalator.delivery.options.ChannelOptions`) and uses the helpers of
:mod:`~escalator.delivery.options` (options, secrets), :mod:`~escalator.delivery.text`
(length limits), :mod:`~escalator.delivery.http` (the shared client, answers) and
:mod:`~escalator.delivery.ratelimit` (its service's rate limits).
"""

from __future__ import annotations

from typing import Any, ClassVar

from escalator.delivery.channels import DeliveryResult, DeliveryStatus
from escalator.delivery.http import release_client, transport_failure, use_client
from escalator.delivery.options import (
    ChannelOptions,
    Redactor,
    install_log_redaction,
    mask,
    secret_values,
)
from escalator.delivery.ratelimit import RateLimit, RateLimiter
from escalator.delivery.text import fit_text

DETAIL_MAX = 300
"""Longest ``DeliveryResult.detail`` a built-in channel returns (characters)."""


class ChannelBase:
    """Common shape of the built-in channels.

    Class attributes a subclass sets: ``type_name``, ``audience`` (``"person"`` or
    ``"group"``), ``options_model`` (a :class:`ChannelOptions` subclass), ``secret_options``
    (option names whose values are secrets), ``max_body_chars`` or ``max_body_bytes`` (``None``
    when the service documents no limit), ``rate_limits`` (documented service limits),
    ``takes_replies`` (a person can answer by SMS or e-mail: docs/replies.md). A
    channel that holds messages back for its service's limits sets ``self.limiter`` (e.g.
    :func:`~escalator.delivery.ratelimit.shared_limiter`) and asks :meth:`held_back` first.

    ``__init__`` validates the options (``ValueError`` naming each problem), keeps them in
    ``self.options`` and registers the secret values for scrubbing; ``repr`` masks them; use
    :meth:`result` to build every :class:`DeliveryResult` so its detail is scrubbed and short.
    :meth:`aclose` releases what the channel holds (a subclass holding more extends it).
    """

    type_name: ClassVar[str] = ""
    audience: ClassVar[str] = "person"
    options_model: ClassVar[type[ChannelOptions]] = ChannelOptions
    secret_options: ClassVar[frozenset[str]] = frozenset()
    max_body_chars: ClassVar[int | None] = None
    max_body_bytes: ClassVar[int | None] = None
    rate_limits: ClassVar[tuple[RateLimit, ...]] = ()
    takes_replies: ClassVar[bool] = False
    """The recipient can answer a message of this channel (SMS, e-mail): its messages that ask
    for an answer carry a reply code (docs/replies.md). Never for a ``group`` audience."""
    limiter: RateLimiter | None = None
    """The channel's own limiter (:meth:`held_back`); ``None``: it holds nothing back."""

    def __init__(self, channel_id: str, options: dict[str, Any]) -> None:
        self.channel_id = channel_id
        self.options = self.options_model.parse(options)
        self.redactor = Redactor(secret_values(self.options, self.secret_options))
        install_log_redaction(secret_values(self.options, self.secret_options))
        use_client(self)  # the shared HTTP client stays open until aclose()

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.channel_id!r} "
                f"{mask(self.options, self.secret_options)!r}>")

    def result(self, status: DeliveryStatus, detail: str = "",
               retry_after: float | None = None) -> DeliveryResult:
        """A :class:`DeliveryResult` whose detail has no secret and at most :data:`DETAIL_MAX`
        characters."""
        clean = self.redactor.scrub(detail)
        if len(clean) > DETAIL_MAX:
            clean = fit_text(clean, DETAIL_MAX)
        return DeliveryResult(status, clean, retry_after)

    def failure(self, exc: BaseException) -> DeliveryResult:
        """The result for an exception raised by an HTTP call (see
        :func:`~escalator.delivery.http.transport_failure`)."""
        status, detail = transport_failure(exc)
        return self.result(status, detail)

    def held_back(self, why: str) -> DeliveryResult | None:
        """``None`` when :attr:`limiter` has room (a slot is taken for the send about to be
        made) or there is none; else the answer for a message held back unsent:
        ``failed_retryable``, detail ``"held back: <why> (room again in N s)"``, and
        ``retry_after`` the seconds until the limiter has room."""
        wait = self.limiter.try_acquire() if self.limiter is not None else 0.0
        if not wait:
            return None
        shown = f"{wait:.1f}" if wait < 10 else f"{wait:.0f}"
        return self.result(DeliveryStatus.failed_retryable,
                           f"held back: {why} (room again in {shown} s)", retry_after=wait)

    async def aclose(self) -> None:
        """Release what the channel holds: its count on the shared HTTP client (closed with the
        last channel: :func:`~escalator.delivery.http.release_client`). The daemon calls it after
        a reload replaced the channel, and at stop."""
        await release_client(self)
