"""Text for a channel's limits: fitting text to a length (characters, bytes, SMS parts), the
text a chat or SMS channel sends, and phone numbers as addresses.

Every built-in channel fits its text to the service's documented limit with :func:`fit_text`
or :func:`fit_sms`, keeping the acknowledge link whole.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from escalator.delivery.channels import Message

ELLIPSIS = "…"
"""Marker put where :func:`fit_text` cut text out."""

NO_ADDRESS = ("", "-")
"""Addresses that mean "nobody in particular" on a group channel (no @-mention)."""


def utf8_len(text: str) -> int:
    """Length of ``text`` in UTF-8 bytes (WeCom's 2,048-byte limit is counted this way)."""
    return len(text.encode("utf-8"))


def json_len(text: str) -> int:
    """Bytes ``text`` takes as a JSON string value (UTF-8, ``ensure_ascii=False``), without
    the quotes: escapes such as ``\\n`` count as two bytes."""
    return len(json.dumps(text, ensure_ascii=False).encode("utf-8")) - 2


def fit_text(text: str, limit: int, *, measure: Callable[[str], int] = len,
             keep_tail: str = "", marker: str = ELLIPSIS) -> str:
    """``text`` cut to at most ``limit`` units of ``measure`` (``len`` = characters,
    :func:`utf8_len` = bytes), whole characters only.

    When cut, ``marker`` ends the kept part. If ``keep_tail`` is given and ``text`` ends with
    it (e.g. the acknowledge link), the tail is kept whole and the cut is made before it, as
    long as the tail and marker fit; otherwise the text is simply cut at the end. Raises
    ``ValueError`` if ``limit`` cannot even hold the marker. ``measure`` must grow with the
    prefix length (true for characters, bytes and JSON-escaped bytes).
    """
    if measure(text) <= limit:
        return text
    if measure(marker) > limit:
        raise ValueError(f"limit {limit} is too small for any text")
    head, tail = text, ""
    if keep_tail and text.endswith(keep_tail):
        before = text[: len(text) - len(keep_tail)]
        stripped = before.rstrip("\n")  # the line break before the tail belongs to the tail
        if measure(marker + before[len(stripped):] + keep_tail) <= limit:
            head, tail = stripped, before[len(stripped):] + keep_tail
    budget = limit - measure(marker + tail)
    lo, hi = 0, len(head)  # largest n with measure(head[:n]) <= budget
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if measure(head[:mid]) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return head[:lo].rstrip() + marker + tail


# SMS: 3GPP TS 23.038 GSM 7-bit default alphabet; characters of the extension table take two
# septets. One SMS carries 140 octets: 160 GSM-7 characters or 70 UCS-2 (UTF-16) code units; a
# part of a concatenated SMS loses 6 octets to the user-data header: 153 or 67. Chinese
# carriers bill the same way (≤70 characters one message, longer ones per 67).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = frozenset("^{}\\[~]|€\f")
SMS_SINGLE = {"gsm7": 160, "ucs2": 70}
SMS_PART = {"gsm7": 153, "ucs2": 67}


def sms_encoding(text: str) -> str:
    """``"gsm7"`` if every character is in the GSM 7-bit alphabet, else ``"ucs2"``."""
    return "gsm7" if all(c in GSM7_BASIC or c in GSM7_EXTENDED for c in text) else "ucs2"


def sms_units(text: str, encoding: str) -> int:
    """Length of ``text`` in SMS units: septets for ``gsm7`` (extension characters count 2),
    UTF-16 code units for ``ucs2`` (a character outside the BMP counts 2)."""
    if encoding == "gsm7":
        return sum(2 if c in GSM7_EXTENDED else 1 for c in text)
    return len(text.encode("utf-16-be")) // 2


def sms_segments(text: str, encoding: str = "auto") -> int:
    """How many SMS parts ``text`` takes (0 for empty). ``encoding``: ``auto`` (GSM-7 when
    possible), ``gsm7`` or ``ucs2`` (a modem told ``Alphabet: UCS2`` always uses UCS-2)."""
    enc = sms_encoding(text) if encoding == "auto" else encoding
    n = sms_units(text, enc)
    if n == 0:
        return 0
    if n <= SMS_SINGLE[enc]:
        return 1
    return -(-n // SMS_PART[enc])


def sms_capacity(segments: int, encoding: str) -> int:
    """Most units ``segments`` SMS parts hold: 70 / 160 for one, 67·n / 153·n for more."""
    return SMS_SINGLE[encoding] if segments == 1 else SMS_PART[encoding] * segments


def fit_sms(text: str, max_segments: int, *, encoding: str = "auto", keep_tail: str = "") -> str:
    """``text`` cut (see :func:`fit_text`) so it takes at most ``max_segments`` SMS parts.

    With ``encoding="auto"`` the cut text may become GSM-7 only if the dropped part held every
    non-GSM character; the capacity is computed for the encoding of the whole text, which is
    never smaller than needed.
    """
    if max_segments < 1:
        raise ValueError("max_segments must be at least 1")
    enc = sms_encoding(text) if encoding == "auto" else encoding
    return fit_text(text, sms_capacity(max_segments, enc),
                    measure=lambda s: sms_units(s, enc), keep_tail=keep_tail)


def message_text(message: Message) -> tuple[str, str]:
    """The plain text a chat or SMS channel sends for ``message`` — the title, a newline, the
    body — and the tail to keep whole when fitting (the acknowledge hint, if the body ends
    with it)."""
    text = f"{message.title}\n{message.body}" if message.body else message.title
    tail = message.ack_hint if message.ack_hint and text.endswith(message.ack_hint) else ""
    return text, tail


def short(text: str, limit: int = 120) -> str:
    """``text`` on one line, at most ``limit`` characters (for service messages in details)."""
    return fit_text(" ".join(str(text).split()), limit)


MOBILE_RE = re.compile(r"^\+?[0-9][0-9 -]{4,19}$")
"""A phone number as people write it: digits, optional leading ``+``, spaces or dashes."""


def normalise_mobile(address: str) -> str | None:
    """``address`` as digits (a leading ``+`` kept), or ``None`` if it is no phone number."""
    a = address.strip()
    if not MOBILE_RE.match(a):
        return None
    return ("+" if a.startswith("+") else "") + re.sub(r"[^0-9]", "", a)
