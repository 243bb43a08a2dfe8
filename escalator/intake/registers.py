"""Registers (登记表) → events, as CSV or as an Excel workbook (.xlsx): the sickness-absence register (因病缺勤登记) and the
morning/noon-check register (晨午检登记表), as schools really export them from a spreadsheet.

Pure functions: bytes in, :class:`~escalator.engine.engine.Submission` items out, no I/O.
:func:`read_register` reads every row: the good rows' submissions, and the refused rows, each
with its row number, line, column and reason — one bad row never hides the others (the spool
puts the refused rows in ``failed/``: :mod:`escalator.intake.spool.refused`). The only
exception it raises is :class:`RegisterError` (a ``ValueError``), for the whole file: not
decodable, not a CSV, a header that fits no register (naming its unrecognised and missing
columns). :func:`parse_register` is the all-or-nothing form. Layouts of the school's own forms
come from ``registers.layouts``; classes are read by the one class rule
(:mod:`escalator.classes`). ``docs/spool.md`` is the writer-facing description of everything
here.

Encodings (:func:`decode`): a declared encoding, else a byte-order mark (UTF-8 or UTF-16), else
strict UTF-8, else strict GB18030 (a superset of GBK and GB2312, which is what a Chinese Windows
spreadsheet writes). Delimiter: comma, tab or semicolon, whichever the header line has most of.
Title rows above the header (e.g. ``示例小学晨午检登记表,,,``) are skipped: the header is the first
of the first :data:`HEADER_SEARCH_ROWS` rows that names a known register's columns.

Row numbers: ``row`` counts the records after the header (1 = the first data row, as in
``cases/README.md``); ``line`` is the line of the file where the record starts (the header's line
is the spreadsheet's header row), so ``line`` is the row number a spreadsheet program shows.
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import hmac
import io
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, tzinfo
from typing import Any

from pydantic import ValidationError

from escalator.classes import chinese_number, class_id, class_label
from escalator.config.models import Config, RegisterLayout
from escalator.engine.engine import Submission
from escalator.events import Event, Symptom
from escalator.i18n import _
from escalator.intake.textfiles import UndecodableText, decode_text

__all__ = [
    "ABSENCE", "CHENWUJIAN", "SYMPTOM_WORDS", "SYMPTOM_ZH", "RefusedRow", "Register",
    "RegisterError", "chinese_number", "class_id", "class_label", "decode", "layouts_for",
    "map_symptoms", "parse_register", "pseudonym", "read_register", "refusal_reason",
]

ABSENCE = "absence"
"""Register type of the sickness-absence register (因病缺勤登记)."""
CHENWUJIAN = "chenwujian"
"""Register type of the morning/noon-check register (晨午检登记表)."""

HEADER_SEARCH_ROWS = 5
"""How many leading records may be title rows before the header."""

# ----------------------------------------------------------------------------- symptoms

SYMPTOM_WORDS: dict[str, Symptom] = {
    # fever
    "发热": Symptom.fever, "发烧": Symptom.fever, "高热": Symptom.fever, "低热": Symptom.fever,
    "高烧": Symptom.fever, "低烧": Symptom.fever,
    # cough
    "咳嗽": Symptom.cough, "干咳": Symptom.cough, "咳痰": Symptom.cough,
    # sore throat
    "咽痛": Symptom.sore_throat, "咽喉痛": Symptom.sore_throat, "喉咙痛": Symptom.sore_throat,
    "嗓子痛": Symptom.sore_throat, "咽喉肿痛": Symptom.sore_throat,
    "咽部疼痛": Symptom.sore_throat,
    # diarrhoea, vomiting
    "腹泻": Symptom.diarrhoea, "拉肚子": Symptom.diarrhoea,
    "呕吐": Symptom.vomiting, "吐": Symptom.vomiting,
    # rash
    "皮疹": Symptom.rash, "出疹": Symptom.rash, "红疹": Symptom.rash, "疱疹": Symptom.rash,
    # parotid swelling (the check register's column is 腮腺肿大或疼痛)
    "腮腺肿大": Symptom.parotid_swelling, "腮腺肿痛": Symptom.parotid_swelling,
    "腮腺疼痛": Symptom.parotid_swelling, "腮腺肿大或疼痛": Symptom.parotid_swelling,
    # headache, abdominal pain
    "头痛": Symptom.headache, "头疼": Symptom.headache,
    "腹痛": Symptom.abdominal_pain, "肚子痛": Symptom.abdominal_pain,
    "肚子疼": Symptom.abdominal_pain,
    # fatigue, dizziness
    "乏力": Symptom.fatigue, "无力": Symptom.fatigue, "疲乏": Symptom.fatigue,
    "头晕": Symptom.dizziness, "眩晕": Symptom.dizziness,
    # conjunctival congestion
    "结膜充血": Symptom.conjunctival_congestion, "红眼": Symptom.conjunctival_congestion,
    "眼红": Symptom.conjunctival_congestion,
    # jaundice
    "黄疸": Symptom.jaundice, "皮肤发黄": Symptom.jaundice, "眼黄": Symptom.jaundice,
}
"""Register words → WS/T 772 symptom codes (the table in ``docs/spool.md``). A word is matched
whole; inside a longer phrase a word of two or more characters is found too, unless the phrase
holds a negation (不, 无, 没, 未, 否: ``无发热`` maps to nothing)."""

SYMPTOM_ZH: dict[Symptom, str] = {
    Symptom.fever: "发热", Symptom.cough: "咳嗽", Symptom.headache: "头痛",
    Symptom.sore_throat: "咽痛", Symptom.parotid_swelling: "腮腺肿大", Symptom.abdominal_pain: "腹痛",
    Symptom.diarrhoea: "腹泻", Symptom.vomiting: "呕吐", Symptom.rash: "皮疹",
    Symptom.dizziness: "头晕", Symptom.fatigue: "乏力", Symptom.conjunctival_congestion: "结膜充血",
    Symptom.jaundice: "黄疸",
}
"""The Chinese word used for each code in summaries."""

FEVER_FROM = 37.3
"""A temperature at or above this (°C) counts as fever even without a tick (晨检 practice)."""

_NEGATION = set("不无没未否")
_SEPARATORS = re.compile(r"[;；,，、/|\s]+|(?:伴有|伴|及|和|并)")
_SUBSTRING_WORDS = sorted((w for w in SYMPTOM_WORDS if len(w) >= 2), key=len, reverse=True)

PERSONAL_LEAVE_WORDS = ("事假", "私事", "家中有事", "家里有事", "探亲")
SICK_LEAVE_WORDS = ("病假", "因病")
UNKNOWN_REASON_WORDS = ("旷课", "未请假", "不明", "不详", "待查", "未知")


def map_symptoms(text: str) -> tuple[list[Symptom], list[str]]:
    """Map free text (``发热;咳嗽``, ``咽痛``, ``发热伴咳嗽``) to WS/T 772 codes.

    Returns ``(codes, other)``: the codes in first-seen order without repeats, and the pieces of
    text that are not exactly a known word (kept so nothing the writer said is lost).
    """
    codes: list[Symptom] = []
    other: list[str] = []
    for piece in _SEPARATORS.split(_norm(text)):
        if not piece or piece in {"/", "-", "无"}:
            continue
        if piece in SYMPTOM_WORDS:
            if SYMPTOM_WORDS[piece] not in codes:
                codes.append(SYMPTOM_WORDS[piece])
            continue
        other.append(piece)
        if _NEGATION & set(piece):
            continue
        rest = piece
        for word in _SUBSTRING_WORDS:
            if word in rest:
                rest = rest.replace(word, "\x00")
                if SYMPTOM_WORDS[word] not in codes:
                    codes.append(SYMPTOM_WORDS[word])
    return codes, other


# ----------------------------------------------------------------------------- pseudonyms


def pseudonym(key: bytes, school: str, cid: str, name: str) -> str:
    """A stable pseudonymous pupil id: ``P-`` + the first 16 hex digits of
    HMAC-SHA256(``key``, school name ␟ class id ␟ name), the name NFKC-normalised without
    spaces. The same pupil in the same class gets the same id on every register; without the
    key (``<state_dir>/pseudonym.key``) the id cannot be linked back to the name."""
    msg = "\x1f".join((_norm(school), cid, re.sub(r"\s+", "", _norm(name))))
    return "P-" + hmac.new(key, msg.encode("utf-8"), hashlib.sha256).hexdigest()[:16]


# ----------------------------------------------------------------------------- errors


class RegisterError(ValueError):
    """A register rejected as a whole. ``reason``: one line; ``errors``: a list of
    ``{"field", "message"}`` dicts, for row errors also ``row`` (1 = first data row), ``line``
    (line in the file) and ``column`` (the header text)."""

    def __init__(self, reason: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.errors = errors or []


class _KeyFailure(Exception):
    def __init__(self, original: Exception) -> None:
        self.original = original


@dataclass
class _CellError(Exception):
    column: str
    message: str


# ----------------------------------------------------------------------------- decoding


def decode(data: bytes, encoding: str | None = None) -> tuple[str, str]:
    """Decode a register's bytes (:func:`escalator.intake.textfiles.decode_text`). Returns ``(text,
    encoding used)``; raises :class:`RegisterError` naming the byte offset."""
    try:
        return decode_text(data, encoding,
                           hint="save the register as UTF-8 or GBK, or declare the encoding")
    except UndecodableText as e:
        raise RegisterError(str(e)) from None


# ----------------------------------------------------------------------------- columns

_ABSENCE_COLUMNS: dict[str, tuple[str, ...]] = {
    "date": ("日期", "缺勤日期", "登记日期"),
    "class": ("班级",),
    "grade": ("年级",),
    "pupil": ("学号", "学生编号", "学籍号"),
    "reason": ("缺勤原因", "原因", "请假类型", "请假原因"),
    "symptoms": ("症状", "主要症状"),
    "onset": ("发病时间", "发病日期"),
    "reporter": ("报告人", "登记人", "填报人"),
    "enrolled": ("应到人数", "应到", "班级人数"),
    "missed": ("缺课", "缺课天数", "缺勤天数", "缺课节数", "缺课时间", "缺课时长"),
    "name": ("姓名", "学生姓名"),
    "sex": ("性别",),
    "age": ("年龄",),
    "phone": ("家长电话", "联系电话", "家长联系电话", "监护人电话", "电话"),
    "no": ("序号", "编号"),
}
_ABSENCE_REQUIRED = ("date", "class", "pupil", "reason")
"""``pupil`` may be replaced by ``name`` (the pseudonymous id is derived from it)."""

_CHECK_COLUMNS: dict[str, tuple[str, ...]] = {
    "no": ("编号", "序号"),
    "grade": ("年级",),
    "class": ("班级",),
    "name": ("姓名", "学生姓名"),
    "sex": ("性别",),
    "age": ("年龄",),
    "phone": ("联系电话", "家长电话", "家长联系电话", "监护人电话", "电话"),
    "present": ("是否出勤", "出勤", "出勤情况"),
    "other": ("其他", "其它", "其他症状"),
    "temperature": ("体温",),
    "seen_doctor": ("是否就诊", "就诊", "就诊情况"),
    "diagnosis": ("初步诊断", "诊断"),
    "date": ("晨检日期", "午检日期", "晨午检日期", "检查日期", "日期"),
    "enrolled": ("应到人数", "应到", "班级人数"),
}
_CHECK_REQUIRED = ("class", "name", "present", "date")

# the fields a layout (registers.layouts) may map a heading to are these tables' keys:
# escalator.config.models.REGISTER_FIELDS (checked by tests/test_register_rows.py); for the
# check register also symptom:<code> (a tick column of a WS/T 772 code, e.g. symptom:fever)


def _header_key(cell: str) -> str:
    """A header cell as matched: NFKC, no spaces, a trailing ``(…)`` note dropped
    (``其他(请注明)`` → ``其他``, ``体温(℃)`` → ``体温``)."""
    text = re.sub(r"\s+", "", _norm(cell))
    return re.sub(r"\([^()]*\)$", "", text) or text


@dataclass
class _Header:
    kind: str
    columns: dict[str, int]          # logical name → index
    titles: list[str]                 # header text per index
    ticks: list[tuple[int, Symptom]]  # tick columns of the check register
    date_title: str = ""

    @property
    def unrecognised(self) -> list[str]:
        """Header cells no field reads (shown in a refusal; their cells are ignored)."""
        used = set(self.columns.values()) | {i for i, _ in self.ticks}
        return [t for i, t in enumerate(self.titles) if t and i not in used]

    def missing(self) -> list[str]:
        """The required fields (as their first heading) the header lacks."""
        if self.kind == ABSENCE:
            need = [r for r in _ABSENCE_REQUIRED if r != "pupil"]
            out = [_ABSENCE_COLUMNS[r][0] for r in need if r not in self.columns]
            if "pupil" not in self.columns and "name" not in self.columns:
                out.insert(2, "学号 or 姓名")
            return out
        return [_CHECK_COLUMNS[r][0] for r in _CHECK_REQUIRED if r not in self.columns]


def _find(keys: list[str], table: dict[str, tuple[str, ...]],
          own: dict[str, str] | None = None) -> dict[str, int]:
    """Field → column index: a layout's own headings (``own``: heading key → field) first,
    then the built-in names of ``table``."""
    found: dict[str, int] = {}
    for i, k in enumerate(keys):
        if own and k in own and own[k] not in found:
            found[own[k]] = i
    taken = set(found.values())
    for logical, names in table.items():
        if logical in found:
            continue
        for name in names:
            if name in keys and keys.index(name) not in taken:
                found[logical] = keys.index(name)
                break
    return found


def _match_header(cells: list[str], layouts: Sequence[RegisterLayout] = ()) -> _Header | None:
    keys = [_header_key(c) for c in cells]
    titles = [c.strip() for c in cells]
    for layout in layouts:  # a school's own form first: it fits when most headings are there
        own = {_header_key(h): f for h, f in layout.columns.items()}
        hits = sum(1 for k in own if k in keys)
        if hits == 0 or hits * 2 < len(own):
            continue
        table = _ABSENCE_COLUMNS if layout.kind == ABSENCE else _CHECK_COLUMNS
        plain = {k: f for k, f in own.items() if not f.startswith("symptom:")}
        columns = _find(keys, table, plain)
        ticks = [(keys.index(k), Symptom(f.split(":", 1)[1])) for k, f in own.items()
                 if f.startswith("symptom:") and k in keys]
        if layout.kind == CHENWUJIAN:
            ticks += [(i, SYMPTOM_WORDS[k]) for i, k in enumerate(keys) if k in SYMPTOM_WORDS
                      and i not in columns.values() and i not in {j for j, _ in ticks}]
        date_title = keys[columns["date"]] if "date" in columns else ""
        return _Header(layout.kind, columns, titles, ticks, date_title)
    check = _find(keys, _CHECK_COLUMNS)
    ticks = [(i, SYMPTOM_WORDS[k]) for i, k in enumerate(keys)
             if k in SYMPTOM_WORDS and i not in check.values()]
    # recognised by a pupil column and at least three known columns in all; the required
    # ones are checked afterwards, so a header missing one is told which
    if "name" in check and ("present" in check or ticks) and len(check) + len(ticks) >= 3:
        return _Header(CHENWUJIAN, check, titles, ticks,
                       keys[check["date"]] if "date" in check else "")
    absence = _find(keys, _ABSENCE_COLUMNS)
    if ("pupil" in absence or ("name" in absence and "reason" in absence)) and len(absence) >= 3:
        return _Header(ABSENCE, absence, titles, [])
    return None


def layouts_for(config: Config, name: str | None, source: str | None) -> list[RegisterLayout]:
    """The layouts of ``registers.layouts`` that apply to file ``name`` from source ``source``:
    those naming the file (glob) or the source first, then those naming neither."""
    named, general = [], []
    for layout in config.registers.layouts:
        if not layout.files and not layout.sources:
            general.append(layout)
        elif ((name is not None and any(fnmatch.fnmatch(name, p) for p in layout.files))
              or (source is not None and source in layout.sources)):
            named.append(layout)
    return named + general


# ----------------------------------------------------------------------------- cell readers

_EMPTY = {"", "/", "-", "—", "--", "无", "N/A", "n/a", "NA"}
_TICK_YES = {"√", "✓", "✔", "☑", "✅", "是", "有", "y", "Y", "yes", "YES", "Yes", "1"}
_TICK_NO = _EMPTY | {"否", "0", "×", "x", "X", "✗", "✘", "n", "N", "no", "NO", "No"}
_PRESENT = {"是", "出勤", "在校", "到", "y", "Y", "yes", "√", "1"}
_ABSENT = {"否", "缺勤", "未到", "未出勤", "n", "N", "no", "×", "0"}
_DATE = re.compile(r"^(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?$")
_DATETIME = re.compile(r"^(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?"
                       r"(?:\s*[T\s]\s*|\s*)(\d{1,2})\s*[:时]\s*(\d{1,2})\s*分?"
                       r"(?:\s*:\s*(\d{1,2})(?:\.\d+)?)?$")
_PHONE = re.compile(r"^\+?[0-9]{5,20}$")
YEARS = (2000, 2099)
"""Register dates and times must fall in these years (a typo like 0226 is a row error)."""


def _norm(text: str) -> str:
    return unicodedata.normalize("NFKC", text).strip()


def _date(text: str, column: str) -> date:
    t = _norm(text)
    m = _DATE.match(t)
    if not m:
        if not t:
            raise _CellError(column, _("required: the date"))
        raise _CellError(column, _("not a date: {text} (write e.g. 2026-11-30 or 2026年11月30日)")
                         .format(text=repr(text)))
    try:
        day = date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        raise _CellError(column, _("no such date: {text}").format(text=repr(text))) from None
    if not YEARS[0] <= day.year <= YEARS[1]:
        raise _CellError(column, _("date {text} is outside the years {first}–{last}").format(
            text=repr(text), first=YEARS[0], last=YEARS[1]))
    return day


def _datetime(text: str, column: str, tz: tzinfo) -> datetime:
    """A register time; without a zone it is school-local (``tz``)."""
    t = _norm(text)
    m = _DATETIME.match(t)
    try:
        if m:
            y, mo, d, h, mi, s = (int(g) if g else 0 for g in m.groups())
            parsed = datetime(y, mo, d, h, mi, s, tzinfo=tz)
        else:
            parsed = datetime.fromisoformat(t)
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=tz)
        if not YEARS[0] <= parsed.year <= YEARS[1]:
            raise ValueError("year out of range")
        parsed.astimezone(tz)  # an offset that cannot be shown in the school's zone fails here
        return parsed
    except (ValueError, OverflowError):
        raise _CellError(column, _("not a time: {text} (write e.g. 2026-11-30 06:30)").format(
            text=repr(text))) from None


def _temperature(text: str, column: str) -> float | None:
    t = _norm(text)
    if t in _EMPTY:
        return None
    t = re.sub(r"\s*(℃|°C|°c|°|度|C|c)$", "", t)
    try:
        value = float(t)
    except ValueError:
        raise _CellError(column, _("not a temperature: {text} (write e.g. 37.8, or / when "
                                   "not taken)").format(text=repr(text))) from None
    if not 34.0 <= value <= 43.0:
        raise _CellError(column, _("temperature {text} is outside 34–43 ℃").format(text=repr(text)))
    return value


# ----------------------------------------------------------------------------- parsing


@dataclass
class RefusedRow:
    """A row that could not be read: ``row`` (1 = first data row), ``line`` (of the file),
    ``cells`` as written, ``errors`` (``{"field", "row", "line", "column", "message"}``)."""

    row: int
    line: int
    cells: list[str]
    errors: list[dict[str, Any]]


@dataclass
class Register:
    """One register as read (:func:`read_register`): its ``kind``, the ``submissions`` of its
    good rows, the ``refused`` rows, the ``header`` cells as written and the header's
    ``unrecognised`` cells (ignored)."""

    kind: str
    submissions: list[Submission]
    refused: list[RefusedRow]
    header: list[str]
    unrecognised: list[str]
    rows: int = 0
    """Rows read, good and refused (blank rows not counted)."""


def read_register(data: bytes, config: Config, *, key: bytes | Callable[[], bytes],
                  encoding: str | None = None, name: str | None = None,
                  source: str | None = None) -> Register:
    """Read one register (CSV text, or an Excel workbook: :func:`is_xlsx`): the submissions of its good rows and its refused rows, each with
    its reasons — one bad row never hides the others (docs/spool.md "Bad rows").

    ``config``: the school (name, timezone, classes; people, to map a reporter's name to their
    id; ``registers.layouts``). ``key``: the pseudonym key (bytes, or a function returning
    them, called only when a pupil without a school number needs an id — see
    :func:`pseudonym`). ``encoding``: declared encoding, or None to detect (:func:`decode`).
    An .xlsx workbook is read from its register sheet (:func:`_xlsx_records`); its row
    numbers are the sheet's. ``name`` / ``source``: the file's name and source id, to pick the layouts that apply
    (:func:`layouts_for`).

    The register type is recognised by its header: a layout of ``registers.layouts`` that fits,
    else the built-in headings (:data:`ABSENCE`, :data:`CHENWUJIAN`). Every submission carries
    a ``row_key`` (``register type/date/pupil id``), so re-dropping a re-exported or corrected
    register adds only its new rows. Rows of healthy pupils who are present give nothing.
    Raises :class:`RegisterError` for what concerns the whole file (undecodable bytes, not a
    CSV, no known header, missing columns: naming the header's unrecognised and missing
    columns); an exception raised by a ``key`` function is raised unchanged (it is not the
    register's fault).
    """
    layouts = layouts_for(config, name, source)
    records = (_xlsx_records(data, layouts) if is_xlsx(data)
               else _records(decode(data, encoding)[0]))
    if not any(any(c.strip() for c in cells) for _, cells in records):
        raise RegisterError(_("empty register: no header and no rows"))
    header: _Header | None = None
    start = 0
    for i, (_line, cells) in enumerate(records[:HEADER_SEARCH_ROWS]):
        header = _match_header(cells, layouts)
        if header is not None:
            start = i + 1
            break
    if header is None:
        seen = max((cells for _, cells in records[:HEADER_SEARCH_ROWS]),
                   key=lambda cs: sum(1 for c in cs if c.strip()))
        raise _not_a_register(seen)
    missing = header.missing()
    if missing:
        unknown = header.unrecognised
        raise RegisterError(
            _("{kind} register: required column(s) missing: {missing}").format(
                kind=header.kind, missing=", ".join(missing))
            + (_("; unrecognised column(s): {columns}").format(columns=", ".join(unknown))
               if unknown else "")
            + _(" (map them in registers.layouts, docs/spool.md)"),
            [{"field": "(header)", "column": m, "message": "required column missing"}
             for m in missing]
            + [{"field": "(header)", "column": u, "message": "unrecognised column"}
               for u in unknown])
    try:
        return _parse_rows(config, header, key, records[start:])
    except _KeyFailure as e:
        raise e.original from None


def _not_a_register(cells: list[str]) -> RegisterError:
    """The refusal of a file whose header fits no register: the header's unrecognised
    columns and, for the register it comes closest to, the missing ones."""
    keys = [_header_key(c) for c in cells]
    best = max((_Header(ABSENCE, _find(keys, _ABSENCE_COLUMNS), [c.strip() for c in cells], []),
                _Header(CHENWUJIAN, _find(keys, _CHECK_COLUMNS), [c.strip() for c in cells],
                        [(i, SYMPTOM_WORDS[k]) for i, k in enumerate(keys) if k in SYMPTOM_WORDS])),
               key=lambda h: len(h.columns) + len(h.ticks))
    known = {i for i in best.columns.values()} | {i for i, _ in best.ticks}
    unknown = [c.strip() for i, c in enumerate(cells) if c.strip() and i not in known]
    missing = best.missing()
    kind = (_("absence register (因病缺勤登记)") if best.kind == ABSENCE
            else _("morning-check register (晨午检登记表)"))
    return RegisterError(
        _("not a known register: unrecognised column(s): {columns}; closest is the {kind}, "
          "which needs {missing} too. A form of the school's own can be described in "
          "registers.layouts (heading → field, docs/spool.md)").format(
              columns=", ".join(unknown) or _("(none)"), kind=kind, missing=", ".join(missing)),
        [{"field": "(header)", "column": u, "message": "unrecognised column"} for u in unknown]
        + [{"field": "(header)", "column": m, "message": "required column missing"}
           for m in missing])


def parse_register(data: bytes, config: Config, *, key: bytes | Callable[[], bytes],
                   encoding: str | None = None, name: str | None = None) -> list[Submission]:
    """:func:`read_register` for a caller that takes a register whole or not at all (the
    early-warning backtest): the submissions, or :class:`RegisterError` listing every bad row
    with its row number, column and reason."""
    reg = read_register(data, config, key=key, encoding=encoding, name=name)
    if reg.refused:
        raise RegisterError(refusal_reason(reg), [e for r in reg.refused for e in r.errors])
    return reg.submissions


def refusal_reason(reg: Register) -> str:
    """One line: how many rows of ``reg`` were refused, and which."""
    bad = [r.row for r in reg.refused]
    return (_("{kind} register: {count} bad row(s): ").format(kind=reg.kind, count=len(bad))
            + ", ".join(str(r) for r in bad[:20]) + (", …" if len(bad) > 20 else ""))


def _parse_rows(config: Config, header: _Header, key: bytes | Callable[[], bytes],
                records: list[tuple[int, list[str]]]) -> Register:
    reader = _Rows(config, header, key)
    out: list[Submission] = []
    refused: list[RefusedRow] = []
    read = 0
    for row, (line, cells) in enumerate(records, start=1):
        if not any(c.strip() for c in cells):
            continue
        read += 1
        problems: list[_CellError] = []
        got: list[Submission] = []
        if len(cells) > len(header.titles) and any(c.strip() for c in cells[len(header.titles):]):
            problems.append(_CellError(
                "(row)", _("{cells} cells but the header has {columns} columns "
                           "(an unquoted comma in a cell?)").format(cells=len(cells),
                                                                     columns=len(header.titles))))
        else:
            try:
                got = reader.row(row, cells, problems)
            except (ValueError, OverflowError, ArithmeticError) as e:  # never escape as-is
                problems.append(_CellError("(row)", _("cannot read the row: {error}").format(error=e)))
        if problems:
            refused.append(RefusedRow(row, line, list(cells), [
                {"field": f"row {row} (line {line}), {p.column}", "row": row, "line": line,
                 "column": p.column, "message": p.message} for p in problems]))
        else:
            out.extend(got)
    return Register(header.kind, out, refused, header.titles, header.unrecognised, read)


XLSX_MAGIC = b"PK\x03\x04"
"""An .xlsx workbook is a zip archive: its first bytes."""
XLSX_MAX_UNPACKED = 64 * 1024 * 1024
"""Bytes a workbook may unpack to (its parts' sizes, as its zip directory gives them): a
register of tens of thousands of rows is a few MB; more is refused before anything is read
(a zip bomb in the spool stops there)."""


def is_xlsx(data: bytes) -> bool:
    """Whether ``data`` is an Excel workbook (.xlsx, a zip archive) rather than CSV text."""
    return data[:4] == XLSX_MAGIC


def _xlsx_cell(value: Any) -> str:
    """A cell's value as the text a CSV export would hold: a date ``2026-11-30``, a date and
    time ``2026-11-30 07:48``, a whole number without ``.0`` (a phone number, a count), other
    numbers as written (``38.6``, ``0.5``)."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        if value.time() == time(0, 0):
            return value.date().isoformat()
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, time):
        return value.strftime("%H:%M")
    if isinstance(value, bool):
        return "是" if value else "否"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _xlsx_records(data: bytes, layouts: Sequence[RegisterLayout] = ()
                  ) -> list[tuple[int, list[str]]]:
    """The rows of an Excel workbook's register sheet as ``(row number, cells)``: the first
    sheet with a register's header in its first :data:`HEADER_SEARCH_ROWS` rows, else the first
    sheet. Formulas count by the value Excel saved with them. Raises :class:`RegisterError`
    for a file that is not a readable workbook."""
    import zipfile

    from openpyxl import load_workbook

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            unpacked = sum(i.file_size for i in z.infolist())
        if unpacked <= XLSX_MAX_UNPACKED:
            book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as e:
        raise RegisterError(_("not a readable Excel workbook (.xlsx): {error}").format(
            error=e)) from None
    if unpacked > XLSX_MAX_UNPACKED:
        raise RegisterError(_("Excel workbook too large: {size} MB unpacked (at most {limit} MB); "
                              "save the register sheet alone").format(
            size=unpacked // 2**20, limit=XLSX_MAX_UNPACKED // 2**20))
    try:
        sheets = []
        for sheet in book.worksheets:
            rows = [(n, [_xlsx_cell(v) for v in row])
                    for n, row in enumerate(sheet.iter_rows(values_only=True), start=1)]
            width = max((i + 1 for _, cells in rows for i, c in enumerate(cells) if c), default=0)
            sheets.append([(n, cells[:width]) for n, cells in rows])
    finally:
        book.close()
    for rows in sheets:
        if any(_match_header(cells, layouts) for _, cells in rows[:HEADER_SEARCH_ROWS]):
            return rows
    return sheets[0] if sheets else []


def _records(text: str) -> list[tuple[int, list[str]]]:
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    delimiter = max((",", "\t", ";"), key=first.count) if first else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    out: list[tuple[int, list[str]]] = []
    line = 1
    try:
        for cells in reader:
            out.append((line, cells))
            line = reader.line_num + 1
    except csv.Error as e:
        raise RegisterError(_("not a valid CSV file: {error} (line {line})").format(
            error=e, line=reader.line_num)) from None
    return out


class _Rows:
    """Turns one register's rows into submissions (state: the lazily loaded key)."""

    def __init__(self, config: Config, header: _Header, key: bytes | Callable[[], bytes]) -> None:
        self.config = config
        self.school = config.school
        self.tz = config.school.tz
        self.h = header
        self._key = key
        check = "午检" if "午检" in header.date_title and "晨" not in header.date_title else (
            "晨检" if "晨检" in header.date_title and "午" not in header.date_title else "晨午检")
        self.check = check

    def key(self) -> bytes:
        if callable(self._key):
            try:
                self._key = self._key()
            except Exception as e:  # not a row's fault: raised unchanged by parse_register
                raise _KeyFailure(e) from e
        return self._key

    def get(self, cells: list[str], logical: str) -> str:
        i = self.h.columns.get(logical)
        return cells[i].strip() if i is not None and i < len(cells) else ""

    def title(self, logical: str) -> str:
        i = self.h.columns.get(logical)
        return self.h.titles[i] if i is not None else logical

    def row(self, row: int, cells: list[str], problems: list[_CellError]) -> list[Submission]:
        if self.h.kind == ABSENCE:
            return self._absence(row, cells, problems)
        return self._check(row, cells, problems)

    def _cell(self, problems: list[_CellError], fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except _CellError as e:
            problems.append(e)
            return None

    def _class(self, cells: list[str]) -> str:
        grade = self.get(cells, "grade") if "grade" in self.h.columns else None
        try:
            return class_id(grade, self.get(cells, "class"), self.school.classes)
        except ValueError as e:
            raise _CellError(self.title("class"), str(e)) from None

    def _enrolled(self, cells: list[str], problems: list[_CellError]) -> str | None:
        """The optional 应到人数 cell (pupils in the class, 1–500) as text, or None."""
        text = _norm(self.get(cells, "enrolled"))
        if not text or text in _EMPTY:
            return None
        text = re.sub(r"\s*人$", "", text)
        if text.isascii() and text.isdigit() and 0 < int(text) <= 500:
            return str(int(text))
        problems.append(_CellError(self.title("enrolled"),
                                   _("not a number of pupils: {text}").format(text=repr(text))))
        return None

    def _reporter(self, name: str) -> str | None:
        name = name.strip()
        if not name or name in _EMPTY:
            return None
        ids = [p.id for p in self.config.people if p.name == name]
        return ids[0] if len(ids) == 1 else name[:200]

    def _event(self, data: dict[str, Any], problems: list[_CellError]) -> Event | None:
        try:
            return Event.model_validate(data)
        except ValidationError as e:
            for err in e.errors():
                loc = ".".join(str(p) for p in err["loc"]) or "(event)"
                problems.append(_CellError("(row)", f"{loc}: {err['msg']}"))
            return None

    def _personal(self, cells: list[str], problems: list[_CellError]) -> dict[str, Any]:
        """The optional 性别 / 年龄 / 家长电话 cells as subject fields (personal data: a bad
        phone is reported without echoing it)."""
        out: dict[str, Any] = {}
        sex_text = _norm(self.get(cells, "sex"))
        sex = {"男": "男", "男生": "男", "m": "男", "male": "男",
               "女": "女", "女生": "女", "f": "女", "female": "女"}.get(sex_text.lower())
        if sex is None and sex_text not in _EMPTY:
            problems.append(_CellError(self.title("sex"),
                                       _("not 男/女: {text}").format(text=repr(sex_text))))
        elif sex:
            out["sex"] = sex
        age_text = re.sub(r"\s*(岁|周岁)$", "", _norm(self.get(cells, "age")))
        if age_text not in _EMPTY:
            if age_text.isascii() and age_text.isdigit() and int(age_text) <= 150:
                out["age"] = int(age_text)
            else:
                problems.append(_CellError(self.title("age"), _("not an age in years")))
        phone = re.sub(r"[\s\-()]", "", _norm(self.get(cells, "phone")))
        if phone not in _EMPTY:
            if _PHONE.match(phone):
                out["guardian_phone"] = phone
            else:
                problems.append(_CellError(self.title("phone"), _("not a phone number (5–20 digits)")))
        return out

    def _missed(self, cells: list[str], problems: list[_CellError]) -> tuple[str, str] | None:
        """The optional 缺课 cell as ``(number, unit)``, the number kept as written (``0.5``,
        ``4``) and the unit ``days`` or ``lessons`` (a ``节`` in the cell or its heading);
        ``半天``/``上午``/``下午`` → 0.5 days, ``全天`` → 1 day; None when empty."""
        text = _norm(self.get(cells, "missed"))
        if text in _EMPTY:
            return None
        words = {"半天": "0.5", "上午": "0.5", "下午": "0.5", "全天": "1", "一天": "1"}
        if text in words:
            return words[text], "days"
        lessons = "节" in text or "课时" in text or (
            "节" in self.title("missed") and not re.search(r"(天|日)$", text))
        number = re.sub(r"\s*(天|日|节|课时|节课)$", "", text)
        try:
            value = float(number)
        except ValueError:
            value = -1.0
        if not 0 <= value <= 366 or value != value:
            problems.append(_CellError(self.title("missed"),
                                       _("not a number of days or lessons: {text} (write "
                                         "e.g. 0.5, 1 or 半天)").format(text=repr(text))))
            return None
        return f"{value:g}", "lessons" if lessons else "days"

    # --- 因病缺勤登记 -----------------------------------------------------------------------

    def _absence(self, row: int, cells: list[str], problems: list[_CellError]) -> list[Submission]:
        day = self._cell(problems, lambda: _date(self.get(cells, "date"), self.title("date")))
        cid = self._cell(problems, lambda: self._class(cells))
        pupil = _norm(self.get(cells, "pupil"))
        name = re.sub(r"\s+", "", _norm(self.get(cells, "name")))
        if "pupil" not in self.h.columns:  # a form with names only: the pseudonymous id
            if not name:
                problems.append(_CellError(self.title("name"), _("required: the pupil's name")))
            elif len(name) > 50:
                problems.append(_CellError(self.title("name"), _("too long: at most 50 characters")))
        elif not pupil:
            problems.append(_CellError(self.title("pupil"), _("required: the pupil's number")))
        elif len(pupil) > 64 or re.search(r"\s", pupil):
            problems.append(_CellError(self.title("pupil"),
                                       _("not a pupil number (at most 64 characters, no "
                                         "spaces)")))
        reason_text = _norm(self.get(cells, "reason"))
        personal = any(w in reason_text for w in PERSONAL_LEAVE_WORDS)
        sick_word = any(w in reason_text for w in SICK_LEAVE_WORDS)
        if not reason_text or reason_text in _EMPTY:
            problems.append(_CellError(self.title("reason"),
                                       _("required: 病假, 事假 or what the pupil has")))
        symptoms, other = map_symptoms(self.get(cells, "symptoms"))
        said, said_other = map_symptoms(reason_text)  # 缺勤原因 written as symptoms
        symptoms += [s for s in said if s not in symptoms]
        other += [o for o in said_other if o not in other
                  and o not in SICK_LEAVE_WORDS + PERSONAL_LEAVE_WORDS + UNKNOWN_REASON_WORDS]
        # 事假 → personal leave (the ledger only); 旷课, 不明 … → to be followed up; anything
        # else (病假, symptoms, a description of the illness) → sick
        if personal and not (sick_word or said):
            reason = "personal"
        elif any(w in reason_text for w in UNKNOWN_REASON_WORDS) and not (sick_word or said):
            reason = "unknown"
        else:
            reason = "sick"
        onset_text = self.get(cells, "onset")
        onset = None
        if onset_text and _norm(onset_text) not in _EMPTY:
            onset = self._cell(problems, lambda: _datetime(onset_text, self.title("onset"), self.tz))
        if onset is not None and day is not None and onset.astimezone(self.tz).date() > day:
            problems.append(_CellError(self.title("onset"),
                                       _("onset {text} is after the register date {day}")
                                       .format(text=repr(onset_text), day=day)))
        personal_cells = self._personal(cells, problems)
        missed = self._missed(cells, problems)
        enrolled = self._enrolled(cells, problems)
        if problems:
            return []
        assert day is not None and cid is not None
        if "pupil" not in self.h.columns:
            pupil = pseudonym(self.key(), self.school.name, cid, name)
        day_start = datetime.combine(day, time(0), self.tz)
        occurred = onset if onset is not None and onset.astimezone(self.tz).date() == day else day_start
        label = class_label(cid)
        words = "、".join(SYMPTOM_ZH[s] for s in symptoms)
        leave = {"personal": "事假", "sick": "病假", "unknown": "缺勤，原因待查"}[reason]
        details = [f"因病缺勤登记第{row}行：{leave}"]
        if symptoms:
            details.append(f"症状：{words}")
        if other:
            details.append(f"其他：{'、'.join(other)}")
        labels = {"register": ABSENCE, "row": str(row), "reason": reason}
        if enrolled:
            labels["class_size"] = enrolled  # 应到人数: early warning's denominator
        if missed is not None:
            details.append(f"缺课{missed[0]}{'节' if missed[1] == 'lessons' else '天'}")
            labels["missed"], labels["missed_unit"] = missed
        if onset is not None:
            details.append(f"发病时间：{onset.astimezone(self.tz):%Y-%m-%d %H:%M}")
            labels["onset_at"] = onset.astimezone(self.tz).isoformat()
        else:
            labels["time"] = "day"  # the register gives the day only (shown without 00:00)
        ledger_only = reason == "personal"
        summary = (f"{label} 1名学生事假缺勤" if ledger_only
                   else f"{label} 1名学生因病缺勤" + (f"：{words}" if words else "")
                   if reason == "sick" else f"{label} 1名学生缺勤，原因待查")
        subject: dict[str, Any] = {"id": pupil, **personal_cells}
        if name and "pupil" not in self.h.columns:
            subject["name"] = name
        data: dict[str, Any] = {
            "kind": "absence", "category": "infectious_disease", "summary": summary,
            "severity": "info" if ledger_only else "medium",
            "details": "；".join(details)[:4000],
            "class_id": cid, "grade": cid.split("-")[0], "subject": subject,
            "symptoms": [s.value for s in symptoms], "occurred_at": occurred,
            "source": "absence-register", "labels": labels,
        }
        if reporter := self._reporter(self.get(cells, "reporter")):
            data["reported_by"] = reporter
        event = self._event(data, problems)
        if event is None:
            return []
        return [Submission(event, row_key=f"{ABSENCE}/{day.isoformat()}/{pupil}",
                           ledger_only=ledger_only)]

    # --- 晨午检登记表 ------------------------------------------------------------------------

    def _check(self, row: int, cells: list[str], problems: list[_CellError]) -> list[Submission]:
        day = self._cell(problems, lambda: _date(self.get(cells, "date"), self.title("date")))
        cid = self._cell(problems, lambda: self._class(cells))
        name = re.sub(r"\s+", "", _norm(self.get(cells, "name")))
        if not name:
            problems.append(_CellError(self.title("name"),
                                       _("required: the pupil's name (their pseudonymous id "
                                         "is derived from it)")))
        elif len(name) > 50:
            problems.append(_CellError(self.title("name"), _("too long: at most 50 characters")))
        present_text = _norm(self.get(cells, "present"))
        present: bool | None = None
        if present_text in _PRESENT:
            present = True
        elif present_text in _ABSENT:
            present = False
        else:
            problems.append(_CellError(self.title("present"),
                                       _("not 是/否: {text}").format(text=repr(present_text))
                                       if present_text
                                       else _("required: 是 (present) or 否 (absent)")))
        symptoms: list[Symptom] = []
        for index, code in self.h.ticks:
            value = _norm(cells[index]) if index < len(cells) else ""
            if value in _TICK_YES:
                if code not in symptoms:
                    symptoms.append(code)
            elif value not in _TICK_NO:
                problems.append(_CellError(self.h.titles[index],
                                           _("not a tick: {text} (write √, or leave empty)")
                                           .format(text=repr(value))))
        other_text = self.get(cells, "other")
        more, other = map_symptoms(other_text)
        symptoms += [s for s in more if s not in symptoms]
        personal = any(w in other_text for w in PERSONAL_LEAVE_WORDS)
        sick_word = any(w in other_text for w in SICK_LEAVE_WORDS)
        temperature = self._cell(problems, lambda: _temperature(self.get(cells, "temperature"),
                                                                 self.title("temperature")))
        if temperature is not None and temperature >= FEVER_FROM and Symptom.fever not in symptoms:
            symptoms.insert(0, Symptom.fever)
        seen_text = _norm(self.get(cells, "seen_doctor"))
        seen: str | None = None
        if seen_text in {"是", "已就诊", "就诊", "y", "Y", "yes", "√"}:
            seen = "yes"
        elif seen_text in {"否", "未就诊", "n", "N", "no", "×"}:
            seen = "no"
        elif seen_text not in _EMPTY:
            problems.append(_CellError(self.title("seen_doctor"),
                                       _("not 是/否: {text}").format(text=repr(seen_text))))
        diagnosis = _norm(self.get(cells, "diagnosis"))
        diagnosis = None if diagnosis in _EMPTY else diagnosis
        if diagnosis and len(diagnosis) > 200:
            problems.append(_CellError(self.title("diagnosis"), _("too long: at most 200 characters")))
        personal_cells = self._personal(cells, problems)
        enrolled = self._enrolled(cells, problems)
        if problems:
            return []
        assert day is not None and cid is not None and present is not None

        label = class_label(cid)
        words = "、".join(SYMPTOM_ZH[s] for s in symptoms)
        tag = f"（{self.check}）"
        ledger_only = False
        if symptoms:
            kind = "absence" if not present else "suspected_case"
            summary = f"{label} 1名学生{'因病缺勤' if not present else '带病来校'}：{words}{tag}"
        elif present:
            return []  # a healthy pupil at school: nothing to record
        elif personal and not sick_word:
            kind, ledger_only = "absence", True
            summary = f"{label} 1名学生事假缺勤{tag}"
        elif sick_word or diagnosis:
            kind = "absence"
            summary = f"{label} 1名学生因病缺勤{tag}"
        else:
            kind = "absence"
            summary = f"{label} 1名学生缺勤，原因待查{tag}"
        details = [f"{self.check}登记表第{row}行：{'出勤' if present else '缺勤'}"]
        if symptoms:
            details.append(f"症状：{words}")
        if other:
            details.append(f"其他：{'、'.join(other)}")
        labels = {"register": CHENWUJIAN, "row": str(row), "check": self.check,
                  "attendance": "present" if present else "absent",
                  "time": "day"}  # the register gives the day only (shown without 00:00)
        if not present:  # early warning counts sick absences only (docs/early-warning.md)
            labels["reason"] = ("personal" if ledger_only else "sick"
                                if symptoms or sick_word or diagnosis else "unknown")
        if enrolled:
            labels["class_size"] = enrolled
        if temperature is not None:
            details.append(f"体温{temperature:g}℃")
            labels["temperature"] = f"{temperature:g}"
        if seen is not None:
            details.append("已就诊" if seen == "yes" else "未就诊")
            labels["seen_doctor"] = seen
        if diagnosis:
            details.append(f"初步诊断：{diagnosis}")
        pid = pseudonym(self.key(), self.school.name, cid, name)
        subject: dict[str, Any] = {"id": pid, "name": name, **personal_cells}
        data: dict[str, Any] = {
            "kind": kind, "category": "infectious_disease", "summary": summary,
            "severity": "info" if ledger_only else "medium",
            "details": "；".join(details)[:4000], "class_id": cid, "grade": cid.split("-")[0],
            "subject": subject, "symptoms": [s.value for s in symptoms],
            "occurred_at": datetime.combine(day, time(0), self.tz),
            "source": "morning-check-register", "labels": labels,
        }
        if diagnosis:
            data["diagnosis"] = diagnosis
        event = self._event(data, problems)
        if event is None:
            return []
        return [Submission(event, row_key=f"{CHENWUJIAN}/{day.isoformat()}/{pid}",
                           ledger_only=ledger_only)]
