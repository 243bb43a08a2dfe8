"""Operations on the database (docs/install.md section 8): ``escalator migrate``, the database
part of ``check-config`` and of ``/healthz``. Real SQLite files, a real PostgreSQL (``pg_url``:
a scratch database per test) and one made unreachable: a URL to a closed port, and a TCP
forwarder in front of the real server that is shut down mid-test (the network gone)."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from escalator.config.settings import redact_url
from escalator.service.dbhealth import DatabaseHealth
from escalator.store.probe import DatabaseInfo, Probe, ProbeResult, code_schema_version, inspect
from escalator.store.sqlite import MIGRATIONS

from .test_api import env  # noqa: F401  (the fixture: no ESCALATOR_* from outside)
from .test_cli import run

CODE = code_schema_version()


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sqlite_at_version(path: Path, version: int) -> Path:
    """A SQLite database with the first ``version`` migrations applied (an older escalator's)."""
    conn = sqlite3.connect(path)
    for script in MIGRATIONS[:version]:
        conn.executescript(script)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.commit()
    conn.close()
    return path


# ------------------------------------------------------------------ what a database is


def test_a_password_never_shows_in_a_masked_url():
    assert redact_url("postgresql://esc:s3cret@db:5432/esc?sslmode=require") == \
        "postgresql://esc:***@db:5432/esc?sslmode=require"
    assert redact_url("postgres://db/esc?user=esc&password=s3cret") == \
        "postgres://db/esc?user=esc&password=***"
    assert redact_url("postgresql://esc@db/esc") == "postgresql://esc@db/esc"
    assert redact_url("/var/lib/escalator/escalator.sqlite3") == "/var/lib/escalator/escalator.sqlite3"


def test_postgresql_older_than_13_is_refused_and_13_is_not():
    def info(num: int, version: str) -> DatabaseInfo:
        return DatabaseInfo("postgresql", "postgresql://db/x", version, num, CODE, CODE)

    assert "older than 13" in info(120017, "12.17").server_problem()
    assert info(130000, "13.0").server_problem() is None
    assert info(150020, "15.20").server_problem() is None


def test_inspecting_sqlite_neither_creates_nor_migrates(tmp_path):
    missing = tmp_path / "none.sqlite3"
    assert inspect(missing).schema_version == 0 and not missing.exists()
    old = sqlite_at_version(tmp_path / "old.sqlite3", CODE - 1)
    info = inspect(old)
    assert (info.backend, info.schema_version, info.pending) == ("sqlite", CODE - 1, 1)
    assert inspect(old).schema_version == CODE - 1  # still: inspecting changed nothing


# ------------------------------------------------------------------ escalator migrate


def test_migrate_check_reports_pending_then_migrate_applies_them_with_versions(tmp_path):
    db = sqlite_at_version(tmp_path / "escalator.sqlite3", CODE - 2)
    r = run("migrate", "--database", str(db), "--check", "--lang", "en")
    assert r.returncode == 4, r.stderr
    assert f"schema version {CODE - 2}, this escalator's {CODE}: 2 migration(s) pending" in r.stdout
    assert inspect(db).schema_version == CODE - 2  # --check changes nothing
    r = run("migrate", "--database", str(db), "--lang", "en")
    assert r.returncode == 0, r.stderr
    assert f"database: {db} (SQLite " in r.stdout
    assert f"schema version {CODE - 2} → {CODE}: 2 migration(s) applied" in r.stdout
    assert inspect(db).schema_version == CODE
    for args in (("--check",), ()):
        r = run("migrate", "--database", str(db), *args, "--lang", "en")
        assert r.returncode == 0 and f"schema version {CODE}: up to date" in r.stdout


def test_migrate_refuses_a_database_of_a_newer_escalator(tmp_path):
    db = sqlite_at_version(tmp_path / "escalator.sqlite3", CODE)
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {CODE + 1}")
    conn.close()
    r = run("migrate", "--database", str(db), "--lang", "en")
    assert r.returncode == 1 and "newer escalator" in r.stderr and "upgrade escalator" in r.stderr


def test_migrate_finds_the_database_by_the_settings(tmp_path):
    r = run("migrate", "--lang", "en", env={"ESCALATOR_STATE_DIR": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert f"schema version 0 → {CODE}" in r.stdout
    assert inspect(tmp_path / "escalator.sqlite3").schema_version == CODE


# ------------------------------------------------------------------ the health check's bounds


class SlowProbe(Probe):
    """A probe whose check waits until ``release`` is set (a database that answers late)."""

    def __init__(self) -> None:
        super().__init__("/nowhere.sqlite3")
        self.release = threading.Event()
        self.checks = 0

    def check(self) -> ProbeResult:
        self.checks += 1
        self.release.wait(10)
        return ProbeResult("sqlite", True, 1.0, CODE)


async def test_health_never_waits_long_for_the_database_and_keeps_a_late_answer():
    now = [100.0]
    probe = SlowProbe()
    # (waits of 20 ms, not the service's 80, so that a loaded machine's scheduling does not
    # decide whether the answer came within 100 ms)
    health = DatabaseHealth(probe, fresh=1.0, wait=0.02, stale=5.0, monotonic=lambda: now[0])
    try:
        t0 = time.perf_counter()
        first = await health.current()  # nothing known yet and no answer: unreachable, at once
        assert time.perf_counter() - t0 < 0.1
        assert not first.reachable and "no answer within 20 ms" in first.error
        assert (await health.current()).error == first.error and probe.checks == 1  # one at a time
        probe.release.set()
        for _ in range(100):
            if health.last is not None:
                break
            await asyncio.sleep(0.01)
        assert (await health.current()).reachable  # the late answer was kept
        now[0] += 0.5
        await health.current()
        assert probe.checks == 1  # fresh: from memory
        probe.release.clear()
        now[0] += 1.0  # older than fresh: a new check starts, the last answer stands in
        t0 = time.perf_counter()
        assert (await health.current()).reachable and time.perf_counter() - t0 < 0.1
        assert probe.checks == 2
        now[0] += 10  # the check still has not answered, the last answer is too old now
        late = await health.current()
        assert not late.reachable and "s old" in late.error
    finally:
        probe.release.set()
        health.close()


# ------------------------------------------------------------------ PostgreSQL


class Forwarder:
    """A TCP forwarder on a local port to ``target`` (host, port). :meth:`stall`: it keeps
    every connection and accepts new ones but passes nothing on (a hung proxy or server: TCP
    stays up, nothing answers); :meth:`resume`: new connections go through again; :meth:`cut`
    closes everything."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.stalled = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.sockets.append(client)
            if self.stalled.is_set():
                continue  # held open, never answered
            server = socket.create_connection(self.target)
            self.sockets.append(server)
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                if not self.stalled.is_set():
                    b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stall(self) -> None:
        self.stalled.set()

    def resume(self) -> None:
        self.stalled.clear()

    def cut(self) -> None:
        self.listener.close()
        for s in self.sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass


def via(url: str, port: int, password: str | None = None) -> str:
    """``url`` pointed at 127.0.0.1:``port`` (with ``password`` in it, when given)."""
    parts = urlsplit(url)
    user = parts.username or "postgres"
    auth = f"{user}:{password}@" if password else f"{user}@"
    return urlunsplit((parts.scheme, f"{auth}127.0.0.1:{port}", parts.path, parts.query, ""))


def test_inspect_and_migrate_a_postgresql_database(pg_url):
    info = inspect(pg_url)
    assert info.backend == "postgresql" and info.server_version_num >= 130000
    r = run("migrate", "--database", pg_url, "--check", "--lang", "en")
    assert r.returncode == (4 if info.pending else 0), r.stdout + r.stderr
    r = run("migrate", "--database", pg_url, "--lang", "en")
    assert r.returncode == 0, r.stderr
    assert f"(PostgreSQL {info.server_version})" in r.stdout
    assert inspect(pg_url).schema_version == CODE
    r = run("migrate", "--database", pg_url, "--check", "--lang", "en")
    assert r.returncode == 0 and f"schema version {CODE}: up to date" in r.stdout


def test_two_migrations_at_once_apply_each_migration_once(pg_url):
    import subprocess

    from .test_cli import EXE

    procs = [subprocess.Popen([*EXE, "migrate", "--database", pg_url, "--lang", "en"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    # behind the advisory lock the second waits and finds the work done — never a migration
    # applied twice (that fails: CREATE TABLE of a table that is there); each prints the
    # versions it saw before and after
    assert any(f"0 → {CODE}: {CODE} migration(s) applied" in o for o, _ in outs), outs
    assert inspect(pg_url).schema_version == CODE


def test_check_config_reports_the_server_and_schema_versions(pg_url):
    from .conftest import FIXTURES

    config = str(FIXTURES / "engine.yaml")
    r = run("check-config", "--config", config, "--lang", "en",
            env={"ESCALATOR_DATABASE_URL": pg_url})
    assert r.returncode == 0, r.stderr
    assert "(PostgreSQL 1" in r.stdout and f"(this escalator: {CODE})" in r.stdout
    if inspect(pg_url).pending:
        assert "migration(s) pending" in r.stdout


def test_check_config_names_the_setting_of_an_unreachable_database_without_its_password():
    from .conftest import FIXTURES

    url = f"postgresql://escalator:s3cret-pw@127.0.0.1:{closed_port()}/escalator"
    r = run("check-config", "--config", str(FIXTURES / "engine.yaml"), "--lang", "en",
            env={"ESCALATOR_DATABASE_URL": url})
    assert r.returncode == 1
    assert "error: ESCALATOR_DATABASE_URL: cannot reach the database" in r.stderr
    assert "escalator:***@127.0.0.1" in r.stderr and "refused" in r.stderr
    assert "s3cret-pw" not in r.stdout + r.stderr
    r = run("migrate", "--lang", "en", env={"ESCALATOR_DATABASE_URL": url})
    assert r.returncode == 1 and "ESCALATOR_DATABASE_URL" in r.stderr
    assert "s3cret-pw" not in r.stdout + r.stderr


@pytest.mark.parametrize("userinfo, query, said, secret", [
    # a bad pool parameter of escalator's own
    ("escalator:s3cret-pw", "?pool_max=abc", "pool_max must be a whole number", "s3cret-pw"),
    # a password libpq cannot parse (libpq's own message would echo it)
    ("escalator:s3cret pw", "", "percent-encoded", "s3cret"),
])
def test_a_bad_database_url_is_one_line_in_every_command_never_a_password(userinfo, query,
                                                                          said, secret):
    from .conftest import FIXTURES

    url = f"postgresql://{userinfo}@127.0.0.1:{closed_port()}/escalator{query}"
    for args in (("check-config", "--config", str(FIXTURES / "engine.yaml")),
                 ("migrate", "--database", url),
                 ("run", "--config", str(FIXTURES / "engine.yaml"))):
        r = run(*args, "--lang", "en", env={"ESCALATOR_DATABASE_URL": url,
                                            "ESCALATOR_HTTP_LISTEN": "off"})
        assert r.returncode == 1, (args, r.stderr)
        assert "Traceback" not in r.stderr, (args, r.stderr)
        assert said in r.stderr, (args, r.stderr)
        assert secret not in r.stdout + r.stderr, (args, r.stderr)


def test_a_probe_reconnects_after_its_connection_was_terminated(pg_url):
    import psycopg

    probe = Probe(pg_url)
    try:
        assert probe.check().reachable
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                          " WHERE application_name = 'escalator-probe'"
                          " AND datname = current_database()")
        again = probe.check()  # the kept connection is dead: one new one, same check
        assert again.reachable and again.schema_version == inspect(pg_url).schema_version
    finally:
        probe.close()


@pytest.mark.usefixtures("env")
async def test_healthz_reports_postgresql_and_503_once_it_is_unreachable(pg_url, tmp_path):
    from pydantic import SecretStr

    from escalator.config import load_config
    from escalator.config.settings import Settings
    from escalator.service.daemon import Daemon

    from .test_api import ADMIN, until, write_config

    parts = urlsplit(pg_url)
    forwarder = Forwarder((parts.hostname or "127.0.0.1", parts.port or 5432))
    config = load_config(write_config(tmp_path))
    settings = Settings(state_dir=tmp_path / "state", http_listen="127.0.0.1:0",
                        api_token=SecretStr(ADMIN), database_url=pg_url)
    daemon = Daemon(config, settings)
    # the health check reaches the database through the forwarder (the store directly: a
    # store connection left hanging by the stall would hold the store thread, and that is the
    # pool's business, not the health check's), with a password that must never show
    daemon.database_health.probe = Probe(via(pg_url, forwarder.port, password="not-shown"))
    daemon.database_health.interval = 0.2  # (1 s in service: shorter to see the change)
    task = asyncio.create_task(daemon.run())
    try:
        await until(lambda: daemon.http_port or task.done(), timeout=30)
        assert not task.done(), task.exception()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.http_port}") as c:
            await c.get("/healthz")  # (the first request also opens the HTTP connection)
            times = []
            for _ in range(10):
                t0 = time.perf_counter()
                r = await c.get("/healthz")
                times.append(time.perf_counter() - t0)
                assert r.status_code == 200, r.text
            db = r.json()["database"]
            assert db["backend"] == "postgresql" and db["reachable"]
            assert db["schema_version"] == CODE and db["round_trip_ms"] > 0
            assert sorted(times)[5] <= 0.1, times  # (a median: this machine is shared)

            async def until_status(code: int) -> httpx.Response:
                """Ask every 50 ms until /healthz answers ``code`` (15 s at most); no answer
                may wait for the hung check (2–3 s): each comes well within a second."""
                deadline = time.monotonic() + 15
                while True:
                    t0 = time.perf_counter()
                    r = await c.get("/healthz")
                    assert time.perf_counter() - t0 < 1.0
                    if r.status_code == code or time.monotonic() > deadline:
                        return r
                    await asyncio.sleep(0.05)

            forwarder.stall()  # the database stops answering; connections stay up
            r = await until_status(503)
            assert r.status_code == 503, r.text
            body = r.json()
            assert "database" in body["failing"] and body["database"]["reachable"] is False
            assert "not-shown" not in r.text
            forwarder.resume()  # the hung check was aborted; the next one connects anew
            r = await until_status(200)
            assert r.status_code == 200 and r.json()["database"]["reachable"], r.text
    finally:
        forwarder.cut()
        daemon.stop()
        await asyncio.wait_for(task, 30)


@contextmanager
def one_connection_held(pg_url: str) -> Iterator[tuple[Any, Callable[[], None]]]:
    """A PostgreSQL store with a pool of one connection, held in a transaction by another
    thread; yields the store and ``release()`` (which waits until the connection is back)."""
    from escalator.store.postgres import PostgresStore

    store = PostgresStore(pg_url + ("&" if "?" in pg_url else "?") + "pool_max=1")
    held, done = threading.Event(), threading.Event()

    def hold() -> None:
        with store.transaction() as tx:
            tx.count_incidents()
            held.set()
            done.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()

    def release() -> None:
        done.set()
        holder.join(30)

    try:
        assert held.wait(30)
        yield store, release
    finally:
        release()
        store.close()


def test_a_snapshot_without_a_connection_does_not_fail_the_next_transactions(pg_url):
    """With ``pool_max=1`` a snapshot (the delivery re-check's read) waits for the writer's one
    connection; when it gets none in time it is StoreUnavailable itself, but the server is not
    down, so the write transactions after it run as usual (no fail-fast)."""
    from escalator.store import StoreUnavailable

    with one_connection_held(pg_url) as (store, release):
        with pytest.raises(StoreUnavailable, match="couldn't get a connection"), \
                store.snapshot() as tx:
            tx.count_incidents()
        release()
        with store.transaction() as tx:  # at once, not "not tried again"
            assert tx.count_incidents() == {}


def test_no_connection_to_be_had_fails_the_next_transactions_at_once(pg_url):
    """A transaction that gets no connection within TRANSACTION_WAIT_SECONDS (here: the pool's
    one connection held elsewhere; in life: the server down) is StoreUnavailable, and so are
    the transactions after it, at once, for FAIL_FAST_SECONDS — a queue of store calls on the
    store thread must not wait minutes while the server is gone (the API answers 503)."""
    from escalator.store import StoreUnavailable

    with one_connection_held(pg_url) as (store, release):
        with pytest.raises(StoreUnavailable, match="couldn't get a connection"), \
                store.transaction() as tx:
            tx.count_incidents()
        release()
        # the connection is free again, but the store does not wait for one again yet
        with pytest.raises(StoreUnavailable, match="not tried again"), store.transaction() as tx:
            tx.count_incidents()
        store._down_until = 0.0  # as FAIL_FAST_SECONDS later
        with store.transaction() as tx:
            assert tx.count_incidents() == {}
