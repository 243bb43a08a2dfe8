"""Apprise: every service Apprise reaches (Telegram, Bark, ServerChan, Matrix, ntfy, …).

``urls`` (secret: Apprise URLs carry tokens and passwords) is one URL or a list; a message goes
to every one of them. A URL may contain ``{to}``, replaced by the contact method's ``to``
(URL-encoded), so one channel can reach many people (``tgram://BOT_TOKEN/{to}``); without
``{to}`` the ``to`` is ignored (write ``-``).

``audience`` is an option (default ``person``): set ``group`` when the URLs post to a group
chat, so the delivery stage renders the group version (no free-text summary).

Apprise runs in a worker thread (``asyncio.to_thread``), never on the event loop, with
Apprise's own retries off (``default_service_retry = 0`` where the installed Apprise has it):
only escalator's delivery stage retries. Apprise answers only success or failure, without a
reason or a code, so success → delivered and failure → retryable; after the retry deadline
the delivery stage fails over to the next contact method. With several URLs a failure of any
one counts as a failure, and the retry goes to all of them again (a duplicate on the others is
the price of never losing one). Apprise's own log lines mask secrets (``secure_logging``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from typing import Any, ClassVar, Literal
from urllib.parse import quote

import apprise
from pydantic import field_validator

from escalator.delivery.channel_base import ChannelBase
from escalator.delivery.channels import DeliveryResult, DeliveryStatus, Message
from escalator.delivery.options import ChannelOptions
from escalator.hookspecs import hookimpl

_NOTIFY_HAS_TIMEOUT = "timeout" in inspect.signature(apprise.Apprise.notify).parameters

NOTIFY_TIMEOUT = 25.0
"""Seconds Apprise may spend on one notify (passed to Apprise ≥ 2, which supports it); the
delivery stage gives a send 30 s."""


def make_asset() -> apprise.AppriseAsset:
    """An :class:`apprise.AppriseAsset` with retries off and secure logging on, using only the
    settings the installed Apprise knows."""
    wanted = {"default_service_retry": 0, "secure_logging": True}
    return apprise.AppriseAsset(**{k: v for k, v in wanted.items()
                                   if hasattr(apprise.AppriseAsset, k)})


def scheme_of(url: str) -> str:
    """The part before ``://`` (not secret), for error messages."""
    return url.split("://", 1)[0] if "://" in url else "?"


STAND_IN_URL = "json://localhost/"
"""What the options check puts in place of ``urls_env`` / ``urls_file`` before the secret is
read (a URL Apprise understands; nothing is sent to it)."""

_probing = threading.local()


class _QuietWhileProbing(logging.Filter):
    """Drops Apprise's own log lines (``Unparseable URL …``, which repeat the URL with its
    token) while this thread checks a URL: the check's error says the same without the URL."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_probing, "active", False)


_QUIET = _QuietWhileProbing()


def apprise_understands(url: str) -> bool:
    """Whether Apprise can build a notifier from ``url``, without logging the URL."""
    lg = logging.getLogger("apprise")
    if _QUIET not in lg.filters:
        lg.addFilter(_QUIET)
    _probing.active = True
    try:
        return bool(apprise.Apprise(asset=make_asset()).add(url))
    finally:
        _probing.active = False


class AppriseOptions(ChannelOptions):
    """``urls`` (secret; one Apprise URL or a list, each may contain ``{to}``), ``audience``
    (``person`` default, or ``group``)."""

    urls: list[str]
    audience: Literal["person", "group"] = "person"

    @field_validator("urls", mode="before")
    @classmethod
    def one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @classmethod
    def stand_in(cls, name: str) -> Any:
        return STAND_IN_URL if name == "urls" else super().stand_in(name)

    @field_validator("urls")
    @classmethod
    def understood(cls, urls: list[str]) -> list[str]:
        if not urls:
            raise ValueError("give at least one Apprise URL")
        for i, url in enumerate(urls):
            if not apprise_understands(url.replace("{to}", "placeholder")):
                # never repeat the URL: it holds the token
                raise ValueError(f"item {i}: Apprise does not understand this URL "
                                 f"(scheme {scheme_of(url)!r}; see `apprise --details`)")
        return urls


class AppriseChannel(ChannelBase):
    """Sends title and body through Apprise to every configured URL; see the module docstring."""

    type_name: ClassVar[str] = "apprise"
    audience: ClassVar[str] = "person"
    options_model: ClassVar[type[ChannelOptions]] = AppriseOptions
    secret_options: ClassVar[frozenset[str]] = frozenset({"urls"})
    max_body_chars: ClassVar[int | None] = None
    """Apprise fits the text to each service's own limit (its ``body_maxlen``)."""

    options: AppriseOptions

    def __init__(self, channel_id: str, options: dict[str, Any]) -> None:
        super().__init__(channel_id, options)
        self.audience = self.options.audience  # instance value: read by the delivery stage

    def _urls(self, address: str) -> list[str]:
        to = quote(address.strip(), safe="@+")
        return [u.replace("{to}", to) for u in self.options.urls]

    def _notify(self, urls: list[str], title: str, body: str) -> bool:
        ap = apprise.Apprise(asset=make_asset())
        for url in urls:
            if not ap.add(url):
                return False
        kwargs: dict[str, Any] = {"body": body, "title": title, "body_format": "text"}
        if _NOTIFY_HAS_TIMEOUT:
            kwargs["timeout"] = NOTIFY_TIMEOUT
        return bool(ap.notify(**kwargs))

    async def send(self, message: Message) -> DeliveryResult:
        urls = self._urls(message.address)
        if any("{to}" in u for u in self.options.urls) and message.address.strip() in ("", "-"):
            return self.result(DeliveryStatus.failed_permanent,
                               "the URLs use {to} but this contact method has no address")
        try:
            ok = await asyncio.to_thread(self._notify, urls, message.title, message.body)
        except Exception as e:  # an Apprise plugin bug must not look like a channel bug
            return self.result(DeliveryStatus.failed_retryable, f"Apprise raised {type(e).__name__}")
        if ok:
            return self.result(DeliveryStatus.delivered, f"Apprise: sent to {len(urls)} URL(s)")
        return self.result(DeliveryStatus.failed_retryable,
                           "Apprise reported a failure (it gives no reason; see its log)")


@hookimpl
def register_channels(register):
    register(AppriseChannel)
