"""Store operations of early warning (docs/early-warning.md, :mod:`escalator.early_warning`):
the rows its series are counted from, its signals, outbreak incidents and links to clusters.

Kept apart from :mod:`escalator.store.sqlite` so the feature can move behind a rule interface:
:data:`MIGRATION` is one entry of the store's migration list, :class:`EarlyWarningSQL` a mixin of
:class:`~escalator.store.sqlite.SQLiteTx`, and :class:`EarlyWarningTx` the interface the feature
uses (a PostgreSQL store implements the same). All dates are school-local ``date`` values, all
times aware UTC.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Protocol

MIGRATION = """
CREATE TABLE ew_cases (
    event_id TEXT NOT NULL,
    grp TEXT NOT NULL,
    local_date TEXT NOT NULL,
    class_id TEXT,
    grade TEXT,
    dormitory TEXT,
    pupil TEXT NOT NULL,
    class_size INTEGER,
    PRIMARY KEY (event_id, grp)
);
CREATE INDEX ew_cases_day ON ew_cases(grp, local_date);
CREATE TABLE ew_signals (
    series TEXT NOT NULL,
    local_date TEXT NOT NULL,
    incident_id INTEGER REFERENCES incidents(id),
    methods TEXT NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (series, local_date)
);
CREATE TABLE ew_outbreaks (
    incident_id INTEGER PRIMARY KEY REFERENCES incidents(id),
    rule TEXT NOT NULL,
    scope TEXT NOT NULL,
    first_date TEXT NOT NULL,
    opened_at TEXT NOT NULL
);
CREATE INDEX ew_outbreaks_scope ON ew_outbreaks(rule, scope);
CREATE TABLE ew_links (
    warning_id INTEGER NOT NULL REFERENCES incidents(id),
    other_id INTEGER NOT NULL REFERENCES incidents(id),
    at TEXT NOT NULL,
    PRIMARY KEY (warning_id, other_id)
);
"""
"""Migration 5. ``ew_cases``: one row per counted event and group (``all``, a syndrome group
id, or ``disease:<rule>``), with its school-local date, class, grade, dormitory, the pupil as a
SHA-256 digest of the subject id (one pupil counts once a day; purged after the retention
period) and the class size the register gave (应到人数). ``ew_signals``: one row per series and
date that signalled (``methods``: JSON list), with its incident. ``ew_outbreaks``: incidents
opened by a fixed outbreak threshold. ``ew_links``: an early-warning incident linked to a
cluster."""


def pupil_digest(subject_id: str) -> str:
    """The pupil as stored in ``ew_cases``: SHA-256 of the subject id, hex."""
    return hashlib.sha256(subject_id.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class EwCase:
    """One counted case (an ``ew_cases`` row): ``grp`` is ``all``, a syndrome group id or
    ``disease:<rule id>``; ``local_date`` school-local; ``pupil`` a digest
    (:func:`pupil_digest`); ``class_size`` the register's 应到人数 or None."""

    event_id: str
    grp: str
    local_date: date
    class_id: str | None
    grade: str | None
    dormitory: str | None
    pupil: str
    class_size: int | None = None


def scope_filter(scope: str) -> tuple[str, tuple[Any, ...]]:
    """SQL condition and parameters for a scope: ``school``, ``grade:3``, ``class:3-2``,
    ``dormitory:B301``. Raises ``ValueError`` for anything else."""
    kind, _, value = scope.partition(":")
    if kind == "school" and not value:
        return "1 = 1", ()
    column = {"grade": "grade", "class": "class_id", "dormitory": "dormitory"}.get(kind)
    if column is None or not value:
        raise ValueError(f"unknown scope {scope!r}")
    return f"{column} = ?", (value,)


class EarlyWarningTx(Protocol):
    """The operations early warning needs inside a store transaction."""

    def ew_add_case(self, case: EwCase) -> None: ...
    def ew_daily_counts(self, grp: str, scope: str, first: date, last: date) -> dict[date, int]:
        """Distinct pupils per school-local date of ``grp`` in ``scope``, ``first..last``."""
        ...
    def ew_window_count(self, grp: str, scope: str, first: date, last: date) -> int:
        """Distinct pupils of ``grp`` in ``scope`` over the dates ``first..last``."""
        ...
    def ew_first_date(self) -> date | None:
        """The earliest date any case was counted (the start of every series)."""
        ...
    def ew_register_sizes(self, last: date) -> dict[str, int]:
        """Per class, the latest 应到人数 a register gave on or before ``last``."""
        ...
    def ew_classes(self) -> list[str]:
        """Every class id with a counted case."""
        ...
    def ew_signal(self, series: str, day: date) -> tuple[int | None, list[str]] | None:
        """The signal of ``series`` on ``day``: (incident id, methods), or None."""
        ...
    def ew_record_signal(self, series: str, day: date, incident_id: int | None,
                         methods: list[str], at: datetime) -> None: ...
    def ew_open_signals(self, series: list[str], first: date, last: date
                        ) -> list[tuple[str, date, int]]:
        """Signals of these series on ``first..last`` whose incident is open:
        (series, date, incident id)."""
        ...
    def ew_open_outbreak(self, rule: str, scope: str) -> int | None: ...
    def ew_outbreak_since(self, rule: str, scope: str) -> datetime | None:
        """When the last resolved outbreak incident of ``rule`` in ``scope`` was resolved."""
        ...
    def ew_add_outbreak(self, incident_id: int, rule: str, scope: str, first: date,
                        at: datetime) -> None: ...
    def ew_link(self, warning_id: int, other_id: int, at: datetime) -> bool:
        """Record the link; False when it existed."""
        ...
    def ew_purge(self, before: date) -> int:
        """Delete counted cases dated before ``before``; returns how many rows."""
        ...


