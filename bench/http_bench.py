"""HTTP ingest benchmark: accepted events per second over ``POST /api/v1/events``, every event
committed (fsynced; SQLite WAL, synchronous=FULL) before its 202, at concurrency 1 and 32; and
the server's CPU milliseconds per event (utime + stime of the daemon process from
/proc/PID/stat, before and after the load).

The daemon is a real ``escalator run`` subprocess on 127.0.0.1 with ``config/demo.yaml``
(console channel writing to /dev/null, logs as JSON to /dev/null); the load generator is httpx
in this process. Each event is a distinct ``incident`` (it opens an incident and writes its
notification rows). Each figure is the median of R runs, each on a fresh database.

Usage (from the checkout)::

    .venv/bin/python bench/http_bench.py [--events 10000] [--runs 3] [--concurrency 1 32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-admin-token-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` in seconds (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(port: int, events: int, concurrency: int) -> float:
    """POST ``events`` events with ``concurrency`` workers; return the wall seconds taken."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(events):
        queue.put_nowait(i)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=60,
                                 headers={"Authorization": f"Bearer {TOKEN}"}) as client:

        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                r = await client.post("/api/v1/events", json={
                    "kind": "incident", "category": "accident", "summary": f"bench {i}",
                    "class_id": "3-2", "dedup_key": f"bench/{i}"})
                if r.status_code != 202:
                    raise RuntimeError(f"{r.status_code} {r.text}")

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - start


def one_run(events: int, concurrency: int) -> tuple[float, float]:
    """Return (events/s, server CPU ms per event) for one fresh daemon."""
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("ESCALATOR_")}
        env.update(ESCALATOR_CONFIG=str(ROOT / "config" / "demo.yaml"), ESCALATOR_STATE_DIR=tmp,
                   ESCALATOR_SPOOL_DIR=str(Path(tmp) / "spool"), ESCALATOR_LOG_FORMAT="json",
                   ESCALATOR_HTTP_LISTEN=f"127.0.0.1:{port}", ESCALATOR_API_TOKEN=TOKEN)
        proc = subprocess.Popen([sys.executable, "-m", "escalator.cli", "run"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("daemon did not start")
                time.sleep(0.05)
            cpu0 = cpu_seconds(proc.pid)
            seconds = asyncio.run(load(port, events, concurrency))
            cpu = cpu_seconds(proc.pid) - cpu0
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    return events / seconds, cpu * 1000 / events


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    args = ap.parse_args()
    print(f"{'concurrency':>11}  {'events/s (median)':>17}  {'CPU ms/event (median)':>21}  runs")
    for c in args.concurrency:
        runs = [one_run(args.events, c) for _ in range(args.runs)]
        rate = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        each = " ".join(f"{r[0]:.0f}/{r[1]:.2f}" for r in runs)
        print(f"{c:>11}  {rate:>17.0f}  {cpu:>21.2f}  {each}")


if __name__ == "__main__":
    main()
