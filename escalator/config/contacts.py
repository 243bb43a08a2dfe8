"""Whether a contact address fits its channel: phone numbers for SMS channels and a unit's
``phone``, e-mail addresses for the e-mail channel (``check-config``, issue 13 point 8).

Phone numbers (after dropping the spaces and dashes people write, ``139-5555-0001``):

- a mainland mobile number, ``1[3-9]`` and nine more digits (11 digits; GB/T 13628 numbering as
  the MIIT assigns it: every mobile prefix starts 13–19);
- or an international number in E.164 form: ``+`` and 8 to 15 digits (ITU-T E.164 §6: at most
  15 digits), e.g. ``+8613955550001``, ``+85291234567``;
- for a unit's ``phone`` (shown to people, never texted) also a mainland landline: ``0``, a 2–3
  digit area code and a 7–8 digit number (``010-12345678``, ``010-5555-0101``, ``0571-8765432``), optionally a
  last ``-`` and an extension of up to 6 digits.

E-mail addresses: the ``email-validator`` library's syntax check (RFC 5321/5322, internationalised
addresses per RFC 6531), without looking the domain up in the DNS.
"""

from __future__ import annotations

import re

MOBILE = re.compile(r"1[3-9]\d{9}")
E164 = re.compile(r"\+\d{8,15}")
LANDLINE = re.compile(r"0\d{9,11}")
"""A mainland landline without separators: ``0``, a 2–3 digit area code, a 7–8 digit number."""

SMS_CHANNEL_TYPES = frozenset({"sms_http", "smstools", "aliyun_sms", "tencent_sms"})
"""Channel types whose contact address is a phone number."""
EMAIL_CHANNEL_TYPES = frozenset({"email"})
"""Channel types whose contact address is an e-mail address."""


def _digits(text: str) -> str:
    return re.sub(r"[ \-]", "", text.strip())


def is_phone(text: str, *, landline: bool = False) -> bool:
    """Whether ``text`` is a mainland mobile or an E.164 number (with ``landline``: or a
    mainland landline, ``0AA(A)-NNNNNNN(N)[-EXT]``). Spaces and dashes are ignored; anything
    else (a letter, a dot, a missing digit) makes it no phone number."""
    t = text.strip()
    if landline:
        head, sep, ext = t.rpartition("-")
        if LANDLINE.fullmatch(_digits(t)) or (sep and ext.isdigit() and len(ext) <= 6
                                               and LANDLINE.fullmatch(_digits(head))):
            return True
    d = _digits(t)
    return bool(MOBILE.fullmatch(d) or E164.fullmatch(d))


def is_email(text: str) -> bool:
    """Whether ``text`` is a syntactically valid e-mail address (``email-validator``, no DNS)."""
    from email_validator import EmailNotValidError, validate_email

    try:
        validate_email(text, check_deliverability=False)
    except EmailNotValidError:
        return False
    return True
