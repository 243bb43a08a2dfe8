"""Shared pieces of the benchmarks: a bench config, an escalator daemon and a Prometheus
Alertmanager as subprocesses on 127.0.0.1, a webhook receiver process that records when each
message arrived, a small raw HTTP/1.1 load generator, and process CPU / RSS readings.

Times that cross processes are ``time.monotonic()`` (CLOCK_MONOTONIC: one clock for every
process of the machine).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-admin-token-0123456789"
ALERTMANAGER = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"
ID = re.compile(rb"bench-(\d+)-")
"""How a message names its event: ``bench-<n>-`` (in the summary, or an alert's label)."""

BENCH_CONFIG = """\
# escalator benchmark config: one person reached by a generic HTTP (webhook-style) channel.
school:
  name: 基准测试小学
  timezone: Asia/Shanghai
roles:
  first:
    name: 第一级
  second:
    name: 第二级
people:
  - id: p-first
    name: 一号
    roles: [first]
    contacts: [{{channel: hook, to: "13955550001"}}]
  - id: p-second
    name: 二号
    roles: [second]
    contacts: [{{channel: hook, to: "13955550002"}}]
duty_roster:
  - {{person: p-first, start: "00:00", end: "23:59"}}
channels:
  hook:
    type: sms_http
    options:
      url: "http://127.0.0.1:{receiver_port}/send"
      max_segments: 10
policies:
  default:
    name: 基准
    steps:
      - name: 第一级
        targets: [first]
        timeout: {timeout}
        mode: escalate
      - name: 第二级
        targets: [second]
        timeout: 1h
        mode: escalate
routes:
  - default: true
    policy: default
{delivery}"""

DIGESTS_OFF = "delivery:\n  digest: off\n"
"""DIGESTS OFF — the one place where the benchmarks' config switches delivery digests off.

Today's config has no digest option (and rejects unknown keys), so this is empty. When delivery
gains digests (issue "A morning's burst"), set it to the YAML that turns them off, e.g.
``"delivery:\n  digest: off\n"``: ``open_loop.py`` and ``restart_drain.py`` then still measure
one message per event (``write_config(..., digests=False)``, the default), while ``storm.py``
runs with the daemon's defaults (``digests=True``: a digest is one of the storm's remedies; the
receiver credits every ``bench-<n>-`` a message names)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """utime + stime in seconds of ``pid`` and of its live descendants (/proc/PID/stat fields
    14 and 15; the daemon's delivery process is its child), plus what its waited-for children
    used (fields 16 and 17: a delivery process that ended)."""
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stats[int(entry.name)] = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
    tree, total = {pid}, 0
    grew = True
    while grew:
        more = {p for p, f in stats.items() if int(f[1]) in tree} - tree
        tree |= more
        grew = bool(more)
    for p in tree:
        f = stats.get(p)
        if f is not None:
            total += int(f[11]) + int(f[12]) + (int(f[13]) + int(f[14]) if p == pid else 0)
    return total / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int, field: str = "VmHWM") -> float:
    """VmHWM (peak resident set) of ``pid`` in MB; ``field="VmRSS"``: the resident set now."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field}")


def wait_http(port: int, path: str, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    """Until ``GET path`` on ``port`` answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"nothing answered on port {port}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------ processes


def write_config(tmp: Path, receiver_port: int, timeout: str = "1h", digests: bool = False) -> Path:
    """The bench config (:data:`BENCH_CONFIG`) in ``tmp``; ``timeout`` = the first step's
    timeout; ``digests=False`` adds :data:`DIGESTS_OFF`."""
    path = tmp / "bench.yaml"
    path.write_text(BENCH_CONFIG.format(receiver_port=receiver_port, timeout=timeout,
                                        delivery="" if digests else DIGESTS_OFF))
    return path


def start_escalator(tmp: Path, config: Path, port: int, address_limits: bool = False, *,
                    database_url: str | None = None, node: str | None = None,
                    delivery_process: str | None = None) -> subprocess.Popen:
    """``escalator run`` with ``config`` on 127.0.0.1:``port``; JSON logs to /dev/null; state
    and spool folders in ``tmp``. By ``run_daemon.py``: without the per-address send limit,
    unless ``address_limits`` (then the daemon's own, real limits: 10 messages a minute to one
    address). ``database_url``: ``ESCALATOR_DATABASE_URL`` (``postgresql://…``; default: the
    SQLite file in the state folder); ``node``: ``ESCALATOR_NODE`` (one name per daemon when
    several share a database); ``delivery_process``: ``on`` / ``off`` / ``auto``
    (``ESCALATOR_DELIVERY_PROCESS``; default: the daemon's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ESCALATOR_", "BENCH_ADDRESS"))}
    env.update(ESCALATOR_CONFIG=str(config), ESCALATOR_STATE_DIR=str(tmp / "state"),
               ESCALATOR_SPOOL_DIR=str(tmp / "spool"), ESCALATOR_LOG_FORMAT="json",
               ESCALATOR_HTTP_LISTEN=f"127.0.0.1:{port}", ESCALATOR_API_TOKEN=TOKEN)
    if address_limits:
        env["BENCH_ADDRESS_LIMITS"] = "real"
    if database_url:
        env["ESCALATOR_DATABASE_URL"] = database_url
    if node:
        env["ESCALATOR_NODE"] = node
    if delivery_process is not None:
        env["ESCALATOR_DELIVERY_PROCESS"] = delivery_process
    return subprocess.Popen([sys.executable, str(ROOT / "bench" / "run_daemon.py"), "run"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


AM_CONFIG = """\
route:
  receiver: hook
  group_by: {group_by}
  group_wait: 0s
  group_interval: 5m
  repeat_interval: 24h
receivers:
  - name: hook
    webhook_configs:
      - url: "http://127.0.0.1:{receiver_port}/alertmanager"
        send_resolved: false
"""


def start_alertmanager(tmp: Path, port: int, receiver_port: int, group_by: str = "['...']"
                       ) -> subprocess.Popen:
    """Prometheus Alertmanager on 127.0.0.1:``port``, clustering off, its own storage path,
    ``group_wait: 0s`` and ``group_by`` (default ``['...']``: every alert notifies on its own)."""
    am = tmp / "alertmanager"
    am.mkdir(exist_ok=True)
    (am / "alertmanager.yml").write_text(AM_CONFIG.format(receiver_port=receiver_port,
                                                          group_by=group_by))
    return subprocess.Popen(
        [ALERTMANAGER, f"--config.file={am / 'alertmanager.yml'}", f"--storage.path={am}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
         "--log.level=warn"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# ------------------------------------------------------------------ receiver


def start_receiver(port: int, out: Path) -> subprocess.Popen:
    """The webhook receiver (this file run as a script) on ``port``; on SIGTERM it writes
    ``[[id, monotonic arrival], …]`` (first arrival of each id) as JSON to ``out``.

    Besides the messages (any POST; every ``bench-<n>-`` in its body counts, once per POST) it
    answers ``GET /count`` (ids seen), ``GET /mentions/B`` (messages naming an id below B,
    counted once per message and id) and ``GET /wait/N`` (long poll, ≤ 30 s: when id N first
    arrived, −1.0 if not yet)."""
    proc = subprocess.Popen([sys.executable, __file__, "receiver", str(port), str(out)])
    wait_http(port, "/ready", proc=proc)
    return proc


def receiver_count(port: int, what: str = "count") -> int:
    """The receiver's ``GET /count`` (distinct ids seen), or ``what="mentions/B"``."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET /{what} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data or not data.split(b"\r\n\r\n", 1)[1]:
            data += s.recv(256)
    return int(data.split(b"\r\n\r\n", 1)[1])


def wait_delivered(port: int, expected: int, timeout: float, deadline: float = math.inf) -> None:
    """Until the receiver has seen ``expected`` ids, or ``timeout`` seconds of no progress, or
    the monotonic time ``deadline``."""
    last, since = -1, time.monotonic()
    while True:
        n = receiver_count(port)
        if n >= expected or time.monotonic() >= deadline:
            return
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since > timeout:
            return
        time.sleep(0.02)


def receiver_results(proc: subprocess.Popen, out: Path) -> dict[int, float]:
    stop(proc)
    return {int(k): t for k, t in json.loads(out.read_text())}


async def _receive(port: int, out: Path) -> None:
    seen: dict[int, float] = {}
    mentions: dict[int, int] = {}
    waiters: dict[int, list[asyncio.Future[float]]] = {}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                now = time.monotonic()
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length) if length else b""
                if head.startswith((b"GET /count", b"GET /wait/", b"GET /mentions/")):
                    if head.startswith(b"GET /count"):
                        text = str(len(seen)).encode()
                    elif head.startswith(b"GET /mentions/"):
                        below = int(head[14:head.index(b" ", 14)])
                        text = str(sum(c for i, c in mentions.items() if i < below)).encode()
                    else:  # GET /wait/N: when event N's first message arrived (long poll)
                        i = int(head[10:head.index(b" ", 10)])
                        if i not in seen:
                            future = asyncio.get_running_loop().create_future()
                            waiters.setdefault(i, []).append(future)
                            try:
                                await asyncio.wait_for(future, 30)
                            except TimeoutError:
                                pass
                        text = repr(seen.get(i, -1.0)).encode()
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(text), text))
                    await writer.drain()
                    continue
                for i in {int(m) for m in ID.findall(body)}:
                    mentions[i] = mentions.get(i, 0) + 1
                    if i not in seen:
                        seen[i] = now
                        for future in waiters.pop(i, []):
                            if not future.done():
                                future.set_result(now)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 11\r\n\r\n{\"ok\":true}")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # a client gone, or the receiver stopping with a long poll open
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    stopped = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopped.set)
    async with server:
        await stopped.wait()
    out.write_text(json.dumps(list(seen.items())))


# ------------------------------------------------------------------ load generator


class Conn:
    """One keep-alive HTTP/1.1 connection sending pre-encoded requests (cheap on the client)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, data: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        self.writer.write(data)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await self.reader.readexactly(length) if length else b""
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def post(path: str, doc: object, token: str | None = None) -> bytes:
    body = json.dumps(doc).encode()
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"{auth}Content-Length: {len(body)}\r\n\r\n").encode() + body


def escalator_request(i: int, severity: str | None = None) -> bytes:
    """``POST /api/v1/events``: a distinct ``incident`` event named ``bench-<i>-``."""
    doc = {"kind": "incident", "category": "accident", "summary": f"bench-{i}-",
           "dedup_key": f"bench/{i}"}
    if severity:
        doc["severity"] = severity
    return post("/api/v1/events", doc, TOKEN)


def alertmanager_request(i: int, severity: str | None = None) -> bytes:
    """``POST /api/v2/alerts``: one alert named ``bench-<i>-`` (label ``severity`` if given)."""
    labels = {"alertname": "bench", "id": f"bench-{i}-"} | ({"severity": severity} if severity else {})
    return post("/api/v2/alerts", [{"labels": labels, "annotations": {"summary": f"bench-{i}-"}}])


async def load(port: int, requests: list[bytes], concurrency: int, ok: int
               ) -> tuple[float, dict[int, float]]:
    """Send ``requests`` (index = event number) with ``concurrency`` connections, each one
    request at a time. Returns (wall seconds, {event number: monotonic time sent})."""
    sent: dict[int, float] = {}
    todo = iter(range(len(requests)))

    async def worker() -> None:
        conn = Conn(port)
        try:
            for i in todo:
                sent[i] = time.monotonic()
                status, body = await conn.request(requests[i])
                if status != ok:
                    raise RuntimeError(f"{status} {body[:300]!r}")
        finally:
            conn.close()

    start = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.monotonic() - start, sent


async def end_to_end(port: int, receiver_port: int, requests: list[bytes], first: int,
                     concurrency: int, ok: int) -> dict[int, float]:
    """``concurrency`` workers, each with one event in flight end to end: send event ``i``
    (from ``first`` on), then wait (long poll on the receiver) until its first message arrived.
    Returns {event number: seconds from writing the request to the message's arrival};
    events never notified within 30 s are left out."""
    latency: dict[int, float] = {}
    todo = iter(range(first, first + len(requests)))

    async def worker() -> None:
        conn, wait = Conn(port), Conn(receiver_port)
        try:
            for i in todo:
                sent = time.monotonic()
                status, body = await conn.request(requests[i - first])
                if status != ok:
                    raise RuntimeError(f"{status} {body[:300]!r}")
                _, arrived = await wait.request(
                    f"GET /wait/{i} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
                if float(arrived) >= 0:
                    latency[i] = float(arrived) - sent
        finally:
            conn.close()
            wait.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latency


@dataclass(frozen=True)
class Shot:
    """One request of :func:`open_loop`: its ``scheduled`` send time, when its answer came
    (``answered``; ``None``: no answer within the timeout, or the connection failed) and the
    HTTP ``status`` (0 without an answer). Monotonic seconds."""

    scheduled: float
    answered: float | None
    status: int

    def latency(self) -> float:
        """Seconds from the scheduled send time to the answer; ``inf`` without an answer."""
        return math.inf if self.answered is None else self.answered - self.scheduled


async def open_loop(port: int, make: Callable[[int], bytes], *, concurrency: int,
                    n: int | None = None, rate: float | None = None, timeout: float = 30.0,
                    stop: asyncio.Event | None = None) -> dict[int, Shot]:
    """Open-loop load: request ``i`` is ``make(i)``, for i = 0, 1, … (``n`` of them, or until
    ``stop`` is set). Returns {i: :class:`Shot`} for every request sent.

    What "open loop" means here — nothing a request causes (its message, its incident) ever
    holds the next request back, and every latency runs from the request's *scheduled* send
    time, fixed in advance, so a slow server cannot slow the generator and hide its queue:

    - ``rate`` given: request i is scheduled at t0 + i / ``rate``, whatever the server does.
      At most ``concurrency`` requests are in flight (a client's connection pool); a request
      whose time has come while all connections wait is sent as soon as one is free, and the
      wait counts in its latency (no coordinated omission).
    - ``rate=None`` (saturation): ``concurrency`` senders, each sending its next request the
      moment the previous *answer* (the 2xx) arrives — never waiting for the message the event
      causes; the scheduled time is then the moment the sender was free, i.e. the write time.
      The server's intake alone sets the pace (accepted events/s); its delivery cannot.

    A request without an answer within ``timeout`` seconds (or whose connection failed) is a
    :class:`Shot` with ``answered=None``; its connection is replaced."""
    if n is None and (rate is None or stop is None):
        raise ValueError("an endless load needs a rate and a stop event")
    shots: dict[int, Shot] = {}
    queue: asyncio.Queue[tuple[int, float | None] | None] = asyncio.Queue()
    t0 = time.monotonic()

    async def schedule() -> None:
        i = 0
        while (n is None or i < n) and not (stop is not None and stop.is_set()):
            at = None
            if rate is not None:
                at = t0 + i / rate
                if (delay := at - time.monotonic()) > 0:
                    await asyncio.sleep(delay)
            queue.put_nowait((i, at))
            i += 1
        for _ in range(concurrency):
            queue.put_nowait(None)

    async def sender() -> None:
        conn = Conn(port)
        try:
            while (item := await queue.get()) is not None:
                i, at = item
                scheduled = time.monotonic() if at is None else at
                try:
                    status, _ = await asyncio.wait_for(conn.request(make(i)), timeout)
                    shots[i] = Shot(scheduled, time.monotonic(), status)
                except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                    shots[i] = Shot(scheduled, None, 0)
                    conn.close()
                    conn = Conn(port)
        finally:
            conn.close()

    await asyncio.gather(schedule(), *(sender() for _ in range(concurrency)))
    return shots


def load_average() -> float:
    """The 1-minute load average of the machine."""
    return os.getloadavg()[0]


def fmt_ms(seconds: float, bound: float | None = None, never: str | None = None) -> str:
    """``seconds`` as milliseconds for a table; ``inf`` (never came) as ``never`` if given,
    else ``> bound s``."""
    if math.isinf(seconds):
        return never or (f"> {bound:.0f} s" if bound else "never")
    ms = seconds * 1000
    return f"{ms:,.1f}" if ms < 100 else f"{ms:,.0f}"


def pct(values: list[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of ``values``."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(p / 100 * len(s) + 0.5)) - 1))]


if __name__ == "__main__" and sys.argv[1:2] == ["receiver"]:
    asyncio.run(_receive(int(sys.argv[2]), Path(sys.argv[3])))


def start_system(system: str, tmp: Path, receiver_port: int, port: int
                 ) -> tuple[subprocess.Popen, Callable[..., Any], int]:
    """Start ``system`` (``escalator``, ``alertmanager``, or ``escalator-1p`` / ``escalator-2p``:
    escalator with ``delivery_process`` off / on instead of its default) on ``port``, sending to
    the receiver on ``receiver_port``, and wait until it answers. Returns the process, the
    request maker for it (``escalator_request`` / ``alertmanager_request``) and its success
    status."""
    if system.startswith("escalator"):
        mode = {"escalator": None, "escalator-1p": "off", "escalator-2p": "on"}[system]
        server = start_escalator(tmp, write_config(tmp, receiver_port), port, delivery_process=mode)
        wait_http(port, "/healthz", proc=server)
        return server, escalator_request, 202
    server = start_alertmanager(tmp, port, receiver_port)
    wait_http(port, "/-/ready", proc=server)
    return server, alertmanager_request, 200
