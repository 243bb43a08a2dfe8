"""``escalator store copy``: an existing school's SQLite database into an empty PostgreSQL one.

Every table and every row, in **one transaction** on the target: the copy either is all there
or not at all (the target stays empty, and running the command again just works), and no
daemon can see or write a half-copied database. A school's database is small (hundreds of
thousands of rows copy in well under a minute with ``COPY``), so a resumable copy would only add
states to get wrong. The source is read in one read transaction (a consistent snapshot, even if
something wrote meanwhile — but stop the daemon first: what it writes after the snapshot stays
behind).

Steps (:func:`copy_to_postgres`): migrate both to this escalator's schema version (the target
through :func:`escalator.store.open_store`, behind the advisory lock), lock the target's tables,
refuse a target with a row in any of them (naming the tables), ``COPY`` each table in the order
of its foreign keys (columns by name; rows in SQLite's ``rowid`` order, so a PostgreSQL serial
added in their place numbers them alike), set each identity / serial sequence past the highest
id (and past SQLite's ``AUTOINCREMENT`` high-water mark: an id once used is never reused),
count the rows of each table on both sides — a difference rolls everything back — and commit.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from escalator.config.settings import is_postgres_url, redact_url
from escalator.store.base import StoreError, StoreUnavailable
from escalator.store.probe import code_schema_version

BATCH = 2000
"""Rows read from SQLite per fetch while copying (memory stays flat)."""

LOCK_TIMEOUT_SECONDS = 10
"""How long the copy waits for the target's tables (a daemon already using them holds them)."""


class CopyRefused(StoreError):
    """The copy was not started or was rolled back: the target is not empty, the schemas differ,
    a count did not match. ``str(e)`` names the table(s) and the masked target; nothing of the
    copy was stored."""


@dataclass(frozen=True)
class TableCopy:
    """One table copied: ``rows`` read from the source, ``copied`` counted on the target after
    the copy (equal, or the copy was rolled back)."""

    table: str
    rows: int
    copied: int


def _sqlite_tables(src: sqlite3.Connection) -> list[str]:
    rows = src.execute("SELECT name FROM sqlite_master WHERE type = 'table'"
                       " AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name")
    return [r[0] for r in rows]


def _sqlite_columns(src: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in src.execute(f'PRAGMA table_info("{table}")')]


def _has_rowid(src: sqlite3.Connection, table: str) -> bool:
    try:
        src.execute(f'SELECT rowid FROM "{table}" LIMIT 0')
    except sqlite3.OperationalError:
        return False  # WITHOUT ROWID
    return True


def _autoincrement_marks(src: sqlite3.Connection) -> dict[str, int]:
    """SQLite's ``AUTOINCREMENT`` high-water marks (``sqlite_sequence``), per table."""
    try:
        return {r[0]: int(r[1]) for r in src.execute("SELECT name, seq FROM sqlite_sequence")}
    except sqlite3.OperationalError:
        return {}


def _rows(src: sqlite3.Connection, table: str, columns: list[str]) -> Iterator[tuple[Any, ...]]:
    cols = ", ".join(f'"{c}"' for c in columns)
    order = " ORDER BY rowid" if _has_rowid(src, table) else ""
    cur = src.execute(f'SELECT {cols} FROM "{table}"{order}')
    while batch := cur.fetchmany(BATCH):
        yield from batch


def _pg_tables(cur: Any) -> dict[str, list[str]]:
    """The target's tables in its current schema and their columns."""
    cur.execute("SELECT table_name, column_name FROM information_schema.columns"
                " WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position")
    out: dict[str, list[str]] = {}
    for table, column in cur.fetchall():
        out.setdefault(table, []).append(column)
    return out


def _fk_order(cur: Any, tables: list[str]) -> list[str]:
    """``tables`` ordered so that each comes after the tables its foreign keys point at (on the
    target, whose constraints are the ones checked). Ties by name."""
    cur.execute("SELECT c.conrelid::regclass::text, c.confrelid::regclass::text"
                " FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace"
                " WHERE c.contype = 'f' AND n.nspname = current_schema()")
    needs: dict[str, set[str]] = {t: set() for t in tables}
    for child, parent in cur.fetchall():
        child, parent = child.strip('"'), parent.strip('"')
        if child in needs and parent in needs and parent != child:
            needs[child].add(parent)
    ordered: list[str] = []
    while needs:
        ready = sorted(t for t, deps in needs.items() if not deps - set(ordered))
        if not ready:
            raise CopyRefused("foreign keys form a cycle between the tables "
                              + ", ".join(sorted(needs)))
        for t in ready:
            ordered.append(t)
            del needs[t]
    return ordered


