"""PostgreSQL and several daemons (issue 15, point 5): SQLite ×1, PostgreSQL ×1 and
PostgreSQL ×3 side by side in one run, then many open incidents on PostgreSQL.

**Part 1, load** (``--parts load``). For each run, the configurations alternate (side by side:
same load generator, same receiver, same minute of the machine); each gets a fresh database —
SQLite: the file in the daemon's state folder (WAL, ``synchronous=FULL``); PostgreSQL: a
scratch database ``escalator_bench_<pid>_<k>`` made here by ``CREATE DATABASE`` and dropped at
the end. Daemons: real ``escalator run`` subprocesses (``bench/run_daemon.py``: per-address
send limit off; digests off by ``harness.DIGESTS_OFF``), each with its own state and spool
folder and ``ESCALATOR_NODE=bench<k>``, started one after another (the first migrates the
schema). The bench config's policy (``bench/harness.py``) tells one person through the generic
HTTP channel to the benchmark's receiver, then — the first step's timeout set to 5 s, the
shortest the config accepts — a second person: two messages per incident.

``--events`` distinct ``incident`` events go to ``POST /api/v1/events`` open loop
(``harness.open_loop``: saturation by default — ``--concurrency`` senders in all, each sending
its next event the moment the previous 202 came, never waiting for a message; ``--rate R``:
event i scheduled at t0 + i / R). With several daemons the load is spread: event i goes to
daemon i mod D, with ``--concurrency`` / D senders (and ``--rate`` / D) each.

Figures per run (medians of ``--runs``):

- **events/s**: accepted (202) events / (last answer − first scheduled send);
- **e2e p50/p99**: the receiver's first message naming ``bench-<i>-`` (step 1) − event i's
  scheduled send time; never delivered within ``--bound`` s of the start = infinitely late;
- **step-fire lag p50/p99/max**: when step 2 fired (``step_runs.fired_at``, written by whichever
  daemon fired it) − when it was due. The due time is what the engine sets
  (``engine.step_delivered``): step 1's first delivery (``step_runs.first_delivered_at``) + 5 s;
  read from the database after the run. Both times are the daemons' own UTC clock;
- **fired twice**: incidents whose step 2 fired more than once (several daemons must not);
  **messages twice**: messages beyond two per accepted event at the receiver (a second later);
  **missing**: accepted events without a step-1 message, or without step 2 fired.

**Part 2, scale** (``--parts scale``; PostgreSQL unless ``--scale-backend sqlite``).
``--incidents`` N (default 1,000,000) open incidents at step 1 of the bench policy (first
step's timeout 1 h), loaded fast: the real engine opens one template incident on a fake clock
(event, incident, step run, notification marked delivered, timeline) and its rows are copied
N − 1 times with new ids, dedup keys, acknowledge tokens — ``bench/scale_bench.py``'s shape —
by ``COPY … FROM STDIN`` through ``psql`` in one transaction (SQLite: ``scale_bench.build_store``
itself). Every due time is parked a day ahead. Then, per run, on fresh id ranges of the same
database, with ``--scale-daemons`` D daemons:

- **live**: ``--due`` incidents fall due one after another at ``--due-rate`` per second from
  ``--head`` seconds after their due times are written (the daemons start in between). Step-fire
  lag = ``fired_at`` of step 2 − its due time; p50/p99/max. **RSS per daemon** (VmRSS) once
  ``/healthz`` answers, and at the end of the period (every due step fired — read from the
  database: at 1,000,000 incidents the messages trail far behind; how many had reached the
  receiver by then is shown); peak (VmHWM).
- **restart**: every daemon is killed (SIGKILL); ``--overdue`` further incidents are made
  overdue (due 1 min ago); the daemons are started again (all at once). **Restart to first
  overdue step** = the earliest ``fired_at`` among them − the moment the processes were
  started (wall clock); and to ``min(--overdue, 10,000)`` of them fired (polled every 50 ms;
  at most ``--bound`` s). Those not fired by then are parked again.

Building 1,000,000 takes minutes: ``--database NAME`` runs part 2 again on a database an
earlier run built and kept (``--keep``; part 2 then starts at fresh ids and parks every due
time within 12 h first; the database is kept again).

The 1-minute load average is printed at the start and the end. PostgreSQL: 127.0.0.1:5432,
user postgres (``--pg`` for another server URL without a database name).

Usage (from the checkout)::

    .venv/bin/python bench/pg_bench.py                     # --events 1000 --runs 3, 1,000,000 open
    .venv/bin/python bench/pg_bench.py --events 300 --runs 1 --incidents 20000   # quick
    .venv/bin/python bench/pg_bench.py --parts load --configs sqlite-1 --events 50 --runs 1
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness as h  # noqa: E402

CONFIGS = {"sqlite-1": ("sqlite", 1), "pg-1": ("postgresql", 1), "pg-3": ("postgresql", 3)}
"""Configuration name → (backend, daemons)."""
STEP_TIMEOUT = 5
"""Seconds: the first step's timeout in part 1 (``escalator.config.models.TIMEOUT_MIN``)."""
TABLES = ("events", "incidents", "step_runs", "notifications", "timeline")
"""The tables one opened incident writes, in the order they are copied (``scale_bench``)."""
_names = itertools.count(1)


