"""What the lanes of real daemons share: the crash lane (``tests/test_crash_lane.py``, one
daemon killed -9 again and again) and the failover lane (``tests/test_failover_lane.py``,
three daemons on one database, one of them killed at a time).

- :func:`free_port`, :func:`school_config` (the lanes' school: 40 classes, a 3-step escalate
  chain of 5 s steps, every person an SMS number on the ``sms_http`` gateway);
- :class:`Receiver`: the SMS gateway, a real HTTP server that records every message
  (:class:`Arrival`: arrival time, acknowledge token, and which daemon sent it — each daemon's
  channel posts to its own path);
- :class:`DaemonProcess`: one ``escalator run`` subprocess, started, killed (SIGKILL) or
  stopped (SIGTERM) again and again, one log file per :class:`Incarnation`;
- :class:`Db`: read-only SQL on the lane's store (SQLite file or PostgreSQL URL);
- the invariants both lanes check on the receiver and the store:
  :func:`check_arrivals_have_rows`, :func:`check_copies` (at least once, bounded: a copy after
  the first only from a process that was killed) and :func:`check_acknowledgements` (no step
  after an acknowledgement's commit, only the sends in flight at it).

Seconds everywhere; times are ``time.time()`` (UTC epoch seconds) of this machine, which the
daemons share.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

CONCURRENCY = 8
"""Sends in flight at once per channel: ``delivery.concurrency_per_channel``, the default (the
lanes' config has one channel and does not set it)."""
IN_FLIGHT = 5.0
"""Seconds after an acknowledgement's 2xx within which the sends in flight at its commit
must have reached the receiver (in practice milliseconds; generous for a loaded CI machine)."""
GRACE = 0.05
"""Seconds of clock-reading noise allowed between this process's threads (the receiver's
arrival stamp vs the acknowledger's 2xx stamp)."""
CLAIM_LIMIT = 50
"""Rows the delivery worker claims at once (``Delivery.run_once``'s ``limit``,
``escalator.engine.runloop.SEND_BATCH``): the most messages one kill can leave sent but not on
record, so sent again after it."""
TOKEN = "admin-token-lane"
GRADES = 8
CLASSES_PER_GRADE = 5
ACK_LINK = re.compile(r"/ack/([A-Za-z0-9_\-.]+)")


def seed_from(variable: str) -> int:
    """The lane's seed: ``$variable`` when set (a replay), else a fresh random one."""
    return int(os.environ.get(variable) or random.SystemRandom().randrange(1, 2**31))


def free_port() -> int:
    """A TCP port on 127.0.0.1 free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def random_class(rng: random.Random) -> str:
    """One of the lanes' school's classes (``"3-2"``)."""
    return f"{rng.randint(1, GRADES)}-{rng.randint(1, CLASSES_PER_GRADE)}"


def school_config(sms_url: str, *, spool: bool = True) -> str:
    """The lanes' config (YAML text): a school with 40 classes, escalate chains (class teacher →
    grade leader → class teacher, 5 s each — check-config's minimum), every person an SMS
    number on the ``sms_http`` gateway at ``sms_url``; a spool source when ``spool``."""
    classes = [f"{g}-{c}" for g in range(1, GRADES + 1) for c in range(1, CLASSES_PER_GRADE + 1)]
    people = [f'  - {{id: t-{c}, name: 老师{c}, roles: [class_teacher], classes: ["{c}"], '
              f'contacts: [{{channel: sms, to: "1380000{i:04d}"}}]}}'
              for i, c in enumerate(classes)]
    people += [f'  - {{id: g-{g}, name: 组长{g}, roles: [grade_leader], grades: ["{g}"], '
               f'contacts: [{{channel: sms, to: "1390000{g:04d}"}}]}}' for g in range(1, GRADES + 1)]
    people.append('  - {id: duty, name: 值班员, contacts: [{channel: sms, to: "13700000000"}]}')
    people.append('  - {id: head, name: 校长, roles: [leadership], '
                  'contacts: [{channel: sms, to: "13600000000"}]}')
    sources = ("sources:\n  spool:\n    type: spool\n"
               "    options: {settle: 0.3, rescan_interval: 0.5}\n") if spool else ""
    return f"""
school:
  name: 崩溃测试小学
  classes: {json.dumps(classes)}
roles:
  leadership: {{name: 领导小组}}
people:
{chr(10).join(people)}
channels:
  sms:
    type: sms_http
    options: {{url: "{sms_url}", timeout: 5}}
duty_roster:
  - {{person: duty}}
{sources}policies:
  chain:
    steps:
      - {{targets: [class_teacher], timeout: 5, mode: escalate}}
      - {{targets: [grade_leader], timeout: 5, mode: escalate}}
      - {{targets: [class_teacher], timeout: 5, mode: escalate}}
routes:
  - default: true
    policy: chain
administrators: [person:head]
daemon:
  public_base_url: "http://escalator.test"
"""


def to_epoch(value: Any) -> float:
    """A stored time (SQLite's ``2026-01-02T03:04:05.123456Z`` text, or a driver's datetime)
    as epoch seconds."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


# ---------------------------------------------------------------------------------- receiver


@dataclass
class Arrival:
    """One message at the receiver."""

    at: float        # time.time() when the request reached the handler
    seq: int         # arrival order
    token: str       # the acknowledge token in the text: names the notification row
    to: str
    sender: str      # the last part of the path it was posted to: the daemon that sent it


class Receiver:
    """The SMS gateway: a real HTTP server on 127.0.0.1 that answers 200 and records each
    message's arrival time, acknowledge token and path (``/sms/<sender>``); at once, or after
    ``delay(token)`` seconds (a gateway that takes its time keeps sends in flight longer).

    ``url`` is its base URL; ``snapshot()`` the arrivals so far; ``torn`` counts requests cut
    short by a kill; ``bad`` holds bodies without an acknowledge link."""

    def __init__(self, delay: Callable[[str], float] | None = None) -> None:
        self.arrivals: list[Arrival] = []
        self.bad: list[str] = []
        self.torn = 0
        """Requests cut short by a kill (fewer body bytes than Content-Length)."""
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                at = time.time()
                if len(body) < length:  # the sender was killed mid-request: no message
                    with receiver.lock:
                        receiver.torn += 1
                    return
                try:
                    doc = json.loads(body)
                    m = ACK_LINK.search(doc["text"])
                except (ValueError, KeyError, TypeError):
                    doc, m = None, None
                with receiver.lock:
                    if m is None:
                        receiver.bad.append(body.decode("utf-8", "replace"))
                    else:
                        receiver.arrivals.append(Arrival(
                            at, len(receiver.arrivals), m.group(1), doc["to"],
                            self.path.rstrip("/").rsplit("/", 1)[-1]))
                if delay is not None and m is not None:
                    time.sleep(delay(m.group(1)))
                data = b'{"ok": true}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the sender was killed before the answer: its row stays 'sending'

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def snapshot(self) -> list[Arrival]:
        with self.lock:
            return list(self.arrivals)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------------------------- daemons


@dataclass
class Incarnation:
    """One process of a :class:`DaemonProcess`: started, then killed (SIGKILL), stopped
    (SIGTERM) or still running."""

    n: int
    started: float
    killed: float | None = None
    stopped: float | None = None
    listened: float | None = None    # when its API first answered
    early: bool = False      # killed before the API listened


def lane_env(**settings: str) -> dict[str, str]:
    """This process's environment without any ``ESCALATOR_*`` or systemd variable, plus the
    given settings as ``ESCALATOR_<NAME>`` (``state_dir=…`` → ``ESCALATOR_STATE_DIR``)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ESCALATOR_", "NOTIFY_SOCKET", "WATCHDOG_"))}
    env.update({f"ESCALATOR_{k.upper()}": v for k, v in settings.items()})
    env.update(ESCALATOR_LOG_FORMAT="json", ESCALATOR_API_TOKEN=TOKEN, PYTHONUNBUFFERED="1")
    return env


class DaemonProcess:
    """One daemon (``python -m escalator.cli run``) started again and again with the same
    environment; ``port`` is its API's port, ``runs`` its incarnations (logs in
    ``logs/<name>-<n>.log``). ``fail(message)`` raises the lane's AssertionError."""

    def __init__(self, name: str, env: dict[str, str], port: int, cwd: Path, logs: Path,
                 fail: Callable[[str], None]) -> None:
        self.name, self.env, self.port, self.cwd, self.logs = name, env, port, cwd, logs
        self.fail = fail
        self.proc: subprocess.Popen | None = None
        self.runs: list[Incarnation] = []
        self.url = f"http://127.0.0.1:{port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_path(self, n: int | None = None) -> Path:
        return self.logs / f"{self.name}-{n or len(self.runs):03d}.log"

    def start(self) -> Incarnation:
        run = Incarnation(len(self.runs) + 1, time.time())
        self.runs.append(run)
        with open(self.log_path(), "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "escalator.cli", "run"],
                                         env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         cwd=self.cwd)
        return run

    def listening(self, timeout: float) -> bool:
        """Wait until ``/healthz`` answers (any status); False after ``timeout`` seconds.
        Fails the lane when the process exits by itself."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.answers():
                return True
            time.sleep(0.02)
        return False

    def answers(self) -> bool:
        """Whether the running incarnation's ``/healthz`` answers now (any status; one try).
        Fails the lane when the process has exited by itself."""
        if self.proc.poll() is not None:
            self.fail(f"daemon {self.name} exited by itself ({self.proc.returncode}); see "
                      f"{self.log_path()}:\n{self.log_tail()}")
        try:
            httpx.get(f"{self.url}/healthz", timeout=2.0)  # slow answers on a loaded machine
        except httpx.HTTPError:
            return False
        if self.runs[-1].listened is None:
            self.runs[-1].listened = time.time()
        return True

    def start_listening(self, timeout: float = 60) -> Incarnation:
        """:meth:`start`, then fail unless it listens within ``timeout`` seconds."""
        run = self.start()
        if not self.listening(timeout):
            self.fail(f"daemon {self.name} did not listen within {timeout} s:\n{self.log_tail()}")
        return run

    def kill(self) -> None:
        """SIGKILL the running incarnation; fail if it had ended before."""
        run = self.runs[-1]
        run.killed = time.time()
        self.proc.send_signal(signal.SIGKILL)
        code = self.proc.wait(timeout=30)
        if code != -signal.SIGKILL:
            self.fail(f"daemon {self.name} ended with {code} before the kill:\n{self.log_tail()}")

    def terminate(self, timeout: float = 60) -> None:
        """SIGTERM (the graceful stop) and wait; fail unless it exits 0 within ``timeout``."""
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self.runs[-1].stopped = time.time()
        if code != 0:
            self.fail(f"daemon {self.name} stopped with {code} on SIGTERM:\n{self.log_tail()}")

    def reap(self) -> None:
        """Kill the process if it still runs (the lane's clean-up)."""
        if self.alive:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path().read_text("utf-8", "replace") if self.log_path().exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def incarnation_at(self, at: float) -> int:
        """Index in ``runs`` of the incarnation running at ``at`` (the last started before)."""
        return max(i for i, r in enumerate(self.runs) if r.started <= at)


# ---------------------------------------------------------------------------------- the store


class Db:
    """Read-only SQL on the lane's store, for the checks: ``Db(path)`` for a SQLite file,
    ``Db(url)`` for a ``postgresql://`` URL. SQL given to :meth:`query` must be portable
    (no parameters, no JSON functions): bodies are parsed here, times by :func:`to_epoch`."""

    def __init__(self, where: str | Path) -> None:
        self.where = str(where)
        self.postgres = self.where.startswith(("postgresql://", "postgres://"))

    def query(self, sql: str) -> list[tuple]:
        """Rows of ``sql``; none while no daemon has created the schema yet."""
        if self.postgres:
            import psycopg  # the PostgreSQL backend's driver (only when the lane uses it)

            with psycopg.connect(self.where, autocommit=True) as conn:
                if conn.execute("SELECT to_regclass('events')").fetchone()[0] is None:
                    return []
                return conn.execute(sql).fetchall()
        if not Path(self.where).exists():
            return []  # killed before it even created the database
        conn = sqlite3.connect(self.where, timeout=30)
        try:
            if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'events'").fetchone():
                return []  # killed before its first migration committed: nothing stored yet
            return conn.execute(sql).fetchall()
        finally:
            conn.close()

    def labelled_events(self, label: str) -> list[tuple[str, str]]:
        """``(event id, value)`` of every stored event whose body has ``labels[label]``."""
        out = []
        for eid, body in self.query("SELECT id, body FROM events"):
            doc = body if isinstance(body, dict) else json.loads(body)
            value = (doc.get("labels") or {}).get(label)
            if value is not None:
                out.append((eid, value))
        return out

    def notifications(self) -> dict[str, tuple[int, int, float]]:
        """Every notification row: ack token → (id, incident id, created at)."""
        return {t: (nid, inc, to_epoch(c)) for t, nid, inc, c in self.query(
            "SELECT ack_token, id, incident_id, created_at FROM notifications")}


# ---------------------------------------------------------------------------------- load


@dataclass
class Ack:
    """An acknowledgement that committed: between ``sent`` and ``done`` (epoch seconds)."""

    incident_id: int
    sent: float      # before the request (or the CLI) started: the commit is after this
    done: float      # when the 2xx (or the CLI's exit 0) came back: the commit is before this
    via: str


@dataclass
class Load:
    """What the load threads of a lane accepted, and the unexpected answers they got."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    accepted: dict[str, str] = field(default_factory=dict)       # event_id → label
    created: list[int] = field(default_factory=list)             # incident ids from 2xx
    acks: list[Ack] = field(default_factory=list)
    ack_tried: set[int] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)

    def post_events(self, rng: random.Random, urls: Callable[[], str], label: str,
                    prefix: str, pace: tuple[float, float] = (0.1, 0.5),
                    open_loop: bool = False) -> None:
        """Until ``stop``: post one event (7 in 10) or a list of 2–4 to ``urls()``'s daemon,
        some with a dedup key shared with earlier events; each event labelled
        ``{label: "<prefix><n>"}``. Closed loop (default): ``pace`` (seconds, uniform) after
        each answer. ``open_loop``: the posts start on a seeded schedule, ``pace`` apart,
        whatever the answers take (up to 8 at once, each on a pool thread). A refused
        connection (daemon down) is dropped; a request without an answer (killed mid-request)
        is counted in ``counts["http_unanswered"]`` (stored or not: unknown)."""
        pool = ThreadPoolExecutor(8, thread_name_prefix=f"post-{prefix}") if open_loop else None
        local = threading.local()
        i = 0
        due = time.monotonic()
        while not self.stop.is_set():
            n = 1 if rng.random() < 0.7 else rng.randint(2, 4)
            labels = [f"{prefix}{i + k}" for k in range(n)]
            i += n
            shared = f"lane/shared/{rng.randrange(8)}"
            docs = [{"kind": "incident", "category": "accident", "summary": f"lane {lab}",
                     "class_id": random_class(rng),
                     "dedup_key": shared if rng.random() < 0.3 else f"lane/{lab}",
                     "labels": {label: lab}} for lab in labels]
            wait = rng.uniform(*pace)
            if pool is None:
                self._post(local, urls(), docs, labels)
                time.sleep(wait)
            else:
                pool.submit(self._post, local, urls(), docs, labels)
                due += wait
                time.sleep(max(0.0, due - time.monotonic()))
        if pool is not None:
            pool.shutdown(wait=True)

    def _post(self, local: threading.local, url: str, docs: list[dict], labels: list[str]) -> None:
        """One post of ``docs`` (a list when more than one) to ``url``; records the answers."""
        clients = local.__dict__.setdefault("clients", {})
        client = clients.get(url) or clients.setdefault(url, httpx.Client(
            base_url=url, timeout=10, headers={"Authorization": f"Bearer {TOKEN}"}))
        try:
            r = client.post("/api/v1/events", json=docs if len(docs) > 1 else docs[0])
        except httpx.ConnectError:  # the daemon is down
            time.sleep(0.05)
            return
        except httpx.HTTPError:  # sent, no answer: killed mid-request (stored or not)
            with self.lock:
                self.counts["http_unanswered"] += 1
            time.sleep(0.05)
            return
        if r.status_code != 202:
            self.errors.append(f"POST {url}/api/v1/events: {r.status_code} {r.text[:300]}")
            return
        out = r.json() if len(docs) > 1 else [r.json()]
        with self.lock:
            for lab, o in zip(labels, out, strict=True):
                self.accepted[o["event_id"]] = lab
                if o["status"] == "created":
                    self.created.append(o["incident_id"])
            self.counts["http_events_accepted"] += len(docs)

    def pick_unacknowledged(self, rng: random.Random) -> int | None:
        """One of the last 40 incidents created that was not acknowledged yet (marked tried)."""
        with self.lock:
            todo = [i for i in self.created[-40:] if i not in self.ack_tried]
            if not todo:
                return None
            incident = rng.choice(todo)
            self.ack_tried.add(incident)
            return incident

    def acknowledge(self, client: httpx.Client, incident: int) -> None:
        """Acknowledge ``incident`` through ``client``'s daemon's API; an ``acknowledged``
        answer is recorded as an :class:`Ack` (``via="api"``). No answer (the daemon died:
        committed or not, unknown) is counted in ``counts["acks_unanswered"]``."""
        sent = time.time()
        try:
            resp = client.post(f"/api/v1/incidents/{incident}/acknowledge")
        except httpx.ConnectError:
            return
        except httpx.HTTPError:
            self.counts["acks_unanswered"] += 1
            return
        done = time.time()
        if resp.status_code != 200:
            self.errors.append(f"acknowledge {incident}: {resp.status_code} {resp.text[:300]}")
        elif resp.json()["outcome"] == "acknowledged":
            with self.lock:
                self.acks.append(Ack(incident, sent, done, "api"))


# ---------------------------------------------------------------------------------- invariants


def check_http_events(db: Db, accepted: dict[str, str], label: str,
                      fail: Callable[[str], None]) -> int:
    """Every ``event_id`` answered 2xx is stored, and no posted event (by its ``label`` value)
    is stored twice. Returns how many labelled events are stored."""
    stored = dict(db.labelled_events(label))
    lost = [(e, lab) for e, lab in accepted.items() if e not in stored]
    if lost:
        fail(f"{len(lost)} events answered 2xx are not in the store: {lost[:5]}")
    twice = [lab for lab, n in Counter(stored.values()).items() if n > 1]
    if twice:
        fail(f"HTTP events stored more than once: {twice[:5]}")
    return len(stored)


def check_arrivals_have_rows(receiver: Receiver, rows: dict[str, tuple[int, int, float]],
                             fail: Callable[[str], None]) -> dict[str, list[Arrival]]:
    """Every message at the receiver has an acknowledge link naming a committed notification
    row (``rows``: :meth:`Db.notifications`). Returns the arrivals per token, in order."""
    if receiver.bad:
        fail(f"messages without an acknowledge link: {receiver.bad[:2]}")
    per_token: dict[str, list[Arrival]] = defaultdict(list)
    for a in receiver.snapshot():
        if a.token not in rows:
            fail(f"a message for no committed notification row (token {a.token!r})")
        per_token[a.token].append(a)
    return per_token


def check_copies(per_token: dict[str, list[Arrival]], rows: dict[str, tuple[int, int, float]],
                 process_of: Callable[[Arrival], Incarnation | None],
                 fail: Callable[[str], None], counts: Counter,
                 excused: Callable[[Incarnation], bool] = lambda p: p.killed is not None) -> None:
    """At least once, bounded. ``process_of(arrival)`` is the daemon process that sent it (an
    :class:`Incarnation`; one object per process). No process sends one notification twice;
    every copy but the last comes from a process that was killed (SIGKILL) — it sent,
    then died before recording the send — or that ``excused`` otherwise (default: killed
    only); one such process leaves at most :data:`CLAIM_LIMIT` such copies (the worker
    records a claimed batch in one transaction). Counts ``messages``,
    ``notifications_reached``, ``duplicates`` and ``max_duplicates_one_kill``."""
    per_kill: Counter = Counter()
    duplicates = 0
    for token, got in per_token.items():
        procs = [process_of(a) for a in got]
        if len({id(p) for p in procs}) < len(procs):
            fail(f"notification {rows[token][0]} sent twice by one daemon process: "
                 f"{[(a.sender, round(a.at, 3)) for a in got]}")
        for p in procs[:-1]:
            if p is None or not excused(p):
                fail(f"notification {rows[token][0]} reached the receiver {len(got)} times: a "
                     f"copy after one from a process that was not killed after sending it "
                     f"({[(x.sender, round(x.at, 3)) for x in got]})")
            per_kill[id(p)] += 1
            duplicates += 1
    counts["messages"] = sum(len(g) for g in per_token.values())
    counts["notifications_reached"] = len(per_token)
    counts["duplicates"] = duplicates
    worst = max(per_kill.values(), default=0)
    counts["max_duplicates_one_kill"] = worst
    if worst > CLAIM_LIMIT:
        fail(f"one kill caused {worst} duplicate messages (bound: the claim batch, {CLAIM_LIMIT})")


def check_acknowledgements(acks: Iterable[Ack], arrivals: list[Arrival],
                           rows: dict[str, tuple[int, int, float]],
                           fail: Callable[[str], None], counts: Counter) -> None:
    """After an acknowledgement's commit (before its ``done``) no step fires for the incident
    (no notification row created after ``done``), and only the sends in flight at the commit
    reach the receiver: at most :data:`CONCURRENCY` per sending process, each within
    :data:`IN_FLIGHT` s, and fewer than :data:`CONCURRENCY` other messages of the same sender
    arrived between ``done`` + :data:`GRACE` and it (else it was not in flight).
    Counts ``late_in_flight`` and ``max_late_ms``."""
    by_incident: dict[int, list[Arrival]] = defaultdict(list)
    created_of: dict[int, list[float]] = defaultdict(list)
    for a in arrivals:
        by_incident[rows[a.token][1]].append(a)
    for _, inc, created in rows.values():
        created_of[inc].append(created)
    late_total = 0
    for ack in acks:
        after = [t for t in created_of[ack.incident_id] if t > ack.done]
        if after:
            fail(f"incident {ack.incident_id}: a step fired after its acknowledgement "
                 f"({ack.via}) committed: notification rows created "
                 f"{[round(t - ack.done, 3) for t in after]} s after the 2xx")
        late = [a for a in by_incident[ack.incident_id] if a.at > ack.done]
        per_sender = Counter(a.sender for a in late)
        if any(n > CONCURRENCY for n in per_sender.values()):
            fail(f"incident {ack.incident_id}: {len(late)} messages reached the receiver after "
                 f"its acknowledgement ({ack.via}) committed (at most the {CONCURRENCY} in flight "
                 f"per daemon): {[(a.sender, a.token, round(a.at - ack.done, 3)) for a in late]}")
        for a in late:
            late_total += 1
            counts["max_late_ms"] = max(counts["max_late_ms"], round((a.at - ack.done) * 1000, 1))
            if a.at - ack.done > IN_FLIGHT:
                fail(f"incident {ack.incident_id}: a message reached the receiver "
                     f"{a.at - ack.done:.3f} s after the acknowledgement's 2xx (bound {IN_FLIGHT} s)")
            between = [b for b in arrivals
                       if ack.done + GRACE < b.at and b.seq < a.seq and b.sender == a.sender]
            if a.at > ack.done + GRACE and len(between) >= CONCURRENCY:
                fail(f"incident {ack.incident_id}: notification {rows[a.token][0]} was sent "
                     f"after other messages that followed the acknowledgement ({ack.via}): it "
                     "was not in flight at the commit")
    counts["late_in_flight"] = late_total


def utc_text(at: float) -> str:
    """Epoch seconds as the store writes instants (fixed-width UTC text, comparable as text)."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def check_clean_end(db: Db, per_token: dict[str, list[Arrival]], drained_at: float,
                    fail: Callable[[str], None]) -> None:
    """After the last clean stop: every notification recorded delivered reached the receiver,
    none is left ``sending``, and no step is overdue (no timer was lost to a kill: every
    incident's ``next_step_at`` is after ``drained_at`` − 3 s)."""
    delivered = db.query("SELECT n.ack_token, n.id FROM notifications n JOIN "
                         "deliveries d ON d.notification_id = n.id WHERE d.outcome = 'delivered'")
    missing = [nid for token, nid in delivered if token not in per_token]
    if missing:
        fail(f"notifications recorded delivered that never reached the receiver: {missing[:10]}")
    stuck = sorted(nid for (nid,) in db.query(
        "SELECT id FROM notifications WHERE status = 'sending'"))
    if stuck:
        fail(f"notifications left 'sending' after a clean stop: {stuck[:10]}")
    overdue = db.query("SELECT id, next_step_at FROM incidents WHERE state = 'triggered' AND "
                       f"next_step_at < '{utc_text(drained_at - 3)}'")
    if overdue:
        fail(f"steps overdue at the end (timers lost?): {overdue[:5]}")
