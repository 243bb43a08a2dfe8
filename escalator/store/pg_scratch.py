"""Throw-away PostgreSQL schemas for tests: :func:`scratch_schema`.

Each scratch store lives in a schema of its own (``escalator_t_<hex>``) inside the database the
admin URL names; its URL is the admin URL with ``options=-csearch_path=<schema>``, so every
connection a store opens from it sees only that schema. Creating and dropping a schema takes
milliseconds (a database takes far longer), and several test runs can share one server.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import psycopg

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
"""The server the tests use unless ``ESCALATOR_TEST_PG`` names another (trust auth)."""

ADMIN_ENV = "ESCALATOR_TEST_PG"
"""The environment variable naming the tests' PostgreSQL database (an admin URL)."""


class ServerUnreachable(RuntimeError):
    """The tests' PostgreSQL server cannot be reached; the message says how to fix it."""


def admin_url() -> str:
    """The tests' PostgreSQL URL: ``$ESCALATOR_TEST_PG`` or :data:`DEFAULT_ADMIN_URL`."""
    return os.environ.get(ADMIN_ENV) or DEFAULT_ADMIN_URL


def with_schema(url: str, schema: str) -> str:
    """``url`` whose connections use ``schema`` first (``options=-csearch_path=<schema>``)."""
    return f"{url}{'&' if '?' in url else '?'}options={quote(f'-csearch_path={schema}')}"


def _connect(url: str) -> psycopg.Connection:
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as e:
        raise ServerUnreachable(
            f"the tests need PostgreSQL at {url.split('?')[0]} (set {ADMIN_ENV} to another "
            f"admin URL): {str(e).strip()}") from e


_SCHEMA = re.compile(r"escalator_t_[0-9a-f]{12}")


def create_schema(admin: str | None = None) -> str:
    """A fresh, empty schema in the database ``admin`` names (default :func:`admin_url`); its
    ``postgresql://`` URL (drop it with :func:`drop_schema`). Raises :class:`ServerUnreachable`
    when the server cannot be reached."""
    base = admin or admin_url()
    schema = f"escalator_t_{secrets.token_hex(6)}"
    with _connect(base) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    return with_schema(base, schema)


def drop_schema(url: str) -> None:
    """Drop the scratch schema of ``url`` (a URL :func:`create_schema` gave) and everything in
    it; nothing when ``url`` names no scratch schema."""
    found = _SCHEMA.search(url)
    if found is None:
        return
    base = url.rpartition("options=")[0].rstrip("?&")
    with _connect(base) as conn:
        conn.execute("SET lock_timeout = '10s'")  # a store left open holds no lock
        conn.execute(f"DROP SCHEMA IF EXISTS {found.group(0)} CASCADE")


@contextmanager
def scratch_schema(admin: str | None = None) -> Iterator[str]:
    """A fresh, empty schema (:func:`create_schema`) for the block; yields its URL and drops it
    after."""
    url = create_schema(admin)
    try:
        yield url
    finally:
        drop_schema(url)