# ------------------------------------------------------------------ databases


def parse_ts(text: str) -> datetime:
    """A timestamp as the store writes it — SQLite's ``2026-12-07T02:15:00.123456Z`` or
    PostgreSQL's ``2026-12-07 02:15:00.123456+00`` — as an aware UTC datetime."""
    return datetime.fromisoformat(text).astimezone(UTC)


def fmt_like(at: datetime, sample: str) -> str:
    """``at`` (aware) written in the format of ``sample`` (one of :func:`parse_ts`'s)."""
    at = at.astimezone(UTC)
    if "T" in sample:
        return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if sample.endswith("Z") else at.isoformat()
    return at.strftime("%Y-%m-%d %H:%M:%S.%f+00")


class Database:
    """One scratch database of kind ``sqlite`` (the file the first daemon makes in its state
    folder ``tmp/d1/state``) or ``postgresql`` (``escalator_bench_<pid>_<k>`` on the server
    ``pg``, created here; :meth:`drop` drops it). ``url``: ``ESCALATOR_DATABASE_URL`` for the
    daemons (None for SQLite: the daemon's default file); ``store_url``: for
    ``escalator.store.open_store``. Raises ``subprocess.CalledProcessError`` when ``psql``
    fails."""

    def __init__(self, kind: str, tmp: Path, pg: str, reuse: str | None = None) -> None:
        self.kind = kind
        self.path = tmp / "d1" / "state" / "escalator.sqlite3"
        self.name = ""
        self.url: str | None = None
        self.keep = bool(reuse)
        if kind == "postgresql":
            self.name = reuse or f"escalator_bench_{os.getpid()}_{next(_names)}"
            self.server = pg.rstrip("/")
            if not reuse:
                self.psql("postgres", "-c", f"CREATE DATABASE {self.name}")
            self.url = f"{self.server}/{self.name}"

    @property
    def store_url(self) -> str:
        return self.url or str(self.path)

    def psql(self, database: str, *args: str, stdin: Iterable[str] | None = None) -> str:
        """Run ``psql`` on ``database`` (stops at the first error); ``stdin``: a script streamed
        in (``COPY … FROM STDIN`` data included; its output is dropped). Returns its standard
        output."""
        cmd = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", f"{self.server}/{database}",
               *args]
        if stdin is None:
            return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        with subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                              text=True) as p:
            assert p.stdin is not None
            try:
                for chunk in _batched(stdin, 10_000):
                    p.stdin.write("".join(chunk))
                p.stdin.close()
            except BrokenPipeError:  # psql stopped at an error (printed on stderr)
                pass
            if p.wait():
                raise subprocess.CalledProcessError(p.returncode, cmd)
        return ""

    def rows(self, sql: str) -> list[tuple[str | None, ...]]:
        """The rows of ``sql``, every value as text (None for NULL)."""
        if self.kind == "sqlite":
            c = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            try:
                return [tuple(None if v is None else str(v) for v in r) for r in c.execute(sql)]
            finally:
                c.close()
        out = self.psql(self.name, "-A", "-t", "-F", "\t", "-P", "null=\\N", "-c", sql)
        return [tuple(None if v == "\\N" else v for v in line.split("\t"))
                for line in out.splitlines()]

    def set_due(self, due: dict[int, datetime]) -> None:
        """Set ``incidents.next_step_at`` of each id in ``due`` (written in the store's own
        format; no daemon may be writing)."""
        sample = self.rows("SELECT next_step_at FROM incidents WHERE next_step_at IS NOT NULL "
                           "LIMIT 1")[0][0]
        assert sample is not None
        if self.kind == "sqlite":
            c = sqlite3.connect(self.path, isolation_level=None)
            try:
                c.execute("BEGIN")
                c.executemany("UPDATE incidents SET next_step_at = ? WHERE id = ?",
                              ((fmt_like(at, sample), i) for i, at in due.items()))
                c.execute("COMMIT")
            finally:
                c.close()
            return
        [(kind,)] = self.rows("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                              "WHERE attrelid = 'incidents'::regclass AND attname = 'next_step_at'")
        self.psql(self.name, stdin=itertools.chain(
            ["BEGIN;\nCREATE TEMP TABLE bench_due (id bigint, at text);\n"
             "COPY bench_due FROM STDIN;\n"],
            (f"{i}\t{fmt_like(at, sample)}\n" for i, at in due.items()),
            ["\\.\n", f"UPDATE incidents SET next_step_at = CAST(bench_due.at AS {kind}) "
             "FROM bench_due WHERE incidents.id = bench_due.id;\nCOMMIT;\n"]))

    def park(self, until: datetime) -> None:
        """Every incident's next step due at ``until`` (nothing falls due before)."""
        sample = self.rows("SELECT next_step_at FROM incidents WHERE next_step_at IS NOT NULL "
                           "LIMIT 1")[0][0]
        assert sample is not None
        if self.kind == "sqlite":
            c = sqlite3.connect(self.path, isolation_level=None)
            try:
                c.execute("UPDATE incidents SET next_step_at = ?", (fmt_like(until, sample),))
            finally:
                c.close()
        else:
            self.psql(self.name, "-c",
                      f"UPDATE incidents SET next_step_at = '{fmt_like(until, sample)}'")

    def drop(self) -> None:
        """Drop the PostgreSQL database (SQLite: its folder goes with the temporary one)."""
        if self.kind == "postgresql" and not self.keep:
            self.psql("postgres", "-c", f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")


def _batched(items: Iterable[str], size: int) -> Iterator[tuple[str, ...]]:
    it = iter(items)
    while chunk := tuple(itertools.islice(it, size)):
        yield chunk


# ------------------------------------------------------------------ daemons


def start_daemons(base: Path, config: Path, db: Database, count: int, wait: bool = True
                  ) -> tuple[list[subprocess.Popen], list[int]]:
    """``count`` daemons on ``db`` (state and spool in ``base/d<k>``, ``ESCALATOR_NODE=bench<k>``).
    ``wait``: one after another, each answering ``/healthz`` before the next starts (the first
    migrates the schema); else all at once. Returns (processes, HTTP ports)."""
    procs: list[subprocess.Popen] = []
    ports: list[int] = []
    try:
        for k in range(1, count + 1):
            (base / f"d{k}").mkdir(exist_ok=True)
            ports.append(h.free_port())
            procs.append(h.start_escalator(base / f"d{k}", config, ports[-1],
                                           database_url=db.url, node=f"bench{k}"))
            if wait:
                h.wait_http(ports[-1], "/healthz", timeout=300, proc=procs[-1])
    except BaseException:
        for p in procs:
            h.stop(p)
        raise
    return procs, ports


def rss(procs: list[subprocess.Popen], field: str = "VmRSS") -> list[float]:
    """Resident set (MB) of each daemon; ``field="VmHWM"``: the peak."""
    return [h.peak_rss_mb(p.pid, field) for p in procs]


# ------------------------------------------------------------------ part 1: load


async def spread(ports: list[int], n: int, concurrency: int, rate: float | None,
                 timeout: float) -> dict[int, h.Shot]:
    """``harness.open_loop`` on each port at once: event i goes to ``ports[i % D]``."""
    d = len(ports)

    async def one(k: int, port: int) -> dict[int, h.Shot]:
        return await h.open_loop(port, lambda i: h.escalator_request(i * d + k),
                                 concurrency=max(1, round(concurrency / d)),
                                 n=len(range(k, n, d)), rate=rate / d if rate else None,
                                 timeout=timeout)

    results = await asyncio.gather(*(one(k, p) for k, p in enumerate(ports)))
    return {i * d + k: s for k, r in enumerate(results) for i, s in r.items()}


def wait_mentions(port: int, below: int, expected: int, timeout: float, deadline: float) -> None:
    """Until the receiver counted ``expected`` messages naming ids below ``below``, ``timeout``
    seconds pass without progress, or the monotonic ``deadline``."""
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        got = h.receiver_count(port, f"mentions/{below}")
        if got >= expected:
            return
        if got != last:
            last, since = got, time.monotonic()
        elif time.monotonic() - since > timeout:
            return
        time.sleep(0.05)


def step_lags(db: Database, timeout: float) -> tuple[dict[int, float], int]:
    """{event number i (the incident named ``bench-<i>-``): seconds its step 2 fired after it
    was due (step 1's first delivery + ``timeout``)} and the number of incidents whose step 2
    fired more than once."""
    rows = db.rows("SELECT i.summary, s.fired_at, f.first_delivered_at FROM step_runs s "
                   "JOIN step_runs f ON f.incident_id = s.incident_id AND f.step_index = 0 "
                   "AND f.round = s.round JOIN incidents i ON i.id = s.incident_id "
                   "WHERE s.step_index = 1")
    fires = Counter(r[0] for r in rows)
    lags: dict[int, float] = {}
    for summary, fired, delivered in rows:
        if delivered is not None and summary and (m := h.ID.search(summary.encode())):
            i = int(m.group(1))
            lag = (parse_ts(fired) - parse_ts(delivered)).total_seconds() - timeout
            lags[i] = min(lag, lags.get(i, math.inf))
    return lags, sum(1 for c in fires.values() if c > 1)


def load_run(name: str, pg: str, args: argparse.Namespace) -> dict[str, float]:
    """One load on configuration ``name`` (:data:`CONFIGS`), fresh database; the figures of
    the module docstring (seconds)."""
    kind, daemons = CONFIGS[name]
    with tempfile.TemporaryDirectory(prefix="escpg-") as t:
        tmp = Path(t)
        db = Database(kind, tmp, pg)
        try:
            rport = h.free_port()
            config = h.write_config(tmp, rport, timeout=f"{STEP_TIMEOUT}s")
            receiver = h.start_receiver(rport, tmp / "received.json")
            try:
                procs, ports = start_daemons(tmp, config, db, daemons)
                try:
                    start = time.monotonic()
                    shots = asyncio.run(spread(ports, args.events, args.concurrency, args.rate,
                                               min(60.0, args.bound)))
                    accepted = [i for i, s in shots.items() if s.status == 202]
                    wait_mentions(rport, args.events, 2 * len(accepted), 30,
                                  start + args.bound)
                    time.sleep(1.0)  # a message sent twice comes within the second
                    extra = h.receiver_count(rport, f"mentions/{args.events}") - 2 * len(accepted)
                finally:
                    for p in procs:
                        h.stop(p)
            finally:
                arrived = h.receiver_results(receiver, tmp / "received.json")
            lags, twice = step_lags(db, STEP_TIMEOUT)
        finally:
            db.drop()
    first = min(s.scheduled for s in shots.values())
    end = max((s.answered for s in shots.values() if s.answered is not None), default=first)
    e2e = [arrived[i] - shots[i].scheduled if i in arrived else math.inf for i in accepted]
    lag = [lags.get(i, math.inf) for i in accepted] or [math.inf]
    return {"rate": len(accepted) / max(1e-9, end - first),
            "e2e_p50": h.pct(e2e, 50), "e2e_p99": h.pct(e2e, 99),
            "lag_p50": h.pct(lag, 50), "lag_p99": h.pct(lag, 99), "lag_max": max(lag),
            "fired": sum(1 for i in accepted if i in lags), "twice": twice,
            "extra": max(0, extra),
            "missing": sum(1 for i in accepted if i not in arrived or i not in lags),
            "rejected": args.events - len(accepted)}


def load_part(args: argparse.Namespace) -> None:
    runs: dict[str, list[dict[str, float]]] = {c: [] for c in args.configs}
    for _ in range(args.runs):
        for c in args.configs:  # side by side: the configurations alternate within each run
            runs[c].append(load_run(c, args.pg, args))
            time.sleep(0.5)
    med = {c: {k: statistics.median(r[k] for r in v) for k in v[0]} for c, v in runs.items()}
    ms = lambda s: h.fmt_ms(s, args.bound)  # noqa: E731
    print("| configuration | daemons | events/s | e2e p50 ms | e2e p99 ms | step-fire lag p50 ms "
          "| lag p99 ms | lag max ms | steps fired | fired twice | messages twice | missing "
          "| runs: events/s · e2e p99 · lag p99 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for c, m in med.items():
        r = runs[c]
        each = (" ".join(f"{x['rate']:.0f}" for x in r) + " · "
                + " ".join(ms(x["e2e_p99"]) for x in r) + " · "
                + " ".join(ms(x["lag_p99"]) for x in r))
        print(f"| {c} | {CONFIGS[c][1]} | {m['rate']:,.0f} | {ms(m['e2e_p50'])} | "
              f"{ms(m['e2e_p99'])} | {ms(m['lag_p50'])} | {ms(m['lag_p99'])} | "
              f"{ms(m['lag_max'])} | {m['fired']:,.0f} | {m['twice']:.0f} | "
              f"{m['extra']:.0f} | {m['missing']:.0f} | {each} |")
    print()


# ------------------------------------------------------------------ part 2: scale


def build(db: Database, tmp: Path, n: int) -> None:
    """``n`` open incidents at step 1 of the bench policy, ids 1…n (module docstring)."""
    import structlog

    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())  # no log lines here
    config = h.write_config(tmp, 9)
    if db.kind == "sqlite":
        import scale_bench

        db.path.parent.mkdir(parents=True, exist_ok=True)
        scale_bench.build_store(db.path, config, n)
        return
    from escalator.clock import FakeClock
    from escalator.config import load_config
    from escalator.engine.engine import Engine
    from escalator.events import Event
    from escalator.store import open_store

    store = open_store(db.store_url)
    try:
        engine = Engine(store, load_config(config),
                        FakeClock(datetime.now(UTC) - timedelta(hours=1)))
        engine.ingest(Event(kind="incident", category="accident", summary="bench-0-",
                            dedup_key="scale/0"), source="bench")
    finally:
        store.close()
    db.psql(db.name, "-c", "UPDATE notifications SET status = 'delivered'")
    db.psql(db.name, stdin=copies(db, n))


def _template(db: Database, table: str) -> tuple[list[str], list[list[str]]]:
    """The columns and rows (COPY text format fields, escapes kept) of ``table``."""
    out = db.psql(db.name, "-c", f"COPY (SELECT * FROM {table} ORDER BY 1) TO STDOUT "
                  "WITH (FORMAT text, HEADER true)").splitlines()
    return out[0].split("\t"), [line.split("\t") for line in out[1:]]


def copies(db: Database, n: int) -> Iterator[str]:
    """The psql script copying the template incident (id 1) to ids 2…n, in one transaction."""
    ev_cols, [ev] = _template(db, "events")
    event_id = ev[ev_cols.index("id")]
    nt_cols, [nt] = _template(db, "notifications")
    token = nt[nt_cols.index("ack_token")]
    changes = {  # column → value for copy i (0-based: the template is copy 0)
        "events": {"id": lambda i: f"{event_id[:20]}{i:012d}", "incident_id": lambda i: i + 1,
                   "dedup_key": lambda i: f"scale/{i}"},
        "incidents": {"id": lambda i: i + 1, "dedup_key": lambda i: f"scale/{i}",
                      "summary": lambda i: f"bench-{i}-",
                      "first_event_id": lambda i: f"{event_id[:20]}{i:012d}"},
        "step_runs": {"id": lambda i: i + 1, "incident_id": lambda i: i + 1},
        "notifications": {"id": lambda i: i + 1, "incident_id": lambda i: i + 1,
                          "step_run_id": lambda i: i + 1, "ack_token": lambda i: f"{token}{i}"},
        "timeline": {"incident_id": lambda i: i + 1},
    }
    yield "BEGIN;\n"
    for table in TABLES:
        cols, rows = _template(db, table)
        serial = [c for (c,) in db.rows(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = "
            f"current_schema() AND table_name = '{table}' AND (is_identity = 'YES' OR "
            "column_default LIKE 'nextval(%')")]
        # identity columns the copies do not set (timeline.id, events.rowid, …) take theirs
        # from the sequence; every sequence then follows the copies
        keep = [k for k, c in enumerate(cols) if c not in serial or c in changes[table]]
        names = [cols[k] for k in keep]
        yield f"COPY {table} ({', '.join(names)}) FROM STDIN;\n"
        for row in rows:
            parts = [row[k] for k in keep]
            slots = [(j, changes[table][c]) for j, c in enumerate(names) if c in changes[table]]
            for i in range(1, n):
                for j, f in slots:
                    parts[j] = str(f(i))
                yield "\t".join(parts) + "\n"
        yield "\\.\n"
        for c in serial:
            yield (f"SELECT setval(pg_get_serial_sequence('{table}', '{c}'), "
                   f"(SELECT max({c}) FROM {table}));\n")
    yield "COMMIT;\nANALYZE;\n"


def fired(db: Database, lo: int, hi: int) -> list[tuple[int, datetime]]:
    """(incident id, when step 2 fired) for the incidents ``lo``…``hi``."""
    return [(int(i), parse_ts(at)) for i, at in db.rows(
        "SELECT incident_id, fired_at FROM step_runs WHERE step_index = 1 "
        f"AND incident_id BETWEEN {lo} AND {hi}")]


def wait_fired(db: Database, lo: int, hi: int, target: int, deadline: float) -> float:
    """Poll (every 50 ms) until ``target`` incidents of ``lo``…``hi`` fired step 2, 30 s pass
    without progress after the first one fired, or the monotonic ``deadline``. Returns when the
    target was reached (monotonic), ``inf`` if it was not."""
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        [(count,)] = db.rows("SELECT count(*) FROM step_runs WHERE step_index = 1 AND "
                             f"incident_id BETWEEN {lo} AND {hi}")
        got = int(count or 0)
        if got >= target:
            return time.monotonic()
        if got != last:
            last, since = got, time.monotonic()
        elif got and time.monotonic() - since > 30:
            break
        time.sleep(0.05)
    return math.inf


def scale_run(db: Database, tmp: Path, base: int, r: int, args: argparse.Namespace
              ) -> dict[str, float]:
    """Run ``r`` of part 2 (live, then restart) on fresh id ranges of ``db``, from id
    ``base`` on."""
    k, m, d = args.due, args.overdue, args.scale_daemons
    live_lo = base + r * (k + m)
    back_lo = live_lo + k
    rport = h.free_port()
    config = h.write_config(tmp, rport)
    receiver = h.start_receiver(rport, tmp / f"received-{r}.json")
    procs: list[subprocess.Popen] = []
    try:
        start = datetime.now(UTC) + timedelta(seconds=args.head)
        step = timedelta(seconds=1 / args.due_rate)
        due = {live_lo + j: start + j * step for j in range(k)}
        db.set_due(due)
        procs, _ = start_daemons(tmp, config, db, d)
        rss_start = rss(procs)
        if datetime.now(UTC) > start - timedelta(seconds=1):
            raise RuntimeError(f"the daemons took too long to start: raise --head ({args.head} s)")
        time.sleep(max(0.0, (due[live_lo + k - 1] - datetime.now(UTC)).total_seconds()))
        wait_fired(db, live_lo, live_lo + k - 1, k, time.monotonic() + args.bound)
        delivered = h.receiver_count(rport)  # step 2's messages at the receiver by then
        rss_end, rss_peak = rss(procs), rss(procs, "VmHWM")
        lag = [(at - due[i]).total_seconds() for i, at in fired(db, live_lo, live_lo + k - 1)]
        for p in procs:  # a crash: nothing flushed, nothing handed over
            p.kill()
            p.wait()
        past = datetime.now(UTC) - timedelta(minutes=1)
        db.set_due({back_lo + j: past + timedelta(microseconds=j) for j in range(m)})
        started, t0 = datetime.now(UTC), time.monotonic()
        procs, _ = start_daemons(tmp, config, db, d, wait=False)
        target = min(m, 10_000)
        drained = wait_fired(db, back_lo, back_lo + m - 1, target, t0 + args.bound) - t0
        back = fired(db, back_lo, back_lo + m - 1)
        first = min((at for _, at in back), default=None)
        rss_restart = rss(procs)
    finally:
        for p in procs:
            h.stop(p)
        h.receiver_results(receiver, tmp / f"received-{r}.json")
    # the overdue ones not fired within the bound must not fall into the next run's figures
    db.set_due({back_lo + j: datetime.now(UTC) + timedelta(days=1) for j in range(m)})
    lag = lag or [math.inf]
    return {"rss_start": max(rss_start), "rss_end": max(rss_end), "rss_peak": max(rss_peak),
            "rss_restart": max(rss_restart), "rss_each": rss_end,
            "lag_p50": h.pct(lag, 50), "lag_p99": h.pct(lag, 99), "lag_max": max(lag),
            "fired": len(lag), "delivered": delivered, "first_s": ((first - started).total_seconds()
                                           if first is not None else math.inf),
            "drain_s": drained, "drain_n": target}


def scale_part(args: argparse.Namespace) -> None:
    if args.database and args.scale_backend != "postgresql":
        raise SystemExit("--database names a PostgreSQL database")
    if (args.due + args.overdue) * args.runs + 1 > args.incidents:
        raise SystemExit("--incidents must exceed (--due + --overdue) × --runs")
    with tempfile.TemporaryDirectory(prefix="escpgscale-") as t:
        tmp = Path(t)
        db = Database(args.scale_backend, tmp, args.pg, reuse=args.database)
        db.keep = db.keep or args.keep
        try:
            t0 = time.monotonic()
            if args.database:  # built before: fresh ids after the ones used, no leftovers
                [(used,)] = db.rows("SELECT max(incident_id) FROM step_runs WHERE step_index = 1")
                base = int(used or 1) + 1
                db.psql(db.name, "-c", "UPDATE notifications SET status = 'delivered' "
                        "WHERE status IN ('pending', 'sending')")
                sample = db.rows("SELECT next_step_at FROM incidents WHERE id = 1")[0][0] or ""
                far, near = (fmt_like(datetime.now(UTC) + timedelta(hours=h_), sample)
                             for h_ in (24, 12))
                db.psql(db.name, "-c", f"UPDATE incidents SET next_step_at = '{far}' "
                        f"WHERE next_step_at < '{near}'")
                how = f"database {args.database} reused, ids from {base:,}"
            else:
                build(db, tmp, args.incidents)
                db.park(datetime.now(UTC) + timedelta(days=1))
                base, how = 2, f"built in {time.monotonic() - t0:.0f} s"  # id 1: the template
            if db.keep:
                how += f"; kept as {db.name}"
            print(f"scale: {args.incidents:,} open incidents on {args.scale_backend} ({how}), "
                  f"{args.scale_daemons} daemon(s); live: {args.due:,} steps due "
                  f"at {args.due_rate:g}/s; restart: {args.overdue:,} overdue; "
                  f"load average {h.load_average():.2f}\n", flush=True)
            runs = []
            for r in range(args.runs):  # each run's figures at once: a later run may fail
                runs.append(scale_run(db, tmp, base, r, args))
                print(f"run {r + 1}: " + ", ".join(f"{k} {v}" for k, v in runs[-1].items()),
                      flush=True)
        finally:
            db.drop()
    print("| figure | median | runs |\n|---|---:|---|")
    n = runs[0]["drain_n"]
    for key, label, scale, fmt in (
            ("rss_start", "RSS per daemon after start (MB, largest daemon)", 1, "{:.0f}"),
            ("rss_end", "RSS per daemon after the live period (MB, largest)", 1, "{:.0f}"),
            ("rss_peak", "peak RSS per daemon (VmHWM, MB, largest)", 1, "{:.0f}"),
            ("rss_restart", f"RSS per daemon after the restart's {n:,} steps (MB)", 1, "{:.0f}"),
            ("lag_p50", "step-fire lag p50 (ms)", 1000, "{:,.1f}"),
            ("lag_p99", "step-fire lag p99 (ms)", 1000, "{:,.1f}"),
            ("lag_max", "step-fire lag max (ms)", 1000, "{:,.1f}"),
            ("fired", "live steps fired", 1, "{:,.0f}"),
            ("delivered", "their messages at the receiver by the last one's firing", 1,
             "{:,.0f}"),
            ("first_s", "restart (kill -9, start) → first overdue step fired (s)", 1, "{:.2f}"),
            ("drain_s", f"restart → {n:,} overdue steps fired (s)", 1, "{:.2f}")):
        fmt_one = lambda x: fmt.format(x * scale) if math.isfinite(x) else "never"  # noqa: E731, B023
        print(f"| {label} | {fmt_one(statistics.median(r[key] for r in runs))} | "
              + " ".join(fmt_one(r[key]) for r in runs) + " |")
    if args.scale_daemons > 1:
        print("\nRSS after the live period, each daemon (MB): "
              + " · ".join(" ".join(f"{x:.0f}" for x in r["rss_each"]) for r in runs))
    print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", nargs="+", choices=["load", "scale"], default=["load", "scale"])
    ap.add_argument("--runs", type=int, default=3, help="runs per figure (medians; default 3)")
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432",
                    help="PostgreSQL server URL, without a database name")
    g = ap.add_argument_group("part 1, load")
    g.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    g.add_argument("--events", type=int, default=1000, help="events per load (default 1,000)")
    g.add_argument("--concurrency", type=int, default=30, help="senders in all (default 30)")
    g.add_argument("--rate", type=float, default=None,
                   help="fixed arrival rate in all (events/s); default: as fast as answered")
    g.add_argument("--bound", type=float, default=180.0,
                   help="seconds from the start of a load (or a restart) to cut it off")
    g = ap.add_argument_group("part 2, scale")
    g.add_argument("--incidents", type=int, default=1_000_000)
    g.add_argument("--scale-backend", choices=["postgresql", "sqlite"], default="postgresql")
    g.add_argument("--scale-daemons", type=int, default=3)
    g.add_argument("--due", type=int, default=1000, help="live steps due per run (1,000)")
    g.add_argument("--due-rate", type=float, default=50.0, help="live steps due a second (50)")
    g.add_argument("--overdue", type=int, default=2000, help="overdue at each restart (2,000)")
    g.add_argument("--database", metavar="NAME",
                   help="run on this PostgreSQL database, built by an earlier run and kept "
                        "(no build; fresh ids after the used ones; not dropped)")
    g.add_argument("--keep", action="store_true",
                   help="keep part 2's PostgreSQL database (for --database)")
    g.add_argument("--head", type=float, default=60.0,
                   help="seconds from writing the live due times to the first due")
    args = ap.parse_args()
    load0, t0 = h.load_average(), time.monotonic()
    print(f"pg_bench {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {args.runs} run(s), medians; "
          f"load average (1 min) at start {load0:.2f}\n", flush=True)
    if "load" in args.parts:
        mode = f"fixed rate {args.rate:g}/s" if args.rate else "as fast as answered"
        print(f"load: {args.events:,} events per load, open loop ({mode}), {args.concurrency} "
              f"senders in all; step 2 due {STEP_TIMEOUT} s after step 1's delivery\n",
              flush=True)
        load_part(args)
    if "scale" in args.parts:
        scale_part(args)
    print(f"load average (1 min): start {load0:.2f}, end {h.load_average():.2f}; "
          f"took {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    main()
