"""SQL of both backends: silences, the incidents they hold, and incident groups — the queries of
:class:`~escalator.store.base.QuietTx`, mixed into :class:`~escalator.store.sql_core.SQLTx`
(the tables are the "silences and groups" migration in
:data:`escalator.store.sqlite.MIGRATIONS`). What a silence matches and when a group is told is
decided in :mod:`escalator.engine.silences` and :mod:`escalator.engine.grouping`; here are only
the rows.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from escalator.config.quieting import FIELDS
from escalator.store.base import IncidentGroup, Silence
from escalator.store.sql_dialect import Connection, Dialect
from escalator.store.sql_rows import from_db, to_db

_TABLES = """
    CREATE TABLE silences (
        id TEXT PRIMARY KEY,
        matchers TEXT NOT NULL,
        starts_at TEXT,
        ends_at TEXT,
        schedule TEXT,
        exempt_critical INTEGER NOT NULL DEFAULT 1,
        created_by TEXT NOT NULL,
        comment TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expired_at TEXT,
        expired_by TEXT
    );
    CREATE TABLE silence_holds (
        incident_id {key} PRIMARY KEY REFERENCES incidents(id),
        silence_id TEXT NOT NULL,
        until TEXT NOT NULL
    );
    CREATE INDEX silence_holds_silence ON silence_holds(silence_id);
    CREATE TABLE incident_groups (
        incident_id {key} PRIMARY KEY REFERENCES incidents(id),
        group_key TEXT NOT NULL,
        route INTEGER NOT NULL,
        group_values TEXT NOT NULL,
        members INTEGER NOT NULL DEFAULT 0,
        told INTEGER NOT NULL DEFAULT 0,
        update_at TEXT
    );
    CREATE INDEX incident_groups_update ON incident_groups(update_at)
        WHERE update_at IS NOT NULL;
    CREATE TABLE group_members (
        incident_id {key} NOT NULL REFERENCES incidents(id),
        member_key TEXT NOT NULL,
        at TEXT NOT NULL,
        PRIMARY KEY (incident_id, member_key)
    );
"""
MIGRATION = _TABLES.format(key="INTEGER")
"""Silences (matchers and schedule as JSON), which silence holds which incident until when,
the groups of grouping routes (values as JSON, member count, how many were told, the update
timer) and each group's distinct members by their own dedup key."""
POSTGRES_MIGRATION = _TABLES.format(key="BIGINT")
"""The same tables on PostgreSQL (incident keys 64-bit, as ``incidents.id`` there)."""


def _silence(row: Any) -> Silence:
    return Silence(
        id=row["id"], matchers=json.loads(row["matchers"]), starts_at=from_db(row["starts_at"]),
        ends_at=from_db(row["ends_at"]), created_by=row["created_by"], comment=row["comment"],
        created_at=from_db(row["created_at"]),  # type: ignore[arg-type]
        schedule=json.loads(row["schedule"]) if row["schedule"] else None,
        exempt_critical=bool(row["exempt_critical"]), expired_at=from_db(row["expired_at"]),
        expired_by=row["expired_by"])


def _group(row: Any) -> IncidentGroup:
    return IncidentGroup(row["incident_id"], row["group_key"], row["route"],
                         json.loads(row["group_values"]), row["members"], row["told"],
                         from_db(row["update_at"]))


