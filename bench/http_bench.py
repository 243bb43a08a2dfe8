"""HTTP ingest and end-to-end benchmark, escalator against Prometheus Alertmanager in one run.

For each concurrency C and each run, on a fresh database / storage folder:

- **escalator**: a real ``escalator run`` subprocess on 127.0.0.1 (bench config, see
  ``bench/harness.py``: the first step tells one person through the generic HTTP channel
  ``sms_http``, whose URL is the benchmark's webhook receiver; SQLite WAL, ``synchronous=FULL``;
  JSON logs to /dev/null). Events are distinct ``incident`` events (``POST /api/v1/events``,
  administrator token); each 202 comes after the event's transaction — event, incident, first
  step, notification row — is committed and fsynced (group commit: concurrent requests may
  share one commit).
- **alertmanager**: ``prometheus-alertmanager`` (Debian's) on 127.0.0.1, clustering off, its own
  storage folder, ``group_by: ['...']`` and ``group_wait: 0s`` (each alert notifies on its own),
  a webhook receiver; alerts ``POST /api/v2/alerts`` one per request (200 = accepted in memory).

The same load generator (raw keep-alive HTTP/1.1, C connections) drives both, in two phases
on the same server:

1. throughput: N events, each connection one request at a time, as fast as answered.
   accepted events/s = N / wall time of the load; server CPU ms/event = utime + stime of the
   server process (/proc/PID/stat) from the start of the load until the receiver has the N-th
   notification, / N (so it includes delivering them);
2. end to end: L more events, C of them in flight end to end — each worker sends an event, then
   waits (long poll on the receiver) for its first notification before sending the next.
   Latency = the receiver's arrival time of the notification (matched by ``bench-<n>-`` in the
   body) − the time the request was written; p50/p95/p99/max. (In phase 1 a system whose
   delivery is slower than its intake builds a queue, and the latency there measures the queue.)

``missing`` counts events never notified (within 30 s of no progress).

Usage (from the checkout)::

    .venv/bin/python bench/http_bench.py [--events 10000] [--latency-events 1000] [--runs 3]
                                         [--concurrency 1 32]
                                         [--systems escalator alertmanager]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness as h  # noqa: E402

FIGURES = ("rate", "cpu_ms", "p50", "p95", "p99", "max", "missing")


def one_run(system: str, events: int, concurrency: int, latency_events: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="escbench-") as t:
        tmp = Path(t)
        rport, port = h.free_port(), h.free_port()
        receiver = h.start_receiver(rport, tmp / "received.json")
        try:
            server, request, ok = h.start_system(system, tmp, rport, port)
            try:
                cpu0 = h.cpu_seconds(server.pid)
                seconds, _ = asyncio.run(h.load(port, [request(i) for i in range(events)],
                                                concurrency, ok))
                h.wait_delivered(rport, events, timeout=30)
                cpu = h.cpu_seconds(server.pid) - cpu0
                delivered = h.receiver_count(rport)
                latency = asyncio.run(h.end_to_end(
                    port, rport, [request(events + j) for j in range(latency_events)], events,
                    concurrency, ok))
            finally:
                h.stop(server)
        finally:
            h.receiver_results(receiver, tmp / "received.json")
    lat = [v * 1000 for v in latency.values()]
    return {"rate": events / seconds, "cpu_ms": cpu * 1000 / events,
            "p50": h.pct(lat, 50), "p95": h.pct(lat, 95), "p99": h.pct(lat, 99), "max": max(lat),
            "missing": events + latency_events - delivered - len(lat)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=10_000)
    ap.add_argument("--latency-events", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--systems", nargs="+", default=["escalator", "alertmanager"])
    args = ap.parse_args()
    medians: dict[tuple[str, int], dict[str, float]] = {}
    print(f"{args.events} events (throughput) + {args.latency_events} (end to end) per run, "
          f"{args.runs} runs; medians, each run in brackets: [events/s] [CPU] [p50] [p99]\n")
    print(f"{'system':<13}{'C':>3}  {'events/s':>9}  {'CPU ms/ev':>9}  {'p50 ms':>7}  {'p95 ms':>7}"
          f"  {'p99 ms':>7}  {'max ms':>7}  {'missing':>7}")
    for c in args.concurrency:
        runs: dict[str, list[dict[str, float]]] = {s: [] for s in args.systems}
        for _ in range(args.runs):
            for s in args.systems:  # side by side: alternate the systems within each run
                runs[s].append(one_run(s, args.events, c, args.latency_events))
                time.sleep(0.5)
        for s in args.systems:
            m = {f: statistics.median(r[f] for r in runs[s]) for f in FIGURES}
            medians[(s, c)] = m
            print(f"{s:<13}{c:>3}  {m['rate']:>9.0f}  {m['cpu_ms']:>9.2f}  {m['p50']:>7.1f}  "
                  f"{m['p95']:>7.1f}  {m['p99']:>7.1f}  {m['max']:>7.1f}  {m['missing']:>7.0f}")
            print(f"{'':<16}  [" + " ".join(f"{r['rate']:.0f}" for r in runs[s]) + "]  ["
                  + " ".join(f"{r['cpu_ms']:.2f}" for r in runs[s]) + "]  ["
                  + " ".join(f"{r['p50']:.1f}" for r in runs[s]) + "]  ["
                  + " ".join(f"{r['p99']:.1f}" for r in runs[s]) + "]")
    if {"escalator", "alertmanager"} <= set(args.systems):
        print("\nratios escalator / alertmanager (of the medians)")
        print(f"{'C':>3}  {'events/s':>9}  {'CPU ms/ev':>9}  {'p50':>6}  {'p99':>6}")
        for c in args.concurrency:
            e, a = medians[("escalator", c)], medians[("alertmanager", c)]
            print(f"{c:>3}  {e['rate'] / a['rate']:>9.2f}  {e['cpu_ms'] / a['cpu_ms']:>9.2f}  "
                  f"{e['p50'] / a['p50']:>6.2f}  {e['p99'] / a['p99']:>6.2f}")


if __name__ == "__main__":
    main()
