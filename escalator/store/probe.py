"""What a database is, without opening it as a store: for ``escalator migrate``,
``check-config`` and ``/healthz`` (docs/install.md, "Several daemons on one PostgreSQL").

A *target* is what the ``database_url`` setting holds: a ``postgresql://`` URL or the path of a
SQLite file. Nothing here migrates or writes: :func:`inspect` reads the backend, the server's
version and the schema version on a connection of its own; :class:`Probe` is ``/healthz``'s
bounded round trip. Text meant for people names the target by
:func:`escalator.config.settings.redact_url` (no password).
"""

from __future__ import annotations

import os
import socket
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from escalator.config.settings import is_postgres_url, redact_url
from escalator.store.base import StoreUnavailable

MIN_POSTGRES = (13, 0)
"""The oldest PostgreSQL escalator accepts (``check-config``, ``migrate``). The store's SQL
needs 10 (``FOR UPDATE SKIP LOCKED`` 9.5, ``INSERT … ON CONFLICT`` 9.5, identity columns 10);
the floor is 13 by decision (issue 15: nothing older is tested or supported upstream any
more); the suite runs on 15."""

PROBE_TIMEOUT = 2.0
"""How long a probe or an inspection may take to connect and answer (seconds; libpq's
``connect_timeout`` is whole seconds, at least 2)."""


def code_schema_version() -> int:
    """The schema version this escalator writes (how many migrations it knows; the same number
    on every backend)."""
    from escalator.store.sqlite import MIGRATIONS

    return len(MIGRATIONS)


@dataclass(frozen=True)
class DatabaseInfo:
    """A database as :func:`inspect` found it.

    ``backend``: ``"sqlite"`` | ``"postgresql"``; ``where``: the target, masked;
    ``server_version``: ``"15.20"`` / ``"3.40.1"``; ``server_version_num``: PostgreSQL's
    ``150020`` form (SQLite's ``3040001``); ``schema_version``: the migrations applied (0: an
    empty database or a file not made yet); ``code_version``: what this escalator knows."""

    backend: str
    where: str
    server_version: str
    server_version_num: int
    schema_version: int
    code_version: int

    @property
    def pending(self) -> int:
        """Migrations this escalator would apply (0 when up to date or newer)."""
        return max(0, self.code_version - self.schema_version)

    @property
    def newer(self) -> bool:
        """Whether a newer escalator wrote the database (this one refuses to open it)."""
        return self.schema_version > self.code_version

    def server_problem(self) -> str | None:
        """Why this server cannot hold escalator's data (English; the CLI words it), or None."""
        if self.backend == "postgresql" and self.server_version_num < MIN_POSTGRES[0] * 10000:
            return (f"PostgreSQL {self.server_version} is older than "
                    f"{MIN_POSTGRES[0]}: escalator needs PostgreSQL {MIN_POSTGRES[0]} or later")
        return None


def inspect(target: str | Path, timeout: float = PROBE_TIMEOUT) -> DatabaseInfo:
    """Connect to ``target`` (a ``postgresql://`` URL or a SQLite path) without migrating or
    writing, and say what it is. A SQLite file that does not exist yet is schema version 0.

    Raises :class:`StoreUnavailable` naming the masked target when it cannot be reached or read
    (refused, unknown host, wrong password, no such database, not a database) within
    ``timeout`` seconds."""
    if is_postgres_url(target):
        return _inspect_postgres(str(target), timeout)
    return _inspect_sqlite(Path(target))


def _inspect_sqlite(path: Path) -> DatabaseInfo:
    version = sqlite3.sqlite_version
    info = {"backend": "sqlite", "where": str(path), "server_version": version,
            "server_version_num": sqlite3.sqlite_version_info[0] * 1000000
            + sqlite3.sqlite_version_info[1] * 1000 + sqlite3.sqlite_version_info[2],
            "code_version": code_schema_version()}
    if not path.exists():
        return DatabaseInfo(schema_version=0, **info)
    return DatabaseInfo(schema_version=_sqlite_user_version(path), **info)


def _sqlite_user_version(path: Path) -> int:
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=1.0)
        try:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error as e:
        raise StoreUnavailable(f"{path}: {e}") from e


def _pg_connect(url: str, timeout: float) -> Any:
    """A psycopg connection (autocommit) whose waits are bounded: ``connect_timeout``,
    a ``statement_timeout`` and TCP keepalives / ``tcp_user_timeout`` (an unplugged network
    ends the wait instead of TCP's minutes of retries)."""
    import psycopg

    from escalator.store.postgres import split_url

    ms = int(timeout * 1000)
    conn = psycopg.connect(
        split_url(url)[0], autocommit=True, connect_timeout=max(2, round(timeout)), keepalives=1,
        keepalives_idle=max(1, round(timeout)), keepalives_interval=1, keepalives_count=2,
        tcp_user_timeout=ms, application_name="escalator-probe")
    # (a SET, not libpq's ``options``: the URL's own ``options``, e.g. a search_path, stay)
    conn.execute(f"SET statement_timeout = {ms}")
    return conn


