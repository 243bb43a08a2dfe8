"""The settle rule: when a file in ``incoming/`` is complete enough to take.

- renamed in (inotify ``IN_MOVED_TO``): at once;
- written in place (``IN_CLOSE_WRITE``), or found by a rescan: once it has stayed unchanged
  (size, ``mtime_ns``, inode) for ``settle`` seconds, measured on the injected clock between two
  looks — so a writer that opens, appends and closes several times (Samba, some Windows tools)
  is not taken half-written. Every ``IN_CLOSE_WRITE`` starts the interval again;
- not a regular file: at once (it is refused, nothing to wait for).

A file whose taking failed for a passing reason waits until its retry time (:meth:`Settling.defer`).
No I/O here: the caller looks (``stat``) and this module decides. Times are aware datetimes
from the injected clock.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from datetime import datetime, timedelta

Signature = tuple[int, int, int]
"""What must stay unchanged for a file to count as complete: (size, mtime_ns, inode)."""

UNKNOWN: Signature = (-1, -1, -1)
"""The signature of a file that could not be looked at (it never matches a real one)."""


def signature(st: os.stat_result) -> Signature:
    """The :data:`Signature` of a ``stat`` result."""
    return (st.st_size, st.st_mtime_ns, st.st_ino)


class Changed(Exception):
    """The file changed while it was being looked at (new signature ``sig``): not complete yet."""

    def __init__(self, sig: Signature) -> None:
        self.sig = sig


@dataclass
class Look:
    """The last look at a file: its signature and since when it has had it."""

    sig: Signature
    since: datetime


class Settling:
    """The files of ``incoming/`` seen but not taken yet, and when each may be taken.

    ``settle``: seconds a file written in place must stay unchanged (0: no wait)."""

    def __init__(self, settle: float) -> None:
        self.settle = settle
        self.looks: dict[str, Look] = {}
        self.moved: set[str] = set()
        """Names renamed in (inotify ``IN_MOVED_TO``): taken without a settle wait."""
        self.retry: dict[str, datetime] = {}
        """Names deferred after a passing failure, and when they may be tried again."""

    @property
    def pending(self) -> dict[str, Signature]:
        """Files seen but not taken yet, with the signature of the last look."""
        return {name: look.sig for name, look in self.looks.items()}

    def renamed_in(self, name: str) -> None:
        """``name`` was renamed into the folder: complete, take it without waiting."""
        self.moved.add(name)

    def written(self, name: str) -> None:
        """``name`` was written and closed: the settle interval starts again at the next look."""
        self.moved.discard(name)
        self.looks.pop(name, None)

    def decide(self, name: str, st: os.stat_result, now: datetime) -> tuple[bool, Signature | None]:
        """Whether to take ``name`` (``st``: its ``lstat``) now, and the signature it must still
        have when read (``None``: any)."""
        if not stat.S_ISREG(st.st_mode):
            return True, None  # refused at once: nothing to wait for
        if name in self.moved:
            self.moved.discard(name)
            self.looks.pop(name, None)
            return True, None
        sig = signature(st)
        if self.settle == 0:
            return True, sig
        look = self.looks.get(name)
        if look is None or look.sig != sig:
            self.looks[name] = Look(sig, now)
            return False, None
        if (now - look.since).total_seconds() >= self.settle:
            return True, sig
        return False, None

    def look_again(self, name: str, sig: Signature, now: datetime) -> None:
        """``name`` was seen with ``sig`` (:data:`UNKNOWN` when it could not be looked at) at
        ``now``: the settle interval starts again."""
        self.looks[name] = Look(sig, now)

    def defer(self, name: str, now: datetime, seconds: float) -> None:
        """Try ``name`` again no sooner than ``seconds`` after ``now``."""
        self.retry[name] = now + timedelta(seconds=seconds)
        self.looks.setdefault(name, Look(UNKNOWN, now))

    def deferred(self, name: str, now: datetime) -> bool:
        """Whether ``name`` waits for its retry time at ``now``."""
        retry = self.retry.get(name)
        return retry is not None and now < retry

    def forget(self, name: str) -> None:
        """``name`` left the folder (taken, moved, vanished)."""
        self.looks.pop(name, None)
        self.moved.discard(name)
        self.retry.pop(name, None)

    def keep_only(self, present: set[str]) -> None:
        """Forget every name not in ``present`` (a rescan's listing)."""
        for gone in [n for n in self.looks if n not in present]:
            del self.looks[gone]
        self.moved &= present
        for gone in [n for n in self.retry if n not in present]:
            del self.retry[gone]

    def due(self, name: str) -> datetime:
        """When ``name`` (seen) may next be taken: its settle deadline or its retry time."""
        look = self.looks[name]
        due = look.since + timedelta(seconds=self.settle)
        retry = self.retry.get(name)
        return max(due, retry) if retry is not None else due

    def due_names(self, now: datetime) -> set[str]:
        """The names seen whose time has come at ``now``."""
        return {n for n in self.looks if self.due(n) <= now}

    def next_due(self, deadline: datetime) -> datetime:
        """The earliest of ``deadline`` and every seen name's :meth:`due`."""
        for name in self.looks:
            deadline = min(deadline, self.due(name))
        return deadline
