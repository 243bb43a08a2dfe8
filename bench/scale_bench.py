"""Scale and restart benchmark: a daemon with 100,000 open incidents whose next steps are
pending (timers are rows: ``incidents.next_step_at``).

The store is built quickly and faithfully: the real engine (bench config, ``bench/harness.py``)
opens one template incident on a fake clock — event, incident, first step run, notification row
(marked delivered), timeline — and its rows are copied N−1 times with new ids, dedup keys,
acknowledge tokens and due times (``executemany``, one transaction). Then a real ``escalator
run`` subprocess (``bench/run_daemon.py``) is started on that database; the second step of each
incident notifies one person through the generic HTTP channel to the benchmark's receiver.

- **scale**: ``--due`` incidents (default 4,000) fall due one after another at ``--rate`` per
  second (default 200/s), from 12 s after their due times are written (the daemon starts in
  between); the rest are due 2 h later, 1 ms apart.
  Lag = ``step_runs.fired_at`` of step 2 − its due time, for every due incident; p50/p99/max.
  Peak RSS = VmHWM of the daemon at the end.
- **restart**: every incident is overdue (due 1 min before the start). Time from starting the
  process to the first step fired (the earliest ``fired_at`` of a second step, polled from the
  database by this process), and to 10,000 steps fired.

Usage (from the checkout)::

    .venv/bin/python bench/scale_bench.py [--incidents 100000] [--runs 3] [--due 4000] [--rate 200]
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness as h  # noqa: E402

from escalator.clock import FakeClock  # noqa: E402
from escalator.config import load_config  # noqa: E402
from escalator.engine.engine import Engine  # noqa: E402
from escalator.events import Event  # noqa: E402
from escalator.store import SQLiteStore  # noqa: E402


def build_store(db: Path, config: Path, n: int) -> None:
    """``n`` open incidents at step 1 of the bench policy, ids 1…n (due times: :func:`set_due`)."""
    store = SQLiteStore(db)
    engine = Engine(store, load_config(config), FakeClock(datetime.now(UTC) - timedelta(hours=1)))
    engine.ingest(Event(kind="incident", category="accident", summary="bench-0-",
                        dedup_key="scale/0"), source="bench")
    store.close()
    c = sqlite3.connect(db, isolation_level=None)
    c.row_factory = sqlite3.Row
    c.execute("UPDATE notifications SET status = 'delivered'")

    def rows(table: str) -> list[dict]:
        return [dict(r) for r in c.execute(f"SELECT * FROM {table} ORDER BY id")]

    [inc], [ev], [run], [note] = rows("incidents"), rows("events"), rows("step_runs"), rows("notifications")
    timeline = rows("timeline")
    assert inc["id"] == run["incident_id"] == note["incident_id"] == 1

    def copy(table: str, template: dict, changes) -> None:
        cols = list(template)
        c.executemany(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                      ([{**template, **changes(i)}[k] for k in cols] for i in range(1, n)))

    c.execute("BEGIN")
    copy("events", ev, lambda i: {"id": f"{ev['id'][:20]}{i:012d}", "incident_id": i + 1,
                                  "dedup_key": f"scale/{i}"})
    copy("incidents", inc, lambda i: {"id": i + 1, "dedup_key": f"scale/{i}", "summary": f"bench-{i}-",
                                      "first_event_id": f"{ev['id'][:20]}{i:012d}",
                                      })
    copy("step_runs", run, lambda i: {"id": i + 1, "incident_id": i + 1})
    copy("notifications", note, lambda i: {"id": i + 1, "incident_id": i + 1, "step_run_id": i + 1,
                                           "ack_token": f"{note['ack_token']}{i}"})
    for t in timeline:
        copy("timeline", {k: v for k, v in t.items() if k != "id"}, lambda i: {"incident_id": i + 1})
    c.execute("COMMIT")
    c.close()


def set_due(db: Path, first: datetime, step_us: int, ids: int, later: datetime) -> list[datetime]:
    """Incident ``k`` (1 ≤ k ≤ ``ids``) falls due at ``first + (k − 1) · step_us`` µs, the others
    one after another (1 ms apart) from ``later``. Returns the due time of each incident
    (index = id − 1). Written in the store's format (fixed-width UTC text)."""
    c = sqlite3.connect(db, isolation_level=None)
    fmt = ("strftime('%Y-%m-%dT%H:%M:%S', (?1 + (id - ?3) * ?2) / 1000000, 'unixepoch')"
           " || '.' || printf('%06d', (?1 + (id - ?3) * ?2) % 1000000) || 'Z'")
    epoch = lambda t: int(t.timestamp() * 1_000_000)  # noqa: E731
    c.execute("BEGIN")
    c.execute(f"UPDATE incidents SET next_step_at = {fmt} WHERE id <= ?4", (epoch(first), step_us, 1, ids))
    c.execute(f"UPDATE incidents SET next_step_at = {fmt} WHERE id > ?4", (epoch(later), 1000, ids + 1, ids))
    c.execute("COMMIT")
    n = c.execute("SELECT MAX(id) FROM incidents").fetchone()[0]
    c.close()
    return [first + timedelta(microseconds=k * step_us) if k < ids
            else later + timedelta(microseconds=(k - ids) * 1000) for k in range(n)]


