"""Guardians (监护人): the relative role ``guardian`` resolved from a roster file.

The roster (config ``guardians.roster``, a CSV file, UTF-8 or GBK like the registers) maps a
pupil id — the school number, or the pseudonymous ``P-…`` id the registers plugin derives — to
the pupil's guardians and their contact methods, one row per contact method::

    学号,监护人,关系,渠道,联系方式
    S-2023-0142,王芳,母亲,sms,13900000001
    S-2023-0142,王芳,母亲,email,wangfang@example.com
    S-2023-0142,李强,父亲,sms,13900000002

Consecutive rows of one pupil with the same guardian name and relation are one guardian (its
contacts in row order: the first is used, the next on a permanent failure). English headers
(``pupil_id``, ``guardian``, ``relation``, ``channel``, ``to``) work too. A row with an empty
channel cell uses ``guardians.channel``.

``guardian`` reaches the guardians of the incident's **single subject**: every trigger event of
the incident names the same ``subject.id``. A pupil missing from the roster is reached at the
guardian phone the register gave (``subject.guardian_phone``, the 晨午检 register's 联系电话)
through ``guardians.channel``, when both exist (:func:`phone_on_record`). A class-level
incident (no subject), a cluster (several pupils) or a pupil with neither reaches nobody
(``target_unresolved``: the duty officer is told the class and how to reach its class teacher).

:class:`GuardianRule` resolves the relative role ``guardian`` for the engine (a rule,
:mod:`escalator.engine.rules`); guardians are told without an acknowledge link.

Roster contents are personal data (PIPL Arts. 28, 31): nothing here logs a name, a contact
address or a pupil id; :class:`RosterError` messages name rows and columns, never cell values.
"""

from __future__ import annotations

import csv
import io
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from escalator.config.models import Config, ContactMethod
from escalator.engine.rules import EngineOps, Rule
from escalator.engine.targets import Recipient
from escalator.intake.textfiles import UndecodableText, decode_text
from escalator.store.base import Incident, Tx

log = structlog.get_logger("escalator.school.guardians")

COLUMNS: dict[str, tuple[str, ...]] = {
    "pupil": ("学号", "学生编号", "学籍号", "学生id", "pupil_id", "pupil", "subject"),
    "name": ("监护人", "监护人姓名", "家长姓名", "家长", "guardian", "name"),
    "relation": ("关系", "与学生关系", "relation"),
    "channel": ("渠道", "通知渠道", "channel"),
    "to": ("联系方式", "联系电话", "电话", "手机", "手机号", "to", "phone", "contact"),
}
"""Header names accepted per column (compared NFKC-normalised, case-insensitive, no spaces)."""
REQUIRED = ("pupil", "name", "to")
GROUP_CHANNEL_TYPES = {"dingtalk", "wecom", "feishu"}
"""Chat-group robots: a guardian's message must never go to a group."""


@dataclass(frozen=True)
class Guardian:
    """One guardian of a pupil: display ``name``, ``relation`` (母亲, 父亲, …), ``contacts``."""

    name: str
    relation: str | None
    contacts: tuple[ContactMethod, ...]

    @property
    def label(self) -> str:
        return f"{self.name}（{self.relation}）" if self.relation else self.name


Roster = dict[str, tuple[Guardian, ...]]
"""Pupil id → that pupil's guardians, in file order."""


class RosterError(ValueError):
    """A roster that cannot be used. ``reason``: one line; ``errors``: ``{"row", "line",
    "column", "message"}`` dicts, one per bad row. Never holds a cell's value."""

    def __init__(self, reason: str, errors: list[dict[str, Any]] | None = None) -> None:
        self.reason = reason
        self.errors = errors or []
        detail = "; ".join(f"row {e['row']} (line {e['line']}), {e['column']}: {e['message']}"
                           for e in self.errors[:10])
        more = f" (and {len(self.errors) - 10} more)" if len(self.errors) > 10 else ""
        super().__init__(f"{reason}: {detail}{more}" if detail else reason)


