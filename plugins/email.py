"""Email over SMTP (aiosmtplib): one message per recipient, plain text and HTML alternatives.

Audience ``person``. A contact method's ``to`` is the email address; the recipient's name from
the config becomes the ``To`` display name.

Headers follow RFC 5322 with non-ASCII text (a Chinese subject, display names) encoded as
RFC 2047 encoded words: the message is built with ``email.policy.SMTP`` (``utf8=False``), so
no SMTPUTF8 support is needed from the server. ``Auto-Submitted: auto-generated`` (RFC 3834)
tells auto-responders not to answer.

Answer mapping (RFC 5321 §4.2.1: 4yz transient, 5yz permanent): a 4xx reply at any stage,
a timeout, a refused or dropped connection → retryable; a 5xx reply (550 unknown recipient,
535 authentication failed, 554 rejected …), a server lacking STARTTLS or AUTH that the options
require, a TLS certificate that does not verify → permanent.
"""

from __future__ import annotations

import html
import re
import ssl
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, make_msgid, parseaddr
from typing import Any, ClassVar

import aiosmtplib
from pydantic import Field, field_validator, model_validator

from escalator.delivery.channel_base import ChannelBase
from escalator.delivery.channels import DeliveryResult, DeliveryStatus, Message
from escalator.delivery.options import ChannelOptions
from escalator.delivery.text import short
from escalator.hookspecs import hookimpl

URL_RE = re.compile(r"https?://[^\s<>\"']+")


def parse_from(value: str) -> tuple[str, str]:
    """``"示例小学联防联控 <escalator@school.example>"`` → (display name, address).

    Raises ``ValueError`` when there is no ``local@domain`` address or it is not ASCII (an
    internationalised address would need SMTPUTF8, which this channel does not ask for)."""
    name, addr = parseaddr(value)
    if "@" not in addr or addr.startswith("@") or addr.endswith("@"):
        raise ValueError("must be an address, optionally with a display name: 'Name <a@b.example>'")
    if not addr.isascii():
        raise ValueError("the address part must be ASCII (display names may be Chinese)")
    return name, addr


class EmailOptions(ChannelOptions):
    """``host``; ``port`` (default 465 with ``tls``, 587 with ``starttls``, else 25);
    ``starttls`` (upgrade with STARTTLS, required when set) or ``tls`` (implicit TLS from the
    first byte) — not both; ``username`` and ``password`` (secret) for AUTH; ``from`` (address
    with optional display name); ``timeout`` (seconds for each SMTP step, 0 < t ≤ 25);
    ``validate_certs`` (default true); ``html`` (also send an HTML alternative, default true)."""

    host: str = Field(min_length=1)
    port: int | None = Field(None, ge=1, le=65535)
    starttls: bool = False
    tls: bool = False
    username: str | None = None
    password: str | None = None
    from_: str = Field(alias="from")
    timeout: float = Field(20.0, gt=0, le=25)
    validate_certs: bool = True
    html: bool = True

    @field_validator("from_")
    @classmethod
    def check_from(cls, value: str) -> str:
        parse_from(value)
        return value

    @model_validator(mode="after")
    def check_combinations(self) -> EmailOptions:
        if self.tls and self.starttls:
            raise ValueError("option tls and option starttls: choose one (tls = implicit TLS, "
                             "usually port 465; starttls = upgrade, usually port 587)")
        if self.password and not self.username:
            raise ValueError("option password: given without option username")
        return self

    @property
    def effective_port(self) -> int:
        """``port``, or 465 with ``tls``, 587 with ``starttls``, else 25."""
        if self.port:
            return self.port
        return 465 if self.tls else 587 if self.starttls else 25


def html_body(title: str, body: str) -> str:
    """A minimal HTML version of the message: escaped text, one line per ``<br>``, links
    (e.g. the acknowledge link) clickable."""

    def line(text: str) -> str:
        out, last = [], 0
        for m in URL_RE.finditer(text):
            out.append(html.escape(text[last:m.start()]))
            url = html.escape(m.group(0))
            out.append(f'<a href="{url}">{url}</a>')
            last = m.end()
        out.append(html.escape(text[last:]))
        return "".join(out)

    lines = "<br>\n".join(line(x) for x in body.splitlines())
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title></head>\n<body>\n"
            f"<p><strong>{html.escape(title)}</strong></p>\n<p>{lines}</p>\n</body></html>\n")


