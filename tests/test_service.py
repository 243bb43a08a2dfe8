"""Running as a system service: sd_notify on a real NOTIFY_SOCKET, SIGHUP reloads (good and
broken config), SIGTERM drains while events arrive and sends are in flight. Real subprocesses."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from escalator.store import open_store

from .conftest import CASES, FIXTURES

SLOW_CHANNEL = '''
import asyncio
from escalator.delivery.channels import DeliveryResult, DeliveryStatus
from escalator.hookspecs import hookimpl

class SlowChannel:
    type_name = "slow"
    audience = "person"
    def __init__(self, channel_id, options):
        self.delay = float(options.get("delay", 0.3))
    async def send(self, message):
        await asyncio.sleep(self.delay)  # a send in flight
        return DeliveryResult(DeliveryStatus.delivered, "slow")

@hookimpl
def register_channels(register):
    register(SlowChannel)
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def daemon_env(tmp_path: Path, config_text: str, *, watchdog_usec: int
               ) -> tuple[Path, int, dict[str, str]]:
    """Write ``config_text`` to ``tmp_path/escalator.yaml``; return it, a free API port and the
    environment of an ``escalator run`` under a notify socket ``tmp_path/notify.sock``."""
    cfg = tmp_path / "escalator.yaml"
    cfg.write_text(config_text, encoding="utf-8")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ESCALATOR_")}
    env.update(ESCALATOR_CONFIG=str(cfg), ESCALATOR_STATE_DIR=str(tmp_path / "state"),
               ESCALATOR_SPOOL_DIR=str(tmp_path / "spool"), ESCALATOR_LOG_FORMAT="json",
               ESCALATOR_HTTP_LISTEN=f"127.0.0.1:{port}", ESCALATOR_API_TOKEN="admin-token-0123",
               NOTIFY_SOCKET=str(tmp_path / "notify.sock"), WATCHDOG_USEC=str(watchdog_usec),
               PYTHONUNBUFFERED="1")
    return cfg, port, env


class NotifySocket:
    """A real AF_UNIX datagram socket standing in for systemd; collects messages in order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self.times: list[float] = []  # time.monotonic() of each message
        self._stop = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(4096).decode()
                self.times.append(time.monotonic())
                self.messages.append(data)
            except TimeoutError:
                continue
            except OSError:
                return

    def wait_for(self, predicate, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self.messages):
            if time.monotonic() > deadline:
                raise AssertionError(f"not seen in time; messages: {self.messages}")
            time.sleep(0.01)

    def index(self, needle: str, start: int = 0) -> int:
        for i in range(start, len(self.messages)):
            if needle in self.messages[i]:
                return i
        return -1

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=2)
        self.sock.close()


