"""Which store the daemon opens: ``database_url`` (settings) and :func:`open_store`."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from escalator.config.settings import load_settings, redact_url
from escalator.store import SQLiteStore, open_store
from escalator.store.pg_scratch import ServerUnreachable, scratch_schema


def test_default_is_the_sqlite_file_under_state_dir(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("ESCALATOR_DATABASE_URL", raising=False)
    s = load_settings({"state_dir": str(tmp_path)})
    assert not s.uses_postgres
    assert s.store_target == s.database == tmp_path / "escalator.sqlite3"


def test_a_file_path_in_the_config_is_read_from_its_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("ESCALATOR_DATABASE_URL", raising=False)
    s = load_settings({"database_url": "data/x.sqlite3"}, base_dir=tmp_path)
    assert s.store_target == s.database == tmp_path / "data" / "x.sqlite3"


def test_the_environment_names_postgresql_over_the_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ESCALATOR_DATABASE_URL", "postgres://esc:s3cret@db.example/escalator")
    s = load_settings({"database_url": "x.sqlite3"}, base_dir=tmp_path)
    assert s.uses_postgres
    assert s.store_target == "postgres://esc:s3cret@db.example/escalator"
    assert s.store_display == "postgres://esc:***@db.example/escalator"


def test_redaction_hides_every_password_form() -> None:
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"
    assert redact_url("postgresql://u:p@h:5433/db?sslmode=require&password=p") == \
        "postgresql://u:***@h:5433/db?sslmode=require&password=***"
    assert redact_url("/var/lib/escalator/escalator.sqlite3") == "/var/lib/escalator/escalator.sqlite3"


def test_open_store_opens_sqlite_for_a_path(tmp_path: Path) -> None:
    store = open_store(tmp_path / "db.sqlite3")
    try:
        assert isinstance(store, SQLiteStore)
    finally:
        store.close()


def test_pg_url_is_a_fresh_schema_of_its_own(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        schema = conn.execute("SELECT current_schema()").fetchone()[0]
        assert schema.startswith("escalator_t_")
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = %s",
                            (schema,)).fetchone()[0] == 0




def test_an_unreachable_test_server_is_a_clear_error() -> None:
    """(``pg_url`` turns this into a failure, not a skip.)"""
    with pytest.raises(ServerUnreachable, match="ESCALATOR_TEST_PG"), \
            scratch_schema("postgresql://postgres@127.0.0.1:1/postgres"):
        pass
