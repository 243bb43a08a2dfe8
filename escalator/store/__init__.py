"""Persistence. The engine sees only :class:`~escalator.store.base.Store` and its transactions."""

from escalator.store.base import (
    Conflict,
    Incident,
    Notification,
    StepRun,
    Store,
    StoreError,
    StoreUnavailable,
    TimelineEntry,
    Tx,
)
from escalator.store.open import open_store
from escalator.store.sqlite import SQLiteStore

__all__ = ["Conflict", "Incident", "Notification", "SQLiteStore", "StepRun", "Store", "StoreError",
           "StoreUnavailable", "TimelineEntry", "Tx", "open_store"]
