"""The language of the text administrators read on the command line, in ``check-config`` and in
the spool's ``failed/*.error.json`` reasons: Simplified Chinese by default, English on request.

Messages are written in English in the code, marked with :func:`_` (extracted by Babel with
``babel.cfg``) and translated through the gettext catalog
``escalator/locale/<lang>/LC_MESSAGES/escalator.mo`` (compiled from the ``.po`` beside it; both
committed, so ``pip install .`` needs no build step). ``docs/i18n.md`` shows how to update them.

Which language (:func:`language`): the one set by :func:`set_language` (the CLI's ``--lang``),
else the first of ``LC_ALL``, ``LC_MESSAGES``, ``LANG`` that is set (POSIX order): English when
it starts with ``en``, Chinese otherwise; Chinese when none is set. The words for codes (states,
categories, roles) are :mod:`escalator.labels`' tables, looked up with :func:`language`.
"""

from __future__ import annotations

import gettext
import os
from functools import cache
from pathlib import Path

LANGUAGES = ("zh", "en")
"""The languages escalator speaks; the first is the default."""
DOMAIN = "escalator"
LOCALE_DIR = Path(__file__).resolve().parent / "locale"

_chosen: str | None = None


def set_language(lang: str | None) -> None:
    """Use ``lang`` (``"zh"`` | ``"en"``) from now on in this process; ``None`` goes back to the
    environment. Raises ``ValueError`` for another language."""
    global _chosen
    if lang is not None and lang not in LANGUAGES:
        raise ValueError(f"language {lang!r}: expected one of {', '.join(LANGUAGES)}")
    _chosen = lang


def language() -> str:
    """``"zh"`` or ``"en"``: :func:`set_language`'s choice, else the environment (module doc)."""
    if _chosen is not None:
        return _chosen
    for var in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(var)
        if value:
            return "en" if value.lower().startswith("en") else "zh"
    return LANGUAGES[0]


@cache
def _catalog(lang: str) -> gettext.NullTranslations:
    # English is the text in the code: no catalog needed (fallback=True keeps it as written)
    return gettext.translation(DOMAIN, LOCALE_DIR, languages=[lang], fallback=True)


def _(message: str) -> str:
    """``message`` (English, as written in the code) in the current :func:`language`."""
    return _catalog(language()).gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    """The singular or plural form of a message for ``n``, in the current language."""
    return _catalog(language()).ngettext(singular, plural, n)