@pytest.fixture
def service(tmp_path):
    """Config (engine.yaml + spool + a slow channel plugin), env, and a notify socket."""
    plugins = tmp_path / "plugins.d"
    plugins.mkdir()
    (plugins / "slow.py").write_text(SLOW_CHANNEL, encoding="utf-8")
    text = (FIXTURES / "engine.yaml").read_text(encoding="utf-8")
    text = text.replace("main: {type: console}", "main: {type: slow, options: {delay: 0.3}}")
    text += "plugins_dir: plugins.d\nadministrators: [person:head]\n"
    cfg, port, env = daemon_env(tmp_path, text, watchdog_usec=600_000)
    notify = NotifySocket(tmp_path / "notify.sock")
    proc = subprocess.Popen([sys.executable, "-m", "escalator.cli", "run"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ns = type("Service", (), {})()
    ns.proc, ns.notify, ns.cfg, ns.port, ns.db = proc, notify, cfg, port, tmp_path / "state" / "escalator.sqlite3"
    yield ns
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)
    notify.close()


def test_notify_ready_watchdog_reload_and_stopping_in_order(service):
    n = service.notify
    n.wait_for(lambda m: any("READY=1" in x for x in m))
    ready = n.index("READY=1")
    assert "STATUS=open incidents: 0 triggered, 0 acknowledged" in n.messages[ready]
    # the watchdog is pinged from the engine loop (WATCHDOG_USEC=0.6 s → every 0.2 s)
    n.wait_for(lambda m: sum("WATCHDOG=1" in x for x in m[ready:]) >= 3)

    # SIGHUP with a good config: RELOADING=1 then READY=1
    service.proc.send_signal(signal.SIGHUP)
    n.wait_for(lambda m: n.index("READY=1", n.index("RELOADING=1") + 1) > 0 if n.index("RELOADING=1") >= 0 else False)
    good_reload = n.index("RELOADING=1")

    # SIGHUP with a broken config: the running config stays, the error is reported
    good = service.cfg.read_text(encoding="utf-8")
    service.cfg.write_text(good.replace("targets: [school_doctor]", "targets: [cdc]"), encoding="utf-8")
    service.proc.send_signal(signal.SIGHUP)
    n.wait_for(lambda m: any("last error: config reload failed" in x for x in m[good_reload + 1:]))
    service.cfg.write_text(good, encoding="utf-8")

    # the daemon still works on its running config, and the administrator was told
    with httpx.Client(base_url=f"http://127.0.0.1:{service.port}",
                      headers={"Authorization": "Bearer admin-token-0123"}) as c:
        incidents = c.get("/api/v1/incidents").json()
        listed = incidents["incidents"] if isinstance(incidents, dict) else incidents
        assert any("config reload failed" in i["summary"] for i in listed)
        r = c.post("/api/v1/events", json=json.loads((CASES / "events/fever_single.json").read_text()))
        assert r.status_code == 202 and r.json()["status"] == "created"

    service.proc.send_signal(signal.SIGTERM)
    assert service.proc.wait(timeout=30) == 0
    n.wait_for(lambda m: any("STOPPING=1" in x for x in m))
    assert n.index("READY=1") < n.index("RELOADING=1") < n.index("STOPPING=1")
    err = service.proc.stderr.read().decode()
    assert "config_reload_failed" in err and "unknown role 'cdc'" in err


def test_sigterm_while_events_arrive_and_sends_are_in_flight_loses_nothing(service):
    service.notify.wait_for(lambda m: any("READY=1" in x for x in m))
    accepted: list[str] = []
    errors: list[str] = []
    stop = threading.Event()

    def writer(worker: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{service.port}", timeout=10,
                          headers={"Authorization": "Bearer admin-token-0123"}) as c:
            i = 0
            while not stop.is_set():
                event = {"kind": "incident", "category": "accident", "summary": f"w{worker} #{i}",
                         "class_id": "5-1", "dedup_key": f"load/{worker}/{i}"}
                try:
                    r = c.post("/api/v1/events", json=event)
                except httpx.HTTPError:
                    return  # the server stopped taking input
                if r.status_code == 202:
                    accepted.append(r.json()["event_id"])
                else:
                    errors.append(f"{r.status_code} {r.text}")
                i += 1

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(accepted) < 40 and time.monotonic() < deadline:
        time.sleep(0.01)
    service.proc.send_signal(signal.SIGTERM)
    assert service.proc.wait(timeout=30) == 0
    stop.set()
    for t in threads:
        t.join(timeout=10)
    assert not errors
    assert len(accepted) >= 40
    db = sqlite3.connect(service.db)
    stored = {row[0] for row in db.execute("SELECT id FROM events")}
    assert set(accepted) <= stored  # every 2xx is stored
    statuses = dict(db.execute("SELECT status, COUNT(*) FROM notifications GROUP BY status").fetchall())
    assert statuses.get("sending", 0) == 0  # sends in flight finished before exit
    assert statuses.get("delivered", 0) > 0
    assert sum(statuses.values()) >= len(accepted)  # each accepted incident has its notification rows


# ------------------------------------------------------------------ lanes (docs/ARCHITECTURE.md)


@pytest.fixture
def lanes(tmp_path):
    """A real daemon whose channel ``main`` is an SMS HTTP gateway on 127.0.0.1 (a
    :class:`HTTPRecorder`; its answers are set by the test), with a spool source, a 1 s
    watchdog on a real notify socket, and stderr (JSON logs) in a file."""
    from .channel_servers import HTTPRecorder

    recorder = HTTPRecorder().__enter__()
    text = (FIXTURES / "engine.yaml").read_text(encoding="utf-8")
    text = text.replace("main: {type: console}",
                        f"main: {{type: sms_http, options: {{url: '{recorder.url}/send', token: t0k}}}}")
    text += ("administrators: [person:head]\n"
             "sources:\n  drop: {type: spool, options: {settle: 0, inotify: false, rescan_interval: 0.2}}\n")
    cfg, port, env = daemon_env(tmp_path, text, watchdog_usec=1_000_000)
    notify = NotifySocket(tmp_path / "notify.sock")
    log = tmp_path / "stderr.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "escalator.cli", "run"], env=env,
                                stdout=subprocess.DEVNULL, stderr=err)
    ns = type("Lanes", (), {})()
    ns.proc, ns.notify, ns.recorder, ns.log = proc, notify, recorder, log
    ns.db = tmp_path / "state" / "escalator.sqlite3"
    ns.incoming = tmp_path / "spool" / "incoming"
    ns.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30,
                             headers={"Authorization": "Bearer admin-token-0123"})
    notify.wait_for(lambda m: any("READY=1" in x for x in m))
    yield ns
    ns.client.close()
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)
    notify.close()
    recorder.__exit__()


