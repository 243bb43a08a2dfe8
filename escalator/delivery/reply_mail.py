"""E-mail replies (docs/replies.md): a spool folder of mails, and/or an IMAP mailbox, each mail
read once.

The mail system drops each reply to escalator's address into ``replies.email.spool_dir`` as one
file (``.eml``; e.g. a Maildir's ``new/`` folder, a procmail/fetchmail/getmail rule, or
``sieve`` ``fileinto``): written elsewhere and moved in, so a file is whole when it appears.
Files starting with ``.`` and folders are skipped. Each file is read
(:func:`read_mail`), handled by the :class:`~escalator.delivery.replies.ReplyDesk` like an SMS
(``via`` ``email``; the sender matched by address), and moved to ``done/`` — or to ``failed/``
when it cannot be read as a mail (logged). Nothing is lost: a crash before the move reads the
file again, and a second acknowledgement is answered "already acknowledged".

An IMAP mailbox (``replies.email.imap``) is read the same way: its unseen mails, fetched with
``BODY.PEEK`` and flagged ``\\Seen`` once handled (a crash in between reads them again).

Automatic mail (``Auto-Submitted`` other than ``no``, RFC 3834 §5; ``Precedence: bulk``,
``junk``, ``list``, ``auto_reply``) is moved to ``done/`` without acting or answering, so an
out-of-office reply to escalator's own message never loops. Unknown senders are logged but
never answered (no backscatter to forged addresses); known ones are answered through
``replies.email.answer_channel``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import imaplib
import os
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import structlog

from escalator.config.load import resolve_secrets
from escalator.delivery.replies import Handled, Inbound, ReplyDesk, mask
from escalator.store.retry import retrying_async

log = structlog.get_logger("escalator.delivery.reply_mail")

MAX_MAIL_BYTES = 1 << 20
"""Largest mail read (bytes); a larger file goes to ``failed/``."""
AUTOMATIC_PRECEDENCE = frozenset({"bulk", "junk", "list", "auto_reply"})


@dataclass(frozen=True)
class Mail:
    """What escalator reads of a reply mail: ``sender`` (the From address), ``text`` (the first
    line of the reply, above any quoted message; else the subject without ``Re:``) and
    ``automatic`` (an auto-reply, never acted on)."""

    sender: str
    text: str
    automatic: bool


def read_mail(data: bytes) -> Mail:
    """Parse one mail. Raises ``ValueError`` when it has no From address."""
    msg = BytesParser(policy=policy.default).parsebytes(data)
    assert isinstance(msg, EmailMessage)
    sender = msg.get("From")
    addresses = getattr(sender, "addresses", ()) if sender is not None else ()
    if not addresses or not addresses[0].addr_spec or "@" not in addresses[0].addr_spec:
        raise ValueError("no From address")
    auto = str(msg.get("Auto-Submitted", "no")).strip().lower()
    precedence = str(msg.get("Precedence", "")).strip().lower()
    automatic = (auto != "no" and auto != "") or precedence in AUTOMATIC_PRECEDENCE
    text = ""
    body = msg.get_body(preferencelist=("plain",))
    if body is not None:
        try:
            content = body.get_content()
        except (LookupError, UnicodeError):
            content = ""
        for line in str(content).splitlines():
            line = line.strip()
            if line.startswith(">"):
                break  # the quoted original starts: the reply is above it
            if line:
                text = line
                break
    if not text:
        subject = str(msg.get("Subject", "")).strip()
        for prefix in ("re:", "回复：", "回复:", "答复：", "答复:"):
            if subject.lower().startswith(prefix):
                subject = subject[len(prefix):].strip()
        text = subject
    return Mail(addresses[0].addr_spec, text, automatic)


async def take_mail(mail: Mail, where: str, desk: ReplyDesk, db: Callable[..., Awaitable[Any]],
                    channel: Any, channel_id: str) -> Handled | None:
    """Act on one read mail (``where``: its file or IMAP uid, for the log): None for automatic
    mail (not acted on, not answered); else what it did, answered when the sender is known."""
    if mail.automatic:
        log.info("reply_mail_automatic_ignored", mail=where, sender=mask(mail.sender))
        return None
    inbound = Inbound(mail.sender, mail.text, "email", "email")
    handled = await db(desk.handle, inbound)
    if handled.known_sender:
        await desk.answer(inbound, handled, channel, channel_id)
    return handled


async def read_folder(folder: Path, desk: ReplyDesk,
                      db: Callable[..., Awaitable[Any]], channel: Any,
                      channel_id: str) -> list[Handled]:
    """One pass over ``folder``: every mail handled (on the store through ``db``), answered
    through ``channel`` when its sender is known, and moved to ``done/`` or ``failed/``. Returns
    what each acted-on mail did, in file-name order. Never raises for a bad mail; a store error
    propagates and leaves the mail in place (read again next pass)."""
    try:
        names = sorted(e.name for e in os.scandir(folder)
                       if not e.name.startswith(".") and e.is_file(follow_symlinks=False))
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        path = folder / name
        try:
            if path.stat().st_size > MAX_MAIL_BYTES:
                raise ValueError(f"larger than {MAX_MAIL_BYTES} bytes")
            mail = read_mail(path.read_bytes())
        except (OSError, ValueError) as e:
            log.warning("reply_mail_unreadable", mail=name, reason=str(e))
            _move(path, folder / "failed")
            continue
        handled = await take_mail(mail, name, desk, db, channel, channel_id)
        _move(path, folder / "done")
        if handled is not None:
            out.append(handled)
    return out


def imap_unseen(options: Any, password: str) -> list[tuple[bytes, bytes]]:
    """``(uid, mail bytes)`` of every unseen mail in ``options.mailbox`` (an
    :class:`~escalator.config.replies.ReplyImap`), read without setting ``\\Seen``
    (``BODY.PEEK``). Blocking (run it in a thread); raises ``OSError`` / ``imaplib.IMAP4.error``."""
    with _imap(options, password) as box:
        typ, data = box.uid("SEARCH", None, "UNSEEN")
        uids = data[0].split() if typ == "OK" and data and data[0] else []
        out = []
        for uid in uids:
            typ, parts = box.uid("FETCH", uid, "(BODY.PEEK[])")
            body = next((p[1] for p in parts or () if isinstance(p, tuple) and len(p) > 1), None)
            if typ == "OK" and isinstance(body, bytes):
                out.append((uid, body))
        return out


def imap_mark_seen(options: Any, password: str, uids: list[bytes]) -> None:
    """Flag ``uids`` ``\\Seen`` in ``options.mailbox``. Blocking; raises like :func:`imap_unseen`."""
    if not uids:
        return
    with _imap(options, password) as box:
        box.uid("STORE", b",".join(uids), "+FLAGS", "(\\Seen)")


@contextlib.contextmanager
def _imap(options: Any, password: str) -> Iterator[imaplib.IMAP4]:
    port = options.port or (993 if options.tls else 143)
    cls = imaplib.IMAP4_SSL if options.tls else imaplib.IMAP4
    box = cls(options.host, port, timeout=options.timeout)
    try:
        box.login(options.username, password)
        typ, _ = box.select(options.mailbox)
        if typ != "OK":
            raise imaplib.IMAP4.error(f"cannot select mailbox {options.mailbox!r}")
        yield box
    finally:
        with contextlib.suppress(Exception):
            box.logout()


async def read_imap(options: Any, password: str, desk: ReplyDesk,
                    db: Callable[..., Awaitable[Any]], channel: Any,
                    channel_id: str) -> list[Handled]:
    """One pass over the IMAP mailbox: every unseen mail handled like a spool file, then flagged
    ``\\Seen`` (an unreadable one too, logged). A crash between the two reads the mail again
    (the second acknowledgement is answered "already acknowledged"). Connection and login
    errors propagate (the daemon's supervisor retries)."""
    mails = await asyncio.to_thread(imap_unseen, options, password)
    out, done = [], []
    for uid, data in mails:
        where = f"imap:{uid.decode(errors='replace')}"
        try:
            mail = read_mail(data[:MAX_MAIL_BYTES])
        except ValueError as e:
            log.warning("reply_mail_unreadable", mail=where, reason=str(e))
            done.append(uid)
            continue
        handled = await take_mail(mail, where, desk, db, channel, channel_id)
        done.append(uid)
        if handled is not None:
            out.append(handled)
    await asyncio.to_thread(imap_mark_seen, options, password, done)
    return out


def _move(path: Path, to: Path) -> None:
    to.mkdir(exist_ok=True)
    target = to / path.name
    n = 1
    while target.exists():
        target = to / f"{path.name}.{n}"
        n += 1
    with contextlib.suppress(FileNotFoundError):
        path.rename(target)


class ReplyMailbox:
    """The daemon input that reads ``replies.email.spool_dir`` of the daemon's current config
    (relative to the config file) every ``poll_seconds`` until cancelled; the daemon's
    supervisor restarts it after a crash. ``daemon``: ``config``, ``replies`` (its
    :class:`ReplyDesk`), ``db``, ``delivery.channels``, ``wake``."""

    def __init__(self, daemon: Any) -> None:
        self.daemon = daemon

    async def run(self) -> None:
        daemon = self.daemon
        db = functools.partial(retrying_async, daemon.db)  # a lost race (Conflict): again
        while True:
            conf = daemon.config.replies.email if daemon.config.replies else None
            if conf is None:  # switched off by a reload
                await asyncio.sleep(10)
                continue
            channel = (daemon.delivery.channels.get(conf.answer_channel)
                       if conf.answer_channel else None)
            handled: list[Handled] = []
            if conf.spool_dir is not None:
                folder = Path(conf.spool_dir)
                if not folder.is_absolute():
                    folder = daemon.config.base_dir / folder
                handled += await read_folder(folder, daemon.replies, db, channel,
                                             conf.answer_channel or "")
            if conf.imap is not None:
                secret = conf.imap.model_dump(include={"password_env", "password_file"},
                                              exclude_none=True)
                password = str(resolve_secrets(secret, daemon.config.base_dir)["password"])
                try:
                    handled += await read_imap(conf.imap, password, daemon.replies, db,
                                               channel, conf.answer_channel or "")
                except (OSError, imaplib.IMAP4.error) as e:  # the server is down: next poll
                    log.warning("reply_imap_unreachable", host=conf.imap.host,
                                reason=type(e).__name__)
            if handled:
                daemon.wake()
            await asyncio.sleep(conf.poll_seconds)
