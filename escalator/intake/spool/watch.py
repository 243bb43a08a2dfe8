"""Watching ``incoming/``: inotify events where the kernel gives them, and the rescan's
listing, which covers missed events and network filesystems where inotify sees nothing.

Without inotify (not Linux, no watches left, or ``inotify: false``) the rescan alone does the
work. Names starting with ``.`` or ending ``.tmp``/``.part`` are never looked at (:func:`ignored`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger("escalator.spool")

IGNORED_SUFFIXES = (".tmp", ".part")

# inotify(7) mask bits, as in <sys/inotify.h> (asyncinotify.Mask has the same values)
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
WATCHED = IN_CLOSE_WRITE | IN_MOVED_TO | IN_ONLYDIR | IN_DONT_FOLLOW
"""The mask of the watch on ``incoming/``."""


def ignored(name: str) -> bool:
    """Whether a file name is skipped (dotfiles, ``*.tmp``, ``*.part``)."""
    return name.startswith(".") or name.endswith(IGNORED_SUFFIXES)


def listing(folder_fd: int) -> list[str]:
    """The names a rescan looks at in the folder ``folder_fd``, sorted (ignored ones left out)."""
    with os.scandir(folder_fd) as entries:
        return sorted(e.name for e in entries if not ignored(e.name))


class Watch:
    """An inotify watch on ``folder`` (``IN_CLOSE_WRITE``, ``IN_MOVED_TO``), or none.

    ``fallback`` is logged with every reason inotify is not there (e.g. "rescan every 30 s").
    """

    def __init__(self, folder: Path, fallback: str) -> None:
        self.folder = folder
        self.fallback = fallback
        self.inotify: Any = None

    @property
    def active(self) -> bool:
        """Whether inotify is set up."""
        return self.inotify is not None

    def start(self) -> bool:
        """Set the watch up; returns whether it is. A failure (not Linux, no libc support, no
        instances or watches left) is logged, not raised."""
        try:
            from asyncinotify import Inotify, Mask

            inotify = Inotify(cache_size=256)
        except Exception as e:  # not Linux, no libc support, no instances left
            log.warning("spool_inotify_unavailable", reason=f"{type(e).__name__}: {e}",
                        fallback=self.fallback)
            return False
        try:
            inotify.add_watch(self.folder, Mask(WATCHED))
        except OSError as e:  # e.g. ENOSPC: no watches left
            inotify.close()
            log.warning("spool_inotify_unavailable", reason=str(e), fallback=self.fallback)
            return False
        self.inotify = inotify
        return True

    async def read(self, on_event: Callable[[int, str | None], None],
                   on_failure: Callable[[], None]) -> None:
        """Pass every event to ``on_event(mask, name)`` until cancelled; if reading fails, log
        it and call ``on_failure()`` (the rescan then does the work)."""
        try:
            async for event in self.inotify:
                on_event(int(event.mask), str(event.name) if event.name else None)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("spool_inotify_failed", fallback=self.fallback)
            on_failure()

    def restore(self) -> None:
        """Set the watch up again after the folder was removed or replaced (``IN_IGNORED``)."""
        if self.inotify is None:
            return
        try:
            from asyncinotify import Mask

            self.inotify.add_watch(self.folder, Mask(WATCHED))
            log.info("spool_watch_restored", path=str(self.folder))
        except OSError as e:
            log.warning("spool_watch_not_restored", reason=str(e))

    def close(self) -> None:
        """Remove the watch (if any)."""
        if self.inotify is not None:
            self.inotify.close()
            self.inotify = None
