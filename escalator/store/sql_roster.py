"""SQL of both backends: roster overrides and swaps (docs/rosters.md) — the roster part of
:class:`~escalator.store.base.SchoolTx`, mixed into :class:`~escalator.store.sql_core.SQLTx`
(the table ``roster_overrides`` is created by a migration in
:data:`escalator.store.sqlite.MIGRATIONS`). Who is on duty is worked out in
:mod:`escalator.school.roster`; here are only the rows.
"""

from __future__ import annotations

from datetime import datetime

from escalator.store.base import RosterOverride
from escalator.store.sql_dialect import Connection, Dialect
from escalator.store.sql_rows import row_to, to_db


class SQLRoster:
    """Roster overrides on the connection ``c`` of a transaction."""

    c: Connection
    d: Dialect

    def add_roster_override(self, *, role: str, person: str, replaces: str | None,
                            starts_at: datetime, ends_at: datetime, created_by: str,
                            created_at: datetime, comment: str | None = None,
                            swap_id: int | None = None) -> int:
        row = self.c.execute(
            "INSERT INTO roster_overrides (role, person, replaces, starts_at, ends_at,"
            " created_by, created_at, comment, swap_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " RETURNING id",
            (role, person, replaces, to_db(starts_at), to_db(ends_at), created_by,
             to_db(created_at), comment, swap_id)).fetchone()
        return int(row[0])

    def roster_overrides(self, start: datetime, end: datetime, role: str | None = None,
                         *, cancelled: bool = False) -> list[RosterOverride]:
        sql = "SELECT * FROM roster_overrides WHERE ends_at > ? AND starts_at < ?"
        args: list[object] = [to_db(start), to_db(end)]
        if role is not None:
            sql += " AND role = ?"
            args.append(role)
        if not cancelled:
            sql += " AND cancelled_at IS NULL"
        rows = self.c.execute(sql + " ORDER BY starts_at, id", args).fetchall()
        return [row_to(RosterOverride, r) for r in rows]

    def cancel_roster_override(self, override_id: int, at: datetime, by: str) -> list[int]:
        row = self.c.execute("SELECT swap_id FROM roster_overrides WHERE id = ?",
                             (override_id,)).fetchone()
        if row is None:
            return []
        ids = [override_id] + ([row["swap_id"]] if row["swap_id"] is not None else [])
        ids += [r["id"] for r in self.c.execute(
            "SELECT id FROM roster_overrides WHERE swap_id = ?", (override_id,))]
        done = []
        for oid in dict.fromkeys(ids):
            cur = self.c.execute(
                "UPDATE roster_overrides SET cancelled_at = ?, cancelled_by = ?"
                " WHERE id = ? AND cancelled_at IS NULL", (to_db(at), by, oid))
            if cur.rowcount:
                done.append(oid)
        return done