class EarlyWarningSQL:
    """SQLite implementation of :class:`EarlyWarningTx` (a mixin of ``SQLiteTx``: ``self.c`` is
    the connection inside the transaction)."""

    c: sqlite3.Connection

    def ew_add_case(self, case: EwCase) -> None:
        self.c.execute(
            "INSERT OR IGNORE INTO ew_cases (event_id, grp, local_date, class_id, grade,"
            " dormitory, pupil, class_size) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (case.event_id, case.grp, case.local_date.isoformat(), case.class_id, case.grade,
             case.dormitory, case.pupil, case.class_size))

    def ew_daily_counts(self, grp: str, scope: str, first: date, last: date) -> dict[date, int]:
        cond, params = scope_filter(scope)
        rows = self.c.execute(
            f"SELECT local_date, COUNT(DISTINCT pupil) FROM ew_cases WHERE grp = ? AND {cond}"
            " AND local_date BETWEEN ? AND ? GROUP BY local_date",
            (grp, *params, first.isoformat(), last.isoformat()))
        return {date.fromisoformat(r[0]): int(r[1]) for r in rows}

    def ew_window_count(self, grp: str, scope: str, first: date, last: date) -> int:
        cond, params = scope_filter(scope)
        row = self.c.execute(
            f"SELECT COUNT(DISTINCT pupil) FROM ew_cases WHERE grp = ? AND {cond}"
            " AND local_date BETWEEN ? AND ?",
            (grp, *params, first.isoformat(), last.isoformat())).fetchone()
        return int(row[0])

    def ew_first_date(self) -> date | None:
        row = self.c.execute("SELECT MIN(local_date) FROM ew_cases WHERE grp = 'all'").fetchone()
        return date.fromisoformat(row[0]) if row and row[0] else None

    def ew_register_sizes(self, last: date) -> dict[str, int]:
        rows = self.c.execute(
            "SELECT class_id, class_size FROM ew_cases WHERE class_size IS NOT NULL"
            " AND class_id IS NOT NULL AND local_date <= ? ORDER BY local_date, rowid",
            (last.isoformat(),))
        return {r[0]: int(r[1]) for r in rows}  # the latest wins

    def ew_classes(self) -> list[str]:
        rows = self.c.execute("SELECT DISTINCT class_id FROM ew_cases"
                              " WHERE class_id IS NOT NULL ORDER BY class_id")
        return [r[0] for r in rows]

    def ew_signal(self, series: str, day: date) -> tuple[int | None, list[str]] | None:
        row = self.c.execute("SELECT incident_id, methods FROM ew_signals"
                             " WHERE series = ? AND local_date = ?",
                             (series, day.isoformat())).fetchone()
        return None if row is None else (row[0], json.loads(row[1]))

    def ew_record_signal(self, series: str, day: date, incident_id: int | None,
                         methods: list[str], at: datetime) -> None:
        self.c.execute(
            "INSERT INTO ew_signals (series, local_date, incident_id, methods, at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (series, local_date) DO UPDATE SET"
            " methods = excluded.methods",
            (series, day.isoformat(), incident_id, json.dumps(methods), _utc(at)))

    def ew_open_signals(self, series: list[str], first: date, last: date
                        ) -> list[tuple[str, date, int]]:
        if not series:
            return []
        marks = ", ".join("?" * len(series))
        rows = self.c.execute(
            "SELECT s.series, s.local_date, s.incident_id FROM ew_signals s"
            " JOIN incidents i ON i.id = s.incident_id"
            f" WHERE s.series IN ({marks}) AND s.local_date BETWEEN ? AND ?"
            " AND i.state != 'resolved' ORDER BY s.local_date, s.incident_id",
            (*series, first.isoformat(), last.isoformat()))
        return [(r[0], date.fromisoformat(r[1]), int(r[2])) for r in rows]

    def ew_open_outbreak(self, rule: str, scope: str) -> int | None:
        row = self.c.execute(
            "SELECT o.incident_id FROM ew_outbreaks o JOIN incidents i ON i.id = o.incident_id"
            " WHERE o.rule = ? AND o.scope = ? AND i.state != 'resolved'"
            " ORDER BY o.incident_id LIMIT 1", (rule, scope)).fetchone()
        return None if row is None else int(row[0])

    def ew_outbreak_since(self, rule: str, scope: str) -> datetime | None:
        row = self.c.execute(
            "SELECT MAX(i.resolved_at) FROM ew_outbreaks o JOIN incidents i"
            " ON i.id = o.incident_id WHERE o.rule = ? AND o.scope = ?"
            " AND i.state = 'resolved'", (rule, scope)).fetchone()
        return datetime.fromisoformat(row[0]) if row and row[0] else None

    def ew_add_outbreak(self, incident_id: int, rule: str, scope: str, first: date,
                        at: datetime) -> None:
        self.c.execute("INSERT OR IGNORE INTO ew_outbreaks (incident_id, rule, scope, first_date,"
                       " opened_at) VALUES (?, ?, ?, ?, ?)",
                       (incident_id, rule, scope, first.isoformat(), _utc(at)))

    def ew_link(self, warning_id: int, other_id: int, at: datetime) -> bool:
        return self.c.execute(
            "INSERT OR IGNORE INTO ew_links (warning_id, other_id, at) VALUES (?, ?, ?)",
            (warning_id, other_id, _utc(at))).rowcount == 1

    def ew_purge(self, before: date) -> int:
        return self.c.execute("DELETE FROM ew_cases WHERE local_date < ?",
                              (before.isoformat(),)).rowcount


def _utc(at: datetime) -> str:
    """The store's fixed-width UTC text (as ``escalator.store.sqlite.to_db``)."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
