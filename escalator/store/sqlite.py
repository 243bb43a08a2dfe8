"""SQLite store: WAL mode, ``synchronous=FULL`` (a commit survives power loss), versioned migrations.

One connection, serialised by a lock; write transactions start with ``BEGIN IMMEDIATE`` so two
processes (the daemon and a CLI ``ack``) never deadlock, they wait (``busy_timeout``).
Datetimes are stored as fixed-width UTC ISO-8601 text, so they sort and compare as text.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from escalator.store.base import HeartbeatDay, Incident, Notification, StepRun, TimelineEntry

_FMT = "%Y-%m-%dT%H:%M:%S.%fZ"


def to_db(dt: datetime | None) -> str | None:
    """Aware datetime → fixed-width UTC text (``2026-11-30T07:48:00.000000Z``)."""
    return None if dt is None else dt.astimezone(UTC).strftime(_FMT)


def from_db(text: str | None) -> datetime | None:
    return None if text is None else datetime.strptime(text, _FMT).replace(tzinfo=UTC)


MIGRATIONS: list[str] = [
    # 1: the core schema
    """
    CREATE TABLE events (
        id TEXT PRIMARY KEY,
        received_at TEXT NOT NULL,
        source TEXT NOT NULL,
        kind TEXT NOT NULL,
        category TEXT NOT NULL,
        action TEXT NOT NULL,
        dedup_key TEXT NOT NULL,
        incident_id INTEGER,
        outcome TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX events_incident ON events(incident_id);
    CREATE TABLE incidents (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        dedup_key TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('triggered', 'acknowledged', 'resolved')),
        kind TEXT NOT NULL,
        category TEXT NOT NULL,
        severity TEXT NOT NULL,
        summary TEXT NOT NULL,
        class_id TEXT,
        grade TEXT,
        place TEXT,
        drill INTEGER NOT NULL DEFAULT 0,
        policy_id TEXT NOT NULL,
        policy TEXT NOT NULL,
        step_index INTEGER NOT NULL DEFAULT -1,
        round INTEGER NOT NULL DEFAULT 0,
        next_step_at TEXT,
        event_count INTEGER NOT NULL DEFAULT 1,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        acknowledged_at TEXT,
        acknowledged_by TEXT,
        resolved_at TEXT,
        resolved_by TEXT,
        first_event_id TEXT
    );
    CREATE UNIQUE INDEX incidents_open_key ON incidents(dedup_key) WHERE state != 'resolved';
    CREATE INDEX incidents_due ON incidents(next_step_at) WHERE next_step_at IS NOT NULL;
    CREATE TABLE step_runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        incident_id INTEGER NOT NULL REFERENCES incidents(id),
        step_index INTEGER NOT NULL,
        round INTEGER NOT NULL,
        mode TEXT NOT NULL,
        fired_at TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'open',
        closed_at TEXT
    );
    CREATE INDEX step_runs_incident ON step_runs(incident_id);
    CREATE TABLE notifications (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        incident_id INTEGER NOT NULL REFERENCES incidents(id),
        step_run_id INTEGER REFERENCES step_runs(id),
        recipient_kind TEXT NOT NULL,
        recipient_id TEXT NOT NULL,
        recipient_name TEXT NOT NULL,
        channel TEXT NOT NULL,
        address TEXT NOT NULL,
        contact_index INTEGER NOT NULL DEFAULT 0,
        status TEXT NOT NULL,
        due_at TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        ack_token TEXT NOT NULL UNIQUE,
        needs_ack INTEGER NOT NULL DEFAULT 1,
        purpose TEXT NOT NULL DEFAULT 'step',
        note TEXT,
        first_attempt_at TEXT,
        last_error TEXT,
        updated_at TEXT
    );
    CREATE INDEX notifications_incident ON notifications(incident_id);
    CREATE INDEX notifications_due ON notifications(due_at) WHERE status = 'pending';
    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        notification_id INTEGER NOT NULL REFERENCES notifications(id),
        at TEXT NOT NULL,
        outcome TEXT NOT NULL,
        detail TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX deliveries_notification ON deliveries(notification_id);
    CREATE TABLE timeline (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        incident_id INTEGER NOT NULL REFERENCES incidents(id),
        at TEXT NOT NULL,
        type TEXT NOT NULL,
        actor TEXT,
        detail TEXT NOT NULL
    );
    CREATE INDEX timeline_incident ON timeline(incident_id);
    CREATE TABLE spool_files (
        sha256 TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        taken_at TEXT NOT NULL,
        events INTEGER NOT NULL
    );
    """,
    # 2: a source's own key for one row of a register (date + pupil), so a re-exported register
    #    adds only its new rows
    """
    ALTER TABLE events ADD COLUMN row_key TEXT;
    CREATE UNIQUE INDEX events_row_key ON events(row_key) WHERE row_key IS NOT NULL;
    """,
    # 3: heartbeat monitors (docs/school-rules.md): one row per monitor and school-local date
    #    once a heartbeat arrived or was found missing, and the date each monitor is watched since
    """
    CREATE TABLE heartbeat_days (
        monitor TEXT NOT NULL,
        local_date TEXT NOT NULL,
        received_at TEXT,
        event_id TEXT,
        missed_incident_id INTEGER,
        PRIMARY KEY (monitor, local_date)
    );
    CREATE TABLE heartbeat_monitors (
        monitor TEXT PRIMARY KEY,
        since TEXT NOT NULL
    );
    """,
]
"""Schema migrations, applied in order; ``PRAGMA user_version`` records how many ran."""


def _row_to(cls: type, row: sqlite3.Row) -> Any:
    data = {}
    for f in fields(cls):
        v = row[f.name]
        if f.name in {"policy", "detail"}:
            v = json.loads(v)
        elif f.name in {"drill", "needs_ack"}:
            v = bool(v)
        elif isinstance(v, str) and (f.name.endswith("_at") or f.name == "at"):
            v = from_db(v)
        data[f.name] = v
    return cls(**data)


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return to_db(value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    if isinstance(value, bool):
        return int(value)
    return value


class SQLiteTx:
    """A transaction on :class:`SQLiteStore` (implements :class:`escalator.store.base.Tx`)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.c = conn

    def _insert(self, table: str, values: dict[str, Any]) -> int:
        cols = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        cur = self.c.execute(
            f"INSERT INTO {table} ({cols}) VALUES ({marks})", [_encode(v) for v in values.values()]
        )
        return int(cur.lastrowid or 0)

    def _update(self, table: str, key: Any, values: dict[str, Any]) -> None:
        sets = ", ".join(f"{k} = ?" for k in values)
        self.c.execute(
            f"UPDATE {table} SET {sets} WHERE id = ?", [*(_encode(v) for v in values.values()), key]
        )

    # events
    def insert_event(self, **values: Any) -> None:
        self._insert("events", values)

    def get_event(self, event_id: str) -> dict[str, Any] | None:
        row = self.c.execute("SELECT * FROM events WHERE id = ?", (event_id,)).fetchone()
        return _event_dict(row) if row else None

    def events_of(self, incident_id: int) -> list[dict[str, Any]]:
        rows = self.c.execute(
            "SELECT * FROM events WHERE incident_id = ? ORDER BY received_at, rowid", (incident_id,)
        )
        return [_event_dict(r) for r in rows]

    # incidents
    def open_incident_by_key(self, dedup_key: str) -> Incident | None:
        row = self.c.execute(
            "SELECT * FROM incidents WHERE dedup_key = ? AND state != 'resolved'", (dedup_key,)
        ).fetchone()
        return _row_to(Incident, row) if row else None

    def insert_incident(self, **values: Any) -> int:
        return self._insert("incidents", values)

    def get_incident(self, incident_id: int) -> Incident | None:
        row = self.c.execute("SELECT * FROM incidents WHERE id = ?", (incident_id,)).fetchone()
        return _row_to(Incident, row) if row else None

    def update_incident(self, incident_id: int, **values: Any) -> None:
        self._update("incidents", incident_id, values)

    def list_incidents(self, states: tuple[str, ...], limit: int) -> list[Incident]:
        marks = ", ".join("?" for _ in states)
        rows = self.c.execute(
            f"SELECT * FROM incidents WHERE state IN ({marks}) ORDER BY id DESC LIMIT ?",
            (*states, limit),
        )
        return [_row_to(Incident, r) for r in rows]

    def due_incidents(self, now: datetime, limit: int) -> list[int]:
        rows = self.c.execute(
            "SELECT id FROM incidents WHERE next_step_at IS NOT NULL AND next_step_at <= ? "
            "ORDER BY next_step_at LIMIT ?",
            (to_db(now), limit),
        )
        return [r[0] for r in rows]

    def count_incidents(self) -> dict[str, int]:
        rows = self.c.execute("SELECT state, COUNT(*) FROM incidents GROUP BY state")
        return {r[0]: r[1] for r in rows}

    # steps
    def insert_step_run(self, **values: Any) -> int:
        return self._insert("step_runs", values)

    def get_step_run(self, step_run_id: int) -> StepRun | None:
        row = self.c.execute("SELECT * FROM step_runs WHERE id = ?", (step_run_id,)).fetchone()
        return _row_to(StepRun, row) if row else None

    def latest_step_run(self, incident_id: int) -> StepRun | None:
        row = self.c.execute(
            "SELECT * FROM step_runs WHERE incident_id = ? ORDER BY id DESC LIMIT 1", (incident_id,)
        ).fetchone()
        return _row_to(StepRun, row) if row else None

    def close_step_run(self, step_run_id: int, status: str, at: datetime) -> None:
        self.c.execute(
            "UPDATE step_runs SET status = ?, closed_at = ? WHERE id = ? AND status = 'open'",
            (status, to_db(at), step_run_id),
        )

    # outbox
    def insert_notification(self, **values: Any) -> int:
        return self._insert("notifications", values)

    def get_notification(self, notification_id: int) -> Notification | None:
        row = self.c.execute(
            "SELECT * FROM notifications WHERE id = ?", (notification_id,)
        ).fetchone()
        return _row_to(Notification, row) if row else None

    def notification_by_token(self, token: str) -> Notification | None:
        row = self.c.execute(
            "SELECT * FROM notifications WHERE ack_token = ?", (token,)
        ).fetchone()
        return _row_to(Notification, row) if row else None

    def notifications_of(self, incident_id: int) -> list[Notification]:
        rows = self.c.execute(
            "SELECT * FROM notifications WHERE incident_id = ? ORDER BY id", (incident_id,)
        )
        return [_row_to(Notification, r) for r in rows]

    def cancel_notifications(self, incident_id: int, step_run_id: int | None, at: datetime) -> int:
        sql = (
            "UPDATE notifications SET status = 'cancelled', updated_at = ? "
            "WHERE incident_id = ? AND status IN ('pending', 'sending')"
        )
        args: list[Any] = [to_db(at), incident_id]
        if step_run_id is not None:
            sql += " AND step_run_id = ?"
            args.append(step_run_id)
        return self.c.execute(sql, args).rowcount

    def claim_notifications(self, now: datetime, limit: int) -> list[Notification]:
        rows = self.c.execute(
            "UPDATE notifications SET status = 'sending', updated_at = ? WHERE id IN ("
            " SELECT id FROM notifications WHERE status = 'pending' AND due_at <= ?"
            " ORDER BY due_at, id LIMIT ?) RETURNING *",
            (to_db(now), to_db(now), limit),
        ).fetchall()
        return sorted((_row_to(Notification, r) for r in rows), key=lambda n: (n.due_at, n.id))

    def update_notification(self, notification_id: int, **values: Any) -> None:
        self._update("notifications", notification_id, values)

    def release_claims(self) -> int:
        return self.c.execute(
            "UPDATE notifications SET status = 'pending' WHERE status = 'sending'"
        ).rowcount

    def add_delivery(self, **values: Any) -> None:
        self._insert("deliveries", values)

    # timeline and timers
    def add_timeline(self, incident_id: int, at: datetime, type: str, actor: str | None,
                     detail: dict[str, Any]) -> None:
        self._insert("timeline", {"incident_id": incident_id, "at": at, "type": type,
                                  "actor": actor, "detail": detail})

    def timeline(self, incident_id: int) -> list[TimelineEntry]:
        rows = self.c.execute(
            "SELECT * FROM timeline WHERE incident_id = ? ORDER BY id", (incident_id,)
        )
        return [_row_to(TimelineEntry, r) for r in rows]

    def next_due(self) -> datetime | None:
        row = self.c.execute(
            "SELECT MIN(t) FROM ("
            " SELECT MIN(next_step_at) AS t FROM incidents WHERE next_step_at IS NOT NULL"
            " UNION ALL SELECT MIN(due_at) FROM notifications WHERE status = 'pending')"
        ).fetchone()
        return from_db(row[0]) if row and row[0] else None

    def row_key_seen(self, row_key: str) -> bool:
        return self.c.execute(
            "SELECT 1 FROM events WHERE row_key = ?", (row_key,)
        ).fetchone() is not None

    # spool
    def spool_file_seen(self, sha256: str) -> bool:
        return self.c.execute(
            "SELECT 1 FROM spool_files WHERE sha256 = ?", (sha256,)
        ).fetchone() is not None

    def add_spool_file(self, **values: Any) -> None:
        self._insert("spool_files", values)

    # heartbeat monitors
    def heartbeat_watched_since(self, monitor: str, today: date) -> date:
        self.c.execute("INSERT OR IGNORE INTO heartbeat_monitors (monitor, since) VALUES (?, ?)",
                       (monitor, today.isoformat()))
        row = self.c.execute("SELECT since FROM heartbeat_monitors WHERE monitor = ?",
                             (monitor,)).fetchone()
        return date.fromisoformat(row[0])

    def heartbeat_day(self, monitor: str, day: date) -> HeartbeatDay | None:
        row = self.c.execute(
            "SELECT * FROM heartbeat_days WHERE monitor = ? AND local_date = ?",
            (monitor, day.isoformat()),
        ).fetchone()
        return None if row is None else _row_to(HeartbeatDay, row)

    def record_heartbeat(self, monitor: str, day: date, at: datetime, event_id: str) -> None:
        self.c.execute(
            "INSERT INTO heartbeat_days (monitor, local_date, received_at, event_id)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (monitor, local_date) DO UPDATE SET"
            " received_at = excluded.received_at, event_id = excluded.event_id"
            " WHERE heartbeat_days.received_at IS NULL",
            (monitor, day.isoformat(), to_db(at), event_id),
        )

    def mark_heartbeat_missed(self, monitor: str, day: date, incident_id: int) -> None:
        self.c.execute(
            "INSERT INTO heartbeat_days (monitor, local_date, missed_incident_id) VALUES (?, ?, ?)"
            " ON CONFLICT (monitor, local_date) DO UPDATE SET"
            " missed_incident_id = excluded.missed_incident_id",
            (monitor, day.isoformat(), incident_id),
        )


