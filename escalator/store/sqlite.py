"""SQLite store: WAL mode, ``synchronous=FULL`` (a commit survives power loss), versioned migrations.

One connection, serialised by a lock; write transactions start with ``BEGIN IMMEDIATE`` so two
processes (the daemon and a CLI ``ack``) never deadlock, they wait (``busy_timeout``).
Datetimes are stored as fixed-width UTC ISO-8601 text, so they sort and compare as text.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import structlog

from escalator.store.base import (
    CaseFact,
    Conflict,
    Delivery,
    HeartbeatDay,
    Incident,
    Notification,
    StepRun,
    StoreUnavailable,
    TimelineEntry,
)
from escalator.store.sql_nodes import MIGRATION as NODES_MIGRATION
from escalator.store.sql_nodes import SQLNodes
from escalator.store.sqlite_console import SQLiteConsole
from escalator.store.sqlite_early_warning import SQLiteEarlyWarning
from escalator.store.sqlite_quiet import MIGRATION as QUIET_MIGRATION
from escalator.store.sqlite_quiet import SQLiteQuiet
from escalator.store.sqlite_replies import SQLiteReplies
from escalator.store.sqlite_reports import SQLiteReports
from escalator.store.sqlite_roster import SQLiteRoster
from escalator.store.sqlite_rows import (
    case_fact,
    encode,
    event_dict,
    from_db,
    row_key_digest,
    row_to,
    to_db,
)

__all__ = ["MIGRATIONS", "SQLITE_VERSION", "SQLiteStore", "SQLiteTx", "from_db", "row_key_digest",
           "to_db"]

SQLITE_VERSION = sqlite3.sqlite_version
"""The SQLite library's version (``3.40.1``), for reports such as the benchmarks'."""


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
    # 4: symptom clusters and legal deadlines (docs/school-rules.md). Per incident: its reporting
    #    deadline (UTC), when the required level was first told, the timer that checks it (a row
    #    like every timer), the rule and its snapshotted targets. case_facts: one row per case
    #    event, scope (class:/dorm:) and group (a case counts in every syndrome group and disease
    #    it touches), with the school-local date — the clusters' counting is a query over these;
    #    cluster_members: who a cluster lists (with the group it counted under); cluster_groups:
    #    a cluster's groups (the union of its founding cases' groups; position 0 is the group
    #    whose threshold opened it) — a case of a shared group joins the cluster.
    """
    ALTER TABLE incidents ADD COLUMN deadline_at TEXT;
    ALTER TABLE incidents ADD COLUMN deadline_met_at TEXT;
    ALTER TABLE incidents ADD COLUMN deadline_check_at TEXT;
    ALTER TABLE incidents ADD COLUMN deadline_rule TEXT;
    ALTER TABLE incidents ADD COLUMN deadline_notify TEXT;
    CREATE INDEX incidents_deadline_due ON incidents(deadline_check_at)
        WHERE deadline_check_at IS NOT NULL;
    CREATE TABLE case_facts (
        event_id TEXT NOT NULL,
        scope TEXT NOT NULL,
        syndrome TEXT NOT NULL,
        subject_id TEXT NOT NULL,
        local_date TEXT NOT NULL,
        occurred_at TEXT NOT NULL,
        PRIMARY KEY (event_id, scope, syndrome)
    );
    CREATE INDEX case_facts_window ON case_facts(scope, syndrome, local_date);
    CREATE TABLE cluster_members (
        incident_id INTEGER NOT NULL REFERENCES incidents(id),
        scope TEXT NOT NULL,
        syndrome TEXT NOT NULL,
        subject_id TEXT NOT NULL,
        event_id TEXT NOT NULL,
        local_date TEXT NOT NULL,
        occurred_at TEXT NOT NULL,
        joined_at TEXT NOT NULL,
        PRIMARY KEY (incident_id, subject_id)
    );
    CREATE INDEX cluster_members_scope ON cluster_members(scope, syndrome);
    CREATE TABLE cluster_groups (
        incident_id INTEGER NOT NULL REFERENCES incidents(id),
        scope TEXT NOT NULL,
        syndrome TEXT NOT NULL,
        position INTEGER NOT NULL,
        PRIMARY KEY (incident_id, syndrome)
    );
    CREATE INDEX cluster_groups_scope ON cluster_groups(scope, syndrome);
    """,
    # 5: early warning from sickness absence (docs/early-warning.md). ew_cases: one row per
    #    counted event and group (``all``, a syndrome group id, or ``disease:<rule>``), with its
    #    school-local date, class, grade, dormitory, the pupil as a SHA-256 digest of the subject
    #    id (one pupil counts once a day; purged after the retention period) and the class size
    #    the register gave (应到人数). ew_signals: one row per series and date that signalled
    #    (``methods``: JSON list), with its incident. ew_outbreaks: incidents opened by a fixed
    #    outbreak threshold. ew_links: an early-warning incident linked to a cluster.
    """
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
    """,
    # 6: delivery that keeps up (docs/delivery.md): a notification's priority (from its
    #    incident's severity: 0 critical, 1 high, 2 the rest), claimed by priority then due time;
    #    the pending rows to one address of one priority by id (the order per recipient, and a
    #    digest's rows) through an index instead of a scan of the backlog; when a step run's
    #    first message was delivered (or failed for good): its timeout counts from then
    """
    ALTER TABLE notifications ADD COLUMN priority INTEGER NOT NULL DEFAULT 2;
    DROP INDEX notifications_due;
    CREATE INDEX notifications_due ON notifications(priority, due_at) WHERE status = 'pending';
    CREATE INDEX notifications_address ON notifications(channel, address, priority, id)
        WHERE status = 'pending';
    ALTER TABLE step_runs ADD COLUMN first_delivered_at TEXT;
    """,
    # silences and groups (docs/silences.md): silences, the incidents they hold, the groups of
    # grouping routes and their members (the SQL lives with its queries in sqlite_quiet.py)
    QUIET_MIGRATION,
    # roster overrides and swaps (escalator/store/sqlite_roster.py, docs/rosters.md)
    """
    CREATE TABLE roster_overrides (
        id INTEGER PRIMARY KEY,
        role TEXT NOT NULL,
        person TEXT NOT NULL,
        replaces TEXT,
        starts_at TEXT NOT NULL,
        ends_at TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at TEXT NOT NULL,
        comment TEXT,
        swap_id INTEGER,
        cancelled_at TEXT,
        cancelled_by TEXT
    );
    CREATE INDEX roster_overrides_time ON roster_overrides(ends_at, starts_at);
    """,
    # decisions at a level (docs/decisions.md): how many reminders the level an incident waits
    #    on has had since its walk stopped (NULL while the walk goes on)
    """
    ALTER TABLE incidents ADD COLUMN reminders INTEGER;
    """,
    # the web console (docs/console.md): one-time sign-in links and sessions, each by a
    #    SHA-256 digest of its secret (a copy of the database signs nobody in)
    """
    CREATE TABLE console_login_tokens (
        digest TEXT PRIMARY KEY,
        person_id TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        used_at TEXT
    );
    CREATE TABLE console_sessions (
        digest TEXT PRIMARY KEY,
        person_id TEXT NOT NULL,
        csrf TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL
    );
    """,
    # reply codes (docs/replies.md): the short code a recipient answers an incident with from
    # the phone ("回复 1a 确认"), mapped to the ack token of the notification that carried it
    """
    CREATE TABLE reply_codes (
        recipient_kind TEXT NOT NULL,
        recipient_id TEXT NOT NULL,
        code TEXT NOT NULL,
        incident_id INTEGER NOT NULL REFERENCES incidents(id),
        notification_id INTEGER NOT NULL REFERENCES notifications(id),
        ack_token TEXT NOT NULL,
        assigned_at TEXT NOT NULL,
        PRIMARY KEY (recipient_kind, recipient_id, code)
    );
    CREATE UNIQUE INDEX reply_codes_incident ON reply_codes(recipient_kind, recipient_id, incident_id);
    """,
    # 12: several daemons on one database (docs/reliability.md "Several daemons"): nodes,
    #     leases, shared send windows, the node that claimed a sending row (sql_nodes.py)
    NODES_MIGRATION,
]
"""Schema migrations, applied in order; ``PRAGMA user_version`` records how many ran."""


class SQLiteTx(SQLiteReports, SQLiteEarlyWarning, SQLiteQuiet, SQLiteRoster, SQLiteConsole,
               SQLiteReplies, SQLNodes):
    """A transaction on :class:`SQLiteStore` (implements :class:`escalator.store.base.Tx`; the
    ledger reads and the purge are in :class:`~escalator.store.sqlite_reports.SQLiteReports`,
    early warning's rows in :class:`~escalator.store.sqlite_early_warning.SQLiteEarlyWarning`,
    roster overrides in :class:`~escalator.store.sqlite_roster.SQLiteRoster`).
    ``c`` is the connection: for this module and SQLite-specific tests only."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.c = conn

    def _insert(self, table: str, values: dict[str, Any]) -> int:
        cols = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        cur = self.c.execute(
            f"INSERT INTO {table} ({cols}) VALUES ({marks})", [encode(v) for v in values.values()]
        )
        return int(cur.lastrowid or 0)

    def _update(self, table: str, key: Any, values: dict[str, Any]) -> None:
        sets = ", ".join(f"{k} = ?" for k in values)
        self.c.execute(
            f"UPDATE {table} SET {sets} WHERE id = ?", [*(encode(v) for v in values.values()), key]
        )

    # events
    def insert_event(self, **values: Any) -> None:
        self._insert("events", values)

    def get_event(self, event_id: str) -> dict[str, Any] | None:
        row = self.c.execute("SELECT * FROM events WHERE id = ?", (event_id,)).fetchone()
        return event_dict(row) if row else None

    def events_of(self, incident_id: int) -> list[dict[str, Any]]:
        rows = self.c.execute(
            "SELECT * FROM events WHERE incident_id = ? ORDER BY received_at, rowid", (incident_id,)
        )
        return [event_dict(r) for r in rows]

    # incidents
    def open_incident_by_key(self, dedup_key: str) -> Incident | None:
        row = self.c.execute(
            "SELECT * FROM incidents WHERE dedup_key = ? AND state != 'resolved'", (dedup_key,)
        ).fetchone()
        return row_to(Incident, row) if row else None

    def insert_incident(self, **values: Any) -> int:
        return self._insert("incidents", values)

    def get_incident(self, incident_id: int) -> Incident | None:
        row = self.c.execute("SELECT * FROM incidents WHERE id = ?", (incident_id,)).fetchone()
        return row_to(Incident, row) if row else None

    def update_incident(self, incident_id: int, **values: Any) -> None:
        self._update("incidents", incident_id, values)

    def list_incidents(self, states: tuple[str, ...], limit: int) -> list[Incident]:
        marks = ", ".join("?" for _ in states)
        rows = self.c.execute(
            f"SELECT * FROM incidents WHERE state IN ({marks}) ORDER BY id DESC LIMIT ?",
            (*states, limit),
        )
        return [row_to(Incident, r) for r in rows]

    def due_incidents(self, now: datetime, limit: int) -> list[int]:
        rows = self.c.execute(
            # each arm takes at most ?2 rows from its index (the first ?2 ids overall are
            # among them), so a tick costs the same with 100,000 incidents overdue as with 10
            "SELECT id FROM ("
            " SELECT * FROM (SELECT id, next_step_at AS t FROM incidents"
            "  WHERE next_step_at IS NOT NULL AND next_step_at <= ?1 ORDER BY t LIMIT ?2)"
            " UNION ALL SELECT * FROM (SELECT id, deadline_check_at AS t FROM incidents"
            "  WHERE deadline_check_at IS NOT NULL AND deadline_check_at <= ?1 ORDER BY t LIMIT ?2))"
            " GROUP BY id ORDER BY MIN(t) LIMIT ?2",
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
        return row_to(StepRun, row) if row else None

    def latest_step_run(self, incident_id: int) -> StepRun | None:
        row = self.c.execute(
            "SELECT * FROM step_runs WHERE incident_id = ? ORDER BY id DESC LIMIT 1", (incident_id,)
        ).fetchone()
        return row_to(StepRun, row) if row else None

    def mark_step_delivered(self, step_run_id: int, at: datetime) -> bool:
        return self.c.execute(
            "UPDATE step_runs SET first_delivered_at = ? WHERE id = ? AND first_delivered_at IS NULL",
            (to_db(at), step_run_id),
        ).rowcount == 1

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
        return row_to(Notification, row) if row else None

    def notification_by_token(self, token: str) -> Notification | None:
        row = self.c.execute(
            "SELECT * FROM notifications WHERE ack_token = ?", (token,)
        ).fetchone()
        return row_to(Notification, row) if row else None

    def notifications_of(self, incident_id: int) -> list[Notification]:
        rows = self.c.execute(
            "SELECT * FROM notifications WHERE incident_id = ? ORDER BY id", (incident_id,)
        )
        return [row_to(Notification, r) for r in rows]

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

    def claim_notifications(self, now: datetime, limit: int, node: str) -> list[Notification]:
        rows = self.c.execute(
            # one arm per priority, each a range of the pending rows' index (priority, due_at),
            # so rows held for later are never read
            "UPDATE notifications SET status = 'sending', updated_at = ?1, claimed_by = ?3"
            " WHERE id IN ("
            " SELECT id FROM ("
            "  SELECT * FROM (SELECT id, priority, due_at FROM notifications INDEXED BY"
            "   notifications_due WHERE status = 'pending' AND priority = 0 AND due_at <= ?1"
            "   ORDER BY priority, due_at, id LIMIT ?2)"
            "  UNION ALL"
            "  SELECT * FROM (SELECT id, priority, due_at FROM notifications INDEXED BY"
            "   notifications_due WHERE status = 'pending' AND priority = 1 AND due_at <= ?1"
            "   ORDER BY priority, due_at, id LIMIT ?2)"
            "  UNION ALL"
            "  SELECT * FROM (SELECT id, priority, due_at FROM notifications INDEXED BY"
            "   notifications_due WHERE status = 'pending' AND priority = 2 AND due_at <= ?1"
            "   ORDER BY priority, due_at, id LIMIT ?2)"
            " ) ORDER BY priority, due_at, id LIMIT ?2) RETURNING *",
            (to_db(now), limit, node),
        ).fetchall()
        return sorted((row_to(Notification, r) for r in rows),
                      key=lambda n: (n.priority, n.due_at, n.id))

    def claim_address(self, channel: str, address: str, priority: int, now: datetime,
                      limit: int, node: str) -> list[Notification]:
        rows = self.c.execute(
            "UPDATE notifications SET status = 'sending', updated_at = ?1, claimed_by = ?6"
            " WHERE id IN ("
            " SELECT id FROM notifications INDEXED BY notifications_address"
            " WHERE channel = ?2 AND address = ?3 AND status = 'pending' AND priority = ?4"
            " AND due_at <= ?1 ORDER BY id LIMIT ?5) RETURNING *",
            (to_db(now), channel, address, priority, limit, node),
        ).fetchall()
        return sorted((row_to(Notification, r) for r in rows), key=lambda n: n.id)

    def sending_states(self, notification_ids: Sequence[int]) -> dict[int, str]:
        if not notification_ids:
            return {}
        marks = ", ".join("?" for _ in notification_ids)
        return dict(self.c.execute(
            "SELECT n.id, i.state FROM notifications n JOIN incidents i ON i.id = n.incident_id"
            f" WHERE n.id IN ({marks}) AND n.status = 'sending'", list(notification_ids)))

    def update_notification(self, notification_id: int, **values: Any) -> None:
        self._update("notifications", notification_id, values)

    def release_claims(self, node: str) -> int:
        return self.c.execute(
            "UPDATE notifications SET status = 'pending', claimed_by = NULL"
            " WHERE status = 'sending' AND claimed_by = ?", (node,)
        ).rowcount

    def waiting_ahead(self, channel: str, address: str, before_id: int,
                      priority: int = 2) -> Notification | None:
        row = self.c.execute(
            # a seek in the pending rows' index (channel, address, priority, id): no backlog read
            "SELECT * FROM notifications INDEXED BY notifications_address WHERE channel = ?"
            " AND address = ? AND status = 'pending' AND priority = ? AND id < ? ORDER BY id LIMIT 1",
            (channel, address, priority, before_id)).fetchone()
        return row_to(Notification, row) if row else None

    def add_delivery(self, **values: Any) -> None:
        self._insert("deliveries", values)

    def deliveries_of(self, notification_id: int) -> list[Delivery]:
        rows = self.c.execute(
            "SELECT * FROM deliveries WHERE notification_id = ? ORDER BY id", (notification_id,)
        )
        return [row_to(Delivery, r) for r in rows]

    # timeline and timers
    def add_timeline(self, incident_id: int, at: datetime, type: str, actor: str | None,
                     detail: dict[str, Any]) -> None:
        self._insert("timeline", {"incident_id": incident_id, "at": at, "type": type,
                                  "actor": actor, "detail": detail})

    def timeline(self, incident_id: int) -> list[TimelineEntry]:
        rows = self.c.execute(
            "SELECT * FROM timeline WHERE incident_id = ? ORDER BY id", (incident_id,)
        )
        return [row_to(TimelineEntry, r) for r in rows]

    def next_due(self) -> datetime | None:
        row = self.c.execute(
            "SELECT MIN(t) FROM ("
            " SELECT MIN(next_step_at) AS t FROM incidents WHERE next_step_at IS NOT NULL"
            " UNION ALL SELECT MIN(deadline_check_at) FROM incidents"
            "  WHERE deadline_check_at IS NOT NULL"
            # one seek per priority in the pending rows' index (priority, due_at): a MIN over
            # all priorities at once would read every pending row (a backlog on every sleep)
            " UNION ALL SELECT MIN(due_at) FROM notifications WHERE status = 'pending'"
            "  AND priority = 0"
            " UNION ALL SELECT MIN(due_at) FROM notifications WHERE status = 'pending'"
            "  AND priority = 1"
            " UNION ALL SELECT MIN(due_at) FROM notifications WHERE status = 'pending'"
            "  AND priority = 2)"
        ).fetchone()
        return from_db(row[0]) if row and row[0] else None

    def row_key_seen(self, row_key: str) -> bool:
        return self.c.execute(
            "SELECT 1 FROM events WHERE row_key IN (?, ?)", (row_key, row_key_digest(row_key))
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
        return None if row is None else row_to(HeartbeatDay, row)

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

    # symptom clusters and deadlines
    def add_case_fact(self, fact: CaseFact) -> None:
        self.c.execute(
            "INSERT OR IGNORE INTO case_facts (event_id, scope, syndrome, subject_id, local_date,"
            " occurred_at) VALUES (?, ?, ?, ?, ?, ?)",
            (fact.event_id, fact.scope, fact.syndrome, fact.subject_id, fact.local_date.isoformat(),
             to_db(fact.occurred_at)),
        )

    def case_facts(self, scope: str, syndrome: str, first: date, last: date) -> list[CaseFact]:
        rows = self.c.execute(
            "SELECT * FROM case_facts f WHERE scope = ? AND syndrome = ?"
            " AND local_date BETWEEN ? AND ?"
            # a case already listed by a cluster of this scope and group (open or resolved —
            # reported) does not count towards a new one
            " AND NOT EXISTS (SELECT 1 FROM cluster_members m JOIN cluster_groups g"
            "   ON g.incident_id = m.incident_id AND g.syndrome = f.syndrome"
            "   WHERE m.scope = f.scope AND m.event_id = f.event_id)"
            " ORDER BY occurred_at, rowid",
            (scope, syndrome, first.isoformat(), last.isoformat()),
        )
        return [case_fact(r) for r in rows]

    def fact_groups(self, scope: str, event_ids: list[str]) -> list[str]:
        marks = ", ".join("?" * len(event_ids))
        rows = self.c.execute(
            f"SELECT DISTINCT syndrome FROM case_facts WHERE scope = ? AND event_id IN ({marks})",
            (scope, *event_ids),
        )
        return [r[0] for r in rows]

    def open_cluster(self, scope: str, groups: list[str]) -> int | None:
        if not groups:
            return None
        marks = ", ".join("?" * len(groups))
        row = self.c.execute(
            "SELECT g.incident_id FROM cluster_groups g JOIN incidents i ON i.id = g.incident_id"
            f" WHERE g.scope = ? AND g.syndrome IN ({marks}) AND i.state != 'resolved'"
            " ORDER BY g.incident_id LIMIT 1", (scope, *groups),
        ).fetchone()
        return None if row is None else int(row[0])

    def add_cluster_groups(self, incident_id: int, scope: str, groups: list[str]) -> None:
        self.c.executemany(
            "INSERT OR IGNORE INTO cluster_groups (incident_id, scope, syndrome, position)"
            " VALUES (?, ?, ?, ?)", [(incident_id, scope, g, i) for i, g in enumerate(groups)],
        )

    def cluster_groups(self, incident_id: int) -> list[str]:
        rows = self.c.execute(
            "SELECT syndrome FROM cluster_groups WHERE incident_id = ? ORDER BY position",
            (incident_id,),
        )
        return [r[0] for r in rows]

    def add_cluster_member(self, incident_id: int, fact: CaseFact, at: datetime) -> bool:
        return self.c.execute(
            "INSERT OR IGNORE INTO cluster_members (incident_id, scope, syndrome, subject_id,"
            " event_id, local_date, occurred_at, joined_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (incident_id, fact.scope, fact.syndrome, fact.subject_id, fact.event_id,
             fact.local_date.isoformat(), to_db(fact.occurred_at), to_db(at)),
        ).rowcount == 1

    def cluster_members(self, incident_id: int) -> list[CaseFact]:
        rows = self.c.execute(
            "SELECT * FROM cluster_members WHERE incident_id = ? ORDER BY occurred_at, rowid",
            (incident_id,),
        )
        return [case_fact(r) for r in rows]

    def mark_deadline_met(self, incident_id: int, at: datetime) -> bool:
        return self.c.execute(
            "UPDATE incidents SET deadline_met_at = ?, deadline_check_at = NULL"
            " WHERE id = ? AND deadline_met_at IS NULL", (to_db(at), incident_id),
        ).rowcount == 1


def _cause(e: sqlite3.Error) -> str:
    """``database or disk is full (SQLITE_FULL)``: the message and SQLite's error name."""
    return f"{e} ({getattr(e, 'sqlite_errorname', None) or type(e).__name__})"


@contextmanager
def translated() -> Iterator[None]:
    """Turn a driver error into the store's typed errors: a constraint (unique key taken)
    into :class:`Conflict`, any other ``sqlite3`` error (full, I/O, read-only, locked, not a
    database, closed) into :class:`StoreUnavailable`. Every entry point of :class:`SQLiteStore`
    runs inside it, so no ``sqlite3`` error reaches a caller."""
    try:
        yield
    except sqlite3.IntegrityError as e:
        raise Conflict(_cause(e)) from e
    except sqlite3.Error as e:
        raise StoreUnavailable(_cause(e)) from e


log = structlog.get_logger("escalator.store")

FILE_CHECK_SECONDS = 2.0
"""How often :meth:`SQLiteStore.watch` looks at the database and WAL files (seconds)."""


def _identity(path: str) -> tuple[int, int] | None:
    """``(device, inode)`` of ``path``, or None when there is no such file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


class SQLiteStore:
    """The SQLite store at ``path`` (a file; ``":memory:"`` for a throw-away simulation).

    Opens in WAL mode with ``synchronous=FULL``, applies :data:`MIGRATIONS`, and refuses a
    database written by a newer escalator (``RuntimeError``). A file that cannot be opened,
    read or migrated (not a database, no access, disk full) raises :class:`StoreUnavailable`;
    a folder that cannot be created, ``OSError``.

    Files gone: when the database file or its ``-wal`` file is deleted or replaced under the
    open connection (another inode at the path), the store is *lost* (:attr:`lost` names the
    cause): what it committed is rescued (:meth:`_rescue`) and every later transaction raises
    :class:`StoreUnavailable` — it never writes on into an unlinked file. Each transaction
    looks first; :meth:`watch` looks every :data:`FILE_CHECK_SECONDS` from a thread of its own.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        with translated():
            self._conn = sqlite3.connect(self.path, isolation_level=None,
                                         check_same_thread=False, timeout=30.0)
            try:
                self._conn.row_factory = sqlite3.Row
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=FULL")
                self._conn.execute("PRAGMA foreign_keys=ON")
                self._conn.execute("PRAGMA busy_timeout=30000")
                self._migrate()
            except BaseException:
                self._conn.close()
                raise
        self.lost: str | None = None
        """Why the store's files are gone (set once, never cleared), or None."""
        self._files = ({} if self.path == ":memory:" else
                       {p: _identity(p) for p in (self.path, self.path + "-wal")})
        self._on_lost: Callable[[str], None] | None = None
        self._watching = threading.Event()

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
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    @property
    def schema_version(self) -> int:
        """How many :data:`MIGRATIONS` the database has (``PRAGMA user_version``);
        :class:`StoreUnavailable` when it cannot be read."""
        with self._lock, translated():
            return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def check_files(self) -> str | None:
        """Whether the database and WAL files at the path are still the ones open. Returns
        :attr:`lost` (None while they are). The first time a file is found deleted or replaced,
        the committed data is rescued and ``on_lost`` (see :meth:`watch`) is called."""
        if self.lost is not None or not self._files:
            return self.lost
        with self._lock:  # one finder: the monitor thread or a transaction
            if self.lost is not None:
                return self.lost
            for path, opened in self._files.items():
                now = _identity(path)
                if opened is None:  # (a WAL file that did not exist yet at open)
                    self._files[path] = now
                elif now != opened:
                    what = "database file" if path == self.path else "WAL file"
                    self.lost = (f"the {what} {path} was "
                                 f"{'deleted' if now is None else 'replaced'} while escalator had it open")
                    break
            else:
                return None
            self._rescue()
        if self._on_lost is not None:
            self._on_lost(self.lost)
        return self.lost

    def _rescue(self) -> None:
        """Keep what was committed (best effort, logged): with only the WAL file gone, write
        its pages into the database file (a checkpoint through the open connection); with the
        database file gone or replaced, copy the open database to ``<path>.rescued-<UTC time>``
        (the administrator puts it back in place)."""
        try:
            if _identity(self.path) == self._files[self.path]:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                log.error("store_lost", reason=self.lost, rescued="checkpointed into the database file")
                return
            target = f"{self.path}.rescued-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}"
            copy = sqlite3.connect(target)
            try:
                self._conn.backup(copy)
            finally:
                copy.close()
            log.error("store_lost", reason=self.lost, rescued=target)
        except Exception as e:
            log.error("store_lost", reason=self.lost, rescue_failed=f"{type(e).__name__}: {e}")

    def watch(self, on_lost: Callable[[str], None], interval: float = FILE_CHECK_SECONDS) -> None:
        """Look at the files every ``interval`` seconds from a daemon thread (until
        :meth:`close`); ``on_lost(cause)`` is called once, from whichever thread found them
        gone (it must be thread-safe)."""
        self._on_lost = on_lost

        def run() -> None:
            while not self._watching.wait(interval):
                if self.check_files() is not None:
                    return

        threading.Thread(target=run, name="escalator-store-files", daemon=True).start()

    @contextmanager
    def transaction(self) -> Iterator[SQLiteTx]:
        """A write transaction; commits durably on clean exit, rolls back on exception.

        A driver error becomes :class:`Conflict` or :class:`StoreUnavailable` (:func:`translated`);
        any other exception reaches the caller as it is. SQLite may already have rolled the
        transaction back itself (e.g. ``SQLITE_FULL``, ``SQLITE_IOERR``), and a failed
        ``COMMIT`` is rolled back too, so the connection is never left inside a transaction.
        Once the files are gone (:meth:`check_files`), raises :class:`StoreUnavailable`."""
        if self.check_files() is not None:
            raise StoreUnavailable(self.lost or "store lost")
        with self._lock, translated():
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield SQLiteTx(self._conn)
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._watching.set()
        with self._lock, translated():
            self._conn.close()
