"""Persistence. The engine sees only :class:`~escalator.store.base.Store` and its transactions."""

from escalator.store.base import (
    Incident,
    Notification,
    StepRun,
    Store,
    TimelineEntry,
    Tx,
)
from escalator.store.sqlite import SQLiteStore

__all__ = ["Incident", "Notification", "SQLiteStore", "StepRun", "Store", "TimelineEntry", "Tx"]