def until(predicate, timeout: float = 30.0, what: str = "condition") -> None:
    """Poll ``predicate`` (only for a real process to get somewhere)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not in {timeout} s"
        time.sleep(0.02)


def post(client: httpx.Client, n: int) -> httpx.Response:
    return client.post("/api/v1/events", json={
        "kind": "incident", "category": "accident", "summary": f"摔伤 #{n}", "class_id": "5-1",
        "dedup_key": f"lanes/{n}"})


def test_watchdog_pings_and_health_keep_coming_while_sends_are_slow(lanes):
    from .channel_servers import Answer

    lanes.recorder.default = Answer(delay=1.2, body={"ok": True})  # every send takes 1.2 s
    start = time.monotonic()
    for n in range(4):
        r = post(lanes.client, n)
        assert r.status_code == 202, r.text
    until(lambda: len(lanes.recorder.requests) >= 2, what="two sends started")
    # while sends are in flight: intake and health answer at once, from their own lanes
    t0 = time.monotonic()
    r = post(lanes.client, 99)
    assert r.status_code == 202 and time.monotonic() - t0 < 1.0
    t0 = time.monotonic()
    assert lanes.client.get("/healthz").status_code == 200
    assert time.monotonic() - t0 <= 0.1
    until(lambda: len(lanes.recorder.requests) >= 5, what="the later sends")
    pings = [t for t, m in zip(lanes.notify.times, lanes.notify.messages, strict=True)
             if "WATCHDOG=1" in m and t >= start]
    gaps = [b - a for a, b in zip(pings, pings[1:], strict=False)]
    assert time.monotonic() - start >= 4.5  # four sends of 1.2 s done before the fifth began
    assert len(pings) >= 8
    assert max(gaps) <= 0.5, gaps  # WatchdogSec/2 (WATCHDOG_USEC=1 s)


def _store_lost(lanes, victim: str) -> None:
    """Events accepted, then ``victim`` (the WAL or the database file) deleted: the daemon
    notices within 10 s, refuses inputs with 503 naming the cause, keeps a spool file in
    incoming/, says so in /healthz and tells the administrator straight through the channel."""
    accepted = [post(lanes.client, n).json()["event_id"] for n in range(5)]
    until(lambda: len(lanes.recorder.requests) >= 5, what="the first messages")
    path = Path(f"{lanes.db}{victim}")
    assert path.exists()
    path.unlink()
    noticed = time.monotonic()
    # (/healthz's own database check may fail first — the file it opens is gone — and names
    # ``database``; the store's monitor then adds ``store``)
    until(lambda: "store" in lanes.client.get("/healthz").json().get("failing", {}), timeout=10,
          what="noticed")
    assert time.monotonic() - noticed <= 10
    r = lanes.client.get("/healthz")
    failing = r.json()["failing"]
    assert r.status_code == 503 and "store" in failing and ("WAL file" if victim else "database file") in failing["store"]
    r = post(lanes.client, 100)
    assert r.status_code == 503 and "deleted" in r.json()["detail"], r.text
    until(lambda: any("数据库不可用" in q.body.decode() for q in lanes.recorder.requests),
          what="the administrator told")
    told = [q.json() for q in lanes.recorder.requests if "数据库不可用" in q.body.decode()]
    assert told[0]["to"] == "13800000005" and "database unavailable" in told[0]["text"]
    (lanes.incoming / "late.json").write_text(json.dumps(
        {"kind": "incident", "category": "accident", "summary": "晚到", "class_id": "5-1"}),
        encoding="utf-8")
    until(lambda: "spool_file_deferred" in lanes.log.read_text(encoding="utf-8"),
          what="the spool file deferred")
    assert [p.name for p in lanes.incoming.iterdir()] == ["late.json"]
    lanes.proc.send_signal(signal.SIGTERM)
    assert lanes.proc.wait(timeout=30) == 0
    return accepted


def test_the_wal_file_deleted_under_the_daemon(lanes):
    accepted = _store_lost(lanes, "-wal")
    db = sqlite3.connect(lanes.db)  # the WAL's pages were written into the database file
    assert set(accepted) <= {row[0] for row in db.execute("SELECT id FROM events")}
    db.close()


def test_the_database_file_deleted_under_the_daemon(lanes):
    accepted = _store_lost(lanes, "")
    [rescued] = lanes.db.parent.glob("escalator.sqlite3.rescued-*")  # the open database, copied
    db = sqlite3.connect(rescued)
    assert set(accepted) <= {row[0] for row in db.execute("SELECT id FROM events")}
    db.close()


def test_a_daemon_on_postgresql_stores_sends_and_keeps_no_file(tmp_path, pg_url):
    """``ESCALATOR_DATABASE_URL``: the daemon's rows are in PostgreSQL (no SQLite file is
    made), messages go out, and the log names the database without a password."""
    from .channel_servers import HTTPRecorder

    with HTTPRecorder() as recorder:
        text = (FIXTURES / "engine.yaml").read_text(encoding="utf-8").replace(
            "main: {type: console}",
            f"main: {{type: sms_http, options: {{url: '{recorder.url}/send', token: t0k}}}}")
        cfg, port, env = daemon_env(tmp_path, text, watchdog_usec=5_000_000)
        env["ESCALATOR_DATABASE_URL"] = pg_url
        notify = NotifySocket(tmp_path / "notify.sock")
        log = tmp_path / "stderr.log"
        with open(log, "wb") as err:
            proc = subprocess.Popen([sys.executable, "-m", "escalator.cli", "run"], env=env,
                                    stdout=subprocess.DEVNULL, stderr=err)
        try:
            notify.wait_for(lambda m: any("READY=1" in x for x in m))
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30,
                              headers={"Authorization": "Bearer admin-token-0123"}) as client:
                assert post(client, 1).status_code in (200, 201, 202)
                until(lambda: len(recorder.requests) >= 1, what="a message sent")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            notify.close()
    assert proc.returncode == 0, log.read_text()
    assert not (tmp_path / "state" / "escalator.sqlite3").exists()
    started = [json.loads(line) for line in log.read_text().splitlines()
               if '"escalator_started"' in line]
    assert started and started[0]["database"].startswith("postgresql://")

    store = open_store(pg_url)
    try:
        with store.transaction() as tx:
            [incident] = tx.list_incidents(("triggered", "acknowledged"), 10)
            assert incident.summary == "摔伤 #1"
            assert any(n.status == "delivered" for n in tx.notifications_of(incident.id))
    finally:
        store.close()
