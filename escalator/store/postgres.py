"""PostgreSQL store (being written: issue 15)."""

from __future__ import annotations


class PostgresStore:
    """The PostgreSQL store at ``url`` (not yet implemented)."""

    def __init__(self, url: str) -> None:
        raise NotImplementedError("the PostgreSQL store is not implemented yet")
