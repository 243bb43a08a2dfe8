"""SQLite store: WAL mode, ``synchronous=FULL`` (a commit survives power loss), versioned migrations.

One connection, serialised by a lock; write transactions start with ``BEGIN IMMEDIATE`` so two
processes (the daemon, its delivery process, a CLI ``ack``) never deadlock, they wait: for the
write lock by short polls (:meth:`SQLiteStore._begin`; SQLite's own busy handler sleeps 1, 2,
5, 10 … 100 ms, which left the lock idle between two writers' turns), otherwise
``busy_timeout``.
Datetimes are stored as fixed-width UTC ISO-8601 text, so they sort and compare as text.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import structlog

from escalator.store.base import Conflict, StoreUnavailable
from escalator.store.sql_core import SQLTx
from escalator.store.sql_dialect import SQLITE
from escalator.store.sql_nodes import MIGRATION as NODES_MIGRATION
from escalator.store.sql_quiet import MIGRATION as QUIET_MIGRATION
from escalator.store.sql_rows import from_db, row_key_digest, to_db

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
    # grouping routes and their members (the SQL lives with its queries in sql_quiet.py)
    QUIET_MIGRATION,
    # roster overrides and swaps (escalator/store/sql_roster.py, docs/rosters.md)
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


class SQLiteTx(SQLTx):
    """A transaction on :class:`SQLiteStore`: the shared queries of
    :class:`~escalator.store.sql_core.SQLTx` on the ``sqlite3`` connection ``c``."""

    d = SQLITE

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

BUSY_TIMEOUT = 30.0
"""Seconds a transaction waits for the write lock before the store counts as unavailable."""
BUSY_POLL = (0.0002, 0.002)
"""First and longest pause (seconds) between two tries for the write lock (doubling)."""

FILE_CHECK_SECONDS = 2.0
"""How often :meth:`SQLiteStore.watch` looks at the database and WAL files (seconds)."""


def _identity(path: str) -> tuple[int, int] | None:
    """``(device, inode)`` of ``path``, or None when there is no such file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def _connect(path: str) -> sqlite3.Connection:
    """A connection of the store (the writer's or the snapshot's): transactions begun
    explicitly, used from the store's threads, rows by column name, :data:`BUSY_TIMEOUT`."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                           timeout=BUSY_TIMEOUT)
    conn.row_factory = sqlite3.Row
    return conn


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
            self._conn = _connect(self.path)
            try:
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=FULL")
                self._conn.execute("PRAGMA foreign_keys=ON")
                self._conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")
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
        self._reader: sqlite3.Connection | None = None
        """The connection of :meth:`snapshot`, opened with the writer's (so both are on the
        files whose identities :meth:`check_files` compares); None for ``:memory:``."""
        self._read_lock = threading.Lock()
        if self.path != ":memory:":
            with translated():
                try:
                    self._reader = _connect(self.path)
                    self._reader.execute("PRAGMA query_only=1")
                except BaseException:
                    self._conn.close()
                    raise

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

    def schema_version(self) -> int:
        """How many :data:`MIGRATIONS` the database has (``PRAGMA user_version``);
        :class:`StoreUnavailable` when it cannot be read."""
        with self._lock, translated():
            return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def describe(self) -> str:
        """The backend and its version, for logs and reports: ``SQLite 3.40.1``."""
        return f"SQLite {SQLITE_VERSION}"

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
            self._begin()
            try:
                yield SQLiteTx(self._conn)
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    @contextmanager
    def snapshot(self) -> Iterator[SQLiteTx]:
        """A read of what is committed (:meth:`escalator.store.base.Store.snapshot`): a
        deferred transaction on a second connection (``PRAGMA query_only``; WAL lets it read
        while the writer's transaction runs), rolled back at the end. ``:memory:`` has one
        connection: a :meth:`transaction` instead. Once the files are found gone (by the
        file monitor or a write transaction: the check takes the writer's lock, which a
        snapshot must not wait for), :class:`StoreUnavailable`."""
        if self._reader is None:  # :memory:
            with self.transaction() as tx:
                yield tx
            return
        if self.lost is not None:
            raise StoreUnavailable(self.lost)
        with self._read_lock, translated():
            self._reader.execute("BEGIN")
            try:
                yield SQLiteTx(self._reader)
            finally:
                if self._reader.in_transaction:
                    self._reader.execute("ROLLBACK")

    def _begin(self) -> None:
        """``BEGIN IMMEDIATE``, polling for the write lock every 0.2 ms, doubling up to 2 ms,
        for at most :data:`BUSY_TIMEOUT` seconds (then ``sqlite3.OperationalError``, "database
        is locked"). Another process's transaction of a few ms is followed at once, where
        SQLite's busy handler would sleep in coarse steps."""
        conn = self._conn
        conn.execute("PRAGMA busy_timeout=0")
        try:
            pause, deadline = BUSY_POLL[0], None
            while True:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as e:
                    if e.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:  # BUSY_RECOVERY too
                        raise
                    now = time.monotonic()
                    deadline = deadline or now + BUSY_TIMEOUT
                    if now >= deadline:
                        raise
                time.sleep(pause)
                pause = min(pause * 2, BUSY_POLL[1])
        finally:
            conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._watching.set()
        with self._lock, translated():
            self._conn.close()
        with self._read_lock, translated():
            if self._reader is not None:
                self._reader.close()