def _pg_error(url: str, e: Exception) -> StoreUnavailable:
    """A driver error as the store's error, naming the masked URL; libpq's text never carries
    the password, and the URL is masked."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return StoreUnavailable(f"{redact_url(url)}: {text}")


def _pg_schema_version(conn: Any) -> int:
    """The schema version recorded in a PostgreSQL database (the table ``schema_version`` of
    :class:`~escalator.store.postgres.PostgresStore`; 0 before its first migration)."""
    if conn.execute("SELECT to_regclass('schema_version')").fetchone()[0] is None:
        return 0
    row = conn.execute("SELECT version FROM schema_version").fetchone()
    return int(row[0]) if row else 0


def _inspect_postgres(url: str, timeout: float) -> DatabaseInfo:
    import psycopg

    try:
        with _pg_connect(url, timeout) as conn:
            num = conn.info.server_version
            version = conn.execute("SHOW server_version").fetchone()[0].split()[0]
            schema = _pg_schema_version(conn)
    except psycopg.Error as e:
        raise _pg_error(url, e) from e
    return DatabaseInfo(backend="postgresql", where=redact_url(url), server_version=version,
                        server_version_num=int(num), schema_version=schema,
                        code_version=code_schema_version())


@dataclass(frozen=True)
class ProbeResult:
    """One health check of the database: ``reachable``; ``round_trip_ms`` (milliseconds, of the
    check's query, connecting included when it had to); ``schema_version`` (None when not
    reached); ``error``: why not reachable (masked), else None."""

    backend: str
    reachable: bool
    round_trip_ms: float | None
    schema_version: int | None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The ``database`` part of ``/healthz``."""
        out: dict[str, Any] = {"backend": self.backend, "reachable": self.reachable,
                               "round_trip_ms": self.round_trip_ms,
                               "schema_version": self.schema_version}
        if self.error is not None:
            out["error"] = self.error
        return out


class Probe:
    """``/healthz``'s check of ``target``: one query on a connection of its own (never the
    store's, so a long transaction does not delay it), bounded by ``timeout`` seconds.

    PostgreSQL: the connection is kept between checks and made again (once per check) when it
    broke. SQLite: the file is opened read-only for each check (a file deleted or replaced is
    seen as such). :meth:`check` never raises; call it from one thread at a time."""

    def __init__(self, target: str | Path, timeout: float = PROBE_TIMEOUT) -> None:
        self.target = target
        self.timeout = timeout
        self.backend = "postgresql" if is_postgres_url(target) else "sqlite"
        self._conn: Any = None

    def check(self) -> ProbeResult:
        """Run the check now (blocking; at most about ``timeout`` seconds per attempt). The
        round trip is the query's (a new connection's set-up is not counted in it)."""
        try:
            schema, seconds = self._pg() if self.backend == "postgresql" else self._sqlite()
        except StoreUnavailable as e:
            return ProbeResult(self.backend, False, None, None, e.cause)
        return ProbeResult(self.backend, True, round(seconds * 1000, 2), schema)

    def _sqlite(self) -> tuple[int, float]:
        start = time.perf_counter()
        path = Path(self.target)
        if not path.exists():
            raise StoreUnavailable(f"{path}: no such file")
        return _sqlite_user_version(path), time.perf_counter() - start

    def _pg(self) -> tuple[int, float]:
        import psycopg

        url = str(self.target)
        kept = self._conn is not None and not self._conn.closed
        while True:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = _pg_connect(url, self.timeout)
                start = time.perf_counter()
                return _pg_schema_version(self._conn), time.perf_counter() - start
            except psycopg.Error as e:
                self.close()
                if not kept or isinstance(e, psycopg.errors.QueryCanceled):
                    raise _pg_error(url, e) from e
                kept = False  # the kept connection broke (server restarted): connect once more

    def abort(self) -> None:
        """End a check that hangs (a server or proxy that keeps the connection but never
        answers: no timeout of libpq ends that wait) by shutting the kept connection's socket
        down; the check then fails at once as unreachable and the next one connects anew.
        Callable from any thread; never raises."""
        conn = self._conn
        if conn is None:
            return
        try:
            sock = socket.socket(fileno=os.dup(conn.fileno()))
        except (OSError, ValueError, AttributeError):
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        finally:
            sock.close()

    def close(self) -> None:
        """Close the kept connection, if any (idempotent, never raises)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass
