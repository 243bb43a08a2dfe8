"""The spool source (:class:`SpoolSource`): the loop that takes files from ``incoming/``.

It wires the parts of this package: :mod:`.watch` (inotify and the rescan's listing),
:mod:`.settle` (when a file is complete), :mod:`.files` (reading, moving, sidecars),
:mod:`.decode` (bytes → submissions) and :mod:`.keys` (the pseudonym key). The contract is
in the package docstring (:mod:`escalator.intake.spool`) and ``docs/spool.md``.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import hashlib
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import structlog

from escalator.config.models import parse_duration
from escalator.intake.sources import SourceContext
from escalator.intake.spool.decode import decode_file
from escalator.intake.spool.files import (
    Rejected,
    display_name,
    move,
    read_file,
    subdir,
    write_rejected,
)
from escalator.intake.spool.keys import PSEUDONYM_KEY_FILE, PseudonymKeyError, load_pseudonym_key
from escalator.intake.spool.refused import refusal, rejected_name
from escalator.intake.spool.settle import UNKNOWN, Changed, Settling, Signature
from escalator.intake.spool.watch import (
    IN_CLOSE_WRITE,
    IN_IGNORED,
    IN_MOVED_TO,
    IN_Q_OVERFLOW,
    Watch,
    ignored,
    listing,
)
from escalator.store.base import StoreError

log = structlog.get_logger("escalator.spool")

DEFAULT_MAX_BYTES = 1024 * 1024
DEFAULT_SETTLE = 2.0
"""Seconds a file written in place must stay unchanged before it is taken."""
DEFAULT_RESCAN_INTERVAL = 30.0
"""Seconds between full rescans of ``incoming/``."""
RETRY_AFTER = 30.0
"""Seconds before a file is tried again after a transient failure (database busy, key missing)."""
OPTIONS = frozenset({"path", "settle", "rescan_interval", "poll_interval", "max_bytes",
                     "encoding", "inotify", "pseudonym_key"})


def _seconds(value: Any, option: str, *, positive: bool) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError as e:
        raise ValueError(f"spool source: option {option}: {e}") from None
    if seconds < 0 or (positive and seconds == 0):
        raise ValueError(f"spool source: option {option} must be {'> 0' if positive else '≥ 0'} "
                         f"seconds, not {value!r}")
    return seconds


class SpoolSource:
    """Watches ``<path>/incoming``; see :mod:`escalator.intake.spool` for the contract and options.

    ``run()`` is the daemon's entry point. Tests drive the same logic with a fake clock through
    :meth:`scan_once` (a rescan; stability measured on ``context.clock``) and
    :meth:`handle_inotify_event`. ``ready`` is set once the watch is set up and the first scan
    has run. Raises ``ValueError`` for bad options or a spool folder that is a symlink.
    """

    type_name: ClassVar[str] = "spool"

    def __init__(self, source_id: str, options: dict[str, Any], context: SourceContext) -> None:
        unknown = sorted(set(options) - OPTIONS)
        if unknown:
            raise ValueError(f"spool source {source_id}: unknown option(s) {', '.join(unknown)} "
                             f"(known: {', '.join(sorted(OPTIONS))})")
        path = options.get("path") or context.settings.spool_dir
        if not path:
            raise ValueError("spool source: no path (set options.path or ESCALATOR_SPOOL_DIR)")
        path = Path(path)
        self.root = (path if path.is_absolute() else context.config.base_dir / path).resolve()
        self.source_id = source_id
        self.ctx = context
        self.settle = _seconds(options.get("settle", DEFAULT_SETTLE), "settle", positive=False)
        self.rescan_interval = _seconds(
            options.get("rescan_interval", options.get("poll_interval", DEFAULT_RESCAN_INTERVAL)),
            "rescan_interval", positive=True)
        self.max_bytes = int(options.get("max_bytes", DEFAULT_MAX_BYTES))
        if self.max_bytes <= 0:
            raise ValueError("spool source: option max_bytes must be > 0")
        self.encoding: str | None = options.get("encoding") or None
        if self.encoding is not None:
            try:
                codecs.lookup(self.encoding)
            except LookupError:
                raise ValueError(f"spool source: unknown encoding {self.encoding!r}") from None
        self.use_inotify = bool(options.get("inotify", True))
        key = Path(options["pseudonym_key"]) if options.get("pseudonym_key") else None
        self.key_path = (Path(context.settings.state_dir) / PSEUDONYM_KEY_FILE if key is None
                         else key if key.is_absolute() else context.config.base_dir / key)
        self.incoming = self.root / "incoming"
        for sub in ("incoming", "tmp", "processed", "failed"):
            folder = self.root / sub
            folder.mkdir(parents=True, exist_ok=True)
            if folder.is_symlink() or not folder.is_dir():
                raise ValueError(f"spool source: {folder} must be a folder, not a symlink")
        self.ready = asyncio.Event()
        self.settling = Settling(self.settle)
        self._dirty: set[str] = set()
        self._rescan = True
        self._next_rescan: datetime | None = None
        self._wake = asyncio.Event()
        self._watch = Watch(self.incoming, f"rescan every {self.rescan_interval:g} s")
        self._watch_lost = False
        self._key: bytes | None = None
        self.passes = 0
        """How many passes :meth:`run` has finished (tests wait on it)."""

    @property
    def pending(self) -> dict[str, Signature]:
        """Files seen but not taken yet (waiting to settle or to be retried), with the
        signature (size, mtime_ns, inode) of the last look."""
        return self.settling.pending

    # ----------------------------------------------------------------- the loop

    async def run(self) -> None:
        """Take files until cancelled: those present at start first, then as inotify reports
        them, at every settle deadline and every rescan."""
        reader = None
        if self.use_inotify and self._watch.start():
            reader = asyncio.create_task(self._watch.read(self.handle_inotify_event,
                                                          self.request_rescan))
        log.info("spool_watching", path=str(self.incoming), inotify=self._watch.active,
                 settle=self.settle, rescan_interval=self.rescan_interval)
        self._rescan = True
        try:
            while True:
                await self._pass()
                self.passes += 1
                self.ready.set()
                await self._idle()
        finally:
            if reader is not None:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
            self._watch.close()

    def request_rescan(self) -> None:
        """Rescan ``incoming/`` at once (as after an inotify queue overflow)."""
        self._rescan = True
        self._wake.set()

    def handle_inotify_event(self, mask: int, name: str | None) -> None:
        """Note one inotify event on ``incoming/`` (``mask``: inotify bits; ``name``: the entry).

        ``IN_MOVED_TO``: the file is taken at the next pass without a settle wait.
        ``IN_CLOSE_WRITE``: the settle interval starts again. ``IN_Q_OVERFLOW`` forces a rescan;
        ``IN_IGNORED`` (the folder was removed or replaced) forces a rescan that sets the watch
        up again.
        """
        if mask & IN_Q_OVERFLOW:
            log.warning("spool_inotify_overflow", path=str(self.incoming))
            self.request_rescan()
            return
        if mask & IN_IGNORED:
            log.warning("spool_watch_lost", path=str(self.incoming))
            self._watch_lost = True
            self.request_rescan()
            return
        if not name or ignored(name):
            return
        if mask & IN_MOVED_TO:
            self.settling.renamed_in(name)
        elif mask & IN_CLOSE_WRITE:
            self.settling.written(name)  # the next look starts the settle interval again
        else:
            return
        self._dirty.add(name)
        self._wake.set()

    async def _pass(self) -> None:
        now = self.ctx.clock.now()
        if self._rescan or self._next_rescan is None or now >= self._next_rescan:
            self._rescan = False
            self._next_rescan = now + timedelta(seconds=self.rescan_interval)
            if self._watch_lost:
                self._watch_lost = False
                self._watch.restore()
            try:
                await self.scan_once()
            except OSError as e:
                log.error("spool_scan_failed", path=str(self.incoming), reason=str(e))
            return
        names = self._dirty | self.settling.moved | self.settling.due_names(now)
        self._dirty.clear()
        if names:
            try:
                with subdir(self.root, "incoming") as fd:
                    await self._check(sorted(names), fd)
            except OSError as e:
                log.error("spool_scan_failed", path=str(self.incoming), reason=str(e))

    async def _idle(self) -> None:
        self._wake.clear()
        if self._dirty or self.settling.moved or self._rescan:
            return
        now = self.ctx.clock.now()
        deadline = self.settling.next_due(self._next_rescan or now)
        timeout = max(0.005, (deadline - now).total_seconds())
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
        # arrives as the wake-up does, and the source would never stop
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wake.wait()

    # ----------------------------------------------------------------- scanning

    async def scan_once(self) -> int:
        """A rescan: look at every eligible file now in ``incoming/`` (by name) and take those
        that are complete — renamed in (reported by inotify), not regular files (refused at
        once), or unchanged since a look at least ``settle`` seconds ago on the injected clock.
        Other files are remembered and taken on a later look. Returns how many files were taken
        (moved to ``processed/`` or ``failed/``)."""
        self._dirty.clear()
        with subdir(self.root, "incoming") as fd:
            names = listing(fd)
            self.settling.keep_only(set(names))
            return await self._check(names, fd)

    async def _check(self, names: list[str], in_fd: int) -> int:
        taken = 0
        for name in names:
            now = self.ctx.clock.now()
            if self.settling.deferred(name, now):
                continue
            ready, expect = self._consider(name, in_fd, now)
            if ready and await self._take(name, expect, in_fd):
                taken += 1
            await asyncio.sleep(0)  # let inotify events and other tasks in between files
        return taken

    def _consider(self, name: str, in_fd: int, now: datetime) -> tuple[bool, Signature | None]:
        """Whether to take ``name`` now, and the signature it must still have when read."""
        try:
            st = os.stat(name, dir_fd=in_fd, follow_symlinks=False)
        except FileNotFoundError:
            self.settling.forget(name)
            return False, None
        except OSError as e:
            log.warning("spool_stat_failed", file=name, reason=str(e))
            self.settling.look_again(name, UNKNOWN, now)
            return False, None
        return self.settling.decide(name, st, now)

    # ----------------------------------------------------------------- taking one file

    async def take(self, path: Path) -> bool:
        """Take one file of ``incoming/`` now, without the settle check: commit its events and
        move it to ``processed/<local date>/``, or move it to ``failed/`` with a sidecar.
        Returns whether it left ``incoming/``. Never raises for bad input."""
        with subdir(self.root, "incoming") as fd:
            return await self._take(path.name, None, fd)

    async def _take(self, name: str, expect: Signature | None, in_fd: int) -> bool:
        now = self.ctx.clock.now()
        try:
            data = read_file(in_fd, name, expect, self.max_bytes)
        except FileNotFoundError:
            log.info("spool_file_vanished", file=name)  # e.g. taken by another process
            self.settling.forget(name)
            return False
        except Changed as e:
            self.settling.look_again(name, e.sig, now)  # still being written: settle again
            return False
        except Rejected as e:
            return self._fail(in_fd, name, e)
        except OSError as e:
            return self._fail(in_fd, name, Rejected(f"cannot read the file: {e.strerror or e}"))
        sha = hashlib.sha256(data).hexdigest()
        try:
            decoded = decode_file(name, data, self.ctx.config, key=self._pseudonym_key,
                                  encoding=self.encoding, source=self.source_id)
        except Rejected as e:
            return self._fail(in_fd, name, e)
        except PseudonymKeyError as e:
            log.error("spool_file_deferred", file=name, reason=str(e), retry_in=RETRY_AFTER)
            self.settling.defer(name, now, RETRY_AFTER)
            return False
        except Exception as e:  # a parser bug must not stop the source: fail the file, loudly
            log.exception("spool_parse_crashed", file=name)
            return self._fail(in_fd, name, Rejected(f"cannot parse the file: {type(e).__name__}: {e}"))
        events = decoded.items
        refused = None
        if decoded.register is not None and decoded.register.refused:
            # the refused rows go to failed/ before the commit (a retry finds them there), the
            # notice to registers.notify in the same transaction as the good rows
            refused = refusal(decoded.register, display_name(name), sha, self.ctx.config)
            try:
                where = write_rejected(self.root, rejected_name(name), refused.csv,
                                       {**refused.sidecar, "at": now.isoformat()})
            except OSError as e:
                log.error("spool_file_deferred", file=name, reason=f"cannot write the refused "
                          f"rows: {e}", retry_in=RETRY_AFTER)
                self.settling.defer(name, now, RETRY_AFTER)
                return False
            events = [*events, refused.notice]
        try:
            results = await self.ctx.ingest_file(events, sha, display_name(name), self.source_id)
        except (StoreError, OSError) as e:  # the store, not the file: try again later
            log.error("spool_file_deferred", file=name, reason=f"{type(e).__name__}: {e}",
                      retry_in=RETRY_AFTER)
            self.settling.defer(name, now, RETRY_AFTER)
            return False
        except Exception as e:
            log.exception("spool_ingest_crashed", file=name)
            return self._fail(in_fd, name, Rejected(
                f"the engine could not take the file: {type(e).__name__}: {e}"))
        if refused is not None:
            log.warning("spool_register_rows_refused", file=name,
                        rows_refused=refused.sidecar["rows_refused"],
                        rows_taken=refused.sidecar["rows_taken"], moved_to=where,
                        errors=refused.sidecar["errors"][:50])
        self.settling.forget(name)
        try:
            dest = self._accept(in_fd, name)
        except FileNotFoundError:
            log.info("spool_file_vanished", file=name, after="commit")
            return False
        except OSError as e:  # committed; the next look finds the hash taken and moves it
            log.error("spool_move_failed", file=name, reason=str(e), retry_in=RETRY_AFTER)
            self.settling.defer(name, now, RETRY_AFTER)
            return False
        if results is None:
            log.info("spool_file_already_taken", file=name, sha256=sha, moved_to=dest)
        else:
            log.info("spool_file_taken", file=name, events=len(results),
                     incidents=[r.incident_id for r in results if r.incident_id is not None],
                     statuses=sorted({r.status for r in results}), moved_to=dest,
                     **({"warnings": w} if (w := [x for r in results for x in r.warnings]) else {}))
        return True

    def _pseudonym_key(self) -> bytes:
        if self._key is None:
            self._key = load_pseudonym_key(self.key_path)
        return self._key

    # ----------------------------------------------------------------- moving

    def _today(self) -> str:
        return self.ctx.clock.now().astimezone(self.ctx.config.school.tz).date().isoformat()

    def _accept(self, in_fd: int, name: str) -> str:
        """Move a committed file to ``processed/<local date>/``; returns where it went. (The
        crash test kills the process in place of this step: see tests/test_spool_crash.py.)"""
        return move(self.root, in_fd, name, ("processed", self._today()))

    def _fail(self, in_fd: int, name: str, why: Rejected) -> bool:
        try:
            dest = move(self.root, in_fd, name, ("failed",), sidecar=why, at=self.ctx.clock.now())
        except FileNotFoundError:
            log.info("spool_file_vanished", file=name)
            self.settling.forget(name)
            return False
        except OSError as e:
            log.error("spool_move_failed", file=name, reason=str(e), why=why.reason,
                      retry_in=RETRY_AFTER)
            self.settling.defer(name, self.ctx.clock.now(), RETRY_AFTER)
            return False
        self.settling.forget(name)
        log.warning("spool_file_failed", file=name, reason=why.reason, errors=why.errors[:50],
                    moved_to=dest)
        return True
