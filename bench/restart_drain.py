"""Restart with a backlog: does the daemon still answer while it drains?

The store is prepared with the real engine on a fake clock (bench config, ``bench/harness.py``):
``--overdue`` incidents (default 1,000) opened 2 h ago — their first step's 1 h timeout has run
out, so their second step is overdue — and ``--pending`` − ``--overdue`` more opened 1 min ago
(second step due in 59 min); no message was sent, so ``--pending`` notifications (default
5,000; the first steps', to one person) are pending and due. One template store is built, and
each run starts from a copy of it.

Each run starts a real ``escalator run`` (``bench/run_daemon.py``: per-address send limit off, so
the backlog can drain — ``--address-limits`` keeps it, and then only the probes mean anything;
digests off by ``harness.DIGESTS_OFF`` once they exist) on the copy.
From the moment its HTTP port accepts connections until the backlog has drained (or
``--bound`` seconds, default 120, after the start), two open-loop probes run
(``harness.open_loop``: fixed schedules, latency from the scheduled send time, at most 16
requests in flight each, a request unanswered after ``--timeout`` seconds counts as a timeout):

- **intake**: ``POST /api/v1/events`` (new distinct incidents) at ``--intake-rate`` per second
  (default 20);
- **health**: ``GET /healthz`` at ``--health-rate`` per second (default 10).

Figures (median of ``--runs``): each probe's p50 / p99 / max (a timeout or a wrong answer
counts as infinitely late, shown "no 2xx in T s") and its timeouts and wrong answers (``failed``;
intake: not 202; health: not 200, e.g. 503 when the engine loop has not finished a pass for
30 s); **time to drain**
= process start → the receiver has every backlog message (``--pending`` first-step messages and
``--overdue`` second-step ones: ``GET /mentions/<pending>`` reaches ``pending + overdue``);
process start → HTTP port open. Target: intake 2xx p99 and ``/healthz`` p99 ≤ 100 ms during the
drain. Traffic stays on 127.0.0.1; every run ends by ``--bound``.

Usage (from the checkout)::

    .venv/bin/python bench/restart_drain.py              # --pending 5000 --overdue 1000 --runs 3
    .venv/bin/python bench/restart_drain.py --pending 1000 --overdue 200 --runs 1    # quick
"""

from __future__ import annotations

import argparse
import asyncio
import math
import shutil
import socket
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness as h  # noqa: E402
import structlog  # noqa: E402

from escalator.clock import FakeClock  # noqa: E402
from escalator.config import load_config  # noqa: E402
from escalator.engine.engine import Engine  # noqa: E402
from escalator.events import Event  # noqa: E402
from escalator.store import SQLiteStore  # noqa: E402

INTAKE_IDS = 1_000_000
"""Events posted by the intake probe are ``bench-<INTAKE_IDS + i>-`` (apart from the backlog)."""
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def build_store(db: Path, config: Path, pending: int, overdue: int) -> None:
    """Open ``pending`` incidents named ``bench-<i>-`` through the real engine: the first
    ``overdue`` 2 h ago (second step overdue by 1 h), the others 1 min ago. Each first step
    leaves one pending notification (nothing is delivered here)."""
    if not 0 <= overdue <= pending:
        raise ValueError("need 0 ≤ overdue ≤ pending")
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())  # no log lines here
    now = datetime.now(UTC)
    clock = FakeClock(now - timedelta(hours=2))
    store = SQLiteStore(db)
    try:
        engine = Engine(store, load_config(config), clock)

        def events(ids: range) -> list[Event]:
            return [Event(kind="incident", category="accident", summary=f"bench-{i}-",
                          dedup_key=f"drain/{i}") for i in ids]

        engine.ingest_many(events(range(overdue)), source="bench")
        clock.set(now - timedelta(minutes=1))
        engine.ingest_many(events(range(overdue, pending)), source="bench")
    finally:
        store.close()


def wait_port(port: int, proc, deadline: float) -> None:
    """Until 127.0.0.1:``port`` accepts a TCP connection (raises past the monotonic deadline
    or when ``proc`` exits)."""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the daemon exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.01)
    raise RuntimeError("the daemon's port never opened")


