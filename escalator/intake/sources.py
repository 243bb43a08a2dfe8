"""The source contract: what a source plugin is given and how it hands events in.

A source class has ``type_name`` (str), ``__init__(source_id: str, options: dict,
context: SourceContext)`` (raise ``ValueError`` for bad options) and ``async run()``, which runs
until cancelled. It hands events in through the context, which commits them durably before
returning.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from escalator.clock import Clock
from escalator.config.models import Config
from escalator.config.settings import Settings
from escalator.engine.engine import IngestResult, Submission
from escalator.events import Event


@dataclass
class SourceContext:
    """Given to every source.

    ``ingest(events, source)`` commits events and returns their results;
    ``ingest_file(events, sha256, name, source)`` does so for one spool file together with its
    content hash and returns None if that file was taken before. Both are coroutines; both take
    :class:`~escalator.engine.engine.Event` or :class:`~escalator.engine.engine.Submission` items.
    """

    settings: Settings
    config: Config
    clock: Clock
    ingest: Callable[[list[Event | Submission], str], Awaitable[list[IngestResult]]]
    ingest_file: Callable[[list[Event | Submission], str, str, str],
                          Awaitable[list[IngestResult] | None]]
    extra: dict[str, Any] | None = None
