"""Which backend a ``database_url`` names: :func:`open_store`."""

from __future__ import annotations

import os

from escalator.config.settings import is_postgres_url
from escalator.store.base import Store


def open_store(target: str | os.PathLike[str]) -> Store:
    """Open the store at ``target``: a ``postgresql://`` / ``postgres://`` URL opens
    :class:`~escalator.store.postgres.PostgresStore`, anything else is a SQLite file path
    (:class:`~escalator.store.sqlite.SQLiteStore`; ``":memory:"`` for a throw-away one).

    Migrates the schema on open. Raises :class:`~escalator.store.base.StoreUnavailable` when
    the database cannot be reached or opened, ``RuntimeError`` when it was written by a newer
    escalator (a schema version this one does not know)."""
    if is_postgres_url(target):
        from escalator.store.postgres import PostgresStore

        return PostgresStore(str(target))
    from escalator.store.sqlite import SQLiteStore

    return SQLiteStore(target)
