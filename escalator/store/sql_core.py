"""The store's core rows in SQL both backends speak: events, incidents, step runs, the outbox,
the timeline and timers, spool files, heartbeat days, case facts and clusters — and
:class:`SQLTx`, the transaction class that mixes in the other ``sql_*`` modules.

One SQL, two drivers: :class:`~escalator.store.sqlite.SQLiteTx` runs these queries on a
``sqlite3`` connection, :class:`~escalator.store.postgres.PostgresTx` on psycopg through an
adapter that translates the ``?`` marks; the few differences are the hooks of
:mod:`escalator.store.sql_dialect`. Values are stored alike on both (:mod:`escalator.store.sql_rows`:
datetimes as fixed-width UTC text, JSON as text, booleans as 0/1), so a row copies as it is.
Tables with a ``rowid`` in the queries (events, case facts, cluster members, early warning's
cases) have that column on PostgreSQL (SQLite's own otherwise): insertion order.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from escalator.store.base import (
    CaseFact,
    Delivery,
    HeartbeatDay,
    Incident,
    Notification,
    StepRun,
    TimelineEntry,
)
from escalator.store.sql_console import SQLConsole
from escalator.store.sql_dialect import Connection, Dialect
from escalator.store.sql_early_warning import SQLEarlyWarning
from escalator.store.sql_nodes import SQLNodes
from escalator.store.sql_quiet import SQLQuiet
from escalator.store.sql_replies import SQLReplies
from escalator.store.sql_reports import SQLReports
from escalator.store.sql_roster import SQLRoster
from escalator.store.sql_rows import (
    case_fact,
    encode,
    event_dict,
    from_db,
    row_key_digest,
    row_to,
    to_db,
)


@functools.lru_cache(maxsize=512)
def _insert_sql(table: str, columns: tuple[str, ...], tail: str) -> str:
    """``INSERT INTO table (columns) VALUES (?, …)`` + ``tail``, made once per column set."""
    return (f"INSERT INTO {table} ({', '.join(columns)})"
            f" VALUES ({', '.join('?' for _ in columns)}){tail}")


@functools.lru_cache(maxsize=512)
def _update_sql(table: str, columns: tuple[str, ...]) -> str:
    """``UPDATE table SET column = ?, … WHERE id = ?``, made once per column set."""
    return f"UPDATE {table} SET {', '.join(f'{k} = ?' for k in columns)} WHERE id = ?"


class SQLTx(SQLReports, SQLEarlyWarning, SQLQuiet, SQLRoster, SQLConsole, SQLReplies, SQLNodes):
    """A transaction of either SQL backend (implements :class:`escalator.store.base.Tx`): the
    core rows here; the ledger reads and the purge in
    :class:`~escalator.store.sql_reports.SQLReports`, early warning's rows in
    :class:`~escalator.store.sql_early_warning.SQLEarlyWarning`, roster overrides in
    :class:`~escalator.store.sql_roster.SQLRoster`, and so on.

    ``c`` is the connection (a ``sqlite3`` connection, or PostgreSQL's adapter
    :class:`~escalator.store.postgres.PgConnection` that speaks the same ``?`` SQL): for the
    store's modules and backend-specific tests only. ``d`` is the backend's
    :class:`~escalator.store.sql_dialect.Dialect`."""

    d: Dialect

    def __init__(self, conn: Connection) -> None:
        self.c = conn

    def _insert(self, table: str, values: dict[str, Any]) -> int:
        """Insert a row of a table with an integer ``id``; returns the new id."""
        return int(self.c.execute(_insert_sql(table, tuple(values), " RETURNING id"),
                                  [encode(v) for v in values.values()]).fetchone()[0])

    def _insert_row(self, table: str, values: dict[str, Any]) -> None:
        """Insert a row of a table without an integer id (events, spool files)."""
        self.c.execute(_insert_sql(table, tuple(values), ""),
                       [encode(v) for v in values.values()])

    def _update(self, table: str, key: Any, values: dict[str, Any]) -> None:
        self.c.execute(_update_sql(table, tuple(values)),
                       [*(encode(v) for v in values.values()), key])

    # events
    def insert_event(self, **values: Any) -> None:
        self._insert_row("events", values)

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
        # PostgreSQL: locked like get_incident — intake counts a duplicate on this row (event
        # count, severity, group), and two daemons counting at once must take turns
        row = self.c.execute(
            f"SELECT * FROM incidents WHERE dedup_key = ? AND state != 'resolved'{self.d.lock()}",
            (dedup_key,)).fetchone()
        return row_to(Incident, row) if row else None

    def insert_incident(self, **values: Any) -> int:
        return self._insert("incidents", values)

    def get_incident(self, incident_id: int) -> Incident | None:
        # PostgreSQL: the row stays locked until the transaction ends, so two daemons never
        # advance the same incident at once (the second waits, then reads the first's result)
        row = self.c.execute(f"SELECT * FROM incidents WHERE id = ?{self.d.lock()}",
                             (incident_id,)).fetchone()
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
            # (PostgreSQL: rows another daemon's tick holds are skipped, and the ones taken stay
            # locked until this transaction, which advances them, ends)
            "SELECT id FROM ("
            " SELECT * FROM (SELECT id, next_step_at AS t FROM incidents"
            "  WHERE next_step_at IS NOT NULL AND next_step_at <= ?1 ORDER BY t LIMIT ?2"
            f"{self.d.lock(skip_locked=True)}) AS s"
            " UNION ALL SELECT * FROM (SELECT id, deadline_check_at AS t FROM incidents"
            "  WHERE deadline_check_at IS NOT NULL AND deadline_check_at <= ?1 ORDER BY t LIMIT ?2"
            f"{self.d.lock(skip_locked=True)}) AS d) AS due"
            " GROUP BY id ORDER BY MIN(t), id LIMIT ?2",
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
        # one arm per priority, each a range of the pending rows' index (priority, due_at),
        # so rows held for later are never read; PostgreSQL skips rows another daemon is
        # claiming (each row is claimed once)
        def arm(priority: int) -> str:
            return ("SELECT * FROM (SELECT id, priority, due_at FROM notifications"
                    f"{self.d.indexed_by('notifications_due')} WHERE status = 'pending'"
                    f" AND priority = {priority} AND due_at <= ?1 ORDER BY priority, due_at, id"
                    f" LIMIT ?2{self.d.lock(skip_locked=True)}) AS p{priority}")

        rows = self.c.execute(
            "UPDATE notifications SET status = 'sending', updated_at = ?1, claimed_by = ?3"
            " WHERE id IN ("
            " SELECT id FROM ("
            f"  {arm(0)} UNION ALL {arm(1)} UNION ALL {arm(2)}"
            " ) AS due ORDER BY priority, due_at, id LIMIT ?2) RETURNING *",
            (to_db(now), limit, node),
        ).fetchall()
        return sorted((row_to(Notification, r) for r in rows),
                      key=lambda n: (n.priority, n.due_at, n.id))

    def claim_address(self, channel: str, address: str, priority: int, now: datetime,
                      limit: int, node: str) -> list[Notification]:
        rows = self.c.execute(
            "UPDATE notifications SET status = 'sending', updated_at = ?1, claimed_by = ?6"
            " WHERE id IN ("
            f" SELECT id FROM notifications{self.d.indexed_by('notifications_address')}"
            " WHERE channel = ?2 AND address = ?3 AND status = 'pending' AND priority = ?4"
            f" AND due_at <= ?1 ORDER BY id LIMIT ?5{self.d.lock(skip_locked=True)}) RETURNING *",
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
            f"SELECT * FROM notifications{self.d.indexed_by('notifications_address')} WHERE channel = ?"
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

    def next_due(self, *, steps: bool = True, sends: bool = True) -> datetime | None:
        parts = []
        if steps:
            parts += ["SELECT MIN(next_step_at) AS t FROM incidents WHERE next_step_at IS NOT NULL",
                      "SELECT MIN(deadline_check_at) FROM incidents WHERE deadline_check_at IS NOT NULL"]
        if sends:
            # one seek per priority in the pending rows' index (priority, due_at): a MIN over
            # all priorities at once would read every pending row (a backlog on every sleep)
            parts += [f"SELECT MIN(due_at) AS t FROM notifications WHERE status = 'pending'"
                      f" AND priority = {p}" for p in (0, 1, 2)]
        if not parts:
            return None
        row = self.c.execute(f"SELECT MIN(t) FROM ({' UNION ALL '.join(parts)}) AS timers").fetchone()
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
        self._insert_row("spool_files", values)

    # heartbeat monitors
    def heartbeat_watched_since(self, monitor: str, today: date) -> date:
        self.c.execute("INSERT INTO heartbeat_monitors (monitor, since) VALUES (?, ?)"
                       " ON CONFLICT DO NOTHING", (monitor, today.isoformat()))
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
            "INSERT INTO case_facts (event_id, scope, syndrome, subject_id, local_date,"
            " occurred_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
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
            "INSERT INTO cluster_groups (incident_id, scope, syndrome, position)"
            " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING", [(incident_id, scope, g, i) for i, g in enumerate(groups)],
        )

    def cluster_groups(self, incident_id: int) -> list[str]:
        rows = self.c.execute(
            "SELECT syndrome FROM cluster_groups WHERE incident_id = ? ORDER BY position",
            (incident_id,),
        )
        return [r[0] for r in rows]

    def add_cluster_member(self, incident_id: int, fact: CaseFact, at: datetime) -> bool:
        return self.c.execute(
            "INSERT INTO cluster_members (incident_id, scope, syndrome, subject_id,"
            " event_id, local_date, occurred_at, joined_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING",
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
