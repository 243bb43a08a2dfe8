"""What only the PostgreSQL store promises: several daemons on one database (row locks, skipped
locked rows, a lost race as Conflict), migrations at once, connections the server ended.
The behaviours both backends share are the contract suite (tests/store_contract/)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any

import psycopg
import pytest

from escalator.store import Conflict, open_store
from escalator.store.pg_scratch import admin_url
from escalator.store.postgres import MIGRATIONS, PostgresStore, split_url, translate
from escalator.store.sqlite import MIGRATIONS as SQLITE_MIGRATIONS
from tests.store_contract.conftest import T0, new_incident, new_notification, t


@pytest.fixture
def two(pg_url: str) -> Iterator[tuple[PostgresStore, PostgresStore]]:
    """Two stores on one database, as two daemons have."""
    a, b = open_store(pg_url), open_store(pg_url)
    yield a, b  # type: ignore[misc]
    a.close()
    b.close()


def backend_pid(tx: Any) -> int:
    """The server process of the transaction ``tx``."""
    return tx.c.execute("SELECT pg_backend_pid()").fetchone()[0]


def blocked_by(url: str, pid: int) -> bool:
    """Whether some session waits for a lock the server process ``pid`` holds."""
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity"
                            " WHERE %s = ANY(pg_blocking_pids(pid))", (pid,)).fetchone()[0] > 0


def in_thread(fn: Callable[[], Any], url: str, holder: int) -> Any:
    """Start ``fn`` in a thread and return its future once it waits for a lock of the server
    process ``holder`` (or is done)."""
    pool = ThreadPoolExecutor(1)
    future = pool.submit(fn)
    pool.shutdown(wait=False)
    event = threading.Event()
    while not future.done() and not blocked_by(url, holder):
        event.wait(0.02)
    return future


def test_the_schema_has_sqlites_version_numbers(pg_url: str) -> None:
    assert len(MIGRATIONS) == len(SQLITE_MIGRATIONS)
    store = open_store(pg_url)
    try:
        assert store.schema_version() == len(MIGRATIONS)
        assert store.describe().startswith("PostgreSQL 1")
        assert "127.0.0.1" not in store.describe() and "postgres@" not in store.describe()
    finally:
        store.close()


def test_every_connection_has_the_stores_session_settings(pg_url: str) -> None:
    store = open_store(pg_url)
    try:
        with store.transaction() as tx:
            got = {name: tx.c.execute(f"SHOW {name}").fetchone()[0] for name in
                   ("transaction_isolation", "lock_timeout", "statement_timeout",
                    "idle_in_transaction_session_timeout", "application_name")}
        assert got == {"transaction_isolation": "read committed", "lock_timeout": "5s",
                       "statement_timeout": "30s", "idle_in_transaction_session_timeout": "1min",
                       "application_name": "escalator"}
    finally:
        store.close()


def test_daemons_starting_at_once_migrate_once(pg_url: str) -> None:
    with ThreadPoolExecutor(4) as pool:
        stores = list(pool.map(lambda _: open_store(pg_url), range(4)))
    try:
        assert {s.schema_version() for s in stores} == {len(MIGRATIONS)}
        with psycopg.connect(pg_url) as conn:
            assert conn.execute("SELECT count(*) FROM schema_version").fetchone()[0] == 1
    finally:
        for s in stores:
            s.close()


def test_a_newer_schema_is_refused(pg_url: str) -> None:
    open_store(pg_url).close()
    with psycopg.connect(pg_url) as conn:
        conn.execute("UPDATE schema_version SET version = version + 1")
    with pytest.raises(RuntimeError, match="upgrade escalator"):
        open_store(pg_url)


def test_a_due_incident_is_taken_by_one_tick_only(two) -> None:
    a, b = two
    with a.transaction() as tx:
        ids = [new_incident(tx, f"k/{n}", next_step_at=t(n)) for n in range(4)]
    with ExitStack() as stack:
        first = stack.enter_context(a.transaction())
        assert first.due_incidents(t(10), 2) == ids[:2]
        second = stack.enter_context(b.transaction())
        assert second.due_incidents(t(10), 10) == ids[2:]  # skipped, not waited for


def test_a_notification_is_claimed_by_one_daemon_only(two) -> None:
    a, b = two
    with a.transaction() as tx:
        iid = new_incident(tx)
        ns = [new_notification(tx, iid, address=f"1380000000{n}") for n in range(4)]
        new_notification(tx, iid, address="13800000009", due_at=t(5))  # not due
    with ExitStack() as stack:
        first = stack.enter_context(a.transaction())
        second = stack.enter_context(b.transaction())
        got_a = [n.id for n in first.claim_notifications(T0, 3, "a")]
        got_b = [n.id for n in second.claim_notifications(T0, 10, "b")]
        assert got_a == ns[:3] and got_b == ns[3:]
        assert second.claim_address("sms", "13800000000", 2, T0, 10, "b") == []  # a's, skipped
    with a.transaction() as tx:
        assert [tx.get_notification(n).status for n in ns] == ["sending"] * 4
        assert [tx.get_notification(n).claimed_by for n in ns] == ["a"] * 3 + ["b"]


def test_an_incident_being_advanced_is_read_after_the_other_transaction(two, pg_url) -> None:
    a, b = two
    with a.transaction() as tx:
        iid = new_incident(tx)

    def read_in_b() -> int:
        with b.transaction() as tx:
            return tx.get_incident(iid).step_index

    with a.transaction() as tx:
        tx.get_incident(iid)
        waiting = in_thread(read_in_b, pg_url, backend_pid(tx))
        assert not waiting.done()  # b waits for a's row lock
        tx.update_incident(iid, step_index=0)
    assert waiting.result(timeout=10) == 0  # and then reads what a wrote


def test_two_daemons_opening_one_dedup_key_is_a_conflict(two, pg_url) -> None:
    a, b = two

    def open_in_b() -> int:
        with b.transaction() as tx:
            return new_incident(tx, "fire/1号楼")

    with a.transaction() as tx:
        first = new_incident(tx, "fire/1号楼")
        waiting = in_thread(open_in_b, pg_url, backend_pid(tx))
        assert not waiting.done()  # b waits on the unique index for a's outcome
    with pytest.raises(Conflict):
        waiting.result(timeout=10)
    with b.transaction() as tx:  # run again: b finds a's incident
        assert tx.open_incident_by_key("fire/1号楼").id == first


def test_an_open_incident_found_by_its_key_is_read_after_the_other_transaction(two, pg_url) -> None:
    # two daemons counting a duplicate on one incident: the second waits for the first's row
    # and counts on its result (without the lock, both read 1 and wrote 2: a lost count)
    a, b = two
    with a.transaction() as tx:
        iid = new_incident(tx, "fire/1号楼")

    def count_in_b() -> int:
        with b.transaction() as tx:
            inc = tx.open_incident_by_key("fire/1号楼")
            tx.update_incident(inc.id, event_count=inc.event_count + 1)
            return inc.event_count + 1

    with a.transaction() as tx:
        inc = tx.open_incident_by_key("fire/1号楼")
        waiting = in_thread(count_in_b, pg_url, backend_pid(tx))
        assert not waiting.done()  # b waits for a's row lock
        tx.update_incident(iid, event_count=inc.event_count + 1)
    assert waiting.result(timeout=10) == 3
    with a.transaction() as tx:
        assert tx.get_incident(iid).event_count == 3


def test_a_connection_the_server_ended_is_replaced(pg_url: str) -> None:
    store = open_store(pg_url)
    try:
        with store.transaction() as tx:
            iid = new_incident(tx)
            pid = backend_pid(tx)  # (the pool's one connection)
        with psycopg.connect(pg_url, autocommit=True) as admin:
            assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]
        with store.transaction() as tx:
            assert tx.get_incident(iid) is not None
    finally:
        store.close()


def test_marks_are_translated_for_psycopg() -> None:
    assert translate("SELECT ? WHERE a LIKE 'x%'") == ("SELECT %s WHERE a LIKE 'x%%'", False)
    assert translate("UPDATE n SET a = ?1 WHERE b <= ?1 LIMIT ?2") == \
        ("UPDATE n SET a = %(p1)s WHERE b <= %(p1)s LIMIT %(p2)s", True)


def test_pool_sizes_come_from_the_url() -> None:
    assert split_url("postgresql://u@h/db?pool_max=8&sslmode=require") == \
        ("postgresql://u@h/db?sslmode=require", {"pool_max": "8"})
    with pytest.raises(ValueError, match="pool_min"):
        split_url("postgresql://u@h/db?pool_min=0")


def test_libpq_parameters_pass_as_written_and_a_bad_url_never_shows_its_password() -> None:
    from psycopg.conninfo import conninfo_to_dict

    from escalator.store.postgres import BadDatabaseURL

    # a %20 stayed a space for libpq (it once became a +: "-c+search_path=x")
    url, own = split_url("postgresql://u@h/db?options=-c%20search_path%3Dx&pool_max=3")
    assert own == {"pool_max": "3"}
    assert conninfo_to_dict(url)["options"] == "-c search_path=x"
    assert conninfo_to_dict(split_url("postgresql://u@h/db?password=a+b")[0])["password"] == "a+b"
    # libpq's complaint about a password not percent-encoded quotes it: masked
    for bad in ("postgresql://u:S3cret Q@h/db", "postgresql://u:S3cret%zzQ@h/db",
                "postgresql://h/db?user=u&password=S3cret Q"):
        with pytest.raises(BadDatabaseURL) as e:
            split_url(bad)
        assert "S3cret" not in str(e.value) and "***" in str(e.value), str(e.value)


def test_a_missing_database_or_refused_server_says_why_at_once() -> None:
    from escalator.store import StoreUnavailable

    base = admin_url().split("?")[0].rsplit("/", 1)[0]
    with pytest.raises(StoreUnavailable, match="does not exist"):
        open_store(f"{base}/escalator_no_such_database")
    with pytest.raises(StoreUnavailable, match="refused"):
        open_store("postgresql://postgres@127.0.0.1:1/escalator")


def test_a_row_lock_not_had_is_a_conflict(two) -> None:
    """(What ``lock_timeout`` raises after 5 s, NOWAIT raises at once: SQLSTATE 55P03.)"""
    a, b = two
    with a.transaction() as tx:
        iid = new_incident(tx)
    with a.transaction() as tx:
        tx.get_incident(iid)
        with pytest.raises(Conflict, match="55P03"), b.transaction() as other:
            other.c.execute("SELECT id FROM incidents WHERE id = ? FOR UPDATE NOWAIT", (iid,))