def fired(db: Path) -> list[tuple[int, datetime]]:
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [(i, datetime.fromisoformat(t)) for i, t in c.execute(
            "SELECT incident_id, fired_at FROM step_runs WHERE step_index = 1")]
    finally:
        c.close()


def first_fired(db: Path) -> datetime | None:
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = c.execute("SELECT MIN(fired_at), COUNT(*) FROM step_runs WHERE step_index = 1").fetchone()
        return (datetime.fromisoformat(row[0]), row[1]) if row[0] else (None, 0)
    finally:
        c.close()


def fresh_store(template: Path, tmp: Path) -> Path:
    db = tmp / "state" / "escalator.sqlite3"
    db.parent.mkdir(parents=True)
    shutil.copyfile(template, db)
    return db


def scale_run(template: Path, due_count: int, rate: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="escscale-") as t:
        tmp = Path(t)
        rport, port = h.free_port(), h.free_port()
        config = h.write_config(tmp, rport)
        db = fresh_store(template, tmp)
        start = datetime.now(UTC) + timedelta(seconds=12)  # set_due + start-up + ~7 s
        due = set_due(db, start, int(1_000_000 / rate), due_count, start + timedelta(hours=2))
        receiver = h.start_receiver(rport, tmp / "r.json")
        server = h.start_escalator(tmp, config, port)
        try:
            h.wait_http(port, "/healthz", timeout=60, proc=server)
            if datetime.now(UTC) > start - timedelta(seconds=2):
                raise RuntimeError("the daemon took too long to start: raise the 12 s head start")
            wait = (due[due_count - 1] - datetime.now(UTC)).total_seconds() + 5
            time.sleep(max(0.0, wait))
            h.wait_delivered(rport, due_count, timeout=10)
            rss = h.peak_rss_mb(server.pid)
        finally:
            h.stop(server)
            h.receiver_results(receiver, tmp / "r.json")
        lag = [(at - due[i - 1]).total_seconds() * 1000 for i, at in fired(db)]
    return {"rss_mb": rss, "fired": len(lag), "p50": h.pct(lag, 50),
            "p99": h.pct(lag, 99), "max": max(lag)}


def restart_run(template: Path, n: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="escrestart-") as t:
        tmp = Path(t)
        rport, port = h.free_port(), h.free_port()
        config = h.write_config(tmp, rport)
        db = fresh_store(template, tmp)
        past = datetime.now(UTC) - timedelta(minutes=1)
        set_due(db, past, 1, n, past)
        receiver = h.start_receiver(rport, tmp / "r.json")
        started = datetime.now(UTC)
        server = h.start_escalator(tmp, config, port)
        first = ten_k = None
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and ten_k is None:
                at, count = first_fired(db)
                if at is not None and first is None:
                    first = (at - started).total_seconds()
                if count >= min(10_000, n):
                    ten_k = (datetime.now(UTC) - started).total_seconds()
                time.sleep(0.02)
            rss = h.peak_rss_mb(server.pid)
        finally:
            h.stop(server)
            h.receiver_results(receiver, tmp / "r.json")
    return {"first_s": first if first is not None else float("nan"),
            "tenk_s": ten_k if ten_k is not None else float("nan"), "rss_mb": rss}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--incidents", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--due", type=int, default=4_000)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--only", choices=["scale", "restart"])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="esctemplate-") as t:
        template = Path(t) / "template.sqlite3"
        t0 = time.monotonic()
        build_store(template, h.write_config(Path(t), 9), args.incidents)
        print(f"{args.incidents} open incidents (store built in {time.monotonic() - t0:.1f} s); "
              f"{args.runs} runs; medians (each run in brackets)\n")
        report(template, args)


def report(template: Path, args: argparse.Namespace) -> None:
    if args.only != "restart":
        runs = [scale_run(template, args.due, args.rate) for _ in range(args.runs)]
        print(f"scale: {args.due} steps due at {args.rate:.0f}/s among the open incidents")
        for key, label in (("rss_mb", "peak RSS (MB)"), ("p50", "step-fire lag p50 (ms)"),
                           ("p99", "step-fire lag p99 (ms)"), ("max", "step-fire lag max (ms)"),
                           ("fired", "steps fired")):
            print(f"  {label:<28}{statistics.median(r[key] for r in runs):>9.1f}   ["
                  + " ".join(f"{r[key]:.1f}" for r in runs) + "]")
    if args.only != "scale":
        runs = [restart_run(template, args.incidents) for _ in range(args.runs)]
        print("restart: every incident overdue")
        for key, label in (("first_s", "start → first step fired (s)"),
                           ("tenk_s", "start → 10,000 steps fired (s)"),
                           ("rss_mb", "peak RSS (MB)")):
            print(f"  {label:<32}{statistics.median(r[key] for r in runs):>8.2f}   ["
                  + " ".join(f"{r[key]:.2f}" for r in runs) + "]")


if __name__ == "__main__":
    main()
