"""The spool-folder source: events dropped as files into ``<spool>/incoming/``.

Contract (DESIGN.md "Spool folder"): writers put complete files into ``incoming/`` (best: write
into ``tmp/`` and rename in); names starting with ``.`` or ending ``.tmp``/``.part`` are
ignored; a file's events and its content hash are committed in one transaction, then the file
moves to ``processed/<local date>/``; a bad file moves to ``failed/`` with ``<name>.error.json``
saying why. Files present at start are taken. A file whose content was taken before (same
SHA-256) adds nothing and is moved to ``processed/``.

This basic version rescans the folder every ``poll_interval`` seconds (default 1).
Options: ``path`` (default: the daemon's ``spool_dir``), ``poll_interval``, ``max_bytes``.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any, ClassVar

import structlog

from escalator.hookspecs import hookimpl
from escalator.intake import IntakeError, parse_events
from escalator.sources import SourceContext

log = structlog.get_logger("escalator.spool")

IGNORED_SUFFIXES = (".tmp", ".part")
DEFAULT_MAX_BYTES = 1024 * 1024
SIDECAR_SUFFIX = ".error.json"


def ignored(name: str) -> bool:
    """Whether a file name is skipped (dotfiles, ``*.tmp``, ``*.part``)."""
    return name.startswith(".") or name.endswith(IGNORED_SUFFIXES)


class Rejected(Exception):
    """A file that goes to ``failed/``: ``reason`` and the ``errors`` list for the sidecar."""

    def __init__(self, reason: str, errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.errors = errors or []


class SpoolSource:
    """Watches ``<path>/incoming``; see the module docstring for the contract."""

    type_name: ClassVar[str] = "spool"

    def __init__(self, source_id: str, options: dict[str, Any], context: SourceContext) -> None:
        path = options.get("path") or context.settings.spool_dir
        if not path:
            raise ValueError("spool source: no path (set options.path or ESCALATOR_SPOOL_DIR)")
        path = Path(path)
        self.root = path if path.is_absolute() else context.config.base_dir / path
        self.source_id = source_id
        self.ctx = context
        self.poll_interval = float(options.get("poll_interval", 1.0))
        self.max_bytes = int(options.get("max_bytes", DEFAULT_MAX_BYTES))
        self.incoming = self.root / "incoming"
        for sub in ("incoming", "tmp", "processed", "failed"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    async def run(self) -> None:
        """Take files until cancelled: those present at start first, then every poll."""
        log.info("spool_watching", path=str(self.incoming))
        while True:
            await self.scan_once()
            await asyncio.sleep(self.poll_interval)

    async def scan_once(self) -> int:
        """Take every eligible file now in ``incoming/`` (oldest name first). Returns the count."""
        names = sorted(e.name for e in os.scandir(self.incoming) if not ignored(e.name))
        for name in names:
            await self.take(self.incoming / name)
        return len(names)

    async def take(self, path: Path) -> None:
        """Commit one file's events and move it; move a bad file to ``failed/``. Never raises
        for bad input."""
        try:
            data = self._read(path)
        except FileNotFoundError:
            log.info("spool_file_vanished", file=path.name)  # e.g. taken by another process
            return
        except OSError as e:
            self._fail(path, Rejected(f"cannot read the file: {e.strerror or e}"))
            return
        except Rejected as e:
            self._fail(path, e)
            return
        try:
            sha = hashlib.sha256(data).hexdigest()
            events = parse_events(self._decode(data, path.name))
        except Rejected as e:
            self._fail(path, e)
            return
        except IntakeError as e:
            self._fail(path, Rejected("invalid event", e.errors))
            return
        results = await self.ctx.ingest_file(events, sha, path.name, self.source_id)
        dest = self._move(path, self.root / "processed" / self._today())
        if results is None:
            log.info("spool_file_already_taken", file=path.name, sha256=sha, moved_to=str(dest))
        else:
            log.info("spool_file_taken", file=path.name, events=len(results),
                     incidents=[r.incident_id for r in results], moved_to=str(dest))

    def _read(self, path: Path) -> bytes:
        if not stat.S_ISREG(path.lstat().st_mode):
            raise Rejected("not a regular file (symlinks are refused)")
        # No symlink may be swapped in between the check and the open; a FIFO must not block.
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(path, flags)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise Rejected("not a regular file (symlinks are refused)") from None
            raise
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise Rejected("not a regular file (symlinks are refused)")
            if st.st_size > self.max_bytes:
                raise Rejected(f"file too large: {st.st_size} bytes (limit {self.max_bytes})")
            data = f.read(self.max_bytes + 1)
        if len(data) > self.max_bytes:  # grew after the size check
            raise Rejected(f"file too large: over {self.max_bytes} bytes (limit {self.max_bytes})")
        return data

    @staticmethod
    def _decode(data: bytes, name: str) -> Any:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise Rejected(f"not UTF-8 text (byte {e.start})") from None
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise Rejected(f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
        except RecursionError:
            raise Rejected("not valid JSON: nested too deeply") from None
        except ValueError as e:  # e.g. an integer over the interpreter's digit limit
            raise Rejected(f"not valid JSON: {e}") from None

    def _today(self) -> str:
        return self.ctx.clock.now().astimezone(self.ctx.config.school.tz).date().isoformat()

    def _fail(self, path: Path, why: Rejected) -> None:
        dest = self._move(path, self.root / "failed", sidecar=SIDECAR_SUFFIX)
        sidecar = dest.with_name(dest.name + SIDECAR_SUFFIX)
        body = {"file": path.name, "reason": why.reason, "errors": why.errors,
                "at": self.ctx.clock.now().isoformat()}
        tmp = sidecar.with_name("." + sidecar.name + ".tmp")
        tmp.write_text(json.dumps(body, ensure_ascii=False, indent=2), encoding="utf-8")
        os.replace(tmp, sidecar)
        log.warning("spool_file_failed", file=path.name, reason=why.reason, errors=why.errors,
                    moved_to=str(dest))

    @staticmethod
    def _move(path: Path, folder: Path, sidecar: str | None = None) -> Path:
        """Move ``path`` into ``folder`` under a free name (``name.1.ext``, … on collision);
        with ``sidecar``, the name plus that suffix must be free too, so the sidecar written
        next to the file never overwrites an earlier file."""
        folder.mkdir(parents=True, exist_ok=True)

        def taken(p: Path) -> bool:
            return p.exists() or p.is_symlink()

        dest = folder / path.name
        n = 1
        while taken(dest) or (sidecar and taken(dest.with_name(dest.name + sidecar))):
            dest = folder / f"{path.stem}.{n}{path.suffix}"
            n += 1
        os.replace(path, dest)
        _fsync_dir(folder)
        return dest


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@hookimpl
def register_sources(register):
    register(SpoolSource)


