"""The crash lane (issue #7 item 2): seeded kill -9s of a real daemon during HTTP ingest,
spool ingest and escalation, with the invariants checked after every kill.

Run it with ``python -m pytest -q -m crash -rP`` (the README's default command deselects the
``crash`` marker; ``.ci/run`` runs this lane as its second step). Real processes, real time:

- a real ``escalator run`` subprocess (temp state dir, spool dir, API on a free port), whose
  channel is the built-in ``sms_http`` POSTing to a real HTTP receiver in this process;
- an escalation policy with 5 s step timeouts (check-config's minimum), so steps fire and
  messages go out while the daemon is being killed (and overdue steps at each restart);
- three load threads for the whole run: an HTTP writer (single events and lists, some with a
  shared dedup key), a spool writer (renamed in from ``tmp/``, written in place in two writes,
  and some invalid files), and an acknowledger (API, and CLI ``escalator ack`` — the CLI also
  while the daemon is down);
- ``ESCALATOR_CRASH_KILLS`` cycles (default 50): start the daemon, SIGKILL it at a delay drawn
  from the seeded RNG (about one in eight during start-up, the rest 0–3.5 s after it listens),
  check the invariants on the store and the folders, start again. State accumulates. A last
  run drains and stops with SIGTERM, and everything is checked once more.

The seed is printed, and named in every failure; replay with ``ESCALATOR_CRASH_SEED=<seed>``
(the seed fixes the kill delays and the inputs; the processes' own timing still varies).

Also here, in the default run (seconds): a targeted kill -9 while a bad file moves to
``failed/`` (its sidecar must stay with it). Invariants of the lane (the bounds: ``IN_FLIGHT``, ``GRACE``, ``CLAIM_LIMIT``):

1. every ``event_id`` that got a 2xx is in the store; no HTTP event is stored twice;
2. every file that left ``incoming/`` has its events exactly once: a file in ``processed/``
   has its SHA-256 in ``spool_files`` and each of its events once; a file in ``failed/`` has
   its sidecar and no events; a file still in ``incoming/`` has none or all of them once;
   no file is lost;
3. after an acknowledgement's commit no step fires for the incident, and the receiver gets
   only messages of it that were in flight at the commit — at most ``CONCURRENCY`` (the
   delivery worker has at most ``delivery.concurrency_per_channel`` sends in flight per
   channel, one per address, and re-checks each row in a transaction just before sending it,
   holding its send slot). Measured from the moment the 2xx (or the CLI's exit) came back,
   which is after the commit: at most ``CONCURRENCY`` arrivals after it, each within
   ``IN_FLIGHT`` seconds, and fewer than ``CONCURRENCY`` other messages (of any incident)
   reached the receiver between that moment + ``GRACE`` and it (else it was not in flight);
4. every message the receiver gets belongs to a committed notification row; no daemon
   process sends one notification twice, so each copy after the first comes from a later
   process started after a kill between the send and the commit of its ledger row (one more
   copy per such kill: two kills in a row during the same send leave three copies; the worker
   records a claimed batch in one transaction, so one kill re-sends at most ``CLAIM_LIMIT``
   messages); every row marked delivered reached the receiver at least once;
5. the end: after a drain and a SIGTERM, nothing is left in ``incoming/``, no row is left
   ``sending``, and no step of a triggered incident is overdue (every timer survived).
"""

from __future__ import annotations

import hashlib
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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

