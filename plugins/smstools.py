"""SMS through a GSM modem (短信猫) driven by SMS Server Tools 3 (smsd): a spool-file writer.

Audience ``person``. A contact method's ``to`` is the mobile number (a leading ``+`` is
dropped: smsd wants digits, e.g. ``8613800138000`` or the national ``13800138000`` as the
modem's network accepts).

Each message becomes one file in the ``outgoing`` folder smsd watches, in the format of the
smstools3 manual ("SMS file format"): header lines, an empty line, the text::

    To: 13800138000
    Alphabet: UCS2

    <text as UCS-2, big-endian, no byte-order mark>

Headers are ASCII with ``\\n`` line ends. Characters outside the BMP (which UCS-2 cannot
hold) become U+FFFD. The text is title + newline + body, fitted to ``max_segments`` parts of
70 UCS-2 characters (67 when split; smsd's own ``autosplit`` must allow as many parts).

The file is written atomically: into a hidden temporary file in the same folder (smsd skips
names starting with a dot), flushed and fsynced, then renamed to its final name
``<prefix>-<notification id>-<random>`` and the folder fsynced — smsd never sees a partial
file (the manual warns it may otherwise take a file still being written).

Mapping: written → delivered (handed to smsd; whether the modem sent it is in smsd's
``sent``/``failed`` folders, which this channel does not watch); the folder missing or not
writable → permanent (a configuration error); another OS error (disk full …) → retryable.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import uuid
from pathlib import Path
from typing import ClassVar

from pydantic import Field, field_validator

from escalator.delivery.channel_base import ChannelBase
from escalator.delivery.channels import DeliveryResult, DeliveryStatus, Message
from escalator.delivery.options import ChannelOptions
from escalator.delivery.text import fit_sms, message_text, normalise_mobile
from escalator.hookspecs import hookimpl

NON_BMP = re.compile(r"[^\u0000-\uffff]")


def spool_file(number: str, text: str) -> bytes:
    """The bytes of one smstools3 outgoing file for ``number`` and ``text``."""
    header = f"To: {number}\nAlphabet: UCS2\n\n".encode("ascii")
    return header + NON_BMP.sub("\ufffd", text).encode("utf-16-be")


class SmsToolsOptions(ChannelOptions):
    """``outgoing`` (absolute path of smsd's outgoing folder, e.g. ``/var/spool/sms/outgoing``),
    ``max_segments`` (1–10, default 3 = smsd's default ``autosplit``), ``file_mode``
    (octal text, default ``"0644"``: smsd usually runs as another user and must read the file;
    protect the folder instead), ``prefix`` (file-name prefix, default ``escalator``)."""

    outgoing: str
    max_segments: int = Field(3, ge=1, le=10)
    file_mode: str = "0644"
    prefix: str = Field("escalator", pattern=r"^[A-Za-z0-9_-]{1,32}$")

    @field_validator("outgoing")
    @classmethod
    def absolute(cls, value: str) -> str:
        if not Path(value).is_absolute():
            raise ValueError("must be an absolute path (smsd's outgoing folder)")
        return value

    @field_validator("file_mode")
    @classmethod
    def octal(cls, value: str) -> str:
        try:
            mode = int(value, 8)
        except ValueError:
            raise ValueError("must be an octal mode such as '0644'") from None
        if not 0 <= mode <= 0o777:
            raise ValueError("must be an octal mode such as '0644'")
        return value


class SmsToolsChannel(ChannelBase):
    """Writes one smstools3 spool file per message; see the module docstring."""

    type_name: ClassVar[str] = "smstools"
    audience: ClassVar[str] = "person"
    takes_replies: ClassVar[bool] = True
    options_model: ClassVar[type[ChannelOptions]] = SmsToolsOptions
    secret_options: ClassVar[frozenset[str]] = frozenset()
    max_body_chars: ClassVar[int | None] = None
    """Counted in SMS parts instead: ``max_segments`` (70 / 67 UCS-2 characters a part)."""

    options: SmsToolsOptions

    def text(self, message: Message) -> str:
        """Title, newline, body, fitted to ``max_segments`` UCS-2 parts (ack hint kept)."""
        text, tail = message_text(message)
        return fit_sms(text, self.options.max_segments, encoding="ucs2", keep_tail=tail)

    def write(self, name: str, data: bytes) -> Path:
        """Write ``data`` to ``outgoing/name`` atomically (temporary dot-file, fsync, rename,
        fsync of the folder). Raises ``OSError``; leaves no temporary file behind."""
        folder = Path(self.options.outgoing)
        final = folder / name
        tmp = folder / f".{name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            try:
                os.fchmod(fd, int(self.options.file_mode, 8))
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, final)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        return final

    async def send(self, message: Message) -> DeliveryResult:
        number = normalise_mobile(message.address)
        if number is None:
            return self.result(DeliveryStatus.failed_permanent,
                               f"address {message.address!r} is not a phone number")
        number = number.lstrip("+")
        name = f"{self.options.prefix}-{message.notification_id}-{uuid.uuid4().hex[:8]}"
        try:
            path = await asyncio.to_thread(self.write, name, spool_file(number, self.text(message)))
        except OSError as e:
            permanent = e.errno in (errno.ENOENT, errno.ENOTDIR, errno.EACCES, errno.EPERM,
                                    errno.EROFS)
            status = DeliveryStatus.failed_permanent if permanent else DeliveryStatus.failed_retryable
            return self.result(status, f"cannot write to {self.options.outgoing}: "
                                       f"{e.strerror or type(e).__name__}")
        return self.result(DeliveryStatus.delivered, f"handed to smsd: {path.name}")


@hookimpl
def register_channels(register):
    register(SmsToolsChannel)
