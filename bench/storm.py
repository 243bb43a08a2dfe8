"""A storm: does a new critical message to a person overtake the flood of older ones?

Per run, on 127.0.0.1, a fresh database / storage folder, the webhook receiver of
``bench/harness.py``:

- **escalator**: ``escalator run`` (``bench/run_daemon.py`` with ``BENCH_ADDRESS_LIMITS=real``:
  the daemon's *own* per-address limit, today 10 messages a minute to one address, as an SMS
  gateway allows) and the daemon's defaults otherwise (digests, once they exist, stay as
  configured by default: ``write_config(..., digests=True)``). ``--storm`` events (default
  5,000 distinct ``incident`` events, severity ``medium``) are posted as fast as they are
  answered (32 senders, open loop: ``harness.open_loop``); every one tells the same person
  through ``sms_http``. Then one ``critical`` event for the same person.
- **alertmanager**: the same load as alerts (``severity: warning``), then one ``critical``
  alert; ``group_by: [alertname, severity]``, ``group_wait: 0s`` — its answer to a storm is
  grouping (it has no per-receiver rate limit): the storm becomes one group, the critical
  alert its own.

Figures (median of ``--runs``): seconds to post the storm; the critical event's **end to end**
time = first arrival at the receiver of a message naming it − the moment its request was
written (target: ≤ 5 s); storm messages received by then. The wait is bounded: after
``--bound`` seconds (default 60) the run gives up and reports ``> 60 s``.

Usage (from the checkout)::

    .venv/bin/python bench/storm.py                      # --storm 5000 --runs 3 --bound 60
    .venv/bin/python bench/storm.py --storm 500 --runs 1 --bound 20     # a quick try
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness as h  # noqa: E402

AM_GROUP_BY = "['alertname', 'severity']"


async def until_arrived(receiver_port: int, i: int, deadline: float) -> float | None:
    """The receiver's first arrival (monotonic) of a message naming ``bench-<i>-``, or ``None``
    at the monotonic ``deadline``."""
    conn = h.Conn(receiver_port)
    try:
        while time.monotonic() < deadline:
            left = deadline - time.monotonic()
            try:
                _, body = await asyncio.wait_for(conn.request(
                    f"GET /wait/{i} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()), left)
            except TimeoutError:
                return None
            if (at := float(body)) >= 0:
                return at
        return None
    finally:
        conn.close()


def one_run(system: str, storm: int, bound: float) -> dict[str, float]:
    """One storm and its critical event on a fresh ``system``: seconds to post the storm
    (``storm_s``), the critical message's end to end (``critical_s``; ``inf`` beyond ``bound``),
    and storm messages received by then (``storm_delivered``)."""
    with tempfile.TemporaryDirectory(prefix="escstorm-") as t:
        tmp = Path(t)
        rport, port = h.free_port(), h.free_port()
        receiver = h.start_receiver(rport, tmp / "received.json")
        try:
            if system == "escalator":
                config = h.write_config(tmp, rport, digests=True)
                server = h.start_escalator(tmp, config, port, address_limits=True)
                h.wait_http(port, "/healthz", proc=server)
                ok = 202
                make = lambda i: h.escalator_request(i, "critical" if i == storm else "medium")  # noqa: E731
            else:
                server = h.start_alertmanager(tmp, port, rport, group_by=AM_GROUP_BY)
                h.wait_http(port, "/-/ready", proc=server)
                ok = 200
                make = lambda i: h.alertmanager_request(i, "critical" if i == storm else "warning")  # noqa: E731
            try:
                t0 = time.monotonic()
                shots = asyncio.run(h.open_loop(port, make, concurrency=32, n=storm, timeout=bound))
                storm_s = time.monotonic() - t0
                rejected = sum(1 for s in shots.values() if s.status != ok)
                [critical] = asyncio.run(h.open_loop(port, lambda _: make(storm), concurrency=1,
                                                     n=1, timeout=bound)).values()
                if critical.status != ok:
                    raise RuntimeError(f"the critical event was answered {critical.status}")
                at = asyncio.run(until_arrived(rport, storm, critical.scheduled + bound))
                storm_delivered = h.receiver_count(rport) - (at is not None)
            finally:
                h.stop(server)
        finally:
            h.receiver_results(receiver, tmp / "received.json")
    return {"storm_s": storm_s, "rejected": rejected, "storm_delivered": storm_delivered,
            "critical_s": math.inf if at is None else at - critical.scheduled}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--storm", type=int, default=5000, help="events in the storm (default 5,000)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--bound", type=float, default=60.0,
                    help="seconds to wait for the critical message before giving up")
    ap.add_argument("--systems", nargs="+", default=["escalator", "alertmanager"])
    args = ap.parse_args()
    load0 = h.load_average()
    print(f"storm: {args.storm} events for one person, then one critical event; {args.runs} runs "
          f"(medians); load average (1 min) at start {load0:.2f}\n", flush=True)
    runs: dict[str, list[dict[str, float]]] = {s: [] for s in args.systems}
    for _ in range(args.runs):
        for s in args.systems:
            runs[s].append(one_run(s, args.storm, args.bound))
    print("| system | storm posted in (s) | critical: event → message (ms) | storm messages "
          "received by then | rejected | runs: critical |")
    print("|---|---:|---:|---:|---:|---|")
    for s, r in runs.items():
        med = {k: statistics.median(x[k] for x in r) for k in r[0]}
        each = " ".join(h.fmt_ms(x["critical_s"], args.bound) for x in r)
        print(f"| {s} | {med['storm_s']:.1f} | {h.fmt_ms(med['critical_s'], args.bound)} | "
              f"{med['storm_delivered']:,.0f} | {med['rejected']:.0f} | {each} |")
    if "escalator" in runs:
        crit = statistics.median(x["critical_s"] for x in runs["escalator"])
        got = h.fmt_ms(crit, args.bound) + ("" if math.isinf(crit) else " ms")
        print(f"\ntarget: the critical message within 5 s — escalator {got}: "
              f"{'met' if crit <= 5 else '**missed**'}")
    print(f"\nload average (1 min): start {load0:.2f}, end {h.load_average():.2f}")


if __name__ == "__main__":
    main()