async def probe(port: int, rport: int, backlog: int, below: int, args: argparse.Namespace,
                deadline: float) -> tuple[dict, dict, float | None]:
    """Run both probes until the receiver has ``backlog`` messages naming ids below ``below``
    (or the monotonic ``deadline``). Returns (intake shots, health shots, drained at)."""
    stop = asyncio.Event()
    drained: list[float] = []

    async def watch() -> None:
        conn = h.Conn(rport)
        try:
            while time.monotonic() < deadline:
                _, body = await conn.request(
                    f"GET /mentions/{below} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
                if int(body) >= backlog:
                    drained.append(time.monotonic())
                    break
                await asyncio.sleep(0.02)
        finally:
            conn.close()
            stop.set()

    intake, health, _ = await asyncio.gather(
        h.open_loop(port, lambda i: h.escalator_request(INTAKE_IDS + i), concurrency=16,
                    rate=args.intake_rate, timeout=args.timeout, stop=stop),
        h.open_loop(port, lambda _: HEALTHZ, concurrency=16, rate=args.health_rate,
                    timeout=args.timeout, stop=stop),
        watch())
    return intake, health, drained[0] if drained else None


def one_run(template: Path, args: argparse.Namespace) -> dict[str, float]:
    """One restart on a copy of ``template``: the figures of the module docstring (seconds)."""
    with tempfile.TemporaryDirectory(prefix="escdrain-") as t:
        tmp = Path(t)
        rport, port = h.free_port(), h.free_port()
        config = h.write_config(tmp, rport)
        db = tmp / "state" / "escalator.sqlite3"
        db.parent.mkdir()
        shutil.copyfile(template, db)
        receiver = h.start_receiver(rport, tmp / "received.json")
        try:
            start = time.monotonic()
            server = h.start_escalator(tmp, config, port, address_limits=args.address_limits)
            try:
                wait_port(port, server, start + args.bound)
                listening = time.monotonic() - start
                intake, health, drained = asyncio.run(probe(
                    port, rport, args.pending + args.overdue, args.pending, args,
                    start + args.bound))
            finally:
                h.stop(server)
        finally:
            h.receiver_results(receiver, tmp / "received.json")
    out = {"listen_s": listening, "drain_s": math.inf if drained is None else drained - start}
    for name, shots, ok in (("intake", intake, 202), ("health", health, 200)):
        lat = [s.latency() if s.status in (0, ok) else math.inf for s in shots.values()] or [math.inf]
        out |= {f"{name}_n": len(shots), f"{name}_p50": h.pct(lat, 50),
                f"{name}_p99": h.pct(lat, 99), f"{name}_max": max(lat),
                f"{name}_timeouts": sum(1 for s in shots.values() if s.answered is None),
                f"{name}_failed": sum(1 for s in shots.values() if s.status not in (0, ok))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pending", type=int, default=5000, help="pending notifications (5,000)")
    ap.add_argument("--overdue", type=int, default=1000, help="overdue steps (1,000)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--intake-rate", type=float, default=20.0, help="intake probes a second")
    ap.add_argument("--health-rate", type=float, default=10.0, help="/healthz probes a second")
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds before a probe times out")
    ap.add_argument("--bound", type=float, default=120.0, help="seconds a run may take at most")
    ap.add_argument("--address-limits", action="store_true",
                    help="keep the daemon's per-address limit (10 a minute): the backlog to one "
                         "person cannot drain within the bound, the probes still measure")
    args = ap.parse_args()
    load0 = h.load_average()
    limits = "; the daemon's per-address limit on" if args.address_limits else ""
    with tempfile.TemporaryDirectory(prefix="escdraintpl-") as t:
        template = Path(t) / "template.sqlite3"
        t0 = time.monotonic()
        build_store(template, h.write_config(Path(t), 9), args.pending, args.overdue)
        print(f"restart with {args.pending} pending notifications and {args.overdue} overdue "
              f"steps (store built in {time.monotonic() - t0:.1f} s); probes: intake "
              f"{args.intake_rate:g}/s, /healthz {args.health_rate:g}/s, timeout "
              f"{args.timeout:g} s{limits}; {args.runs} runs (medians); load average (1 min) at start "
              f"{load0:.2f}\n", flush=True)
        runs = [one_run(template, args) for _ in range(args.runs)]
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    never = f"no 2xx in {args.timeout:g} s"  # a timeout, or an answer that is not 2xx

    def ms(seconds: float) -> str:
        return h.fmt_ms(seconds, never=never)

    each = lambda k: " · ".join(ms(r[k]) for r in runs)  # noqa: E731
    print("| probe during the drain | sent | p50 ms | p99 ms | max ms | timeouts | failed | runs: p99 |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for name, label in (("intake", "intake `POST /api/v1/events` (202)"),
                        ("health", "`GET /healthz` (200)")):
        print(f"| {label} | {med[f'{name}_n']:.0f} | {ms(med[f'{name}_p50'])} | "
              f"{ms(med[f'{name}_p99'])} | {ms(med[f'{name}_max'])} | {med[f'{name}_timeouts']:.0f} | "
              f"{med[f'{name}_failed']:.0f} | {each(f'{name}_p99')} |")
    secs = lambda x: f"> {args.bound:.0f}" if math.isinf(x) else f"{x:.1f}"  # noqa: E731
    drain = " ".join(secs(r["drain_s"]) for r in runs)
    print(f"\n| figure | median | runs |\n|---|---:|---|\n"
          f"| process start → HTTP port open (s) | {med['listen_s']:.2f} | "
          + " ".join(f"{r['listen_s']:.2f}" for r in runs) + " |\n"
          f"| time to drain: process start → every backlog message received (s) | "
          f"{secs(med['drain_s'])} | {drain} |")
    for name in ("intake", "health"):
        p99 = med[f"{name}_p99"]
        print(f"\ntarget: {name} p99 ≤ 100 ms during the drain — "
              f"{ms(p99)}{'' if math.isinf(p99) else ' ms'}: "
              f"{'met' if p99 <= 0.1 else '**missed**'}", end="")
    print(f"\n\nload average (1 min): start {load0:.2f}, end {h.load_average():.2f}")


if __name__ == "__main__":
    main()