def smtp_failure(exc: BaseException) -> tuple[DeliveryStatus, str]:
    """Status and detail for an aiosmtplib (or socket) exception; see the module docstring."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return DeliveryStatus.failed_permanent, f"TLS certificate not accepted: {cause.reason}"
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        text = "; ".join(f"{r.code} {short(r.message, 100)}" for r in exc.recipients)
        transient = any(400 <= c < 500 for c in codes)
        return (DeliveryStatus.failed_retryable if transient else DeliveryStatus.failed_permanent,
                f"recipient refused: {text}")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        status = (DeliveryStatus.failed_permanent if 500 <= exc.code < 600
                  else DeliveryStatus.failed_retryable)
        return status, f"{type(exc).__name__}: {exc.code} {short(exc.message, 150)}"
    if isinstance(exc, aiosmtplib.SMTPNotSupported) or (
            type(exc) is aiosmtplib.SMTPException and "not supported" in str(exc)):
        # e.g. "SMTP STARTTLS extension not supported by server": the options ask for more
        # than the server offers, which waiting will not change
        return DeliveryStatus.failed_permanent, f"{type(exc).__name__}: {short(str(exc), 150)}"
    return DeliveryStatus.failed_retryable, f"{type(exc).__name__}: {short(str(exc), 150)}"


class EmailChannel(ChannelBase):
    """Sends ``message`` to ``message.address`` through the configured SMTP server.

    Subject = the title; From = ``from``; To = the recipient's name and address; body = the
    plain text (``text/plain``) and, with ``html``, an HTML alternative (``multipart/alternative``).
    """

    type_name: ClassVar[str] = "email"
    audience: ClassVar[str] = "person"
    takes_replies: ClassVar[bool] = True
    options_model: ClassVar[type[ChannelOptions]] = EmailOptions
    secret_options: ClassVar[frozenset[str]] = frozenset({"password"})
    max_body_chars: ClassVar[int | None] = None
    """No limit: SMTP servers cap whole messages (SIZE, typically megabytes), far above ours."""

    options: EmailOptions

    def __init__(self, channel_id: str, options: dict[str, Any]) -> None:
        super().__init__(channel_id, options)
        self.from_name, self.from_addr = parse_from(self.options.from_)

    def build(self, message: Message) -> EmailMessage:
        """The :class:`EmailMessage` for ``message``. Raises ``ValueError`` for an address
        that is not ``local@domain`` in ASCII."""
        to_name, to_addr = parseaddr(message.address)
        if not to_addr or "@" not in to_addr or not to_addr.isascii() or to_addr != message.address.strip():
            raise ValueError("not an email address")
        msg = EmailMessage(policy=SMTP)
        msg["Subject"] = message.title
        msg["From"] = Address(display_name=self.from_name, addr_spec=self.from_addr)
        msg["To"] = Address(display_name=message.recipient_name or "", addr_spec=to_addr)
        msg["Date"] = formatdate(usegmt=True)
        domain = self.from_addr.rsplit("@", 1)[1]
        msg["Message-ID"] = make_msgid(idstring=f"escalator.{message.notification_id}", domain=domain)
        msg["Auto-Submitted"] = "auto-generated"
        msg["X-Escalator-Incident"] = str(message.incident_id)
        msg.set_content(message.body + "\n", charset="utf-8")
        if self.options.html:
            msg.add_alternative(html_body(message.title, message.body), subtype="html",
                                charset="utf-8")
        return msg

    async def send(self, message: Message) -> DeliveryResult:
        try:
            msg = self.build(message)
        except (ValueError, IndexError) as e:
            return self.result(DeliveryStatus.failed_permanent, f"address {message.address!r}: {e}")
        o = self.options
        try:
            _, response = await aiosmtplib.send(
                msg, sender=self.from_addr, recipients=[msg["To"].addresses[0].addr_spec],
                hostname=o.host, port=o.effective_port, username=o.username, password=o.password,
                use_tls=o.tls, start_tls=o.starttls, validate_certs=o.validate_certs,
                timeout=o.timeout)
        except (aiosmtplib.SMTPException, OSError) as e:
            status, detail = smtp_failure(e)
            return self.result(status, detail)
        return self.result(DeliveryStatus.delivered, f"accepted by {o.host}: {short(response, 150)}")


@hookimpl
def register_channels(register):
    register(EmailChannel)
