"""The spool-folder source: events dropped as files into ``<spool>/incoming/``.

Contract (DESIGN.md "Spool folder"; the writer's guide is ``docs/spool.md``): writers put
complete files into ``incoming/`` (best: write into ``tmp/`` and rename in); names starting with
``.`` or ending ``.tmp``/``.part`` are ignored; a file's events and its content hash are
committed in one transaction, then the file moves to ``processed/<local date>/``; a bad file
moves to ``failed/`` with ``<name>.error.json`` saying why. Files present at start are taken. A
file whose content was taken before (same SHA-256) adds nothing and is moved to ``processed/``.

A file is taken only when complete:

- renamed in (inotify ``IN_MOVED_TO``): at once;
- written in place (``IN_CLOSE_WRITE``), or found by a rescan: once it has stayed unchanged
  (size, ``mtime_ns``, inode) for ``settle`` seconds, measured on the injected clock between two
  looks — so a writer that opens, appends and closes several times (Samba, some Windows tools)
  is not taken half-written. Every ``IN_CLOSE_WRITE`` starts the interval again.

A periodic rescan (every ``rescan_interval`` seconds, and at once after an inotify queue
overflow) covers missed events and network filesystems where inotify sees nothing. Without
inotify (not Linux, no watches left, or ``inotify: false``) the rescan alone does the work.

Formats by extension: ``.csv`` registers (:mod:`escalator.intake.registers`), ``.yaml`` /
``.yml`` (one event or a list; safe loader), anything else JSON (one event or a list).

Options: ``path`` (default: the daemon's ``spool_dir``), ``settle`` (seconds, default 2; 0 turns
the check off — only for writers that always rename in), ``rescan_interval`` (seconds, default
30; ``poll_interval`` is an older name for it), ``max_bytes`` (default 1 MiB), ``encoding`` (of
CSV registers; default: detected), ``inotify`` (default true), ``pseudonym_key`` (default
``<state_dir>/pseudonym.key``). Relative paths are read from the config file's folder.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import errno
import hashlib
import json
import os
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path, PurePath
from typing import Any, ClassVar

import structlog
from ruamel.yaml import YAML
from ruamel.yaml.constructor import SafeConstructor
from ruamel.yaml.error import YAMLError

from escalator.config.models import parse_duration
from escalator.engine.engine import Submission
from escalator.events import Event
from escalator.hookspecs import hookimpl
from escalator.intake.parsing import IntakeError, parse_events
from escalator.intake.registers import RegisterError, parse_register
from escalator.intake.sources import SourceContext
from escalator.store.base import StoreError

log = structlog.get_logger("escalator.spool")

IGNORED_SUFFIXES = (".tmp", ".part")
DEFAULT_MAX_BYTES = 1024 * 1024
DEFAULT_SETTLE = 2.0
"""Seconds a file written in place must stay unchanged before it is taken."""
DEFAULT_RESCAN_INTERVAL = 30.0
"""Seconds between full rescans of ``incoming/``."""
SIDECAR_SUFFIX = ".error.json"
PSEUDONYM_KEY_FILE = "pseudonym.key"
YAML_MAX_NODES = 100_000
"""Largest YAML document, counted in nodes with every alias expanded."""
RETRY_AFTER = 30.0
"""Seconds before a file is tried again after a transient failure (database busy, key missing)."""
OPTIONS = frozenset({"path", "settle", "rescan_interval", "poll_interval", "max_bytes",
                     "encoding", "inotify", "pseudonym_key"})

# inotify(7) mask bits, as in <sys/inotify.h> (asyncinotify.Mask has the same values)
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000

Signature = tuple[int, int, int]
"""What must stay unchanged for a file to count as complete: (size, mtime_ns, inode)."""


def display_name(name: str) -> str:
    """A file name fit for the store and logs: names that are not UTF-8 (e.g. GBK bytes from a
    Windows share) are read as GB18030, else shown with ``\\x`` escapes."""
    raw = os.fsencode(name)
    for encoding in ("utf-8", "gb18030"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return raw.decode("utf-8", "backslashreplace")


def ignored(name: str) -> bool:
    """Whether a file name is skipped (dotfiles, ``*.tmp``, ``*.part``)."""
    return name.startswith(".") or name.endswith(IGNORED_SUFFIXES)


class Rejected(Exception):
    """A file that goes to ``failed/``: ``reason`` and the ``errors`` list for the sidecar."""

    def __init__(self, reason: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.errors = errors or []


class PseudonymKeyError(Exception):
    """The pseudonym key could not be read or created (the file stays in ``incoming/``)."""


class _Changed(Exception):
    """The file changed while it was being looked at: not complete yet."""

    def __init__(self, sig: Signature) -> None:
        self.sig = sig


@dataclass
class _Look:
    sig: Signature
    since: datetime


def _sig(st: os.stat_result) -> Signature:
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def _seconds(value: Any, option: str, *, positive: bool) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError as e:
        raise ValueError(f"spool source: option {option}: {e}") from None
    if seconds < 0 or (positive and seconds == 0):
        raise ValueError(f"spool source: option {option} must be {'> 0' if positive else '≥ 0'} "
                         f"seconds, not {value!r}")
    return seconds


def load_pseudonym_key(path: Path) -> bytes:
    """The per-installation pseudonym key at ``path`` (32 random bytes, hex), created with mode
    0600 on first use. Creation is atomic (written aside, then hard-linked into place), so two
    processes racing both end up with the first key. Raises :class:`PseudonymKeyError` when it
    cannot be read or created, or is corrupt — a corrupt key is never replaced, since every
    pseudonymous id derived from it would change."""
    try:
        try:
            text = path.read_text(encoding="ascii")
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                os.write(fd, (secrets.token_hex(32) + "\n").encode("ascii"))
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, path)
                log.info("pseudonym_key_created", path=str(path))
            except FileExistsError:
                pass
            finally:
                os.unlink(tmp)
            _fsync_path(path.parent)
            text = path.read_text(encoding="ascii")
        key = bytes.fromhex(text.strip())
    except (OSError, ValueError) as e:
        raise PseudonymKeyError(f"pseudonym key {path}: {e}") from e
    if len(key) < 16:
        raise PseudonymKeyError(f"pseudonym key {path}: too short ({len(key)} bytes)")
    return key


class _StringTimestamps(SafeConstructor):
    """Timestamps stay strings, so a YAML file reads exactly like the same JSON file."""


_StringTimestamps.add_constructor(
    "tag:yaml.org,2002:timestamp", lambda loader, node: loader.construct_scalar(node))


class SpoolSource:
    """Watches ``<path>/incoming``; see the module docstring for the contract and options.

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
        self._looks: dict[str, _Look] = {}
        self._moved: set[str] = set()
        self._dirty: set[str] = set()
        self._retry: dict[str, datetime] = {}
        self._rescan = True
        self._next_rescan: datetime | None = None
        self._wake = asyncio.Event()
        self._inotify: Any = None
        self._watch_lost = False
        self._key: bytes | None = None
        self.passes = 0
        """How many passes :meth:`run` has finished (tests wait on it)."""

    @property
    def pending(self) -> dict[str, Signature]:
        """Files seen but not taken yet (waiting to settle or to be retried), with the
        signature (size, mtime_ns, inode) of the last look."""
        return {name: look.sig for name, look in self._looks.items()}

    # ----------------------------------------------------------------- the loop

    async def run(self) -> None:
        """Take files until cancelled: those present at start first, then as inotify reports
        them, at every settle deadline and every rescan."""
        reader = None
        self._inotify = self._start_inotify()
        if self._inotify is not None:
            reader = asyncio.create_task(self._read_inotify(self._inotify))
        log.info("spool_watching", path=str(self.incoming), inotify=self._inotify is not None,
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
            if self._inotify is not None:
                self._inotify.close()
                self._inotify = None

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
            self._moved.add(name)
        elif mask & IN_CLOSE_WRITE:
            self._moved.discard(name)
            self._looks.pop(name, None)  # the next look starts the settle interval again
        else:
            return
        self._dirty.add(name)
        self._wake.set()

    def _start_inotify(self) -> Any:
        if not self.use_inotify:
            return None
        try:
            from asyncinotify import Inotify, Mask

            inotify = Inotify(cache_size=256)
        except Exception as e:  # not Linux, no libc support, no instances left
            log.warning("spool_inotify_unavailable", reason=f"{type(e).__name__}: {e}",
                        fallback=f"rescan every {self.rescan_interval:g} s")
            return None
        try:
            inotify.add_watch(self.incoming, Mask(IN_CLOSE_WRITE | IN_MOVED_TO | IN_ONLYDIR
                                                  | IN_DONT_FOLLOW))
        except OSError as e:  # e.g. ENOSPC: no watches left
            inotify.close()
            log.warning("spool_inotify_unavailable", reason=str(e),
                        fallback=f"rescan every {self.rescan_interval:g} s")
            return None
        return inotify

    async def _read_inotify(self, inotify: Any) -> None:
        try:
            async for event in inotify:
                self.handle_inotify_event(int(event.mask), str(event.name) if event.name else None)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("spool_inotify_failed", fallback=f"rescan every {self.rescan_interval:g} s")
            self.request_rescan()

    def _rewatch(self) -> None:
        self._watch_lost = False
        if self._inotify is None:
            return
        try:
            from asyncinotify import Mask

            self._inotify.add_watch(self.incoming, Mask(IN_CLOSE_WRITE | IN_MOVED_TO | IN_ONLYDIR
                                                        | IN_DONT_FOLLOW))
            log.info("spool_watch_restored", path=str(self.incoming))
        except OSError as e:
            log.warning("spool_watch_not_restored", reason=str(e))

    async def _pass(self) -> None:
        now = self.ctx.clock.now()
        if self._rescan or self._next_rescan is None or now >= self._next_rescan:
            self._rescan = False
            self._next_rescan = now + timedelta(seconds=self.rescan_interval)
            if self._watch_lost:
                self._rewatch()
            try:
                await self.scan_once()
            except OSError as e:
                log.error("spool_scan_failed", path=str(self.incoming), reason=str(e))
            return
        names = self._dirty | self._moved | {n for n in self._looks if self._due(n) <= now}
        self._dirty.clear()
        if names:
            try:
                with self._incoming_fd() as fd:
                    await self._check(sorted(names), fd)
            except OSError as e:
                log.error("spool_scan_failed", path=str(self.incoming), reason=str(e))

    def _due(self, name: str) -> datetime:
        look = self._looks[name]
        due = look.since + timedelta(seconds=self.settle)
        retry = self._retry.get(name)
        return max(due, retry) if retry is not None else due

    async def _idle(self) -> None:
        self._wake.clear()
        if self._dirty or self._moved or self._rescan:
            return
        now = self.ctx.clock.now()
        deadline = self._next_rescan or now
        for name in self._looks:
            deadline = min(deadline, self._due(name))
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
        with self._incoming_fd() as fd:
            with os.scandir(fd) as entries:
                names = sorted(e.name for e in entries if not ignored(e.name))
            present = set(names)
            for gone in [n for n in self._looks if n not in present]:
                del self._looks[gone]
            self._moved &= present
            for gone in [n for n in self._retry if n not in present]:
                del self._retry[gone]
            return await self._check(names, fd)

    async def _check(self, names: list[str], in_fd: int) -> int:
        taken = 0
        for name in names:
            now = self.ctx.clock.now()
            retry = self._retry.get(name)
            if retry is not None and now < retry:
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
            self._forget(name)
            return False, None
        except OSError as e:
            log.warning("spool_stat_failed", file=name, reason=str(e))
            self._looks[name] = _Look((-1, -1, -1), now)
            return False, None
        if not stat.S_ISREG(st.st_mode):
            return True, None  # refused at once: nothing to wait for
        if name in self._moved:
            self._moved.discard(name)
            self._looks.pop(name, None)
            return True, None
        sig = _sig(st)
        if self.settle == 0:
            return True, sig
        look = self._looks.get(name)
        if look is None or look.sig != sig:
            self._looks[name] = _Look(sig, now)
            return False, None
        if (now - look.since).total_seconds() >= self.settle:
            return True, sig
        return False, None

    def _forget(self, name: str) -> None:
        self._looks.pop(name, None)
        self._moved.discard(name)
        self._retry.pop(name, None)

    @contextlib.contextmanager
    def _incoming_fd(self) -> Iterator[int]:
        fd = self._subdir("incoming")
        try:
            yield fd
        finally:
            os.close(fd)

    def _subdir(self, *parts: str) -> int:
        """A directory fd of ``root/parts…``: each part created if missing and opened without
        following symlinks, so nothing a writer swaps in can lead outside the spool."""
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for part in parts:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o777, dir_fd=fd)
                try:
                    sub = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                  dir_fd=fd)
                except OSError as e:
                    if e.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise OSError(e.errno, f"{part} in {self.root} is not a folder (a "
                                               "symlink?); refusing to use it") from None
                    raise
                os.close(fd)
                fd = sub
        except BaseException:
            os.close(fd)
            raise
        return fd

    # ----------------------------------------------------------------- taking one file

    async def take(self, path: Path) -> bool:
        """Take one file of ``incoming/`` now, without the settle check: commit its events and
        move it to ``processed/<local date>/``, or move it to ``failed/`` with a sidecar.
        Returns whether it left ``incoming/``. Never raises for bad input."""
        with self._incoming_fd() as fd:
            return await self._take(path.name, None, fd)

    async def _take(self, name: str, expect: Signature | None, in_fd: int) -> bool:
        now = self.ctx.clock.now()
        try:
            data = self._read(in_fd, name, expect)
        except FileNotFoundError:
            log.info("spool_file_vanished", file=name)  # e.g. taken by another process
            self._forget(name)
            return False
        except _Changed as e:
            self._looks[name] = _Look(e.sig, now)  # still being written: settle again
            return False
        except Rejected as e:
            return self._fail(in_fd, name, e)
        except OSError as e:
            return self._fail(in_fd, name, Rejected(f"cannot read the file: {e.strerror or e}"))
        sha = hashlib.sha256(data).hexdigest()
        try:
            events = self._parse(name, data)
        except Rejected as e:
            return self._fail(in_fd, name, e)
        except PseudonymKeyError as e:
            log.error("spool_file_deferred", file=name, reason=str(e), retry_in=RETRY_AFTER)
            self._defer(name, now)
            return False
        except Exception as e:  # a parser bug must not stop the source: fail the file, loudly
            log.exception("spool_parse_crashed", file=name)
            return self._fail(in_fd, name, Rejected(f"cannot parse the file: {type(e).__name__}: {e}"))
        try:
            results = await self.ctx.ingest_file(events, sha, display_name(name), self.source_id)
        except (StoreError, OSError) as e:  # the store, not the file: try again later
            log.error("spool_file_deferred", file=name, reason=f"{type(e).__name__}: {e}",
                      retry_in=RETRY_AFTER)
            self._defer(name, now)
            return False
        except Exception as e:
            log.exception("spool_ingest_crashed", file=name)
            return self._fail(in_fd, name, Rejected(
                f"the engine could not take the file: {type(e).__name__}: {e}"))
        self._forget(name)
        try:
            dest = self._accept(in_fd, name)
        except FileNotFoundError:
            log.info("spool_file_vanished", file=name, after="commit")
            return False
        except OSError as e:  # committed; the next look finds the hash taken and moves it
            log.error("spool_move_failed", file=name, reason=str(e), retry_in=RETRY_AFTER)
            self._defer(name, now)
            return False
        if results is None:
            log.info("spool_file_already_taken", file=name, sha256=sha, moved_to=dest)
        else:
            log.info("spool_file_taken", file=name, events=len(results),
                     incidents=[r.incident_id for r in results if r.incident_id is not None],
                     statuses=sorted({r.status for r in results}), moved_to=dest)
        return True

    def _defer(self, name: str, now: datetime) -> None:
        self._retry[name] = now + timedelta(seconds=RETRY_AFTER)
        self._looks.setdefault(name, _Look((-1, -1, -1), now))

    def _read(self, in_fd: int, name: str, expect: Signature | None) -> bytes:
        mode = os.stat(name, dir_fd=in_fd, follow_symlinks=False).st_mode
        if stat.S_ISLNK(mode):
            raise Rejected("a symbolic link: links are refused, never followed")
        if stat.S_ISDIR(mode):
            raise Rejected("a folder, not a file: put event files directly into incoming/")
        if not stat.S_ISREG(mode):
            raise Rejected("not a regular file (a device, FIFO or socket)")
        # No symlink may be swapped in between the check and the open; a FIFO must not block.
        flags = (os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
                 | getattr(os, "O_NOCTTY", 0))
        try:
            fd = os.open(name, flags, dir_fd=in_fd)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise Rejected("not a regular file (symlinks are refused)") from None
            raise
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise Rejected("not a regular file (symlinks are refused)")
            if st.st_nlink > 1:
                raise Rejected(f"a hard link (the file has {st.st_nlink} names): refused; write "
                               "the file in tmp/ and rename it into incoming/")
            if st.st_size > self.max_bytes:
                raise Rejected(f"file too large: {st.st_size} bytes (limit {self.max_bytes})")
            if expect is not None and _sig(st) != expect:
                raise _Changed(_sig(st))
            data = f.read(self.max_bytes + 1)
            if len(data) > self.max_bytes:  # grew after the size check
                raise Rejected(f"file too large: over {self.max_bytes} bytes (limit {self.max_bytes})")
            after = os.fstat(fd)
            if _sig(after) != _sig(st):
                raise _Changed(_sig(after))
        return data

    # ----------------------------------------------------------------- formats

    def _parse(self, name: str, data: bytes) -> list[Event | Submission]:
        suffix = PurePath(name).suffix.lower()
        if suffix == ".csv":
            try:
                return list(parse_register(data, self.ctx.config, key=self._pseudonym_key,
                                           encoding=self.encoding))
            except RegisterError as e:
                raise Rejected(e.reason, e.errors) from None
        doc = self._yaml(data) if suffix in (".yaml", ".yml") else self._json(data)
        try:
            return list(parse_events(doc))
        except IntakeError as e:
            raise Rejected("invalid event", e.errors) from None

    def _pseudonym_key(self) -> bytes:
        if self._key is None:
            self._key = load_pseudonym_key(self.key_path)
        return self._key

    @staticmethod
    def _text(data: bytes) -> str:
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise Rejected(f"not UTF-8 text (byte {e.start})") from None

    @classmethod
    def _json(cls, data: bytes) -> Any:
        text = cls._text(data)
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise Rejected(f"not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})") from None
        except RecursionError:
            raise Rejected("not valid JSON: nested too deeply") from None
        except ValueError as e:  # e.g. an integer over the interpreter's digit limit
            raise Rejected(f"not valid JSON: {e}") from None

    @classmethod
    def _yaml(cls, data: bytes) -> Any:
        text = cls._text(data)
        yaml = YAML(typ="safe", pure=True)
        yaml.Constructor = _StringTimestamps
        try:
            doc = yaml.load(text)
        except YAMLError as e:
            mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
            raise Rejected(f"not valid YAML: {problem}{where}") from None
        except RecursionError:
            raise Rejected("not valid YAML: nested too deeply") from None
        except (ValueError, TypeError, OverflowError) as e:
            raise Rejected(f"not valid YAML: {e}") from None
        _bounded(doc, YAML_MAX_NODES)
        return doc

    # ----------------------------------------------------------------- moving

    def _today(self) -> str:
        return self.ctx.clock.now().astimezone(self.ctx.config.school.tz).date().isoformat()

    def _accept(self, in_fd: int, name: str) -> str:
        """Move a committed file to ``processed/<local date>/``; returns where it went. (The
        crash test kills the process in place of this step: see tests/test_spool_crash.py.)"""
        return self._move(in_fd, name, ("processed", self._today()))

    def _fail(self, in_fd: int, name: str, why: Rejected) -> bool:
        try:
            dest = self._move(in_fd, name, ("failed",), sidecar=why)
        except FileNotFoundError:
            log.info("spool_file_vanished", file=name)
            self._forget(name)
            return False
        except OSError as e:
            log.error("spool_move_failed", file=name, reason=str(e), why=why.reason,
                      retry_in=RETRY_AFTER)
            self._defer(name, self.ctx.clock.now())
            return False
        self._forget(name)
        log.warning("spool_file_failed", file=name, reason=why.reason, errors=why.errors[:50],
                    moved_to=dest)
        return True

    def _move(self, in_fd: int, name: str, parts: tuple[str, ...],
              sidecar: Rejected | None = None) -> str:
        """Move ``name`` out of ``incoming/`` into ``root/parts…`` under a free name
        (``name.1.ext``, … on collision); with ``sidecar``, the name plus ``.error.json`` must be
        free too, and the sidecar is written there (atomically) *before* the file moves, so a
        file is never in ``failed/`` without it, even after a kill -9 between the two renames
        (tests/test_crash_lane.py); the sidecar such a kill leaves behind without its file
        names this file and is reused. It never overwrites an earlier file. Returns the
        destination path."""
        dst = self._subdir(*parts)
        try:
            def taken(candidate: str) -> bool:
                try:
                    os.stat(candidate, dir_fd=dst, follow_symlinks=False)
                    return True
                except FileNotFoundError:
                    return False

            def orphan(candidate: str) -> bool:  # a sidecar of this file, left by a kill
                try:
                    fd = os.open(candidate + SIDECAR_SUFFIX, os.O_RDONLY | os.O_NOFOLLOW
                                 | os.O_CLOEXEC, dir_fd=dst)
                    with os.fdopen(fd, "rb") as f:
                        return json.loads(f.read(1 << 20))["file"] == display_name(name)
                except (OSError, ValueError, KeyError, TypeError):
                    return False

            p = PurePath(name)
            dest, n = name, 1
            while taken(dest) or (sidecar is not None and taken(dest + SIDECAR_SUFFIX)
                                  and not orphan(dest)):
                dest = f"{p.stem}.{n}{p.suffix}"
                n += 1
            if sidecar is not None:
                body = {"file": display_name(name), "reason": sidecar.reason, "errors": sidecar.errors,
                        "at": self.ctx.clock.now().isoformat()}
                tmp = f".{dest}{SIDECAR_SUFFIX}.tmp"
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o666, dir_fd=dst)
                with os.fdopen(fd, "wb") as f:
                    # a lone surrogate (an undecodable file name, a "\ud800" escape in the
                    # input) becomes the JSON escape \udXXX: the sidecar stays valid UTF-8 JSON
                    f.write(json.dumps(body, ensure_ascii=False, indent=2)
                            .encode("utf-8", "backslashreplace"))
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, dest + SIDECAR_SUFFIX, src_dir_fd=dst, dst_dir_fd=dst)
            try:
                os.replace(name, dest, src_dir_fd=in_fd, dst_dir_fd=dst)
            except OSError:  # e.g. the file vanished: no sidecar without its file
                if sidecar is not None:
                    with contextlib.suppress(OSError):
                        os.unlink(dest + SIDECAR_SUFFIX, dir_fd=dst)
                raise
            os.fsync(dst)
            os.fsync(in_fd)  # the name's removal from incoming/ survives a power cut too
        finally:
            os.close(dst)
        return str(self.root.joinpath(*parts, dest))


def _bounded(doc: Any, limit: int) -> None:
    """Reject a document with more than ``limit`` nodes, aliases expanded (a YAML alias bomb
    is small on disk and huge in memory once walked)."""
    stack, seen = [doc], 0
    while stack:
        node = stack.pop()
        seen += 1
        if seen > limit:
            raise Rejected(f"YAML document too large: over {limit} values once aliases are expanded")
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _fsync_path(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@hookimpl
def register_sources(register):
    register(SpoolSource)
