"""Spool-folder benchmark: files per second through the folder, and file-drop-to-committed
latency (p50 / p99), on the real source (inotify), a real Engine and a real SQLite file
(WAL, synchronous=FULL: every commit is fsynced), with config/demo.yaml.

- throughput: N files of one event each (distinct ``incident`` events, so each opens an
  incident and writes its notification rows) are written into ``tmp/`` and renamed into
  ``incoming/`` at once; the clock runs from the first rename until every file is committed
  and moved to ``processed/``.
- latency: M files dropped one at a time by rename-in; each is timed from its rename to the
  commit of its transaction (the moment ``Engine.ingest_file`` returns).

Each figure is the median over R runs, each run on a fresh folder and database. Logs are
rendered as JSON (as in production) into /dev/null.

Usage (from the checkout)::

    .venv/bin/python bench/spool_bench.py [--files 1000] [--drops 200] [--runs 5] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import structlog

ROOT = Path(__file__).resolve().parents[1]


def quiet_json_logs() -> None:
    """Production rendering (JSON lines at INFO), written to /dev/null."""
    sink = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    structlog.configure(
        processors=[structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso", utc=True),
                    structlog.processors.format_exc_info,
                    structlog.processors.JSONRenderer(ensure_ascii=False)],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(file=sink),
    )


def event(i: int) -> bytes:
    return json.dumps({"kind": "incident", "category": "other", "severity": "low",
                       "summary": f"基准测试事件 {i}", "place": "机房", "source": "bench"},
                      ensure_ascii=False).encode("utf-8")


class Rig:
    """A running SpoolSource on a fresh folder and database, recording commit times."""

    def __init__(self, base: Path) -> None:
        from escalator_plugins.spool import SpoolSource

        from escalator.clock import SystemClock
        from escalator.config import load_config
        from escalator.config.settings import load_settings
        from escalator.engine.engine import Engine
        from escalator.intake.sources import SourceContext
        from escalator.store import SQLiteStore

        self.base = base
        config = load_config(ROOT / "config/demo.yaml")
        self.store = SQLiteStore(base / "state" / "escalator.sqlite3")
        self.engine = Engine(self.store, config, SystemClock())
        self.committed: dict[str, float] = {}
        self.waiters: dict[str, asyncio.Event] = {}

        async def ingest(events, source):
            return self.engine.ingest_many(events, source=source)

        async def ingest_file(events, sha256, name, source):
            results = self.engine.ingest_file(events, sha256=sha256, name=name, source=source)
            self.committed[name] = time.perf_counter()
            if name in self.waiters:
                self.waiters[name].set()
            return results

        settings = load_settings(spool_dir=base / "spool", state_dir=base / "state")
        ctx = SourceContext(settings=settings, config=config, clock=SystemClock(),
                            ingest=ingest, ingest_file=ingest_file)
        self.source = SpoolSource("spool", {}, ctx)  # defaults: settle 2 s, rescan 30 s
        self.spool = base / "spool"
        self.task: asyncio.Task | None = None
        self.moved = 0
        accept = self.source._accept

        def counted(in_fd, name):
            dest = accept(in_fd, name)
            self.moved += 1
            return dest

        self.source._accept = counted

    async def __aenter__(self) -> Rig:
        self.task = asyncio.create_task(self.source.run())
        await asyncio.wait_for(self.source.ready.wait(), 30)
        if self.source._inotify is None:
            raise SystemExit("inotify is not available here: the figures would measure the rescan")
        return self

    async def __aexit__(self, *exc) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        self.store.close()


async def until(predicate, timeout: float) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise SystemExit("timed out")
        await asyncio.sleep(0.002)


async def throughput(base: Path, n: int) -> float:
    async with Rig(base) as rig:
        tmp, incoming = rig.spool / "tmp", rig.spool / "incoming"
        for i in range(n):
            (tmp / f"t{i:05}.json").write_bytes(event(i))
        start = time.perf_counter()
        for i in range(n):
            os.replace(tmp / f"t{i:05}.json", incoming / f"t{i:05}.json")
        await until(lambda: rig.moved == n, 600)
        elapsed = time.perf_counter() - start
    return n / elapsed


async def latency(base: Path, m: int) -> list[float]:
    out = []
    async with Rig(base) as rig:
        tmp, incoming = rig.spool / "tmp", rig.spool / "incoming"
        for i in range(m):
            name = f"l{i:05}.json"
            (tmp / name).write_bytes(event(100_000 + i))
            rig.waiters[name] = asyncio.Event()
            start = time.perf_counter()
            os.replace(tmp / name, incoming / name)
            await asyncio.wait_for(rig.waiters[name].wait(), 60)
            out.append(rig.committed[name] - start)
            await until(lambda k=i + 1: rig.moved == k, 60)
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def machine() -> str:
    from escalator.store.sqlite import SQLITE_VERSION

    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        fs = subprocess.run(["stat", "-f", "-c", "%T", tempfile.gettempdir()], capture_output=True,
                            text=True).stdout.strip()
    except OSError:
        fs = "?"
    return (f"nproc {os.cpu_count()}, {model}; Linux {platform.release()}; Python "
            f"{platform.python_version()}; SQLite {SQLITE_VERSION}; temp filesystem {fs}")


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=1000, help="files per throughput run")
    p.add_argument("--drops", type=int, default=200, help="single drops per latency run")
    p.add_argument("--runs", type=int, default=5, help="runs; each figure is the median")
    p.add_argument("--dir", default=None, help="where the temporary folders go")
    args = p.parse_args()
    quiet_json_logs()

    rates, p50s, p99s = [], [], []
    for r in range(args.runs):
        with tempfile.TemporaryDirectory(dir=args.dir) as d:
            rates.append(await throughput(Path(d), args.files))
        with tempfile.TemporaryDirectory(dir=args.dir) as d:
            lat = await latency(Path(d), args.drops)
        p50s.append(percentile(lat, 50) * 1000)
        p99s.append(percentile(lat, 99) * 1000)
        print(f"run {r + 1}/{args.runs}: {rates[-1]:.0f} files/s, p50 {p50s[-1]:.2f} ms, "
              f"p99 {p99s[-1]:.2f} ms", file=sys.stderr)

    def row(name: str, values: list[float], fmt: str) -> str:
        runs = " ".join(format(v, fmt) for v in values)
        return f"| {name} | {format(statistics.median(values), fmt)} | {runs} |"

    print(f"spool folder: {args.files} files per throughput run, {args.drops} single drops per "
          f"latency run, {args.runs} runs (median); rename-in, inotify, default settle 2 s")
    print(machine())
    print()
    print("| figure | median | each run |")
    print("|---|---:|---|")
    print(row("files/s through the folder (committed and moved)", rates, ".0f"))
    print(row("drop → committed latency p50 (ms)", p50s, ".2f"))
    print(row("drop → committed latency p99 (ms)", p99s, ".2f"))


if __name__ == "__main__":
    asyncio.run(main())