KILLS = int(os.environ.get("ESCALATOR_CRASH_KILLS", "50"))
SEED = int(os.environ.get("ESCALATOR_CRASH_SEED") or random.SystemRandom().randrange(1, 2**31))
CONCURRENCY = 8
"""Sends in flight at once per channel: ``delivery.concurrency_per_channel``, the default (the
lane's config has one channel and does not set it)."""
IN_FLIGHT = 5.0
"""Seconds after an acknowledgement's 2xx within which the sends in flight at its commit
must have reached the receiver (in practice milliseconds; generous for a loaded CI machine)."""
GRACE = 0.05
"""Seconds of clock-reading noise allowed between this process's threads (the receiver's
arrival stamp vs the acknowledger's 2xx stamp)."""
CLAIM_LIMIT = 50
"""Rows the delivery worker claims at once (``Delivery.run_once``'s ``limit``): the most
messages one kill can leave sent but not on record, so sent again after the restart."""
TOKEN = "admin-token-crash-lane"
GRADES = 8
CLASSES_PER_GRADE = 5
ACK_LINK = re.compile(r"/ack/([A-Za-z0-9_\-.]+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config_text(receiver_url: str) -> str:
    """A school with 40 classes: escalate chains (class teacher → grade leader → class
    teacher, 5 s each), every person an SMS number on the sms_http gateway."""
    classes = [f"{g}-{c}" for g in range(1, GRADES + 1) for c in range(1, CLASSES_PER_GRADE + 1)]
    people = [f'  - {{id: t-{c}, name: 老师{c}, roles: [class_teacher], classes: ["{c}"], '
              f'contacts: [{{channel: sms, to: "1380000{i:04d}"}}]}}'
              for i, c in enumerate(classes)]
    people += [f'  - {{id: g-{g}, name: 组长{g}, roles: [grade_leader], grades: ["{g}"], '
               f'contacts: [{{channel: sms, to: "1390000{g:04d}"}}]}}' for g in range(1, GRADES + 1)]
    people.append('  - {id: duty, name: 值班员, contacts: [{channel: sms, to: "13700000000"}]}')
    people.append('  - {id: head, name: 校长, roles: [leadership], '
                  'contacts: [{channel: sms, to: "13600000000"}]}')
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
    options: {{url: "{receiver_url}/sms", timeout: 5}}
duty_roster:
  - {{person: duty}}
sources:
  spool:
    type: spool
    options: {{settle: 0.3, rescan_interval: 0.5}}
policies:
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


# ---------------------------------------------------------------------------------- receiver


@dataclass
class Arrival:
    at: float        # time.time() when the request reached the handler
    seq: int         # arrival order
    token: str       # the acknowledge token in the text: names the notification row
    to: str


class Receiver:
    """The SMS gateway: a real HTTP server on 127.0.0.1 that answers 200 at once and records
    each message's arrival time and acknowledge token."""

    def __init__(self) -> None:
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
                        receiver.arrivals.append(Arrival(at, len(receiver.arrivals), m.group(1),
                                                         doc["to"]))
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


# ---------------------------------------------------------------------------------- the lane


@dataclass
class Ack:
    incident_id: int
    sent: float      # before the request (or the CLI) started: the commit is after this
    done: float      # when the 2xx (or the CLI's exit 0) came back: the commit is before this
    via: str


@dataclass
class SpoolFile:
    name: str
    sha256: str
    events: int      # 0 for an invalid file
    valid: bool


@dataclass
class Incarnation:
    n: int
    started: float
    killed: float | None = None
    early: bool = False      # killed before the API listened


@dataclass
class Lane:
    tmp: Path
    seed: int
    receiver: Receiver
    rng: random.Random = field(init=False)
    lock: threading.Lock = field(default_factory=threading.Lock)
    spool_lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    accepted: dict[str, str] = field(default_factory=dict)       # event_id → http label
    created: list[int] = field(default_factory=list)             # incident ids from 2xx
    acks: list[Ack] = field(default_factory=list)
    ack_tried: set[int] = field(default_factory=set)
    files: dict[str, SpoolFile] = field(default_factory=dict)
    runs: list[Incarnation] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    port: int = 0
    proc: subprocess.Popen | None = None
    drained_at: float = 0.0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.state = self.tmp / "state"
        self.spool = self.tmp / "spool"
        self.db = self.state / "escalator.sqlite3"
        self.logs = self.tmp / "logs"
        self.logs.mkdir()
        for sub in ("incoming", "tmp", "processed", "failed"):
            (self.spool / sub).mkdir(parents=True, exist_ok=True)
        self.cfg = self.tmp / "escalator.yaml"
        self.cfg.write_text(config_text(self.receiver.url), encoding="utf-8")
        self.port = free_port()
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("ESCALATOR_", "NOTIFY_SOCKET", "WATCHDOG_"))}
        self.env.update(ESCALATOR_CONFIG=str(self.cfg), ESCALATOR_STATE_DIR=str(self.state),
                        ESCALATOR_SPOOL_DIR=str(self.spool), ESCALATOR_LOG_FORMAT="json",
                        ESCALATOR_HTTP_LISTEN=f"127.0.0.1:{self.port}",
                        ESCALATOR_API_TOKEN=TOKEN, PYTHONUNBUFFERED="1")

    def fail(self, message: str) -> None:
        cycle = len(self.runs)
        raise AssertionError(f"[crash lane seed {self.seed} (replay: ESCALATOR_CRASH_SEED="
                             f"{self.seed}), after daemon run {cycle}] {message}")

    # ------------------------------------------------------------------ the daemon

    def start(self) -> Incarnation:
        run = Incarnation(len(self.runs) + 1, time.time())
        log = open(self.logs / f"run-{run.n:03d}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-m", "escalator.cli", "run"],
                                     env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     cwd=self.tmp)
        log.close()
        self.runs.append(run)
        return run

    def listening(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.fail(f"the daemon exited by itself ({self.proc.returncode}); see "
                          f"{self.logs}/run-{len(self.runs):03d}.log:\n" + self._log_tail())
            try:
                httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=0.5)
                return True
            except httpx.HTTPError:
                time.sleep(0.02)
        return False

    def kill(self, run: Incarnation) -> None:
        run.killed = time.time()
        self.proc.send_signal(signal.SIGKILL)
        code = self.proc.wait(timeout=30)
        if code != -signal.SIGKILL:
            self.fail(f"the daemon ended with {code} before the kill:\n" + self._log_tail())

    def _log_tail(self) -> str:
        text = (self.logs / f"run-{len(self.runs):03d}.log").read_text("utf-8", "replace")
        return "\n".join(text.splitlines()[-30:])

    # ------------------------------------------------------------------ load

    def http_writer(self, rng: random.Random) -> None:
        client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10,
                              headers={"Authorization": f"Bearer {TOKEN}"})
        i = 0
        while not self.stop.is_set():
            n = 1 if rng.random() < 0.7 else rng.randint(2, 4)
            labels = [f"h{i + k}" for k in range(n)]
            i += n
            shared = f"crash/shared/{rng.randrange(8)}"
            docs = [{"kind": "incident", "category": "accident", "summary": f"crash lane {lab}",
                     "class_id": f"{rng.randint(1, GRADES)}-{rng.randint(1, CLASSES_PER_GRADE)}",
                     "dedup_key": shared if rng.random() < 0.3 else f"crash/{lab}",
                     "labels": {"crash_http": lab}} for lab in labels]
            try:
                r = client.post("/api/v1/events", json=docs if n > 1 else docs[0])
            except httpx.ConnectError:  # the daemon is down
                time.sleep(0.05)
                continue
            except httpx.HTTPError:  # sent, no answer: killed mid-request (stored or not)
                self.counts["http_unanswered"] += 1
                time.sleep(0.05)
                continue
            if r.status_code != 202:
                self.errors.append(f"POST /api/v1/events: {r.status_code} {r.text[:300]}")
                continue
            out = r.json() if n > 1 else [r.json()]
            with self.lock:
                for lab, o in zip(labels, out, strict=True):
                    self.accepted[o["event_id"]] = lab
                    if o["status"] == "created":
                        self.created.append(o["incident_id"])
                self.counts["http_events_accepted"] += n
            time.sleep(rng.uniform(0.1, 0.5))
        client.close()

    def spool_writer(self, rng: random.Random) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            name = f"f{i:05d}.json"
            kind = rng.random()
            if kind < 0.06:
                data = b'{"kind": "incident", "summary": broken ' + str(i).encode()
                events = 0
            else:
                # one in ten a big file (one incident, the rest deduplicated): a longer
                # transaction, so some kills land inside it
                big = rng.random() < 0.1
                events = rng.randint(60, 120) if big else rng.randint(1, 3)
                doc = [{"kind": "incident", "category": "other", "summary": f"spool {name} #{k}",
                        "class_id": f"{rng.randint(1, GRADES)}-{rng.randint(1, CLASSES_PER_GRADE)}",
                        "dedup_key": f"crash/{name}" if big else f"crash/{name}/{k}",
                        "labels": {"crash_file": name, "crash_row": str(k)}}
                       for k in range(events)]
                data = json.dumps(doc, ensure_ascii=False).encode("utf-8")
            with self.spool_lock:
                self.files[name] = SpoolFile(name, hashlib.sha256(data).hexdigest(), events,
                                             events > 0)
                if kind < 0.8:  # the recommended way: write in tmp/, rename in
                    tmp = self.spool / "tmp" / name
                    tmp.write_bytes(data)
                    os.replace(tmp, self.spool / "incoming" / name)
                else:  # written in place, in two writes (the settle rule must wait)
                    with open(self.spool / "incoming" / name, "wb") as f:
                        f.write(data[: len(data) // 2])
                        f.flush()
                        time.sleep(0.02)
                        f.write(data[len(data) // 2:])
            time.sleep(rng.uniform(0.2, 0.6))

    def acknowledger(self, rng: random.Random) -> None:
        client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10,
                              headers={"Authorization": f"Bearer {TOKEN}"})
        while not self.stop.is_set():
            time.sleep(rng.uniform(0.2, 0.6))
            with self.lock:
                todo = [i for i in self.created[-40:] if i not in self.ack_tried]
            if not todo:
                continue
            incident = rng.choice(todo)
            self.ack_tried.add(incident)
            if rng.random() < 0.2:  # the CLI, from another process (also while the daemon is down)
                sent = time.time()
                r = subprocess.run([sys.executable, "-m", "escalator.cli", "ack", str(incident)],
                                   env=self.env, capture_output=True, text=True, timeout=60,
                                   cwd=self.tmp)
                done = time.time()
                if r.returncode != 0:
                    self.errors.append(f"escalator ack {incident}: {r.returncode} {r.stderr[-500:]}")
                elif ": acknowledged " in r.stdout:
                    with self.lock:
                        self.acks.append(Ack(incident, sent, done, "cli"))
                continue
            sent = time.time()
            try:
                resp = client.post(f"/api/v1/incidents/{incident}/acknowledge")
            except httpx.ConnectError:
                continue
            except httpx.HTTPError:  # the daemon died (committed or not: unknown, so not checked)
                self.counts["acks_unanswered"] += 1
                continue
            done = time.time()
            if resp.status_code != 200:
                self.errors.append(f"acknowledge {incident}: {resp.status_code} {resp.text[:300]}")
            elif resp.json()["outcome"] == "acknowledged":
                with self.lock:
                    self.acks.append(Ack(incident, sent, done, "api"))
        client.close()

    # ------------------------------------------------------------------ invariants

    def query(self, sql: str, args: tuple = ()) -> list[tuple]:
        """Rows of `sql`; none while the first run was killed before it created the schema."""
        if not self.db.exists():
            return []  # killed before it even created the database
        conn = sqlite3.connect(self.db, timeout=30)
        try:
            if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'events'").fetchone():
                return []  # killed before its first migration committed: nothing stored yet
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    def check(self, *, final: bool = False) -> None:
        if self.errors:
            self.fail("unexpected answers: " + "; ".join(self.errors[:5]))
        with self.lock:
            accepted = dict(self.accepted)
            acks = list(self.acks)
        with self.spool_lock:  # the writer pauses: the daemon is dead, nothing else moves files
            self._check_spool(final)
        self._check_http(accepted)
        self._check_deliveries(acks, final)

    def _check_http(self, accepted: dict[str, str]) -> None:
        stored = dict(self.query("SELECT id, json_extract(body, '$.labels.crash_http') "
                                 "FROM events WHERE json_extract(body, '$.labels.crash_http') "
                                 "IS NOT NULL"))
        lost = [(e, lab) for e, lab in accepted.items() if e not in stored]
        if lost:
            self.fail(f"{len(lost)} events answered 2xx are not in the store: {lost[:5]}")
        twice = [lab for lab, n in Counter(stored.values()).items() if n > 1]
        if twice:
            self.fail(f"HTTP events stored more than once: {twice[:5]}")

    def _check_spool(self, final: bool) -> None:
        rows = self.query("SELECT json_extract(body, '$.labels.crash_file'), COUNT(*), "
                          "COUNT(DISTINCT json_extract(body, '$.labels.crash_row')) FROM events "
                          "WHERE json_extract(body, '$.labels.crash_file') IS NOT NULL GROUP BY 1")
        stored = {name: (n, distinct) for name, n, distinct in rows}
        hashes = {sha for (sha,) in self.query("SELECT sha256 FROM spool_files")}
        where: dict[str, list[str]] = defaultdict(list)
        for p in (self.spool / "processed").glob("*/*"):
            where[p.name].append("processed")
        for p in (self.spool / "failed").iterdir():
            # sidecars, and a sidecar's temporary file that a kill left (rewritten on restart)
            if not p.name.endswith(".error.json") and not p.name.startswith("."):
                where[p.name].append("failed")
        for p in (self.spool / "incoming").iterdir():
            where[p.name].append("incoming")
        for p in (self.spool / "tmp").iterdir():
            where[p.name].append("tmp")
        for name, f in self.files.items():
            places = where.pop(name, [])
            n, distinct = stored.get(name, (0, 0))
            if len(places) != 1:
                self.fail(f"spool file {name} is in {places or 'no folder'} (written: {f})")
            place = places[0]
            if n != distinct:
                self.fail(f"spool file {name}: an event stored twice ({n} rows, {distinct} distinct)")
            if place == "processed":
                if not f.valid or f.sha256 not in hashes or n != f.events:
                    self.fail(f"spool file {name} in processed/: valid {f.valid}, hash recorded "
                              f"{f.sha256 in hashes}, {n} of {f.events} events stored")
            elif place == "failed":
                sidecar = self.spool / "failed" / f"{name}.error.json"
                if f.valid or n or not sidecar.exists():
                    self.fail(f"spool file {name} in failed/: valid {f.valid}, {n} events stored, "
                              f"sidecar {sidecar.exists()}")
            elif place == "incoming":
                if final:
                    self.fail(f"spool file {name} still in incoming/ after the drain")
                committed = f.sha256 in hashes
                if n not in ((f.events,) if committed else (0,)):
                    self.fail(f"spool file {name} in incoming/: hash recorded {committed}, "
                              f"{n} of {f.events} events stored")
                if committed:
                    self.counts["files_committed_not_moved_at_kill"] += 1
            elif place == "tmp":
                self.fail(f"spool file {name} left in tmp/")
        if where:
            self.fail(f"unknown files in the spool: {sorted(where)[:5]}")

    def _check_deliveries(self, acks: list[Ack], final: bool) -> None:
        arrivals = self.receiver.snapshot()
        if self.receiver.bad:
            self.fail(f"messages without an acknowledge link: {self.receiver.bad[:2]}")
        rows = self.query("SELECT ack_token, id, incident_id, status, created_at FROM notifications")
        by_token = {t: (nid, inc, status, created) for t, nid, inc, status, created in rows}
        ts = {t: datetime.strptime(c, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
              for t, (_, _, _, c) in by_token.items()}
        per_token: dict[str, list[Arrival]] = defaultdict(list)
        for a in arrivals:
            if a.token not in by_token:
                self.fail(f"a message for no committed notification row (token {a.token!r})")
            per_token[a.token].append(a)
        starts = [r.started for r in self.runs]

        def run_of(a: Arrival) -> int:
            return max(i for i, s in enumerate(starts) if s <= a.at)

        for token, got in per_token.items():
            runs = [run_of(a) for a in got]
            if len(set(runs)) < len(runs):
                self.fail(f"notification {by_token[token][0]} sent twice by one daemon run")
            if any(self.runs[r].killed is None for r in runs[:-1]):
                self.fail(f"notification {by_token[token][0]} reached the receiver {len(got)} "
                          "times: a copy after a run that was not killed")
        self.counts["messages"] = len(arrivals)
        self.counts["notifications_reached"] = len(per_token)
        self.counts["duplicates_after_kill"] = sum(len(g) == 2 for g in per_token.values())
        # per kill: the sends made but not yet on record when it struck (the worker records a
        # claimed batch — at most CLAIM_LIMIT rows — in one transaction)
        per_kill = Counter(run_of(g[0]) for g in per_token.values() if len(g) == 2)
        worst = max(per_kill.values(), default=0)
        self.counts["max_duplicates_one_kill"] = worst
        if worst > CLAIM_LIMIT:
            self.fail(f"one kill caused {worst} duplicate messages (bound: the claim batch, "
                      f"{CLAIM_LIMIT})")

        by_incident: dict[int, list[Arrival]] = defaultdict(list)
        for a in arrivals:
            by_incident[by_token[a.token][1]].append(a)
        created_of: dict[int, list[float]] = defaultdict(list)
        for t, (_, inc, _, _) in by_token.items():
            created_of[inc].append(ts[t])
        late_total = 0
        for ack in acks:
            after = [t for t in created_of[ack.incident_id] if t > ack.done]
            if after:
                self.fail(f"incident {ack.incident_id}: a step fired after its acknowledgement "
                          f"({ack.via}) committed: notification rows created "
                          f"{[round(t - ack.done, 3) for t in after]} s after the 2xx")
            late = [a for a in by_incident[ack.incident_id] if a.at > ack.done]
            if len(late) > CONCURRENCY:
                self.fail(f"incident {ack.incident_id}: {len(late)} messages reached the receiver "
                          f"after its acknowledgement ({ack.via}) committed (at most the "
                          f"{CONCURRENCY} in flight): "
                          f"{[(a.token, round(a.at - ack.done, 3)) for a in late]}")
            for a in late:
                late_total += 1
                self.counts["max_late_ms"] = max(self.counts["max_late_ms"],
                                                 round((a.at - ack.done) * 1000, 1))
                if a.at - ack.done > IN_FLIGHT:
                    self.fail(f"incident {ack.incident_id}: a message reached the receiver "
                              f"{a.at - ack.done:.3f} s after the acknowledgement's 2xx "
                              f"(bound {IN_FLIGHT} s)")
                between = [b for b in arrivals if ack.done + GRACE < b.at and b.seq < a.seq]
                if a.at > ack.done + GRACE and len(between) >= CONCURRENCY:
                    self.fail(f"incident {ack.incident_id}: notification {by_token[a.token][0]} "
                              f"was sent after other messages that followed the acknowledgement "
                              f"({ack.via}): it was not in flight at the commit")
        self.counts["late_in_flight"] = late_total
        self.counts["acks_api"] = sum(a.via == "api" for a in acks)
        self.counts["acks_cli"] = sum(a.via == "cli" for a in acks)
        if final:
            delivered = self.query("SELECT n.ack_token, n.id FROM notifications n JOIN deliveries d "
                                   "ON d.notification_id = n.id WHERE d.outcome = 'delivered'")
            missing = [nid for token, nid in delivered if token not in per_token]
            if missing:
                self.fail(f"notifications recorded delivered that never reached the receiver: "
                          f"{missing[:10]}")
            stuck = self.query("SELECT COUNT(*) FROM notifications WHERE status = 'sending'")[0][0]
            if stuck:
                self.fail(f"{stuck} notifications left 'sending' after a clean stop")
            # every timer survived the kills: none was left overdue by the last run
            cutoff = datetime.fromtimestamp(self.drained_at - 3, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            overdue = self.query("SELECT id, next_step_at FROM incidents WHERE state = 'triggered' "
                                 "AND next_step_at < ?", (cutoff,))
            if overdue:
                self.fail(f"steps overdue at the end (timers lost?): {overdue[:5]}")

    # ------------------------------------------------------------------ the run

    def run(self) -> None:
        threads = [threading.Thread(target=target, args=(random.Random(f"{self.seed}/{name}"),),
                                    name=name, daemon=True)
                   for name, target in (("http", self.http_writer), ("spool", self.spool_writer),
                                        ("ack", self.acknowledger))]
        for t in threads:
            t.start()
        try:
            for _ in range(KILLS):
                early = self.rng.random() < 0.125
                delay = self.rng.uniform(0.05, 1.5) if early else self.rng.uniform(0.0, 3.5)
                run = self.start()
                if early:
                    run.early = True
                    time.sleep(delay)
                elif not self.listening(60):
                    self.fail("the daemon did not listen within 60 s:\n" + self._log_tail())
                else:
                    time.sleep(delay)
                self.kill(run)
                self.counts["kills"] += 1
                self.counts["kills_at_startup"] += run.early
                if self.rng.random() < 0.3:
                    time.sleep(self.rng.uniform(0.2, 1.0))  # down for a while: CLI acks, spool grows
                self.check()
            # the last run: stop the load, let the daemon drain, stop it cleanly
            run = self.start()
            if not self.listening(60):
                self.fail("the daemon did not listen within 60 s:\n" + self._log_tail())
            self.stop.set()
            for t in threads:
                t.join(timeout=90)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if not any((self.spool / "incoming").iterdir()) and self.query(
                        "SELECT COUNT(*) FROM notifications WHERE status IN ('pending', 'sending')"
                        " AND due_at <= strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '+3 seconds')"
                        )[0][0] == 0:
                    break
                time.sleep(0.2)
            time.sleep(0.5)
            self.drained_at = time.time()
            self.proc.send_signal(signal.SIGTERM)
            code = self.proc.wait(timeout=60)
            if code != 0:
                self.fail(f"the daemon stopped with {code} on SIGTERM:\n" + self._log_tail())
            self.check(final=True)
        finally:
            self.stop.set()
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=30)


@pytest.mark.crash
def test_kill_9_during_ingest_and_escalation_keeps_every_guarantee(tmp_path):
    print(f"crash lane: seed {SEED} (replay: ESCALATOR_CRASH_SEED={SEED}), {KILLS} kills")
    receiver = Receiver()
    started = time.monotonic()
    try:
        lane = Lane(tmp_path, SEED, receiver)
        lane.run()
    finally:
        receiver.close()
    c = lane.counts
    events = lane.query("SELECT COUNT(*) FROM events")[0][0]
    incidents = lane.query("SELECT state, COUNT(*) FROM incidents GROUP BY state")
    moved = sum(1 for _ in (tmp_path / "spool" / "processed").glob("*/*"))
    failed = sum(1 for p in (tmp_path / "spool" / "failed").iterdir()
                 if not p.name.endswith(".error.json"))
    print(f"crash lane: seed {SEED}: {c['kills']} kills ({c['kills_at_startup']} during start-up) "
          f"in {time.monotonic() - started:.0f} s; {c['http_events_accepted']} HTTP events "
          f"accepted, {len(lane.files)} spool files ({moved} processed, {failed} failed, "
          f"{c['files_committed_not_moved_at_kill']} found committed but not moved after a kill); "
          f"{events} events stored, incidents {dict(incidents)}; {c['messages']} messages for "
          f"{c['notifications_reached']} notifications, {c['duplicates_after_kill']} duplicates "
          f"(each across a kill; at most {c['max_duplicates_one_kill']} from one kill); acknowledgements {c['acks_api']} by API, {c['acks_cli']} by "
          f"CLI, {c['late_in_flight']} messages in flight at an ack's commit (latest "
          f"{c['max_late_ms']} ms after the 2xx); killed mid-request: {c['http_unanswered']} "
          f"event posts, {c['acks_unanswered']} acknowledgements, {receiver.torn} sends")
    assert c["kills"] == KILLS


# ------------------------------------------------------------------------- a targeted kill

FAIL_SCRIPT = r"""
import asyncio, os, signal, sys
from pathlib import Path

from escalator.clock import SystemClock
from escalator.config import load_config
from escalator.engine.engine import Engine
from escalator.config.settings import load_settings
from escalator.intake.sources import SourceContext
from escalator.store import SQLiteStore
from escalator.intake.spool.source import SpoolSource

config_path, db, spool, state, kill_at = sys.argv[1:6]
config = load_config(config_path)
engine = Engine(SQLiteStore(db), config, SystemClock())
real_replace, calls = os.replace, [0]


def replace_then_die(*args, **kwargs):
    real_replace(*args, **kwargs)
    calls[0] += 1
    if calls[0] == int(kill_at):
        os.kill(os.getpid(), signal.SIGKILL)


os.replace = replace_then_die


async def ingest(events, source):
    return engine.ingest_many(events, source=source)


async def ingest_file(events, sha256, name, source):
    return engine.ingest_file(events, sha256=sha256, name=name, source=source)


async def main():
    settings = load_settings(spool_dir=spool, state_dir=state)
    ctx = SourceContext(settings=settings, config=config, clock=SystemClock(), ingest=ingest,
                        ingest_file=ingest_file)
    source = SpoolSource("spool", {"settle": 0, "rescan_interval": 0.1}, ctx)
    task = asyncio.create_task(source.run())
    while not task.done() and not (source.passes and not any((Path(spool) / "incoming").iterdir())):
        await asyncio.sleep(0.02)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    print("incoming empty", flush=True)


asyncio.run(main())
"""


@pytest.mark.parametrize("kill_at", [1, 2])
def test_kill_9_while_a_bad_file_moves_to_failed_keeps_its_sidecar(tmp_path, kill_at):
    """DESIGN rule 4: a bad file is in failed/ only with the sidecar that says why. Killed
    right after the first (then the second) rename of that move, a restart must still end
    with the file and its sidecar in failed/ — and nothing left in incoming/."""
    root = Path(__file__).resolve().parents[1]
    incoming = tmp_path / "spool" / "incoming"
    incoming.mkdir(parents=True)
    (incoming / "bad.json").write_bytes(b'{"kind": "incident", "summary": broken')

    def run(kill: int) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", FAIL_SCRIPT, str(root / "config/demo.yaml"),
             str(tmp_path / "db.sqlite3"), str(tmp_path / "spool"), str(tmp_path / "state"),
             str(kill)], capture_output=True, text=True, timeout=120, cwd=tmp_path)

    crashed = run(kill_at)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    restarted = run(0)
    assert restarted.returncode == 0 and "incoming empty" in restarted.stdout, restarted.stderr
    failed = tmp_path / "spool" / "failed"
    assert sorted(p.name for p in failed.iterdir()) == ["bad.json", "bad.json.error.json"]
    assert "not valid JSON" in json.loads((failed / "bad.json.error.json").read_text())["reason"]
    assert list(incoming.iterdir()) == []