def _event_dict(row: sqlite3.Row) -> dict[str, Any]:
    d = dict(row)
    d["body"] = json.loads(d["body"])
    d["received_at"] = from_db(d["received_at"])
    return d


class SQLiteStore:
    """The SQLite store at ``path`` (a file; ``":memory:"`` for a throw-away simulation).

    Opens in WAL mode with ``synchronous=FULL``, applies :data:`MIGRATIONS`, and refuses a
    database written by a newer escalator (``RuntimeError``).
    """

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                     timeout=30.0)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.execute("PRAGMA busy_timeout=30000")
        self._migrate()

    def _migrate(self) -> None:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                version = self._conn.execute("PRAGMA user_version").fetchone()[0]
                if version > len(MIGRATIONS):
                    raise RuntimeError(
                        f"database {self.path} has schema version {version}; this escalator "
                        f"knows {len(MIGRATIONS)}: upgrade escalator"
                    )
                for i in range(version, len(MIGRATIONS)):
                    for statement in MIGRATIONS[i].split(";"):
                        if statement.strip():
                            self._conn.execute(statement)
                    self._conn.execute(f"PRAGMA user_version = {i + 1}")
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    @property
    def schema_version(self) -> int:
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    @contextmanager
    def transaction(self) -> Iterator[SQLiteTx]:
        """A write transaction; commits durably on clean exit, rolls back on exception."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield SQLiteTx(self._conn)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._conn.close()
