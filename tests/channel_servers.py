"""Real servers on 127.0.0.1 for the channel tests: an HTTP server that records requests and
answers what a test queues, and an aiosmtpd SMTP server that captures messages or refuses
recipients with a chosen reply."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult


def free_port() -> int:
    """A TCP port nobody listens on right now (bound once, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Recorded:
    """One request the HTTP server received."""

    method: str
    path: str
    raw_query: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


@dataclass
class Answer:
    """What the HTTP server answers: ``status``, a JSON-able ``body`` (or raw bytes), and a
    ``delay`` in seconds before answering (to make a client time out), and the
    ``content_type`` (Tencent Cloud's SDK reads an error only from exactly
    ``application/json``, as its API answers)."""

    status: int = 200
    body: Any = field(default_factory=dict)
    delay: float = 0.0
    content_type: str = "application/json; charset=utf-8"


class HTTPRecorder:
    """A threading HTTP server on 127.0.0.1 with a free port. ``answers`` is a queue of
    :class:`Answer`; when it is empty, ``default`` is used. ``requests`` records everything."""

    def __init__(self, default: Answer | None = None) -> None:
        self.requests: list[Recorded] = []
        self.answers: deque[Answer] = deque()
        self.default = default or Answer()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                recorder.requests.append(Recorded(
                    self.command, parts.path, parts.query,
                    parse_qs(parts.query, keep_blank_values=True),
                    {k.lower(): v for k, v in self.headers.items()}, body))
                answer = recorder.answers.popleft() if recorder.answers else recorder.default
                if answer.delay:
                    time.sleep(answer.delay)
                data = (answer.body if isinstance(answer.body, bytes)
                        else json.dumps(answer.body, ensure_ascii=False).encode("utf-8"))
                try:
                    self.send_response(answer.status)
                    self.send_header("Content-Type", answer.content_type)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = do_PUT = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)

    def answer(self, *answers: Answer) -> None:
        self.answers.extend(answers)

    def __enter__(self) -> HTTPRecorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Captured:
    """One message the SMTP server accepted."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes


class SMTPHandler:
    """aiosmtpd handler: refuses recipients with ``rcpt_reply`` when set (e.g. ``"550 5.1.1 no
    such user"``), else accepts and records each message in ``messages``."""

    def __init__(self) -> None:
        self.messages: list[Captured] = []
        self.rcpt_reply: str | None = None

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        self.messages.append(Captured(envelope.mail_from, list(envelope.rcpt_tos),
                                      envelope.original_content or envelope.content))
        return "250 Message accepted for delivery"


class SMTPServer:
    """A real aiosmtpd :class:`Controller` on 127.0.0.1 and a free port. With ``users``
    (name → password) AUTH is offered (without TLS: a test server only) and required."""

    def __init__(self, users: dict[str, str] | None = None) -> None:
        self.handler = SMTPHandler()
        self.port = free_port()
        kwargs: dict[str, Any] = {}
        if users:
            def authenticator(server, session, envelope, mechanism, auth_data):
                ok = (auth_data.login.decode() in users
                      and users[auth_data.login.decode()] == auth_data.password.decode())
                return AuthResult(success=ok, handled=False)
            kwargs = {"authenticator": authenticator, "auth_require_tls": False,
                      "auth_required": True}
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port, **kwargs)

    @property
    def messages(self) -> list[Captured]:
        return self.handler.messages

    def __enter__(self) -> SMTPServer:
        self.controller.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.controller.stop()
