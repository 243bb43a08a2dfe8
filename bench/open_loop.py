"""Open-loop HTTP ingest and end to end under a burst, escalator against Alertmanager in one run.

The closed-loop figure of ``http_bench.py`` (phase 2: one event in flight end to end per
worker) cannot see a delivery queue: the next event waits until the previous message arrived.
Here nothing a request causes ever holds the next one back (``harness.open_loop``):

- default (saturation): C senders, each sending its next event the moment the previous
  *answer* (202 / 200) arrives — never waiting for the message; the intake alone sets the pace;
- ``--rate R``: event i is scheduled at t0 + i / R whatever the server does (at most C requests
  in flight; a late send's wait counts in its latency).

Every latency runs from the event's scheduled send time (in saturation: the moment its sender
was free, i.e. the write time), so a slow server cannot slow the generator and hide its queue.

Systems, on 127.0.0.1, a fresh database / storage folder per run, the same webhook receiver
(``bench/harness.py``):

- **escalator**: ``escalator run`` by ``bench/run_daemon.py`` (per-address send limit off —
  10,000 messages go to one person; digests off by ``harness.DIGESTS_OFF`` once they exist);
  bench config: the first step tells one person through ``sms_http`` to the receiver;
  SQLite WAL, ``synchronous=FULL``; distinct ``incident`` events, ``POST /api/v1/events``.
- **alertmanager**: Debian's ``prometheus-alertmanager``, ``group_by: ['...']``,
  ``group_wait: 0s``, webhook to the receiver; one alert per ``POST /api/v2/alerts``.

Figures per run (median of ``--runs``):

- **events/s**: accepted (2xx) events / (last answer − first scheduled send);
- **e2e p50/p95/p99/max**: the receiver's first arrival of a message naming ``bench-<i>-`` −
  event i's scheduled send time; an event never delivered within ``--bound`` seconds of the
  start of the load counts as infinitely late (shown ``> bound``) and in ``missing``;
- **delivered during intake**: events whose message arrived before the last answer of the
  load (count and % of the accepted);
- **CPU ms/event**: utime + stime of the server process (/proc/PID/stat) from the start of the
  load until the last message arrived (or the bound), / events accepted — delivery included.

The 1-minute load average is printed at the start and the end. Bounded: each run ends at most
``--bound`` seconds (default 180) after its load starts; all traffic stays on 127.0.0.1.

Usage (from the checkout)::

    .venv/bin/python bench/open_loop.py                 # --n 10000 --concurrency 1 32 --runs 3
    .venv/bin/python bench/open_loop.py --n 1000 --runs 1      # a quick try
    .venv/bin/python bench/open_loop.py --rate 500             # fixed arrival rate instead
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

FIGURES = ("rate", "p50", "p95", "p99", "max", "during", "during_pct", "cpu_ms", "missing",
           "rejected")


def one_run(system: str, n: int, concurrency: int, rate: float | None, bound: float
            ) -> dict[str, float]:
    """One load of ``n`` events on a fresh ``system``; the figures of the module docstring
    (seconds for latencies, ms for ``cpu_ms``)."""
    with tempfile.TemporaryDirectory(prefix="escopen-") as t:
        tmp = Path(t)
        rport, port = h.free_port(), h.free_port()
        receiver = h.start_receiver(rport, tmp / "received.json")
        try:
            server, make, ok = h.start_system(system, tmp, rport, port)
            try:
                cpu0, start = h.cpu_seconds(server.pid), time.monotonic()
                shots = asyncio.run(h.open_loop(port, make, concurrency=concurrency, n=n,
                                                rate=rate, timeout=min(60.0, bound)))
                accepted = [i for i, s in shots.items() if s.status == ok]
                h.wait_delivered(rport, len(accepted), timeout=30, deadline=start + bound)
                cpu = h.cpu_seconds(server.pid) - cpu0
            finally:
                h.stop(server)
        finally:
            arrived = h.receiver_results(receiver, tmp / "received.json")
    first = min(s.scheduled for s in shots.values())
    intake_end = max((s.answered for s in shots.values() if s.answered is not None), default=first)
    e2e = [arrived[i] - shots[i].scheduled if i in arrived else float("inf") for i in accepted]
    during = sum(1 for i in accepted if arrived.get(i, float("inf")) <= intake_end)
    count = max(1, len(accepted))
    return {"rate": len(accepted) / max(1e-9, intake_end - first),
            "p50": h.pct(e2e, 50), "p95": h.pct(e2e, 95), "p99": h.pct(e2e, 99), "max": max(e2e),
            "during": during, "during_pct": 100 * during / count, "cpu_ms": cpu * 1000 / count,
            "missing": sum(1 for i in accepted if i not in arrived), "rejected": n - len(accepted)}


def table(medians: dict[tuple[str, int], dict[str, float]], runs: dict[tuple[str, int], list],
          bound: float) -> None:
    """Print the medians (and each run) as a markdown table."""
    print("| system | C | events/s | e2e p50 ms | p95 | p99 | max | delivered during intake "
          "| CPU ms/event | missing | runs: events/s · p99 · during % · CPU |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for (s, c), m in medians.items():
        r = runs[(s, c)]
        each = (" ".join(f"{x['rate']:.0f}" for x in r) + " · "
                + " ".join(h.fmt_ms(x["p99"], bound) for x in r) + " · "
                + " ".join(f"{x['during_pct']:.1f}" for x in r) + " · "
                + " ".join(f"{x['cpu_ms']:.2f}" for x in r))
        print(f"| {s} | {c} | {m['rate']:,.0f} | {h.fmt_ms(m['p50'], bound)} | "
              f"{h.fmt_ms(m['p95'], bound)} | {h.fmt_ms(m['p99'], bound)} | "
              f"{h.fmt_ms(m['max'], bound)} | {m['during']:,.0f} ({m['during_pct']:.1f} %) | "
              f"{m['cpu_ms']:.2f} | {m['missing']:.0f} | {each} |")


def targets(medians: dict[tuple[str, int], dict[str, float]], concurrency: list[int]) -> None:
    """Print the issue's targets against the escalator medians (where measured)."""
    rows = []
    for c in concurrency:
        e = medians.get(("escalator", c))
        if e is None:
            continue
        goal = 1.0 if c >= 32 else 0.1
        rows.append((f"e2e p99 ≤ {goal * 1000:.0f} ms at C={c}", h.fmt_ms(e["p99"]) + " ms",
                     e["p99"] <= goal))
        rows.append((f"≥ 40 % delivered while intake runs, C={c}", f"{e['during_pct']:.1f} %",
                     e["during_pct"] >= 40))
        rows.append((f"CPU ≤ 1.5 ms per event with delivery, C={c}", f"{e['cpu_ms']:.2f} ms",
                     e["cpu_ms"] <= 1.5))
        if (a := medians.get(("alertmanager", c))) is not None and c >= 32:
            ratio = e["rate"] / a["rate"]
            rows.append((f"events/s ≥ 0.5× Alertmanager's at C={c}",
                         f"{e['rate']:,.0f} vs {a['rate']:,.0f} ({ratio:.2f}×)", ratio >= 0.5))
    if rows:
        print("\n| target | escalator (median) | |\n|---|---|---|")
        for what, got, met in rows:
            print(f"| {what} | {got} | {'met' if met else '**missed**'} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000, help="events per load (default 10,000)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rate", type=float, default=None,
                    help="fixed arrival rate (events/s); default: as fast as answered")
    ap.add_argument("--bound", type=float, default=180.0,
                    help="seconds from the start of a load after which it is cut off")
    ap.add_argument("--systems", nargs="+", default=["escalator", "alertmanager"])
    args = ap.parse_args()
    load0, t0 = h.load_average(), time.monotonic()
    mode = f"fixed rate {args.rate:g}/s" if args.rate else "as fast as answered"
    print(f"open loop ({mode}): {args.n} events per load, concurrency {args.concurrency}, "
          f"{args.runs} runs (medians); load average (1 min) at start {load0:.2f}\n", flush=True)
    runs: dict[tuple[str, int], list[dict[str, float]]] = {}
    for c in args.concurrency:
        for _ in range(args.runs):
            for s in args.systems:  # side by side: alternate the systems within each run
                runs.setdefault((s, c), []).append(one_run(s, args.n, c, args.rate, args.bound))
                time.sleep(0.5)
    medians = {k: {f: statistics.median(r[f] for r in v) for f in FIGURES} for k, v in runs.items()}
    table(medians, runs, args.bound)
    targets(medians, args.concurrency)
    print(f"\nload average (1 min): start {load0:.2f}, end {h.load_average():.2f}; "
          f"took {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    main()
