"""The spool's files on disk: reading one safely, moving it to ``processed/`` or ``failed/``
(with its ``.error.json`` sidecar), and the names shown for it.

Every folder is opened by descriptor below the spool root without following symlinks, so
nothing a writer swaps in can lead outside the spool; every move is fsynced (the file's new
name and its removal from ``incoming/``), so it survives a power cut.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path, PurePath
from typing import Any

from escalator.intake.spool.settle import Changed, Signature, signature

SIDECAR_SUFFIX = ".error.json"
"""What a file's sidecar in ``failed/`` adds to its name."""


class Rejected(Exception):
    """A file that goes to ``failed/``: ``reason`` and the ``errors`` list for the sidecar."""

    def __init__(self, reason: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.errors = errors or []


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


def open_subdir(root: Path, *parts: str) -> int:
    """A directory fd of ``root/parts…``: each part created if missing and opened without
    following symlinks, so nothing a writer swaps in can lead outside the spool. Raises
    ``OSError`` (one naming the part when it is not a folder)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o777, dir_fd=fd)
            try:
                sub = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                              dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise OSError(e.errno, f"{part} in {root} is not a folder (a "
                                           "symlink?); refusing to use it") from None
                raise
            os.close(fd)
            fd = sub
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def subdir(root: Path, *parts: str) -> Iterator[int]:
    """:func:`open_subdir` as a context manager that closes the fd."""
    fd = open_subdir(root, *parts)
    try:
        yield fd
    finally:
        os.close(fd)


def read_file(in_fd: int, name: str, expect: Signature | None, max_bytes: int) -> bytes:
    """The bytes of regular file ``name`` in the folder ``in_fd``, at most ``max_bytes``.

    Raises :class:`Rejected` for a symlink, folder, device, FIFO, socket, hard link or a file
    too large; :class:`~escalator.intake.spool.settle.Changed` when its signature is not
    ``expect`` (if given) or changes while it is read; ``FileNotFoundError`` / ``OSError``
    from the filesystem."""
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
        if st.st_size > max_bytes:
            raise Rejected(f"file too large: {st.st_size} bytes (limit {max_bytes})")
        if expect is not None and signature(st) != expect:
            raise Changed(signature(st))
        data = f.read(max_bytes + 1)
        if len(data) > max_bytes:  # grew after the size check
            raise Rejected(f"file too large: over {max_bytes} bytes (limit {max_bytes})")
        after = os.fstat(fd)
        if signature(after) != signature(st):
            raise Changed(signature(after))
    return data


def move(root: Path, in_fd: int, name: str, parts: tuple[str, ...],
         sidecar: Rejected | None = None, at: datetime | None = None) -> str:
    """Move ``name`` out of ``incoming/`` (``in_fd``) into ``root/parts…`` under a free name
    (``name.1.ext``, … on collision); with ``sidecar``, the name plus ``.error.json`` must be
    free too, and the sidecar (saying why, and ``at``: when) is written there (atomically)
    *before* the file moves, so a file is never in ``failed/`` without it, even after a kill -9
    between the two renames (tests/test_crash_lane.py); the sidecar such a kill leaves behind
    without its file names this file and is reused. It never overwrites an earlier file.
    Returns the destination path. Raises ``OSError`` (``FileNotFoundError``: the file vanished)."""
    dst = open_subdir(root, *parts)
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
                    "at": at.isoformat() if at is not None else None}
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
    return str(root.joinpath(*parts, dest))


def fsync_path(folder: Path) -> None:
    """fsync the folder ``folder`` (a new name in it survives a power cut)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_rejected(root: Path, name: str, data: bytes, body: dict[str, Any]) -> str:
    """Write a register's refused rows (``data``, the ``.rejected.csv`` bytes) as ``name`` in
    ``root/failed/`` with the sidecar ``name.error.json`` (``body``, which holds the source
    file's ``sha256``): the sidecar first, then the file, each written to a temporary name,
    fsynced and renamed, so the file is never there without its sidecar. Under a free name
    (``x.rejected.1.csv``, …) when taken — unless the one there came from the same source file
    (same ``sha256``: a retry after a failed commit), which is kept. Returns the path."""
    dst = open_subdir(root, "failed")
    try:
        p = PurePath(name)
        dest, n = name, 1
        while True:
            try:
                os.stat(dest, dir_fd=dst, follow_symlinks=False)
            except FileNotFoundError:
                break
            try:
                fd = os.open(dest + SIDECAR_SUFFIX, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                             dir_fd=dst)
                with os.fdopen(fd, "rb") as f:
                    if json.loads(f.read(1 << 22)).get("sha256") == body.get("sha256"):
                        return str(root / "failed" / dest)
            except (OSError, ValueError, AttributeError):
                pass
            dest = f"{p.stem}.{n}{p.suffix}"
            n += 1
        side = json.dumps(body, ensure_ascii=False, indent=2).encode("utf-8", "backslashreplace")
        for target, content in ((dest + SIDECAR_SUFFIX, side), (dest, data)):
            tmp = f".{target}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o666, dir_fd=dst)
            with os.fdopen(fd, "wb") as f:
                f.write(content)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target, src_dir_fd=dst, dst_dir_fd=dst)
        os.fsync(dst)
    finally:
        os.close(dst)
    return str(root / "failed" / dest)
