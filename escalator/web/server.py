"""Serving the API: :class:`ApiServer`, the daemon's supervised HTTP task, runs uvicorn inside
the daemon's own event loop. uvicorn's signal capture is disabled: the daemon keeps
SIGTERM/SIGINT/SIGHUP."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Generator
from typing import Any

import structlog
import uvicorn

from escalator.web.app import create_app

log = structlog.get_logger(__name__)


def parse_listen(text: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:8765`` for IPv6) → ``(host, port)``; port 0 picks a free one.
    Raises ``ValueError`` for anything else."""
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"http_listen {text!r}: expected host:port, e.g. 127.0.0.1:8765")
    return host, int(port)


def bind_listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (``SO_REUSEADDR``), not yet listening. Raises
    ``OSError`` (``EADDRINUSE`` when the port is taken)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


class _Server(uvicorn.Server):
    """uvicorn's server without its signal handling: the daemon owns SIGTERM/SIGINT/SIGHUP and
    stops the server by cancelling :func:`serve`."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # uvicorn would replace the daemon's handlers with signal.signal() and re-raise

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._on_started()


async def serve(daemon: Any) -> None:
    """Serve :func:`create_app` on ``daemon.settings.http_listen`` inside the running loop until
    cancelled; then shut down gracefully (at most 5 s) and re-raise. Sets ``daemon.http_port``
    (the bound port, useful with port 0) once connections are accepted. Raises ``ValueError``
    for a bad ``http_listen`` or an unreadable token secret, ``OSError`` when the address
    cannot be bound."""
    host, port = parse_listen(daemon.settings.http_listen)
    app = create_app(daemon)
    sock = bind_listen(host, port)
    bound = sock.getsockname()[1]

    def started() -> None:
        daemon.http_port = bound
        log.info("http_listening", host=host, port=bound)

    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off", ws="none",
                            server_header=False, timeout_graceful_shutdown=5)
    server = _Server(config, started)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await task
        raise
    finally:
        daemon.http_port = None
        sock.close()


class ApiServer:
    """The HTTP server as a supervised task of the daemon: ``await ApiServer(daemon).run()``."""

    def __init__(self, daemon: Any) -> None:
        self.daemon = daemon

    async def run(self) -> None:
        """Run :func:`serve` until cancelled."""
        await serve(self.daemon)