def _decode(data: bytes, encoding: str | None) -> str:
    try:
        return decode_text(data, encoding, hint="a roster that is not UTF-8 or GBK text cannot "
                           "be read: save it as UTF-8 or GBK, or set guardians.encoding")[0]
    except UndecodableText as e:
        raise RosterError(str(e)) from None


def _key(cell: str) -> str:
    return "".join(unicodedata.normalize("NFKC", cell).split()).lower()


def parse_roster(data: bytes, config: Config | None = None, *, encoding: str | None = None,
                 default_channel: str | None = None) -> Roster:
    """Parse roster bytes. With ``config``, every channel must be a configured one and none a
    chat-group robot. Raises :class:`RosterError` listing every bad row."""
    text = _decode(data, encoding)
    rows = list(csv.reader(io.StringIO(text, newline="")))
    while rows and not any(c.strip() for c in rows[0]):
        rows.pop(0)
    if not rows:
        raise RosterError("the roster is empty: expected a header row "
                          "(学号,监护人,关系,渠道,联系方式)")
    header = [_key(c) for c in rows[0]]
    cols: dict[str, int] = {}
    for logical, names in COLUMNS.items():
        for i, cell in enumerate(header):
            if cell in {_key(n) for n in names}:
                cols.setdefault(logical, i)
    missing = [COLUMNS[c][0] for c in REQUIRED if c not in cols]
    if missing:
        raise RosterError(f"the header row lacks the column(s) {', '.join(missing)} "
                          "(expected 学号,监护人,关系,渠道,联系方式)")
    errors: list[dict[str, Any]] = []
    found: dict[str, list[tuple[str, str | None, list[ContactMethod]]]] = {}
    line = 1

    def cell(cells: list[str], logical: str) -> str:
        i = cols.get(logical)
        return cells[i].strip() if i is not None and i < len(cells) else ""

    for n, cells in enumerate(rows[1:], start=1):
        line += 1
        if not any(c.strip() for c in cells):
            continue

        def bad(logical: str, message: str, n: int = n, line: int = line) -> None:
            errors.append({"row": n, "line": line, "column": COLUMNS[logical][0],
                           "message": message})

        pupil, name, relation = cell(cells, "pupil"), cell(cells, "name"), cell(cells, "relation")
        channel, to = cell(cells, "channel") or default_channel, cell(cells, "to")
        for logical, value in (("pupil", pupil), ("name", name), ("to", to)):
            if not value:
                bad(logical, "empty")
        if len(pupil) > 200 or len(name) > 100 or len(to) > 500:
            bad("pupil", "a cell is too long")
        if not channel:
            bad("channel", "empty (fill it, or set guardians.channel)")
        elif config is not None:
            conf = config.channels.get(channel)
            if conf is None:
                bad("channel", f"unknown channel {channel!r}")
            elif conf.type in GROUP_CHANNEL_TYPES or conf.options.get("audience") == "group":
                bad("channel", f"channel {channel!r} posts to a group: a guardian's message "
                    "must go to the guardian alone")
        if errors and errors[-1]["row"] == n:
            continue
        assert channel is not None
        contact = ContactMethod(channel=channel, to=to)
        people = found.setdefault(pupil, [])
        if people and people[-1][0] == name and people[-1][1] == (relation or None):
            people[-1][2].append(contact)
        else:
            people.append((name, relation or None, [contact]))
    if errors:
        raise RosterError(f"{len(errors)} bad row(s)", errors)
    return {pid: tuple(Guardian(nm, rel, tuple(cs)) for nm, rel, cs in gs)
            for pid, gs in found.items()}


def roster_path(config: Config) -> Path | None:
    """The roster file (relative paths read from the config file's folder), or None."""
    if config.guardians is None:
        return None
    p = Path(config.guardians.roster)
    return p if p.is_absolute() else config.base_dir / p


_cache: dict[Path, tuple[tuple[Any, ...], Roster]] = {}