class SQLQuiet:
    """Silences and groups on the connection ``c`` of a transaction."""

    c: Connection
    d: Dialect

    def insert_silence(self, silence: Silence) -> None:
        s = silence
        self.c.execute(
            "INSERT INTO silences (id, matchers, starts_at, ends_at, schedule, exempt_critical,"
            " created_by, comment, created_at, expired_at, expired_by)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (s.id, json.dumps(s.matchers, ensure_ascii=False), to_db(s.starts_at), to_db(s.ends_at),
             json.dumps(s.schedule, ensure_ascii=False) if s.schedule else None,
             int(s.exempt_critical), s.created_by, s.comment, to_db(s.created_at),
             to_db(s.expired_at), s.expired_by))

    def get_silence(self, silence_id: str) -> Silence | None:
        row = self.c.execute("SELECT * FROM silences WHERE id = ?", (silence_id,)).fetchone()
        return _silence(row) if row else None

    def list_silences(self, since: datetime | None) -> list[Silence]:
        if since is None:
            rows = self.c.execute("SELECT * FROM silences ORDER BY created_at, id")
        else:
            at = to_db(since)
            rows = self.c.execute(
                "SELECT * FROM silences WHERE (expired_at IS NULL OR expired_at > ?1)"
                " AND (ends_at IS NULL OR ends_at > ?1) ORDER BY created_at, id", (at,))
        return [_silence(r) for r in rows]

    def expire_silence(self, silence_id: str, at: datetime, by: str) -> bool:
        t = to_db(at)
        return self.c.execute(
            "UPDATE silences SET expired_at = ?1, expired_by = ?2 WHERE id = ?3"
            " AND (expired_at IS NULL OR expired_at > ?1) AND (ends_at IS NULL OR ends_at > ?1)",
            (t, by, silence_id)).rowcount == 1

    def hold_incident(self, incident_id: int, silence_id: str, until: datetime) -> None:
        self.c.execute("INSERT INTO silence_holds (incident_id, silence_id, until)"
                       " VALUES (?, ?, ?) ON CONFLICT (incident_id) DO UPDATE SET"
                       " silence_id = excluded.silence_id, until = excluded.until",
                       (incident_id, silence_id, to_db(until)))

    def silence_hold(self, incident_id: int) -> tuple[str, datetime] | None:
        row = self.c.execute("SELECT silence_id, until FROM silence_holds WHERE incident_id = ?",
                             (incident_id,)).fetchone()
        return (row[0], from_db(row[1])) if row else None  # type: ignore[return-value]

    def release_hold(self, incident_id: int) -> None:
        self.c.execute("DELETE FROM silence_holds WHERE incident_id = ?", (incident_id,))

    def held_by(self, silence_id: str) -> list[int]:
        rows = self.c.execute("SELECT incident_id FROM silence_holds WHERE silence_id = ?"
                              " ORDER BY incident_id", (silence_id,))
        return [r[0] for r in rows]

    def open_openings(self, drill: bool, category: str | None, limit: int,
                      equal: dict[str, str] | None = None) -> list[tuple[int, str, dict[str, Any]]]:
        sql = ("SELECT i.id, e.source, e.body FROM incidents i JOIN events e"
               " ON e.id = i.first_event_id WHERE i.state != 'resolved' AND i.drill = ?")
        args: list[Any] = [int(drill)]
        if category is not None:
            sql += " AND i.category = ?"
            args.append(category)
        for name, value in (equal or {}).items():
            if name == "source":
                sql += " AND e.source = ?"
                args.append(value)
                continue
            value_sql, value_args = self.d.json_text(
                "e.body", *(() if name in FIELDS else ("labels",)), name)
            sql += f" AND COALESCE({value_sql}, '') = ?"
            args += [*value_args, value]
        rows = self.c.execute(sql + " ORDER BY i.id DESC LIMIT ?", (*args, limit))
        return [(r[0], r[1], json.loads(r[2])) for r in rows]

    def add_group(self, group: IncidentGroup) -> None:
        g = group
        self.c.execute(
            "INSERT INTO incident_groups (incident_id, group_key, route, group_values, members,"
            " told, update_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (g.incident_id, g.group_key, g.route, json.dumps(g.values, ensure_ascii=False),
             g.members, g.told, to_db(g.update_at)))

    def incident_group(self, incident_id: int) -> IncidentGroup | None:
        row = self.c.execute("SELECT * FROM incident_groups WHERE incident_id = ?",
                             (incident_id,)).fetchone()
        return _group(row) if row else None

    def add_group_member(self, incident_id: int, member_key: str, at: datetime) -> bool:
        added = self.c.execute(
            "INSERT INTO group_members (incident_id, member_key, at) VALUES (?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            (incident_id, member_key, to_db(at))).rowcount == 1
        if added:
            self.c.execute("UPDATE incident_groups SET members = members + 1"
                           " WHERE incident_id = ?", (incident_id,))
        return added

    def set_group_update(self, incident_id: int, update_at: datetime | None,
                         told: int | None = None) -> None:
        if told is None:
            self.c.execute("UPDATE incident_groups SET update_at = ? WHERE incident_id = ?",
                           (to_db(update_at), incident_id))
        else:
            self.c.execute("UPDATE incident_groups SET update_at = ?, told = ?"
                           " WHERE incident_id = ?", (to_db(update_at), told, incident_id))

    def due_group_updates(self, now: datetime, limit: int) -> list[int]:
        rows = self.c.execute(
            "SELECT incident_id FROM incident_groups WHERE update_at IS NOT NULL"
            " AND update_at <= ? ORDER BY update_at, incident_id LIMIT ?", (to_db(now), limit))
        return [r[0] for r in rows]

    def next_group_update(self) -> datetime | None:
        row = self.c.execute("SELECT MIN(update_at) FROM incident_groups"
                             " WHERE update_at IS NOT NULL").fetchone()
        return from_db(row[0]) if row else None
