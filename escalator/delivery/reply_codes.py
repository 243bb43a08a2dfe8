"""Reply codes (docs/replies.md): the short code a message carries so that its recipient can
answer from the phone — "回复 1a 确认，2a 已处置无需上报，3a 上报上一级" — after GoAlert's SMS
reply codes.

A code is per recipient (a person or a unit) and per incident: the letters ``a``, ``b``, …
``z``, ``aa``, ``ab``, … — the first one the recipient holds for no other incident — so one
phone can answer several incidents at once and codes stay short. The code maps durably (the
store's ``reply_codes`` rows) to the ack token of the latest message of that incident sent to
that recipient with a code, so a reply acts exactly as the message's acknowledge link would.
A code of a resolved incident is given out again only ``replies.reuse_after`` (default one day)
after it was last sent, so a late reply is answered "expired" rather than applied to another
incident.

Only messages that ask for an answer (``needs_ack``) to a person or unit get a code, and only
through a channel that takes replies (its class sets ``takes_replies``: the SMS channels and
e-mail) — never a group robot. The code is given in the delivery stage's re-check transaction,
just before the message is rendered (:func:`assign`).
"""

from __future__ import annotations

import re
import string
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from escalator.config.models import Config
from escalator.store.base import Notification, ReplyCode, Tx

ACTIONS = {"1": "acknowledge", "2": "handled", "3": "report"}
"""The digit a reply starts with → what it asks for."""
WORDS = {"确认": "1", "收到": "1", "已处置": "2", "处置": "2", "上报": "3"}
"""Words accepted in place of the digit (a teacher may write 确认 instead of 1)."""
RECIPIENT_KINDS = ("person", "unit")
"""Recipients who get codes: the people and units of the config (not guardians)."""

_SEP = r"[\s#＃:：,，.。!！、]*"
_REPLY = re.compile(
    r"^(?P<action>[123]|" + "|".join(sorted(WORDS, key=len, reverse=True)) + ")" + _SEP
    + r"(?P<code>[a-z]{1,3})?(?![a-z])" + _SEP + r"(?P<rest>.*?)\s*$", re.IGNORECASE | re.DOTALL)


def code_name(index: int) -> str:
    """The ``index``-th code (0-based): ``a`` … ``z``, then ``aa``, ``ab``, … (bijective base 26)."""
    out = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        out = string.ascii_lowercase[rest] + out
    return out


def takes_codes(channel: Any, n: Notification) -> bool:
    """Whether notification ``n`` through ``channel`` (an instance or None) carries a code."""
    return (bool(n.needs_ack) and n.recipient_kind in RECIPIENT_KINDS
            and bool(getattr(channel, "takes_replies", False))
            and getattr(channel, "audience", "person") == "person")


def assign(tx: Tx, config: Config, n: Notification, channel: Any, now: datetime) -> str | None:
    """The code notification ``n`` carries (writing its row in ``tx``), or None when it carries
    none: ``replies`` is not configured, or :func:`takes_codes` says no. The recipient's code
    for the incident is kept (and now maps to ``n``'s token); else the first free one."""
    if config.replies is None or not takes_codes(channel, n):
        return None
    rows = tx.reply_codes_of(n.recipient_kind, n.recipient_id)
    mine = next((r for r in rows if r.incident_id == n.incident_id), None)
    if mine is not None and mine.notification_id > n.id:
        return mine.code  # a later message already carries it (this one is a retry): keep its token
    if mine is not None:
        code = mine.code
    else:
        reuse_before = now - timedelta(seconds=config.replies.reuse_after)
        held = {r.code for r in rows
                if r.incident_state != "resolved" or r.assigned_at > reuse_before}
        code = next(c for c in map(code_name, range(len(held) + 1)) if c not in held)
    tx.put_reply_code(ReplyCode(n.recipient_kind, n.recipient_id, code, n.incident_id, n.id,
                                n.ack_token, now))
    return code


@dataclass(frozen=True)
class Reply:
    """A parsed reply: ``action`` (``acknowledge``, ``handled``, ``report``), ``code``
    (lower-case letters, or None when the reply has only the digit) and, for ``handled``, the
    ``reason`` written after the code (None when there is none)."""

    action: str
    code: str | None
    reason: str | None = None


def parse_reply(text: str) -> Reply | None:
    """The reply in ``text`` (an SMS, or an e-mail's first line), or None if it is none.

    Full-width characters are folded (NFKC: "１Ａ" is "1a"); case, spaces and punctuation
    between the parts are ignored: "1a", "1 A", "１ａ。", "确认a", "3" are replies; "好的", "1a
    好的" are not. After ``2`` and its code the rest is the reason ("2a 已联系家长接回")."""
    original = (text or "").strip()
    folded = unicodedata.normalize("NFKC", original)
    m = _REPLY.match(folded)
    if m is None:
        return None
    action = ACTIONS[WORDS.get(m.group("action"), m.group("action"))]
    rest = m.group("rest").strip()
    if rest and action != "handled":
        return None
    if rest:  # the reason as written (full-width punctuation kept), not as folded
        cut = next(k for k in range(len(original) + 1)
                   if len(unicodedata.normalize("NFKC", original[:k])) >= m.start("rest"))
        rest = original[cut:].strip()
    code = m.group("code").lower() if m.group("code") else None
    return Reply(action, code, rest[:500] or None)


HINT = {
    "zh": "回复 1{c} 确认，2{c} 已处置无需上报，3{c} 上报上一级",
    "en": "Reply 1{c} to acknowledge, 2{c} handled (no report needed), 3{c} report upwards",
}
"""The line a message of a ``report`` step with code ``{c}`` ends with (issue 16; school
words): the level decides."""

HINT_ACK = {
    "zh": "回复 1{c} 确认（停止升级）",
    "en": "Reply 1{c} to acknowledge (stops the escalation)",
}
"""The line for any other step that waits (``escalate``): acknowledging is the one answer — a
"report upwards" there would stop the walk instead of telling the next level."""


def hint(code: str | None, language: str, decide: bool = True) -> str | None:
    """The reply line for ``code`` in ``language`` (``zh``/``en``), or None without a code:
    the three answers at a ``report`` step (``decide``), only "1" elsewhere."""
    table = HINT if decide else HINT_ACK
    return table.get(language, table["zh"]).format(c=code) if code else None
