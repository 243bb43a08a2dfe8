"""The per-installation pseudonym key of the registers' pupil ids (``P-…``,
:func:`escalator.intake.registers.pseudonym`), kept in ``<state_dir>/pseudonym.key``."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import structlog

from escalator.intake.spool.files import fsync_path

log = structlog.get_logger("escalator.spool")

PSEUDONYM_KEY_FILE = "pseudonym.key"
"""The key's file name in the state folder (the spool source's default)."""


class PseudonymKeyError(Exception):
    """The pseudonym key could not be read or created (the file stays in ``incoming/``)."""


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
            fsync_path(path.parent)
            text = path.read_text(encoding="ascii")
        key = bytes.fromhex(text.strip())
    except (OSError, ValueError) as e:
        raise PseudonymKeyError(f"pseudonym key {path}: {e}") from e
    if len(key) < 16:
        raise PseudonymKeyError(f"pseudonym key {path}: too short ({len(key)} bytes)")
    return key