def load_roster(config: Config) -> Roster:
    """The configured roster, read again when the file changed. Raises :class:`RosterError`
    (also for a missing file); an empty roster when ``guardians`` is not configured."""
    path = roster_path(config)
    if path is None or config.guardians is None:
        return {}
    g = config.guardians
    try:
        st = path.stat()
        stamp = (st.st_mtime_ns, st.st_size, g.encoding, g.channel,
                 tuple(sorted((k, v.type) for k, v in config.channels.items())))
        if (hit := _cache.get(path)) is not None and hit[0] == stamp:
            return hit[1]
        data = path.read_bytes()
    except OSError as e:
        raise RosterError(f"cannot read the guardian roster {path}: {e.strerror or e}") from None
    roster = parse_roster(data, config, encoding=g.encoding, default_channel=g.channel)
    _cache[path] = (stamp, roster)
    return roster


def recipient_id(index: int) -> str:
    """A guardian's recipient id in notifications and the timeline: ``guardian-1``, … (the
    pupil id is not repeated there; it is in the incident's events)."""
    return f"guardian-{index + 1}"


def guardians_of(config: Config, pupil: str | None) -> list[tuple[str, Guardian]]:
    """``(recipient id, guardian)`` of ``pupil`` ([] for None, an unknown pupil, or a roster
    that cannot be read — logged ``guardian_roster_unreadable`` without its contents)."""
    if not pupil or config.guardians is None:
        return []
    try:
        roster = load_roster(config)
    except RosterError as e:
        log.error("guardian_roster_unreadable", path=str(roster_path(config)), reason=e.reason,
                  bad_rows=len(e.errors))
        return []
    return [(recipient_id(i), g) for i, g in enumerate(roster.get(pupil, ()))]


def single_subject(bodies: list[dict[str, Any]]) -> str | None:
    """The one subject id shared by every trigger event body, else None (no subject, or
    several pupils: a class-level incident or a cluster)."""
    ids = {(b.get("subject") or {}).get("id") for b in bodies
           if b.get("action", "trigger") == "trigger"}
    if len(ids) != 1:
        return None
    return ids.pop()


def _bodies(tx: Any, incident_id: int, opening: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    bodies = [e["body"] for e in tx.events_of(incident_id)]
    if opening is not None:
        bodies.append(dict(opening))
    return bodies


def incident_subject(tx: Any, incident_id: int, opening: Mapping[str, Any] | None = None
                     ) -> str | None:
    """The incident's single subject from its stored events (``opening``: the body of the
    event that is opening the incident, not stored yet)."""
    return single_subject(_bodies(tx, incident_id, opening))


def phone_on_record(config: Config, bodies: list[dict[str, Any]], pupil: str | None
                    ) -> list[tuple[str, Guardian]]:
    """The guardian phone the register gave for ``pupil`` (``subject.guardian_phone``, e.g. a
    晨午检 row's 联系电话), as one guardian reached through ``guardians.channel`` — used when
    the roster has nobody for the pupil, so that a pupil found ill at school is collected
    even when the roster only knows school numbers. [] without a phone or a channel."""
    g = config.guardians
    if pupil is None or g is None or g.channel is None:
        return []
    phones = [(b.get("subject") or {}).get("guardian_phone") for b in bodies
              if (b.get("subject") or {}).get("id") == pupil]
    phone = next((p for p in reversed(phones) if p), None)
    if phone is None:
        return []
    name = "家长" if config.school.language == "zh" else "Parent"
    return [(recipient_id(0), Guardian(name, None, (ContactMethod(channel=g.channel, to=phone),)))]


class GuardianRule(Rule):
    """The relative role ``guardian`` as a rule: the guardians of the incident's single
    subject (:func:`incident_subject`, :func:`guardians_of`), each a recipient of kind
    ``guardian`` that cannot acknowledge (told without an acknowledge link)."""

    name = "guardians"

    def recipients(self, ops: EngineOps, tx: Tx, incident: Incident, role: str,
                   opening: Mapping[str, Any] | None) -> list[Recipient] | None:
        if role != "guardian":
            return None
        bodies = _bodies(tx, incident.id, opening)
        pupil = single_subject(bodies)
        found = guardians_of(ops.config, pupil) or phone_on_record(ops.config, bodies, pupil)
        return [Recipient("guardian", rid, g.label, g.contacts, can_acknowledge=False)
                for rid, g in found]
