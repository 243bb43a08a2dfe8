"""The SQLite store's own behaviour: WAL + full sync, migrations, refusing a newer schema.
What every backend must do is in the store contract suite (``tests/store_contract/``)."""

from __future__ import annotations

import sqlite3

import pytest

from escalator.store import SQLiteStore
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
