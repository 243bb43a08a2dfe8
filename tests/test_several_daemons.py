"""Several daemons on one database, with real processes (docs/reliability.md "Several
daemons"): two ``escalator run`` on one SQLite file (WAL; ``BEGIN IMMEDIATE`` serialises
them) and on one PostgreSQL schema, a real HTTP SMS gateway, kill -9.

- A daemon killed while its message is ``sending``: the other sends it again once the dead
  node's row expired (a short ``ESCALATOR_NODE_TTL`` here; at most TTL + a beat), within 10 s.
- The killed node started again does not release the survivor's message in flight: it is
  sent once.
- The daily purge runs once across the two (its lease).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from escalator.store import open_store

pytestmark = pytest.mark.slow

TOKEN = "admin-token-several-daemons"
TTL = 2.0
"""The nodes' TTL in this test (seconds; the default is 8)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CONFIG = """
school:
  name: 多实例测试小学
  classes: ["3-2"]
people:
  - {{id: wang, name: 王老师, roles: [class_teacher], classes: ["3-2"],
      contacts: [{{channel: sms, to: "13800000001"}}]}}
channels:
  sms:
    type: sms_http
    options: {{url: "{url}/sms", timeout: 20}}
policies:
  one:
    steps:
      - {{targets: [class_teacher], timeout: 3600, mode: escalate}}
routes:
  - default: true
    policy: one
daemon:
  public_base_url: "http://escalator.test"
"""


class Gateway:
    """An SMS gateway on 127.0.0.1: records each message's text; while :attr:`hold` is set,
    a request is held unanswered (until :attr:`release` is set) so its row stays
    ``sending``."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.lock = threading.Lock()
        self.hold = threading.Event()
        self.release = threading.Event()
        self.held = threading.Event()
        gw = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with gw.lock:
                    gw.texts.append(json.loads(body)["text"])
                    holding = gw.hold.is_set()
                    if holding:
                        gw.hold.clear()  # only the first request is held
                if holding:
                    gw.held.set()
                    gw.release.wait(30)
                data = b'{"ok": true}'
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the sender was killed meanwhile

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02},
                         daemon=True).start()

    def count(self, needle: str) -> int:
        with self.lock:
            return sum(needle in t for t in self.texts)

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


class Daemons:
    """Daemons ``a`` and ``b`` (node names) on one state folder."""

    def __init__(self, tmp: Path, gateway: Gateway, database: str | None = None) -> None:
        self.tmp = tmp
        self.target = database or str(tmp / "state" / "escalator.sqlite3")
        cfg = tmp / "escalator.yaml"
        cfg.write_text(CONFIG.format(url=gateway.url), encoding="utf-8")
        self.ports = {"a": free_port(), "b": free_port()}
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, list[Path]] = {"a": [], "b": []}
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("ESCALATOR_", "NOTIFY_SOCKET", "WATCHDOG_"))}
        self.env.update(ESCALATOR_CONFIG=str(cfg), ESCALATOR_STATE_DIR=str(tmp / "state"),
                        ESCALATOR_LOG_FORMAT="json", ESCALATOR_API_TOKEN=TOKEN,
                        ESCALATOR_NODE_TTL=str(TTL), PYTHONUNBUFFERED="1",
                        ESCALATOR_DATABASE_URL=self.target)
        self._store: Any = None

    def start(self, node: str) -> None:
        log = self.tmp / f"{node}-{len(self.logs[node])}.log"
        self.logs[node].append(log)
        env = dict(self.env, ESCALATOR_NODE=node,
                   ESCALATOR_HTTP_LISTEN=f"127.0.0.1:{self.ports[node]}")
        with open(log, "wb") as out:
            self.procs[node] = subprocess.Popen([sys.executable, "-m", "escalator.cli", "run"],
                                                env=env, stdout=out, stderr=subprocess.STDOUT,
                                                cwd=self.tmp)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.procs[node].poll() is None, self.log_text(node)
            try:
                httpx.get(f"http://127.0.0.1:{self.ports[node]}/healthz", timeout=0.5)
                return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise AssertionError(f"daemon {node} did not listen within 60 s:\n{self.log_text(node)}")

    def kill(self, node: str) -> None:
        self.procs[node].send_signal(signal.SIGKILL)
        self.procs[node].wait(10)

    def stop(self) -> None:
        if self._store is not None:
            self._store.close()
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)

    def log_text(self, node: str) -> str:
        return "\n".join(p.read_text("utf-8", "replace") for p in self.logs[node])

    def send(self, node: str, key: str) -> int:
        r = httpx.post(f"http://127.0.0.1:{self.ports[node]}/api/v1/events", timeout=10,
                       headers={"Authorization": f"Bearer {TOKEN}"},
                       json={"kind": "incident", "category": "accident", "summary": key,
                             "class_id": "3-2", "dedup_key": key})
        assert r.status_code in (200, 201, 202), r.text
        return int(r.json()["incident_id"])

    @property
    def store(self) -> Any:
        """The same database, opened by the test (after a daemon created it)."""
        if self._store is None:
            self._store = open_store(self.target)
        return self._store

    def row(self, incident_id: int) -> tuple[str, str | None, str]:
        """The incident's one notification: (status, claimed_by, ack token)."""
        with self.store.transaction() as tx:
            [n] = tx.notifications_of(incident_id)
        return n.status, n.claimed_by, n.ack_token


