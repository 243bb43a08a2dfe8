"""kill -9 between commit and move: a real process wires a SpoolSource to a real Engine on a
SQLite file and is killed (SIGKILL) right after a file's events are committed, before the file
leaves incoming/. A second process then takes the folder normally: the file ends in processed/
and its events exist exactly once (the content hash was committed with them)."""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import CASES, ROOT

SCRIPT = r"""
import asyncio, os, signal, sys
from pathlib import Path

from escalator.clock import SystemClock
from escalator.config import load_config
from escalator.engine.engine import Engine
from escalator.config.settings import load_settings
from escalator.intake.sources import SourceContext
from escalator.store import SQLiteStore
from escalator.intake.spool.source import SpoolSource

config_path, db, spool, state, mode = sys.argv[1:6]
config = load_config(config_path)
engine = Engine(SQLiteStore(db), config, SystemClock())


async def ingest(events, source):
    return engine.ingest_many(events, source=source)


async def ingest_file(events, sha256, name, source):
    results = engine.ingest_file(events, sha256=sha256, name=name, source=source)
    print("committed", name, "already" if results is None else len(results), flush=True)
    return results


if mode == "crash":
    def killed_instead_of_moving(self, in_fd, name):
        os.kill(os.getpid(), signal.SIGKILL)  # right after the commit, before the move

    SpoolSource._accept = killed_instead_of_moving


async def main():
    settings = load_settings(spool_dir=spool, state_dir=state)
    ctx = SourceContext(settings=settings, config=config, clock=SystemClock(), ingest=ingest,
                        ingest_file=ingest_file)
    source = SpoolSource("spool", {"settle": 0.2, "rescan_interval": 0.1}, ctx)
    task = asyncio.create_task(source.run())
    incoming = Path(spool) / "incoming"
    while not task.done():
        if source.passes and not any(incoming.iterdir()):
            break
        await asyncio.sleep(0.02)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    print("incoming empty", flush=True)


asyncio.run(main())
"""

REGISTER = CASES / "registers" / "chenwujian_2026-11-30_gb18030.csv"
EVENT = CASES / "events" / "fever_single.json"


def run(tmp_path: Path, mode: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, str(ROOT / "config/demo.yaml"), str(tmp_path / "db.sqlite3"),
         str(tmp_path / "spool"), str(tmp_path / "state"), mode],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)


def query(db: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@pytest.mark.slow
def test_kill_9_between_commit_and_move_gives_no_duplicate(tmp_path):
    incoming = tmp_path / "spool" / "incoming"
    incoming.mkdir(parents=True)
    shutil.copyfile(REGISTER, incoming / REGISTER.name)   # taken first (sorted by name)
    shutil.copyfile(EVENT, incoming / EVENT.name)
    db = tmp_path / "db.sqlite3"

    crashed = run(tmp_path, "crash")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert f"committed {REGISTER.name} 5" in crashed.stdout
    assert "incoming empty" not in crashed.stdout
    # committed (durably: the process died without closing anything), not moved
    # the register's five rows (its three 3-2 pupils with fever also open the school cluster)
    assert query(db, "SELECT COUNT(*) FROM events WHERE source != 'escalator'") == [(5,)]
    assert query(db, "SELECT name, events FROM spool_files") == [(REGISTER.name, 5)]
    assert sorted(p.name for p in incoming.iterdir()) == sorted([REGISTER.name, EVENT.name])

    restarted = run(tmp_path, "normal")
    assert restarted.returncode == 0, restarted.stderr
    assert f"committed {REGISTER.name} already" in restarted.stdout
    assert f"committed {EVENT.name} 1" in restarted.stdout
    assert "incoming empty" in restarted.stdout

    processed = sorted(p.name for p in (tmp_path / "spool" / "processed").glob("*/*"))
    assert processed == sorted([REGISTER.name, EVENT.name])
    assert list(incoming.iterdir()) == []
    assert list((tmp_path / "spool" / "failed").iterdir()) == []
    # every event exactly once (besides the school cluster escalator opens: pupils 1-3 of the
    # register have fever in 3-2 that day — 1 and 3 with a cough —, fever_single's pupil joins)
    assert query(db, "SELECT COUNT(*) FROM events WHERE source != 'escalator'") == [(6,)]
    assert query(db, "SELECT dedup_key FROM events WHERE source = 'escalator'") == [
        ("cluster/fever/class:3-2/2026-11-30",)]
    assert query(db, "SELECT COUNT(*), COUNT(DISTINCT row_key) FROM events "
                     "WHERE row_key IS NOT NULL") == [(5, 5)]
    assert sorted(query(db, "SELECT name FROM spool_files")) == sorted([(REGISTER.name,), (EVENT.name,)])
    bodies = [json.loads(b) for (b,) in query(db, "SELECT body FROM events "
                                                  "WHERE source != 'escalator'")]
    assert sorted(b["source"] for b in bodies) == ["morning-check"] + ["morning-check-register"] * 5
