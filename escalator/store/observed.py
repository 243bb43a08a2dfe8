"""A store wrapper that reports every timeline entry after its transaction commits.

The daemon wraps its store in :class:`ObservedStore` and connects the ``track_incident`` hook,
so every incident transition — written by the engine or by delivery — reaches plugins once it
is durable, and never from a transaction that rolled back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import structlog

from escalator.store.base import Store, TimelineEntry, Tx

log = structlog.get_logger("escalator.store")

Observer = Callable[[int, TimelineEntry], None]


class _ObservedTx:
    """A transaction that remembers the timeline entries written through it."""

    def __init__(self, tx: Tx, entries: list[TimelineEntry]) -> None:
        self._tx, self._entries = tx, entries

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tx, name)

    def add_timeline(self, incident_id: int, at: datetime, type: str, actor: str | None,
                     detail: dict[str, Any]) -> None:
        self._tx.add_timeline(incident_id, at, type, actor, detail)
        self._entries.append(TimelineEntry(0, incident_id, at, type, actor, detail))


class ObservedStore:
    """Wraps ``store``; calls ``observer(incident_id, entry)`` for each timeline entry after
    commit (``entry.id`` is 0: the row id is not read back). Observer errors are logged."""

    def __init__(self, store: Store, observer: Observer) -> None:
        self.inner = store
        self.observer = observer

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        entries: list[TimelineEntry] = []
        with self.inner.transaction() as tx:
            yield _ObservedTx(tx, entries)
        for entry in entries:
            try:
                self.observer(entry.incident_id, entry)
            except Exception:
                log.exception("track_incident_failed", incident_id=entry.incident_id)

    def close(self) -> None:
        self.inner.close()
