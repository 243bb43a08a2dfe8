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
``failed/`` (its sidecar must stay with it). Invariants of the lane (the bounds — ``CONCURRENCY``,
``IN_FLIGHT``, ``GRACE``, ``CLAIM_LIMIT`` — and the receiver, daemon process and checks it
shares with the failover lane are in ``tests/lane_kit.py``):

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
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tests.lane_kit import (
    CLASSES_PER_GRADE,
    GRADES,
    TOKEN,
    Ack,
    Arrival,
    DaemonProcess,
    Db,
    Incarnation,
    Load,
    Receiver,
    check_acknowledgements,
    check_arrivals_have_rows,
    check_clean_end,
    check_copies,
    check_http_events,
    free_port,
    lane_env,
    school_config,
    seed_from,
)

KILLS = int(os.environ.get("ESCALATOR_CRASH_KILLS", "50"))
SEED = seed_from("ESCALATOR_CRASH_SEED")


# ---------------------------------------------------------------------------------- the lane


@dataclass
class SpoolFile:
    name: str
    sha256: str
    events: int      # 0 for an invalid file
    valid: bool


@dataclass
class Lane:
    tmp: Path
    seed: int
    receiver: Receiver
    rng: random.Random = field(init=False)
    load: Load = field(default_factory=Load)
    spool_lock: threading.Lock = field(default_factory=threading.Lock)
    files: dict[str, SpoolFile] = field(default_factory=dict)
    drained_at: float = 0.0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.counts = self.load.counts
        self.state = self.tmp / "state"
        self.spool = self.tmp / "spool"
        self.db = Db(self.state / "escalator.sqlite3")
        logs = self.tmp / "logs"
        logs.mkdir()
        for sub in ("incoming", "tmp", "processed", "failed"):
            (self.spool / sub).mkdir(parents=True, exist_ok=True)
        cfg = self.tmp / "escalator.yaml"
        cfg.write_text(school_config(f"{self.receiver.url}/sms"), encoding="utf-8")
        port = free_port()
        self.env = lane_env(config=str(cfg), state_dir=str(self.state),
                            spool_dir=str(self.spool), http_listen=f"127.0.0.1:{port}")
        self.daemon = DaemonProcess("run", self.env, port, self.tmp, logs, self.fail)
        self.runs = self.daemon.runs

    def fail(self, message: str) -> None:
        cycle = len(self.runs)
        raise AssertionError(f"[crash lane seed {self.seed} (replay: ESCALATOR_CRASH_SEED="
                             f"{self.seed}), after daemon run {cycle}] {message}")

    # ------------------------------------------------------------------ load

    def http_writer(self, rng: random.Random) -> None:
        self.load.post_events(rng, lambda: self.daemon.url, "crash_http", "h")

    def spool_writer(self, rng: random.Random) -> None:
        i = 0
        while not self.load.stop.is_set():
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
        client = httpx.Client(base_url=self.daemon.url, timeout=10,
                              headers={"Authorization": f"Bearer {TOKEN}"})
        while not self.load.stop.is_set():
            time.sleep(rng.uniform(0.2, 0.6))
            incident = self.load.pick_unacknowledged(rng)
            if incident is None:
                continue
            if rng.random() < 0.2:  # the CLI, from another process (also while the daemon is down)
                sent = time.time()
                r = subprocess.run([sys.executable, "-m", "escalator.cli", "ack", str(incident)],
                                   env=self.env, capture_output=True, text=True, timeout=60,
                                   cwd=self.tmp)
                done = time.time()
                if r.returncode != 0:
                    self.load.errors.append(
                        f"escalator ack {incident}: {r.returncode} {r.stderr[-500:]}")
                elif ": acknowledged " in r.stdout:
                    with self.load.lock:
                        self.load.acks.append(Ack(incident, sent, done, "cli"))
                continue
            self.load.acknowledge(client, incident)
        client.close()

    # ------------------------------------------------------------------ invariants

    def check(self, *, final: bool = False) -> None:
        if self.load.errors:
            self.fail("unexpected answers: " + "; ".join(self.load.errors[:5]))
        with self.load.lock:
            accepted = dict(self.load.accepted)
            acks = list(self.load.acks)
        with self.spool_lock:  # the writer pauses: the daemon is dead, nothing else moves files
            self._check_spool(final)
        check_http_events(self.db, accepted, "crash_http", self.fail)
        self._check_deliveries(acks, final)

    def _check_spool(self, final: bool) -> None:
        rows = self.db.query("SELECT json_extract(body, '$.labels.crash_file'), COUNT(*), "
                          "COUNT(DISTINCT json_extract(body, '$.labels.crash_row')) FROM events "
                          "WHERE json_extract(body, '$.labels.crash_file') IS NOT NULL GROUP BY 1")
        stored = {name: (n, distinct) for name, n, distinct in rows}
        hashes = {sha for (sha,) in self.db.query("SELECT sha256 FROM spool_files")}
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
        rows = self.db.notifications()
        per_token = check_arrivals_have_rows(self.receiver, rows, self.fail)
        starts = [r.started for r in self.runs]

        def process_of(a: Arrival) -> Incarnation:  # one daemon at a time: the last started
            return self.runs[max(i for i, s in enumerate(starts) if s <= a.at)]

        check_copies(per_token, rows, process_of, self.fail, self.counts)
        check_acknowledgements(acks, self.receiver.snapshot(), rows, self.fail, self.counts)
        self.counts["acks_api"] = sum(a.via == "api" for a in acks)
        self.counts["acks_cli"] = sum(a.via == "cli" for a in acks)
        if final:  # every timer survived the kills, nothing left sending or unsent
            check_clean_end(self.db, per_token, self.drained_at, self.fail)

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
                if early:
                    run = self.daemon.start()
                    run.early = True
                else:
                    run = self.daemon.start_listening(60)
                time.sleep(delay)
                self.daemon.kill()
                self.counts["kills"] += 1
                self.counts["kills_at_startup"] += run.early
                if self.rng.random() < 0.3:
                    time.sleep(self.rng.uniform(0.2, 1.0))  # down for a while: CLI acks, spool grows
                self.check()
            # the last run: stop the load, let the daemon drain, stop it cleanly
            self.daemon.start_listening(60)
            self.load.stop.set()
            for t in threads:
                t.join(timeout=90)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                soon = datetime.fromtimestamp(time.time() + 3, UTC).strftime(
                    "%Y-%m-%dT%H:%M:%S.%fZ")
                if not any((self.spool / "incoming").iterdir()) and self.db.query(
                        "SELECT COUNT(*) FROM notifications WHERE status IN ('pending', 'sending')"
                        f" AND due_at <= '{soon}'")[0][0] == 0:
                    break
                time.sleep(0.2)
            time.sleep(0.5)
            self.drained_at = time.time()
            self.daemon.terminate(60)
            self.check(final=True)
        finally:
            self.load.stop.set()
            self.daemon.reap()


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
    events = lane.db.query("SELECT COUNT(*) FROM events")[0][0]
    incidents = lane.db.query("SELECT state, COUNT(*) FROM incidents GROUP BY state")
    moved = sum(1 for _ in (tmp_path / "spool" / "processed").glob("*/*"))
    failed = sum(1 for p in (tmp_path / "spool" / "failed").iterdir()
                 if not p.name.endswith(".error.json"))
    print(f"crash lane: seed {SEED}: {c['kills']} kills ({c['kills_at_startup']} during start-up) "
          f"in {time.monotonic() - started:.0f} s; {c['http_events_accepted']} HTTP events "
          f"accepted, {len(lane.files)} spool files ({moved} processed, {failed} failed, "
          f"{c['files_committed_not_moved_at_kill']} found committed but not moved after a kill); "
          f"{events} events stored, incidents {dict(incidents)}; {c['messages']} messages for "
          f"{c['notifications_reached']} notifications, {c['duplicates']} duplicates "
          f"(each across a kill; at most {c['max_duplicates_one_kill']} from one kill); "
          f"acknowledgements {c['acks_api']} by API, {c['acks_cli']} by CLI, "
          f"{c['late_in_flight']} messages in flight at an ack's commit (latest "
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
