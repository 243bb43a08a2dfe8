"""What differs between the SQL of SQLite and PostgreSQL, as small hooks the shared queries call.

The queries of the store are written once (:mod:`escalator.store.sql_core` and the ``sql_*``
mixins) in the SQL both databases speak, with ``?`` placeholders (``?1``, ``?2`` … where one
value is used twice); a transaction's ``d`` is its :class:`Dialect`, for the few places where
the two differ: an index hint SQLite's planner needs, row locks only PostgreSQL takes, JSON
paths and instants written as text.
"""

from __future__ import annotations

import json
from typing import Any, Protocol


class Cursor(Protocol):
    """What the shared queries use of a cursor (``sqlite3.Cursor`` or psycopg's)."""

    rowcount: int

    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Any: ...


class Connection(Protocol):
    """What the shared queries use of a connection: ``execute`` and ``executemany`` with ``?``
    marks; rows read by column name and by position (``sqlite3.Row`` or
    :class:`~escalator.store.postgres.Row`)."""

    def execute(self, sql: str, params: Any = ..., /) -> Cursor: ...
    def executemany(self, sql: str, params: Any, /) -> Any: ...


class Dialect:
    """The hooks of one database. Each returns SQL text to put into a query (and, where it
    needs values, the parameters for its ``?`` marks, in order)."""

    name = ""

    def indexed_by(self, index: str) -> str:
        """An index hint after a table name (``INDEXED BY notifications_due``) or ``""``."""
        raise NotImplementedError

    def lock(self, *, skip_locked: bool = False) -> str:
        """A row-lock clause at the end of a SELECT (``FOR UPDATE [SKIP LOCKED]``) or ``""``
        where the database locks whole transactions instead (SQLite's ``BEGIN IMMEDIATE``)."""
        raise NotImplementedError

    def json_text(self, column: str, *keys: str) -> tuple[str, tuple[Any, ...]]:
        """The value at ``keys`` in the JSON text ``column`` as text (a string as it is, a
        number as its digits; true/false: ``1``/``0`` on SQLite, ``true``/``false`` on
        PostgreSQL), NULL when missing or null."""
        raise NotImplementedError

    def json_has(self, column: str, key: str) -> tuple[str, tuple[Any, ...]]:
        """A condition: the JSON object in ``column`` has the top-level ``key`` (even if null)."""
        raise NotImplementedError

    def instant(self, expr: str) -> str:
        """An ISO-8601 text (with its offset) as a value that compares as an instant."""
        raise NotImplementedError


class SQLiteDialect(Dialect):
    """SQLite 3.35+ (``RETURNING``, ``ON CONFLICT``, JSON1)."""

    name = "sqlite"

    def indexed_by(self, index: str) -> str:
        return f" INDEXED BY {index}"

    def lock(self, *, skip_locked: bool = False) -> str:
        return ""  # every write transaction holds the database's one write lock

    def json_text(self, column: str, *keys: str) -> tuple[str, tuple[Any, ...]]:
        path = "$" + "".join("." + json.dumps(k, ensure_ascii=False) for k in keys)
        return f"CAST(json_extract({column}, ?) AS TEXT)", (path,)

    def json_has(self, column: str, key: str) -> tuple[str, tuple[Any, ...]]:
        return f"json_type({column}, ?) IS NOT NULL", ("$." + json.dumps(key, ensure_ascii=False),)

    def instant(self, expr: str) -> str:
        return f"julianday({expr})"


class PostgresDialect(Dialect):
    """PostgreSQL 13+ (JSON text read as ``jsonb``)."""

    name = "postgresql"

    def indexed_by(self, index: str) -> str:
        return ""  # its planner picks the partial index by itself

    def lock(self, *, skip_locked: bool = False) -> str:
        return " FOR UPDATE SKIP LOCKED" if skip_locked else " FOR UPDATE"

    def json_text(self, column: str, *keys: str) -> tuple[str, tuple[Any, ...]]:
        return f"(({column})::jsonb #>> CAST(? AS text[]))", (list(keys),)

    def json_has(self, column: str, key: str) -> tuple[str, tuple[Any, ...]]:
        return f"jsonb_exists(({column})::jsonb, ?)", (key,)

    def instant(self, expr: str) -> str:
        return f"CAST({expr} AS timestamptz)"


SQLITE = SQLiteDialect()
POSTGRES = PostgresDialect()
