"""The one class rule: how a class or a grade written by a person becomes the school's id.

Every input uses it — the HTTP API and spool JSON/YAML (the :class:`~escalator.events.Event`
model normalises ``class_id`` and ``grade`` with it before anything else sees them), the CSV
registers (:mod:`escalator.intake.registers`) and the PagerDuty/Alertmanager labels
(:mod:`escalator.intake.compat`, through the Event). So routing, dedup keys, the class
teacher, clusters and early warning all see ``3-2`` whichever way it was written.
``docs/classes.md`` is the writer-facing description, with examples.

The rule (:func:`class_id`):

- the text is NFKC-normalised (full-width ``３－１`` → ``3-1``, ``（２）`` → ``(2)``), spaces
  are dropped, every bracket is read as ``(``/``)`` and every dash (``－ — – ‐ −``) as ``-``;
- a number is Arabic (1–99) or Chinese (一 … 九十九);
- a grade is a number with an optional ``年级``/``年``, or a school stage: ``初一``–``初三``
  (junior middle school, grades 7–9; also ``初中一年级``) and ``高一``–``高三`` (senior
  middle school, grades 10–12; also ``高中一年级``), the numbering of 九年一贯制 schools;
- a class is a number with an optional ``班``, in brackets or not;
- one text holds both: ``3-2``, ``3.2``, ``3/2``, ``三年级二班``, ``三(2)班``, ``3年级2班``,
  ``七年级1班``, ``初一(1)班``, ``高一(1)班``.

The result is ``"<grade>-<class>"`` without leading zeros, the form ``school.classes`` uses.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from escalator.i18n import _

__all__ = ["chinese_number", "class_id", "class_label", "grade_id", "normalise_class",
           "normalise_grade"]

_CN_DIGITS = {"一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8,
              "九": 9}
_CN_TENS = re.compile(r"^([一二三四五六七八九]?)十([一二三四五六七八九]?)$")
_OPEN, _CLOSE = "([【〔〈<{「『", ")]】〕〉>}」』"
_DASHES = "‐‑‒–—―−－─"
_NUM = r"([0-9]{1,2}|[一二两三四五六七八九十]{1,3})"
_STAGE = r"(初中?|高中?)"
_GRADE = re.compile(rf"^(?:{_STAGE}{_NUM}(?:年级|年)?|{_NUM}(?:年级|年)?)$")
_CLASS_ONLY = re.compile(rf"^\(?{_NUM}\)?班?$")
_COMBINED = (
    re.compile(rf"^{_STAGE}{_NUM}(?:年级|年)?\(?{_NUM}\)?班?$"),  # 初一(1)班, 高二3班
    re.compile(rf"^{_NUM}(?:年级|年)\(?{_NUM}\)?班?$"),           # 三年级2班, 3年级(2)班
    re.compile(rf"^{_NUM}\({_NUM}\)班?$"),                        # 三(2)班
    re.compile(rf"^{_NUM}[-._/·]{_NUM}班?$"),                     # 3-2, 3.2, 3/2班
)
_PLAIN = re.compile(r"^([0-9]{1,2})-([0-9]{1,2})$")
_STAGE_OFFSET = {"初": 6, "初中": 6, "高": 9, "高中": 9}
"""初一 is grade 7 and 高一 grade 10 in the 12-grade numbering (小学 1–6, 初中 7–9, 高中 10–12)."""


def _norm(text: str) -> str:
    return unicodedata.normalize("NFKC", text).strip()


def _clean(text: str) -> str:
    """NFKC, no spaces, every bracket ``(``/``)``, every dash ``-``."""
    text = re.sub(r"\s+", "", _norm(text))
    table = str.maketrans(_OPEN + _CLOSE + _DASHES,
                          "(" * len(_OPEN) + ")" * len(_CLOSE) + "-" * len(_DASHES))
    return text.translate(table)


def chinese_number(text: str) -> int:
    """An integer 1..99 written in Arabic digits (full-width too) or Chinese numerals
    (``三`` → 3, ``十二`` → 12, ``二十一`` → 21). Raises ``ValueError`` otherwise."""
    t = _norm(text)
    value = 0
    if t.isascii() and t.isdigit():
        value = int(t)
    elif t in _CN_DIGITS:
        value = _CN_DIGITS[t]
    elif m := _CN_TENS.match(t):
        value = _CN_DIGITS.get(m.group(1), 1) * 10 + _CN_DIGITS.get(m.group(2), 0)
    if 0 < value < 100:
        return value
    raise ValueError(_("not a number: {text!r}").format(text=text))


def _staged(stage: str | None, number: str) -> int:
    n = chinese_number(number)
    if stage is None:
        return n
    if not 1 <= n <= 3:
        raise ValueError(_("no such grade: {grade} (初一–初三, 高一–高三)").format(grade=stage + number))
    return _STAGE_OFFSET[stage] + n


def grade_id(text: str) -> int | None:
    """The grade number written in ``text`` (``三年级`` → 3, ``初一`` → 7, ``高一`` → 10,
    ``（３）`` → 3), or None when it is not a grade."""
    t = _clean(text).strip("()")
    m = _GRADE.match(t)
    if not m:
        return None
    try:
        return _staged(m.group(1), m.group(2)) if m.group(2) else chinese_number(m.group(3))
    except ValueError:
        return None


def _combined(text: str) -> tuple[int, int] | None:
    for pattern in _COMBINED:
        m = pattern.match(text)
        if m:
            groups = m.groups()
            if len(groups) == 3:
                return _staged(groups[0], groups[1]), chinese_number(groups[2])
            return chinese_number(groups[0]), chinese_number(groups[1])
    return None


def class_id(grade: str | None, cls: str, classes: Sequence[str] = ()) -> str:
    """The school's class id (``"3-2"``) for a grade cell and a class cell (a register's two
    columns; ``grade`` None or empty when ``cls`` holds both).

    See the module docstring for the rule. A class cell that repeats the grade (``三年级`` +
    ``三年级2班``) is read the same; so ``三年级`` + ``2班``, ``三年级`` + ``（２）班``, ``初一`` +
    ``1班`` and ``3`` + ``2`` all give a class id. With ``classes`` (the school's configured
    ids) non-empty, the result must be one of them. Raises ``ValueError`` with a message naming
    what was read."""
    try:
        return _class_id(grade, cls, classes)
    except ValueError:
        raise
    except (ArithmeticError, LookupError) as e:  # never escape as anything but ValueError
        raise ValueError(_("not a class: {text!r} ({error})").format(text=cls, error=e)) from None


def _class_id(grade: str | None, cls: str, classes: Sequence[str]) -> str:
    g_text = _clean(grade or "")
    c_text = _clean(cls)
    if not c_text:
        raise ValueError(_("the class is empty"))
    g: int | None = None
    c: int | None = None
    if g_text:
        gn = grade_id(g_text)
        if gn is None:
            raise ValueError(_("not a grade: {text!r} (write e.g. 三年级, 初一 or 3)").format(text=grade))
        if cm := _CLASS_ONLY.match(c_text):
            g, c = gn, chinese_number(cm.group(1))
        elif (both := _combined(c_text)) and both[0] == gn:
            g, c = both
    else:
        both = _combined(c_text)
        if both:
            g, c = both
    if g is None or c is None:
        raise ValueError(_("not a class: {text!r} (write e.g. 3-2, 三年级2班, 三(2)班 or 初一(1)班)").format(
            text=cls))
    cid = f"{g}-{c}"
    if classes and cid not in classes:
        shown = ", ".join(list(classes)[:30]) + (", …" if len(classes) > 30 else "")
        got = f"{grade} {cls}" if g_text else cls
        raise ValueError(_("unknown class {text!r} (read as {cid}); the school's classes: {shown}").format(
            text=got, cid=cid, shown=shown))
    return cid


def normalise_class(text: str) -> str:
    """One text holding a class (an Event's ``class_id``: ``３－１``, ``四年级三班``,
    ``初一(1)班``) → ``"4-3"``. Unknown classes are not refused here (the engine warns about
    them). Raises ``ValueError`` naming what was read and how to write it."""
    if m := _PLAIN.match(text):  # the common case, already the school's form: no parsing
        g, c = int(m.group(1)), int(m.group(2))
        if g and c:
            return f"{g}-{c}"
    return class_id(None, text)


def normalise_grade(text: str) -> str:
    """A grade (``三年级``, ``初一``, ``３``) → ``"3"``/``"7"``. Raises ``ValueError``."""
    g = grade_id(text)
    if g is None:
        raise ValueError(_("not a grade: {text!r} (write e.g. 3, 三年级 or 初一)").format(text=text))
    return str(g)


_CN_GRADE = ["", "一年级", "二年级", "三年级", "四年级", "五年级", "六年级", "七年级", "八年级",
             "九年级", "高一", "高二", "高三"]


def class_label(cid: str) -> str:
    """``"3-2"`` → ``"三年级2班"``, ``"10-1"`` → ``"高一1班"`` (the form used in summaries)."""
    g, c = cid.split("-")
    grade = _CN_GRADE[int(g)] if 0 < int(g) < len(_CN_GRADE) else f"{g}年级"
    return f"{grade}{int(c)}班"
