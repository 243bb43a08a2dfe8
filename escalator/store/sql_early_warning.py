"""SQL of both backends: early warning's rows (docs/early-warning.md): the cases its series are counted from,
its signals, outbreak incidents and links to clusters — the queries of the early-warning part of
:class:`~escalator.store.base.SchoolTx`, mixed into :class:`~escalator.store.sql_core.SQLTx`
(the tables are migration 5 in :data:`escalator.store.sqlite.MIGRATIONS`). What is counted and
when a series signals is decided in :mod:`escalator.school.early_warning`; here are only the rows.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any

from escalator.store.base import EwCase
from escalator.store.sql_dialect import Connection, Dialect
from escalator.store.sql_rows import from_db, to_db


def _scope_filter(scope: str) -> tuple[str, tuple[Any, ...]]:
    """SQL condition and parameters for a scope: ``school``, ``grade:3``, ``class:3-2``,
    ``dormitory:B301``. Raises ``ValueError`` for anything else."""
    kind, _, value = scope.partition(":")
    if kind == "school" and not value:
        return "1 = 1", ()
    column = {"grade": "grade", "class": "class_id", "dormitory": "dormitory"}.get(kind)
    if column is None or not value:
        raise ValueError(f"unknown scope {scope!r}")
    return f"{column} = ?", (value,)


class SQLEarlyWarning:
    """Early warning's rows on the connection ``c`` of a transaction."""

    c: Connection
    d: Dialect

    def ew_add_case(self, case: EwCase) -> None:
        self.c.execute(
            "INSERT INTO ew_cases (event_id, grp, local_date, class_id, grade,"
            " dormitory, pupil, class_size) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            (case.event_id, case.grp, case.local_date.isoformat(), case.class_id, case.grade,
             case.dormitory, case.pupil, case.class_size))

    def ew_daily_counts(self, grp: str, scope: str, first: date, last: date) -> dict[date, int]:
        cond, params = _scope_filter(scope)
        rows = self.c.execute(
            f"SELECT local_date, COUNT(DISTINCT pupil) FROM ew_cases WHERE grp = ? AND {cond}"
            " AND local_date BETWEEN ? AND ? GROUP BY local_date",
            (grp, *params, first.isoformat(), last.isoformat()))
        return {date.fromisoformat(r[0]): int(r[1]) for r in rows}

    def ew_window_count(self, grp: str, scope: str, first: date, last: date) -> int:
        cond, params = _scope_filter(scope)
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
            (series, day.isoformat(), incident_id, json.dumps(methods), to_db(at)))

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
        return from_db(row[0]) if row and row[0] else None

    def ew_add_outbreak(self, incident_id: int, rule: str, scope: str, first: date,
                        at: datetime) -> None:
        self.c.execute("INSERT INTO ew_outbreaks (incident_id, rule, scope, first_date,"
                       " opened_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                       (incident_id, rule, scope, first.isoformat(), to_db(at)))

    def ew_link(self, warning_id: int, other_id: int, at: datetime) -> bool:
        return self.c.execute(
            "INSERT INTO ew_links (warning_id, other_id, at) VALUES (?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            (warning_id, other_id, to_db(at))).rowcount == 1

    def ew_purge(self, before: date) -> int:
        return self.c.execute("DELETE FROM ew_cases WHERE local_date < ?",
                              (before.isoformat(),)).rowcount
