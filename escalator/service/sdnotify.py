"""systemd's notify protocol (sd_notify(3)): READY, STATUS, WATCHDOG, RELOADING, STOPPING.

A datagram to the AF_UNIX socket named by ``NOTIFY_SOCKET`` (a leading ``@`` means the
abstract namespace). Without ``NOTIFY_SOCKET`` (not under systemd, or ``Type=simple``) every
call is a no-op. The protocol is a few lines of text; no library is needed for it.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping


class Notifier:
    """Sends notify messages. ``env`` defaults to ``os.environ``; errors sending are ignored
    (systemd going away must never stop the daemon)."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        addr = env.get("NOTIFY_SOCKET", "")
        self.address = ("\0" + addr[1:]) if addr.startswith("@") else addr
        self._sock: socket.socket | None = None
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        mine = pid is None or pid == str(os.getpid())
        self.watchdog_seconds: float | None = (int(usec) / 1e6) if usec and mine else None
        """The watchdog timeout (seconds) systemd expects pings within, or None."""

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, *fields: str) -> None:
        """Send ``KEY=value`` fields in one datagram."""
        if not self.address:
            return
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(fields).encode("utf-8"), self.address)
        except OSError:
            pass

    def ready(self, status: str | None = None) -> None:
        """``READY=1``: start-up finished (store, config, plugins and sources are up)."""
        self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> None:
        """``STATUS=…``: one line shown by ``systemctl status``."""
        self.send(f"STATUS={text.replace(chr(10), ' ')}")

    def watchdog(self) -> None:
        """``WATCHDOG=1``: the daemon's event loop is alive (sent by its pulse task)."""
        self.send("WATCHDOG=1")

    def reloading(self) -> None:
        """``RELOADING=1`` with ``MONOTONIC_USEC`` (required by ``Type=notify-reload``)."""
        self.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def stopping(self) -> None:
        """``STOPPING=1``: draining before exit."""
        self.send("STOPPING=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