def wait_for(what: str, check: Any, timeout: float) -> float:
    """Poll ``check`` until true; the seconds it took (fails after ``timeout``)."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)
    return time.monotonic() - start


@pytest.fixture(params=["sqlite", "postgresql"])
def daemons(request: pytest.FixtureRequest, tmp_path: Path):
    gateway = Gateway()
    d = Daemons(tmp_path, gateway, request.getfixturevalue("pg_url")
                if request.param == "postgresql" else None)
    d.gateway = gateway  # type: ignore[attr-defined]
    try:
        yield d
    finally:
        d.stop()
        gateway.close()


def test_a_killed_daemons_sends_go_out_from_the_survivor_and_its_restart_leaves_others_alone(
        daemons):
    gw: Gateway = daemons.gateway
    daemons.start("a")
    daemons.start("b")

    # 1. a message in flight (held at the gateway) from one node; that node is killed
    gw.hold.set()
    first = daemons.send("a", "several/1")
    assert gw.held.wait(20), "the first message never reached the gateway"
    status, owner, token = daemons.row(first)
    assert status == "sending" and owner in ("a", "b")
    survivor = "b" if owner == "a" else "a"
    daemons.kill(owner)
    gw.release.set()
    took = wait_for("the survivor sends the dead node's message again",
                    lambda: gw.count(token) == 2, 10)
    wait_for("recorded as delivered", lambda: daemons.row(first)[0] == "delivered", 10)
    assert daemons.row(first)[1] is None or daemons.row(first)[1] == survivor
    assert took <= 10
    assert '"dead_node_sends_released"' in daemons.log_text(survivor)

    # 2. the survivor's message in flight; the killed node starts again meanwhile
    gw.held.clear()
    gw.release.clear()
    gw.hold.set()
    second = daemons.send(survivor, "several/2")
    assert gw.held.wait(20), "the second message never reached the gateway"
    status, holder, token2 = daemons.row(second)
    assert (status, holder) == ("sending", survivor)
    daemons.start(owner)  # its start-up releases its own claims only
    time.sleep(TTL)  # a beat or two of both nodes (the restarted one must not take it)
    assert daemons.row(second)[:2] == ("sending", survivor)
    gw.release.set()
    wait_for("the second message recorded", lambda: daemons.row(second)[0] == "delivered", 10)
    time.sleep(TTL)
    assert gw.count(token2) == 1  # sent once: nobody reset the survivor's claim


def test_the_daily_purge_runs_once_across_two_daemons(daemons):
    daemons.start("a")
    daemons.start("b")
    time.sleep(TTL * 1.5)  # several timer passes of both
    purges = [daemons.log_text(n).count('"personal_data_purged"') for n in ("a", "b")]
    assert sorted(purges) == [0, 1], purges
    with daemons.store.transaction() as tx:
        assert tx.live_nodes(datetime.now(UTC)) == ["a", "b"]
        # the lease is the one who purged: the other cannot take it while it is held
        other = ("a", "b")[purges.index(0)]
        assert not tx.take_lease("daily-purge", other, datetime.now(UTC), TTL)
