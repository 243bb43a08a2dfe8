"""The SQLite store's own behaviour: WAL + full sync, migrations, refusing a newer schema.
What every backend must do is in the store contract suite (``tests/store_contract/``)."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from escalator.store import SQLiteStore, StoreUnavailable
from escalator.store import sqlite as sqlite_store
from escalator.store.sqlite import MIGRATIONS


def test_opens_in_wal_with_full_sync_and_latest_schema(tmp_path):
    s = SQLiteStore(tmp_path / "db.sqlite3")
    assert s.schema_version() == len(MIGRATIONS)
    assert s._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert s._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    s.close()


def test_migrates_an_older_database_in_place(tmp_path):
    path = tmp_path / "db.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(MIGRATIONS[0] + "; PRAGMA user_version = 1;")
    conn.execute("INSERT INTO spool_files VALUES ('x', 'a.json', '2026-11-30T00:00:00.000000Z', 1)")
    conn.commit()
    conn.close()
    s = SQLiteStore(path)
    assert s.schema_version() == len(MIGRATIONS)
    with s.transaction() as tx:
        assert tx.spool_file_seen("x")  # data kept
        assert not tx.row_key_seen("k")  # the column from migration 2 exists
    s.close()


def test_refuses_a_database_from_a_newer_escalator(tmp_path):
    path = tmp_path / "db.sqlite3"
    SQLiteStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(RuntimeError, match="upgrade escalator"):
        SQLiteStore(path)


def test_a_transaction_waits_for_another_writers_lock_then_runs_and_gives_up_after_the_timeout(
        tmp_path, monkeypatch):
    """Another process's write transaction (a raw connection here) holds the lock: the store's
    transaction polls for it (``SQLiteStore._begin``), runs once it is free, and raises
    StoreUnavailable ("locked") after ``BUSY_TIMEOUT`` when it never is."""
    path = tmp_path / "escalator.sqlite3"
    store = SQLiteStore(path)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.3, other.execute, ("COMMIT",))
    release.start()
    start = time.monotonic()
    with store.transaction() as tx:
        assert tx.next_due() is None
    assert time.monotonic() - start >= 0.29  # it waited for the other writer
    monkeypatch.setattr(sqlite_store, "BUSY_TIMEOUT", 0.2)
    other.execute("BEGIN IMMEDIATE")
    start = time.monotonic()
    with pytest.raises(StoreUnavailable, match="locked"), store.transaction():
        pass
    assert 0.2 <= time.monotonic() - start < 5
    other.execute("ROLLBACK")
    with store.transaction() as tx:  # the store works on once the lock is free
        assert tx.next_due(steps=False) is None
    other.close()
    store.close()
