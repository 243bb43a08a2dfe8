"""How values and rows cross the database boundary, alike for SQLite and PostgreSQL (used only inside :mod:`escalator.store`).

Datetimes are stored as fixed-width UTC ISO-8601 text, so they sort and compare as text;
dicts as JSON text; booleans as 0/1. A row becomes one of the dataclasses of
:mod:`escalator.store.base` through :func:`row_to`.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import fields
from datetime import UTC, date, datetime
from typing import Any

from escalator.store.base import CaseFact, TimelineEntry

ROW_KEY_DIGESTED = "sha256:"
"""The prefix of a row key in its one-way form (:func:`row_key_digest`)."""


def to_db(dt: datetime | None) -> str | None:
    """Aware datetime → fixed-width UTC text (``2026-11-30T07:48:00.000000Z``)."""
    if dt is None:
        return None
    # isoformat of the UTC instant without its "+00:00" (twice as fast as strftime, which
    # glibc makes look at the time zone on every call; the same text from year 1000 on)
    return dt.astimezone(UTC).isoformat(timespec="microseconds")[:26] + "Z"


def from_db(text: str | None) -> datetime | None:
    """Stored text (:func:`to_db`) → aware UTC datetime; None stays None."""
    # (fromisoformat reads the fixed-width format exactly, ~20 times faster than strptime)
    return None if text is None else datetime.fromisoformat(text)


def row_key_digest(row_key: str) -> str:
    """The one-way form a row key takes when its pupil id is purged
    (:meth:`escalator.store.base.RetentionTx.purge_personal_data`); ``row_key_seen`` matches
    either form."""
    return ROW_KEY_DIGESTED + hashlib.sha256(row_key.encode()).hexdigest()


@functools.cache
def _columns(cls: type) -> tuple[tuple[str, str], ...]:
    """Each field of ``cls`` and how its column is read (worked out once per class: a row is
    read several times per event)."""
    return tuple((f.name, "json" if f.name in {"policy", "deadline_notify"}
                  or (f.name == "detail" and cls is TimelineEntry)
                  else "bool" if f.name in {"drill", "needs_ack"}
                  else "time" if f.name.endswith("_at") or f.name == "at" else "")
                 for f in fields(cls))


def row_to(cls: type, row: Any) -> Any:
    """A row as an instance of the dataclass ``cls`` (columns named like its fields)."""
    data = {}
    for name, kind in _columns(cls):
        v = row[name]
        if kind == "json" and v is not None:
            v = json.loads(v)
        elif kind == "bool":
            v = bool(v)
        elif kind == "time" and isinstance(v, str):
            v = from_db(v)
        data[name] = v
    return cls(**data)


_PLAIN = frozenset({str, int, float, type(None)})


def encode(value: Any) -> Any:
    """A Python value as SQLite stores it."""
    kind = type(value)
    if kind in _PLAIN:  # most values: as they are
        return value
    if kind is datetime or isinstance(value, datetime):
        return to_db(value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    if isinstance(value, list):  # deadline_notify
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return int(value)
    return value


def event_dict(row: Any) -> dict[str, Any]:
    """An ``events`` row as a dict: ``body`` parsed, ``received_at`` a datetime."""
    d = dict(row)
    d.pop("rowid", None)  # PostgreSQL's insertion-order column (SQLite's own is hidden)
    d["body"] = json.loads(d["body"])
    d["received_at"] = from_db(d["received_at"])
    return d


def case_fact(row: Any) -> CaseFact:
    """A ``case_facts`` or ``cluster_members`` row as a :class:`CaseFact`."""
    return CaseFact(row["event_id"], row["scope"], row["syndrome"], row["subject_id"],
                    date.fromisoformat(row["local_date"]), from_db(row["occurred_at"]))  # type: ignore[arg-type]