def _sequences(cur: Any, table: str) -> list[tuple[str, str]]:
    """``(column, sequence)`` of each identity or serial column of ``table``."""
    cur.execute("SELECT column_name, pg_get_serial_sequence(quote_ident(%s), column_name)"
                " FROM information_schema.columns WHERE table_schema = current_schema()"
                " AND table_name = %s AND (is_identity = 'YES' OR column_default LIKE 'nextval(%%')",
                (table, table))
    return [(c, s) for c, s in cur.fetchall() if s]


def copy_to_postgres(source: Path | str, target: str, *,
                     progress: Callable[[TableCopy], None] | None = None) -> list[TableCopy]:
    """Copy the SQLite database at ``source`` into the empty PostgreSQL database at ``target``
    (a ``postgresql://`` URL) in one transaction; returns each table's counts, in the order
    copied. ``progress`` is called after each table (before the commit).

    Both are first brought to this escalator's schema (opening them as stores migrates them).
    Raises :class:`CopyRefused` when the target has a row in any table (naming them), when a
    table or column of the source is missing on the target, or when a count differs after the
    copy (rolled back); :class:`StoreUnavailable` when either database cannot be reached or
    read, or a row does not fit the target's column (rolled back); ``ValueError`` when
    ``target`` is not a PostgreSQL URL; ``FileNotFoundError`` when ``source`` does not exist."""
    import psycopg

    from escalator.store import open_store
    from escalator.store.postgres import split_url

    if not is_postgres_url(target):
        raise ValueError(f"--to must be a postgresql:// URL, not {redact_url(str(target))!r}")
    source = Path(source)
    if not source.is_file():
        raise FileNotFoundError(2, "no escalator database", str(source))
    where = redact_url(target)
    for t in (source, target):  # migrate each to this escalator's schema version
        open_store(t).close()
    src = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)
    try:
        src.execute("BEGIN")  # one snapshot for the rows and their counts
        tables = _sqlite_tables(src)
        marks = _autoincrement_marks(src)
        with (psycopg.connect(split_url(target)[0], connect_timeout=10,
                              application_name="escalator-store-copy") as conn,
              conn.transaction(), conn.cursor() as cur):
            return _copy(src, cur, tables, marks, where, progress)
    except psycopg.Error as e:
        raise StoreUnavailable(f"{where}: {str(e).strip().splitlines()[0]}") from e
    except sqlite3.Error as e:
        raise StoreUnavailable(f"{source}: {e}") from e
    finally:
        src.close()


def _copy(src: sqlite3.Connection, cur: Any, tables: list[str], marks: dict[str, int],
          where: str, progress: Callable[[TableCopy], None] | None) -> list[TableCopy]:
    target_tables = _pg_tables(cur)
    missing = [t for t in tables if t not in target_tables]
    if missing:
        raise CopyRefused(f"{where} has no table {', '.join(missing)}: not escalator's schema "
                          f"version {code_schema_version()}")
    columns = {t: _sqlite_columns(src, t) for t in tables}
    for t in tables:
        lacking = [c for c in columns[t] if c not in target_tables[t]]
        if lacking:
            raise CopyRefused(f"{where}: table {t} has no column {', '.join(lacking)}")
    cur.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_SECONDS}s'")
    cur.execute("LOCK TABLE " + ", ".join(f'"{t}"' for t in tables) + " IN EXCLUSIVE MODE")
    full = []
    for t in sorted(tables, key=lambda t: (t not in ("incidents", "events"), t)):
        cur.execute(f'SELECT EXISTS (SELECT 1 FROM "{t}")')
        if cur.fetchone()[0]:
            full.append(t)
    if full:
        named = ", ".join(full[:5]) + (f" and {len(full) - 5} more tables" if len(full) > 5 else "")
        raise CopyRefused(f"{where} is not empty (rows in {named}): "
                          f"copy only into a new, empty database")
    done = []
    for t in _fk_order(cur, tables):
        cols = columns[t]
        quoted = ", ".join(f'"{c}"' for c in cols)
        with cur.copy(f'COPY "{t}" ({quoted}) FROM STDIN') as copy:
            for row in _rows(src, t, cols):
                copy.write_row(row)
        for column, sequence in _sequences(cur, t):
            # the next id: past the highest copied and past SQLite's AUTOINCREMENT mark
            cur.execute(f'SELECT GREATEST(COALESCE(MAX("{column}"), 0), %s) + 1 FROM "{t}"',
                        (marks.get(t, 0),))
            cur.execute("SELECT setval(%s, %s, false)", (sequence, cur.fetchone()[0]))
        rows = src.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0]
        cur.execute(f'SELECT COUNT(*) FROM "{t}"')
        copied = cur.fetchone()[0]
        if copied != rows:
            raise CopyRefused(f"{where}: table {t} has {copied} rows after the copy, the source "
                              f"{rows}; nothing was stored")
        done.append(TableCopy(t, rows, copied))
        if progress is not None:
            progress(done[-1])
    return done
