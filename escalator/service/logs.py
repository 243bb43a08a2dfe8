"""structlog set-up: JSON lines for journald, readable lines on a terminal."""

from __future__ import annotations

import logging
import sys

import structlog


def configure(fmt: str = "auto", level: int | str = logging.INFO) -> None:
    """Configure structlog. ``fmt``: ``json``, ``console``, or ``auto`` (JSON unless stderr is a
    tty); ``level``: a :mod:`logging` level or its name (``"debug"`` … ``"error"``, the
    ``ESCALATOR_LOG_LEVEL`` setting); lines below it cost one comparison."""
    if isinstance(level, str):
        level = logging.getLevelNamesMapping()[level.upper()]
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer = (structlog.processors.JSONRenderer(ensure_ascii=False) if fmt == "json"
                else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def loop_factory(choice: str = "auto"):
    """The event loop factory for ``choice`` (the ``ESCALATOR_EVENT_LOOP`` setting): uvloop's for
    ``auto`` when it is installed (about 16 % more events/s here, bench/README.md) or for
    ``uvloop`` (``ImportError`` if missing); ``None`` (asyncio's own loop) for ``asyncio``."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise
        return None
    return uvloop.new_event_loop
