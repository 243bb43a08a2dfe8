"""Several daemons on one database (docs/reliability.md "Several daemons"): the rows of
:class:`~escalator.store.base.NodeTx` — nodes and their beats, the release of a dead node's
claims, leases for periodic singletons, and the throttle's shared send windows — mixed into
the shared SQL transaction (:class:`~escalator.store.sql_core.SQLTx`) and run unchanged on
PostgreSQL: portable SQL only (``?`` placeholders, ``INSERT … ON CONFLICT``, ``RETURNING``),
datetimes as the fixed-width UTC text of :func:`~escalator.store.sql_rows.to_db`, which
compares correctly as text.

The schema is :data:`MIGRATION` (SQLite migration 12, appended to
:data:`escalator.store.sqlite.MIGRATIONS`) and :data:`POSTGRES_MIGRATION` (the same change in
PostgreSQL's DDL, version 12 of the PostgreSQL backend).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from escalator.store.sql_rows import from_db, to_db

_TABLES = """
    CREATE TABLE nodes (
        node TEXT PRIMARY KEY,
        started_at TEXT NOT NULL,
        seen_at TEXT NOT NULL,
        expires_at TEXT NOT NULL
    );
    CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        node TEXT NOT NULL,
        expires_at TEXT NOT NULL
    );
    CREATE TABLE rate_windows (
        key TEXT PRIMARY KEY,
        sends TEXT NOT NULL
    );
    ALTER TABLE notifications ADD COLUMN claimed_by TEXT;
    CREATE INDEX notifications_sending ON notifications(claimed_by) WHERE status = 'sending';
"""

MIGRATION = _TABLES
"""SQLite migration 12: ``nodes`` (one row per daemon: when it started, was last seen, and
until when it counts as alive), ``leases`` (a periodic singleton's holder and expiry),
``rate_windows`` (a throttle key's recent send times, JSON list of UTC texts), and
``notifications.claimed_by`` (the node that claimed a ``sending`` row) with an index of the
``sending`` rows by node."""

POSTGRES_MIGRATION = _TABLES
"""The same change for PostgreSQL (its version 12): the statement text is portable as it
stands (``TEXT`` columns, a partial index, ``ADD COLUMN``)."""


def _plus(now: datetime, seconds: float) -> str:
    return to_db(now + timedelta(seconds=seconds))  # type: ignore[return-value]


class SQLNodes:
    """The node, lease and send-window rows on the connection ``c`` of a transaction."""

    c: Any

    def beat_node(self, node: str, now: datetime, ttl_seconds: float) -> None:
        self.c.execute(
            "INSERT INTO nodes (node, started_at, seen_at, expires_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (node) DO UPDATE SET"
            " started_at = CASE WHEN nodes.expires_at <= excluded.seen_at"
            "  THEN excluded.started_at ELSE nodes.started_at END,"
            " seen_at = excluded.seen_at, expires_at = excluded.expires_at",
            (node, to_db(now), to_db(now), _plus(now, ttl_seconds)),
        )

    def live_nodes(self, now: datetime) -> list[str]:
        rows = self.c.execute(
            "SELECT node FROM nodes WHERE expires_at > ? ORDER BY node", (to_db(now),)
        ).fetchall()
        return [r[0] for r in rows]

    def release_dead_claims(self, now: datetime) -> int:
        return int(self.c.execute(
            "UPDATE notifications SET status = 'pending', claimed_by = NULL, updated_at = ?"
            " WHERE status = 'sending' AND (claimed_by IS NULL OR claimed_by NOT IN"
            "  (SELECT node FROM nodes WHERE expires_at > ?))",
            (to_db(now), to_db(now)),
        ).rowcount)

    def take_lease(self, name: str, node: str, now: datetime, ttl_seconds: float) -> bool:
        row = self.c.execute(
            "INSERT INTO leases (name, node, expires_at) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET node = excluded.node,"
            " expires_at = excluded.expires_at"
            " WHERE leases.node = excluded.node OR leases.expires_at <= ?"
            " RETURNING node",
            (name, node, _plus(now, ttl_seconds), to_db(now)),
        ).fetchone()
        return row is not None

    def rate_window(self, key: str) -> list[datetime]:
        # the upsert locks the key's row (PostgreSQL: until the transaction ends; SQLite's
        # BEGIN IMMEDIATE serialises every writer anyway)
        row = self.c.execute(
            "INSERT INTO rate_windows (key, sends) VALUES (?, '[]')"
            " ON CONFLICT (key) DO UPDATE SET sends = rate_windows.sends RETURNING sends",
            (key,),
        ).fetchone()
        return [from_db(t) for t in json.loads(row[0])]  # type: ignore[misc]

    def put_rate_window(self, key: str, sends: Sequence[datetime]) -> None:
        if not sends:
            self.c.execute("DELETE FROM rate_windows WHERE key = ?", (key,))
            return
        self.c.execute(
            "INSERT INTO rate_windows (key, sends) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET sends = excluded.sends",
            (key, json.dumps([to_db(t) for t in sorted(sends)])),
        )
