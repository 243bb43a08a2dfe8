"""The store contract: every behaviour of :class:`escalator.store.base.Tx` and
:class:`~escalator.store.base.Store`, run against every backend in :data:`BACKENDS`.

A backend is one :class:`Backend` entry: how to open a fresh store,
open it again, make it unable to grow (and grow again), and break it so it cannot be opened.
Nothing in the tests reaches past the store's interface except through those four.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from escalator.store import SQLiteStore, Store, open_store
from escalator.store.pg_scratch import ServerUnreachable, admin_url, create_schema, drop_schema

T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
"""A fixed instant (aware UTC) every test counts from."""


def t(minutes: float) -> datetime:
    """``T0`` plus ``minutes``."""
    return T0 + timedelta(minutes=minutes)


@dataclass
class Backend:
    """How the contract suite drives one backend. ``open(place)``: a store in ``place`` (a
    temporary folder; the same place opens the same data again). ``fill(store)``: from now on
    the store cannot grow (a write that needs room fails); ``unfill(store)`` undoes it.
    ``break_(place)``: leave ``place`` so that opening a store there fails."""

    open: Callable[[Path], Store]
    fill: Callable[[Store], None]
    unfill: Callable[[Store], None]
    break_: Callable[[Path], None]


def _sqlite_fill(store: Any) -> None:
    conn = store._conn
    conn.execute(f"PRAGMA max_page_count = {conn.execute('PRAGMA page_count').fetchone()[0]}")


def _sqlite_unfill(store: Any) -> None:
    store._conn.execute("PRAGMA max_page_count = 1073741823")


def _sqlite_break(place: Path) -> None:
    """A file that is not a database where the store lives (a deliberately corrupt file)."""
    (place / "db.sqlite3").write_bytes(b"this is not a database\n" * 512)


def _pg_url(place: Path) -> str:
    """The URL of the place's PostgreSQL store: a scratch schema made on first use (its URL
    kept in ``place/pg_url``; :func:`place` drops it after the test)."""
    f = place / "pg_url"
    if not f.exists():
        try:
            f.write_text(create_schema())
        except ServerUnreachable as e:
            pytest.fail(str(e), pytrace=False)
    return f.read_text()


_FULL = """
CREATE OR REPLACE FUNCTION escalator_full() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'could not extend file: No space left on device'
  USING ERRCODE = 'disk_full'; END $$
"""


def _pg_tables(conn: psycopg.Connection) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")]


def _pg_fill(store: Any) -> None:
    """Every write fails as a full disk would (SQLSTATE 53100, ``disk_full``): a trigger on each
    table of the store's schema."""
    with psycopg.connect(_pg_urls[id(store)], autocommit=True) as conn:
        conn.execute(_FULL)
        for table in _pg_tables(conn):
            conn.execute(f"CREATE TRIGGER escalator_full BEFORE INSERT OR UPDATE ON {table}"
                         " FOR EACH STATEMENT EXECUTE FUNCTION escalator_full()")


def _pg_unfill(store: Any) -> None:
    with psycopg.connect(_pg_urls[id(store)], autocommit=True) as conn:
        for table in _pg_tables(conn):
            conn.execute(f"DROP TRIGGER IF EXISTS escalator_full ON {table}")


def _pg_break(place: Path) -> None:
    """A URL naming a database that does not exist on the server."""
    (place / "pg_url").write_text(admin_url().rsplit("/", 1)[0].split("?")[0]
                                  + "/escalator_no_such_database")


_pg_urls: dict[int, str] = {}
"""The URL each open PostgreSQL store of the suite was opened with (by ``id(store)``)."""


def _pg_open(place: Path) -> Store:
    url = _pg_url(place)
    store = open_store(url)
    _pg_urls[id(store)] = url
    return store


BACKENDS: dict[str, Backend] = {
    "sqlite": Backend(open=lambda place: SQLiteStore(place / "db.sqlite3"), fill=_sqlite_fill,
                      unfill=_sqlite_unfill, break_=_sqlite_break),
    "postgresql": Backend(open=_pg_open, fill=_pg_fill, unfill=_pg_unfill, break_=_pg_break),
}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> Backend:
    """Each backend in turn."""
    return BACKENDS[request.param]


@pytest.fixture
def place(tmp_path: Path) -> Iterator[Path]:
    """Where the test's store lives (for PostgreSQL, ``pg_url`` there names its scratch
    schema, dropped after the test)."""
    yield tmp_path
    if (tmp_path / "pg_url").exists():
        drop_schema((tmp_path / "pg_url").read_text())


@pytest.fixture
def store(backend: Backend, place: Path) -> Iterator[Store]:
    """A fresh, empty store of each backend; closed after the test."""
    s = backend.open(place)
    yield s
    s.close()


# ------------------------------------------------------------------ rows the tests write


def new_incident(tx: Any, key: str = "k/1", **fields: Any) -> int:
    """An open incident (``triggered``) with every required field; ``fields`` override."""
    values: dict[str, Any] = dict(
        dedup_key=key, state="triggered", kind="incident", category="accident",
        severity="medium", summary="摔伤", class_id="3-2", grade="3", place="操场", drill=False,
        policy_id="p", policy={"steps": [{"targets": ["person:wang"]}]}, step_index=-1, round=0,
        next_step_at=None, event_count=1, created_at=T0, updated_at=T0, first_event_id=None)
    values.update(fields)
    return tx.insert_incident(**values)


def new_event(tx: Any, id: str, *, incident_id: int | None = None, at: datetime = T0,
              body: dict[str, Any] | None = None, key: str = "k/1",
              row_key: str | None = None) -> None:
    """A stored event ``id`` received at ``at``."""
    tx.insert_event(id=id, received_at=at, source="test", kind="incident", category="accident",
                    action="trigger", dedup_key=key, incident_id=incident_id, outcome="opened",
                    body=body if body is not None else {"summary": "摔伤"}, row_key=row_key)


def new_step_run(tx: Any, incident_id: int, index: int = 0, mode: str = "escalate",
                 at: datetime = T0) -> int:
    """A fired step run."""
    return tx.insert_step_run(incident_id=incident_id, step_index=index, round=0, mode=mode,
                              fired_at=at)


_tokens = iter(range(1, 10**9))


def new_notification(tx: Any, incident_id: int, **fields: Any) -> int:
    """A ``pending`` notification due at ``T0`` to 王老师 by SMS; ``fields`` override."""
    values: dict[str, Any] = dict(
        incident_id=incident_id, step_run_id=None, recipient_kind="person", recipient_id="wang",
        recipient_name="王老师", channel="sms", address="13800000001", contact_index=0,
        status="pending", due_at=T0, attempts=0, created_at=T0, updated_at=T0,
        ack_token=f"tok-{next(_tokens)}", needs_ack=True, purpose="step", note=None)
    values.update(fields)
    return tx.insert_notification(**values)
