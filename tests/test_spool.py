"""The spool-folder source (DESIGN.md "Spool folder") against real temp folders and a real
SQLite store: accepted files, bad files with sidecars, ignored names, content-hash dedup,
symlinks and size limits, lists of events, name collisions; the settle rule on a fake clock;
YAML; and the live source on real inotify (chunked writers, rename-in, 1,000 files at once).

Most tests drive :meth:`SpoolSource.scan_once` on the harness's fake clock: a file found by a
rescan is taken at the first look at least ``settle`` seconds after a look that saw it
unchanged, so ``Wired.scan()`` looks, advances the clock by ``settle`` and looks again."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import structlog

from escalator.clock import SystemClock
from escalator.config import load_config
from escalator.config.settings import load_settings
from escalator.events import Kind
from escalator.intake.sources import SourceContext
from escalator.intake.spool.source import SpoolSource
from escalator.testing import Harness

from .conftest import CASES, ROOT, case

GOOD = sorted((CASES / "events").glob("*.json"))
BAD = sorted((CASES / "bad").iterdir())
# Harness.START is 2026-11-29 23:48 UTC, i.e. 2026-11-30 07:48 in Asia/Shanghai: the processed/
# folder is named by the school-local date, not the UTC one.
LOCAL_DAY = "2026-11-30"
UTC_DAY = "2026-11-29"
SMALL = {"kind": "incident", "category": "other", "summary": "x"}


# --- helpers ------------------------------------------------------------------------------


class Wired:
    """A SpoolSource wired to a Harness's engine, recording each ``ingest_file`` answer."""

    def __init__(self, harness: Harness, spool: Path, **options) -> None:
        self.h = harness
        self.spool = spool
        self.answers: dict[str, list] = {}
        self.ingest_calls = 0

        async def ingest(events, source):
            return [harness.engine.ingest(e, source=source) for e in events]

        async def ingest_file(events, sha256, name, source):
            results = harness.engine.ingest_file(events, sha256=sha256, name=name, source=source)
            self.answers.setdefault(name, []).append(results)
            self.ingest_calls += 1
            return results

        settings = load_settings(spool_dir=spool, state_dir=spool.parent / "state")
        ctx = SourceContext(settings=settings, config=harness.config,
                            clock=harness.clock, ingest=ingest, ingest_file=ingest_file)
        self.source = SpoolSource("spool", options, ctx)

    async def scan(self) -> int:
        """Two rescans ``settle`` seconds apart on the fake clock: every complete file is taken.
        Returns how many files were taken."""
        n = await self.source.scan_once()
        self.h.clock.advance(self.source.settle)
        return n + await self.source.scan_once()

    incoming = property(lambda self: self.spool / "incoming")
    failed = property(lambda self: self.spool / "failed")
    processed = property(lambda self: self.spool / "processed" / LOCAL_DAY)

    def drop(self, name: str, content: bytes | str | dict | list) -> Path:
        """Put a complete file into incoming/ the recommended way (write in tmp/, rename in)."""
        if isinstance(content, dict | list):
            content = json.dumps(content, ensure_ascii=False)
        if isinstance(content, str):
            content = content.encode("utf-8")
        tmp = self.spool / "tmp" / name
        tmp.write_bytes(content)
        os.replace(tmp, self.incoming / name)
        return self.incoming / name

    def sidecar(self, name: str) -> dict:
        return json.loads((self.failed / f"{name}.error.json").read_text(encoding="utf-8"))


async def until(predicate, timeout: float = 10.0, what: str = "") -> None:
    """Wait (bounded polling on the event loop) until ``predicate()`` is true."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        await asyncio.sleep(0.01)


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def count(h: Harness, table: str) -> int:
    with h.store.transaction() as tx:
        return tx.c.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def rows(h: Harness, sql: str, *args) -> list[dict]:
    with h.store.transaction() as tx:
        return [dict(r) for r in tx.c.execute(sql, args).fetchall()]


@pytest.fixture
def spool(tmp_path):
    return tmp_path / "spool"


@pytest.fixture
def wired(harness, spool):
    return Wired(harness, spool)


# --- 1. every sample event is accepted ----------------------------------------------------


@pytest.fixture(params=["config/demo.yaml", "tests/fixtures/engine.yaml"])
def any_config_harness(request, tmp_path):
    h = Harness(load_config(ROOT / request.param), tmp_path / "db" / "escalator.sqlite3")
    yield h
    h.close()


async def test_every_sample_event_file_is_accepted(any_config_harness, spool):
    h = any_config_harness
    w = Wired(h, spool)
    assert len(GOOD) == 10
    for src in GOOD:
        shutil.copyfile(src, w.incoming / src.name)

    assert await w.scan() == len(GOOD)

    assert names(w.incoming) == []
    assert names(w.failed) == []
    assert names(w.processed) == sorted(p.name for p in GOOD)
    assert not (spool / "processed" / UTC_DAY).exists()
    for src in GOOD:  # moved, not rewritten
        assert (w.processed / src.name).read_bytes() == src.read_bytes()
    # one event per file, each file's hash recorded once; with the demo's `clusters:`, escalator
    # adds the event of the school cluster that the three fever_cluster pupils make, and the
    # zero report of the same day contradicts those cases (零报告与登记不符)
    made = rows(h, "SELECT dedup_key FROM events WHERE source = 'escalator'")
    assert [r["dedup_key"] for r in made] == (
        ["cluster/respiratory/class:3-2/2026-11-30",
         "zero-report-mismatch/zero_report/2026-11-30"] if h.config.clusters else [])
    assert count(h, "events") == len(GOOD) + len(made)
    assert count(h, "spool_files") == len(GOOD)
    assert sorted(r["name"] for r in rows(h, "SELECT name FROM spool_files")) == sorted(
        p.name for p in GOOD)
    stored = rows(h, "SELECT id, source FROM events WHERE source != 'escalator'")
    assert {r["source"] for r in stored} == {"spool"}
    with h.store.transaction() as tx:
        for name, answers in w.answers.items():
            [results] = answers
            [r] = results
            ev = tx.get_event(r.event_id)
            assert ev is not None, name
            assert ev["body"]["summary"] == case(f"events/{name}")["summary"]

    # the duplicate pair: one incident, the second counted on it
    dup = rows(h, "SELECT incident_id, outcome FROM events WHERE dedup_key = ?",
               "fire-gw/main-1F/detector-7")
    assert sorted(r["outcome"] for r in dup) == ["created", "deduplicated"]
    assert dup[0]["incident_id"] is not None
    assert dup[0]["incident_id"] == dup[1]["incident_id"]
    assert h.incident(dup[0]["incident_id"]).event_count == 2
    assert [r.status for r in w.answers["duplicate_b.json"][0]] == ["deduplicated"]

    # the zero report: stored, no incident
    [zero] = rows(h, "SELECT incident_id, outcome, kind FROM events WHERE dedup_key = ?",
                  "zero-report/2026-11-30")
    assert zero == {"incident_id": None, "outcome": "logged", "kind": "heartbeat"}
    assert w.answers["zero_report.json"][0][0].incident_id is None

    # the incidents that were opened: every non-heartbeat file made or joined one
    with_incident = rows(h, "SELECT COUNT(*) AS n FROM events WHERE incident_id IS NOT NULL"
                         " AND source != 'escalator'")
    assert with_incident[0]["n"] == len(GOOD) - 1


# --- 2. bad files go to failed/ with a sidecar naming the problem --------------------------


def fields(sidecar: dict) -> set[str]:
    return {e["field"] for e in sidecar["errors"]}


async def test_wrong_types_names_severity_and_occurred_at(wired, harness):
    wired.drop("wrong_types.json", (CASES / "bad" / "wrong_types.json").read_bytes())
    await wired.scan()
    side = wired.sidecar("wrong_types.json")
    assert side["file"] == "wrong_types.json"
    assert {"severity", "occurred_at"} <= fields(side)
    assert count(harness, "events") == 0


async def test_unknown_kind_names_kind_and_the_allowed_kinds(wired, harness):
    wired.drop("unknown_kind.json", (CASES / "bad" / "unknown_kind.json").read_bytes())
    await wired.scan()
    side = wired.sidecar("unknown_kind.json")
    [err] = [e for e in side["errors"] if e["field"] == "kind"]
    assert "earthquake_drill" in err["message"]
    for k in Kind:
        assert k.value in err["message"]
    assert count(harness, "events") == 0


async def test_huge_summary_is_rejected_with_a_size_error(wired, harness):
    wired.drop("huge_summary.json", (CASES / "bad" / "huge_summary.json").read_bytes())
    await wired.scan()
    side = wired.sidecar("huge_summary.json")
    [err] = [e for e in side["errors"] if e["field"] == "summary"]
    assert "too long" in err["message"] and "500" in err["message"]
    assert count(harness, "events") == 0
    assert harness.channel.sent == []


@pytest.mark.parametrize("name", ["truncated.json", "not_json.txt"])
async def test_not_json_names_the_line(wired, harness, name):
    wired.drop(name, (CASES / "bad" / name).read_bytes())
    await wired.scan()
    side = wired.sidecar(name)
    assert side["reason"].startswith("not valid JSON")
    assert re.search(r"line \d+, column \d+", side["reason"])
    assert count(harness, "events") == 0


async def test_all_bad_files_fail_and_scanning_goes_on(wired, harness):
    for src in BAD:
        wired.drop(src.name, src.read_bytes())
    # sorted between the bad files, and after all of them
    wired.drop("fever_single.json", (CASES / "events" / "fever_single.json").read_bytes())
    wired.drop("zz_fire.json", (CASES / "events" / "fire_alarm.json").read_bytes())

    assert await wired.scan() == len(BAD) + 2

    assert names(wired.incoming) == []
    assert names(wired.processed) == ["fever_single.json", "zz_fire.json"]
    expected_failed = sorted([p.name for p in BAD] + [f"{p.name}.error.json" for p in BAD])
    assert names(wired.failed) == expected_failed
    for src in BAD:
        assert (wired.failed / src.name).read_bytes() == src.read_bytes()
        side = wired.sidecar(src.name)
        assert side["file"] == src.name and side["reason"]
        assert side["at"] == harness.clock.now().isoformat()
    # only the two good files' events are stored, and only their hashes are recorded
    assert count(harness, "events") == 2
    assert sorted(r["name"] for r in rows(harness, "SELECT name FROM spool_files")) == [
        "fever_single.json", "zz_fire.json"]


@pytest.mark.parametrize("content", [
    b"[" * 100_000,                                   # nested too deeply for the JSON parser
    b'{"kind": "incident", "affected_count": ' + b"1" * 5000 + b"}",  # over int digit limit
], ids=["deep_nesting", "huge_integer"])
async def test_pathological_json_fails_the_file_not_the_source(wired, harness, content):
    wired.drop("a_poison.json", content)
    wired.drop("b_good.json", case("events/fever_single.json"))
    await wired.scan()  # must not raise
    assert names(wired.incoming) == []
    assert wired.sidecar("a_poison.json")["reason"].startswith("not valid JSON")
    assert names(wired.processed) == ["b_good.json"]
    assert count(harness, "events") == 1


async def test_a_file_that_vanished_is_skipped(wired, harness):
    await wired.source.take(wired.incoming / "gone.json")  # e.g. taken by another process
    assert names(wired.failed) == []
    assert count(harness, "events") == 0


async def test_an_unreadable_file_fails_and_scanning_goes_on(wired, harness, monkeypatch):
    p = wired.drop("a_locked.json", case("events/fire_alarm.json"))
    p.chmod(0)
    real_open = os.open

    def refusing_open(path, *args, **kwargs):  # root reads mode-0 files: refuse like for a user
        if os.fsdecode(path) == "a_locked.json":
            raise PermissionError(13, "Permission denied", "a_locked.json")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)
    wired.drop("b_good.json", case("events/fever_single.json"))
    await wired.scan()
    assert "a_locked.json" in names(wired.failed)
    assert names(wired.processed) == ["b_good.json"]
    assert count(harness, "events") == 1


# --- 3. files present at start ------------------------------------------------------------


async def test_files_present_before_start_are_taken_once_settled(harness, spool):
    incoming = spool / "incoming"
    incoming.mkdir(parents=True)
    shutil.copyfile(CASES / "events" / "fire_alarm.json", incoming / "fire_alarm.json")
    shutil.copyfile(CASES / "events" / "bullying.json", incoming / "bullying.json")

    w = Wired(harness, spool, poll_interval=3600)  # the older name of rescan_interval
    task = asyncio.create_task(w.source.run())
    try:
        await asyncio.wait_for(w.source.ready.wait(), 5)
        # the first scan saw both; a writer may still be writing them, so they settle first
        assert sorted(w.source.pending) == ["bullying.json", "fire_alarm.json"]
        assert names(w.incoming) == ["bullying.json", "fire_alarm.json"]
        harness.clock.advance(w.source.settle)
        w.source.request_rescan()
        await until(lambda: names(w.processed) == ["bullying.json", "fire_alarm.json"])
        assert names(w.incoming) == []
        assert count(harness, "events") == 2
        assert not task.done()  # still watching
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


# --- 4. ignored names ---------------------------------------------------------------------


async def test_dotfiles_tmp_and_part_files_are_left_alone(wired, harness):
    ignored = [".hidden.json", "writing.json.tmp", "upload.part", ".x.tmp"]
    for name in ignored:
        wired.drop(name, case("events/fire_alarm.json"))
    wired.drop("real.json", case("events/bullying.json"))

    assert await wired.scan() == 1

    assert names(wired.incoming) == sorted(ignored)
    assert names(wired.processed) == ["real.json"]
    assert names(wired.failed) == []
    assert count(harness, "events") == 1
    await wired.scan()  # and on every later scan
    assert names(wired.incoming) == sorted(ignored)
    assert count(harness, "events") == 1


# --- 5. content-hash dedup ----------------------------------------------------------------


async def test_redropping_identical_content_adds_nothing(wired, harness):
    data = (CASES / "events" / "fever_single.json").read_bytes()
    wired.drop("fever_single.json", data)
    await wired.scan()
    assert count(harness, "events") == 1
    incidents = count(harness, "incidents")

    wired.drop("fever_single.json", data)          # same name, same bytes
    wired.drop("copy_of_fever.json", data)          # other name, same bytes
    await wired.scan()

    assert names(wired.incoming) == []
    assert names(wired.failed) == []
    assert names(wired.processed) == ["copy_of_fever.json", "fever_single.1.json",
                                      "fever_single.json"]
    assert count(harness, "events") == 1
    assert count(harness, "incidents") == incidents
    assert count(harness, "spool_files") == 1
    assert wired.answers["copy_of_fever.json"] == [None]
    assert wired.answers["fever_single.json"][1] is None

    # a one-byte change is new content
    wired.drop("fever_single.json", data + b"\n")
    await wired.scan()
    assert count(harness, "events") == 2


# --- 6. symlinks and size -----------------------------------------------------------------


async def test_a_symlink_is_failed_without_being_followed(wired, harness, tmp_path):
    outside = tmp_path / "outside" / "event.json"
    outside.parent.mkdir()
    outside.write_text(json.dumps(case("events/fire_alarm.json")), encoding="utf-8")
    before = outside.read_bytes()
    (wired.incoming / "link.json").symlink_to(outside)
    (wired.incoming / "dangling.json").symlink_to(tmp_path / "nowhere.json")

    await wired.scan()

    assert names(wired.incoming) == []
    for name in ("link.json", "dangling.json"):
        moved = wired.failed / name
        assert moved.is_symlink()
        assert "symbolic link" in wired.sidecar(name)["reason"]
    assert os.readlink(wired.failed / "link.json") == str(outside)
    assert outside.read_bytes() == before
    assert names(outside.parent) == ["event.json"]
    assert count(harness, "events") == 0
    assert count(harness, "spool_files") == 0


async def test_a_file_over_max_bytes_fails_with_a_size_reason(harness, spool):
    w = Wired(harness, spool, max_bytes=100)
    big = json.dumps(case("events/fire_alarm.json"), ensure_ascii=False).encode()
    assert len(big) > 100
    small = json.dumps(SMALL).encode()
    assert len(small) <= 100
    w.drop("big.json", big)
    w.drop("small.json", small)

    await w.scan()

    reason = w.sidecar("big.json")["reason"]
    assert "too large" in reason and str(len(big)) in reason and "100" in reason
    assert names(w.processed) == ["small.json"]
    assert count(harness, "events") == 1


async def test_a_directory_in_incoming_is_failed(wired, harness):
    (wired.incoming / "subdir").mkdir()
    await wired.scan()
    assert (wired.failed / "subdir").is_dir()
    assert "a folder" in wired.sidecar("subdir")["reason"]


# --- 7. lists of events -------------------------------------------------------------------


async def test_a_list_of_events_gives_all_of_them(wired, harness):
    batch = [case("events/fever_single.json"), case("events/fire_alarm.json"),
             case("events/bullying.json")]
    wired.drop("batch.json", batch)
    await wired.scan()

    assert names(wired.processed) == ["batch.json"]
    [results] = wired.answers["batch.json"]
    assert [r.status for r in results] == ["created", "created", "created"]
    assert count(harness, "events") == 3
    assert rows(harness, "SELECT name, events FROM spool_files") == [
        {"name": "batch.json", "events": 3}]
    stored = sorted(r["category"] for r in rows(harness, "SELECT category FROM events"))
    assert stored == ["bullying", "fire", "infectious_disease"]


async def test_a_list_with_bad_items_rejects_the_whole_file(wired, harness):
    bad_severity = dict(case("events/fire_alarm.json"), severity=5)
    bad_kind = dict(SMALL, kind="earthquake_drill")
    wired.drop("batch.json", [case("events/fever_single.json"), bad_severity,
                              case("events/bullying.json"), bad_kind])
    await wired.scan()

    assert names(wired.processed) == []
    side = wired.sidecar("batch.json")
    assert fields(side) == {"[1].severity", "[3].kind"}
    assert count(harness, "events") == 0
    assert count(harness, "incidents") == 0
    assert count(harness, "spool_files") == 0


# --- 8. name collisions -------------------------------------------------------------------


async def test_same_name_dropped_twice_keeps_both_in_processed(wired, harness):
    first = json.dumps(dict(SMALL, summary="第一份")).encode()
    second = json.dumps(dict(SMALL, summary="第二份")).encode()
    wired.drop("report.json", first)
    await wired.scan()
    wired.drop("report.json", second)
    await wired.scan()

    assert names(wired.processed) == ["report.1.json", "report.json"]
    assert (wired.processed / "report.json").read_bytes() == first
    assert (wired.processed / "report.1.json").read_bytes() == second
    assert count(harness, "events") == 2


async def test_same_name_failed_twice_keeps_both_and_their_sidecars(wired):
    wired.drop("x.json", b"{first")
    await wired.scan()
    wired.drop("x.json", b"[second")
    await wired.scan()

    assert names(wired.failed) == ["x.1.json", "x.1.json.error.json", "x.json",
                                   "x.json.error.json"]
    assert (wired.failed / "x.json").read_bytes() == b"{first"
    assert (wired.failed / "x.1.json").read_bytes() == b"[second"
    assert wired.sidecar("x.1.json")["file"] == "x.json"


async def test_a_sidecar_never_overwrites_an_earlier_failed_file(wired):
    # an operator moved a sidecar back into incoming/; later a bad file whose sidecar would
    # carry that very name arrives
    wired.drop("a.json.error.json", b'{"file": "a.json"')
    await wired.scan()
    wired.drop("a.json", b"not json")
    await wired.scan()

    assert (wired.failed / "a.json.error.json").read_bytes() == b'{"file": "a.json"'
    failed = names(wired.failed)
    [moved] = [n for n in failed if n.startswith("a.") and not n.endswith(".error.json")
               and n != "a.json.error.json"]
    assert (wired.failed / moved).read_bytes() == b"not json"
    assert wired.sidecar(moved)["file"] == "a.json"


async def test_an_undecodable_file_name_fails_with_a_valid_sidecar(wired):
    name = os.fsdecode(b"bad\xff.json")          # not UTF-8: a surrogate in the str name
    (wired.incoming / name).write_bytes(b"{not json")
    await wired.scan()
    side = json.loads((wired.failed / (name + ".error.json")).read_bytes())
    assert side["file"] == "bad\\xff.json" and side["reason"].startswith("not valid JSON")


async def test_a_valid_file_with_a_gbk_name_is_accepted(wired, harness):
    name = os.fsdecode("发热报告".encode("gbk") + b".json")  # saved by a Chinese Windows tool
    (wired.incoming / name).write_text(json.dumps(case("events/fever_single.json")), "utf-8")
    await wired.scan()
    assert not list(wired.failed.iterdir())
    with harness.store.transaction() as tx:
        assert [r[0] for r in tx.c.execute("SELECT name FROM spool_files")] == ["发热报告.json"]


# --- 9. the settle rule on the fake clock -------------------------------------------------


def write_in_place(path: Path, data: bytes, mode: str = "wb") -> None:
    with open(path, mode) as f:
        f.write(data)


async def test_a_file_written_in_place_waits_until_unchanged_for_settle(wired, harness):
    event = json.dumps(case("events/fire_alarm.json"), ensure_ascii=False).encode()
    half = len(event) // 2
    p = wired.incoming / "fire.json"
    write_in_place(p, event[:half])
    assert await wired.source.scan_once() == 0          # first look
    harness.clock.advance(wired.source.settle - 0.001)
    assert await wired.source.scan_once() == 0          # unchanged, but not for long enough
    write_in_place(p, event[half:], "ab")              # the writer comes back and appends
    harness.clock.advance(1.0)
    assert await wired.source.scan_once() == 0          # changed: the interval starts again
    harness.clock.advance(wired.source.settle - 0.5)
    assert await wired.source.scan_once() == 0
    assert names(wired.failed) == [] and names(wired.processed) == []
    harness.clock.advance(0.5)
    assert await wired.source.scan_once() == 1
    assert names(wired.processed) == ["fire.json"]
    assert (wired.processed / "fire.json").read_bytes() == event
    assert count(harness, "events") == 1


async def test_an_mtime_or_inode_change_alone_restarts_the_interval(wired, harness):
    event = json.dumps(SMALL).encode()
    p = wired.incoming / "a.json"
    write_in_place(p, event)
    await wired.source.scan_once()
    harness.clock.advance(wired.source.settle)
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # same size, new mtime
    assert await wired.source.scan_once() == 0
    harness.clock.advance(wired.source.settle)
    # replaced by another file of the same size and mtime: a new inode
    st = p.stat()
    other = wired.spool / "tmp" / "a.json"
    write_in_place(other, event)
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(other, p)
    assert await wired.source.scan_once() == 0
    harness.clock.advance(wired.source.settle)
    assert await wired.source.scan_once() == 1
    assert count(harness, "events") == 1


async def test_moved_to_is_taken_at_once_and_close_write_restarts_the_interval(wired, harness):
    from escalator.intake.spool.watch import IN_CLOSE_WRITE, IN_MOVED_TO

    wired.drop("renamed.json", dict(SMALL, summary="renamed"))
    write_in_place(wired.incoming / "written.json", json.dumps(dict(SMALL, summary="w")).encode())
    await wired.source.scan_once()                      # both seen, neither settled
    wired.source.handle_inotify_event(IN_MOVED_TO, "renamed.json")
    assert await wired.source.scan_once() == 1          # no settle wait for a rename-in
    assert names(wired.processed) == ["renamed.json"]

    harness.clock.advance(wired.source.settle - 0.1)
    wired.source.handle_inotify_event(IN_CLOSE_WRITE, "written.json")  # written again
    harness.clock.advance(0.1)
    assert await wired.source.scan_once() == 0          # the interval restarted at the close
    harness.clock.advance(wired.source.settle)
    assert await wired.source.scan_once() == 1
    assert count(harness, "events") == 2


async def test_inotify_events_for_ignored_names_are_ignored(wired, harness):
    from escalator.intake.spool.watch import IN_MOVED_TO

    wired.drop("x.json.part", SMALL)
    wired.source.handle_inotify_event(IN_MOVED_TO, "x.json.part")
    assert await wired.source.scan_once() == 0
    assert names(wired.incoming) == ["x.json.part"]


async def test_settle_zero_takes_at_first_sight(harness, spool):
    w = Wired(harness, spool, settle=0)
    write_in_place(w.incoming / "a.json", json.dumps(SMALL).encode())
    assert await w.source.scan_once() == 1


@pytest.mark.parametrize("options, message", [
    ({"settle": -1}, "settle"), ({"rescan_interval": 0}, "rescan_interval"),
    ({"settle": "soon"}, "settle"), ({"setle": 2}, "unknown option"),
    ({"encoding": "klingon"}, "unknown encoding"), ({"max_bytes": 0}, "max_bytes"),
])
def test_bad_options_are_refused_naming_the_option(harness, spool, options, message):
    with pytest.raises(ValueError, match=message):
        Wired(harness, spool, **options)


def test_durations_accept_strings(harness, spool):
    w = Wired(harness, spool, settle="3s", rescan_interval="2m")
    assert (w.source.settle, w.source.rescan_interval) == (3.0, 120.0)


# --- 10. YAML -----------------------------------------------------------------------------


async def test_yaml_files_give_one_event_or_a_list(wired, harness):
    wired.drop("one.yaml", "kind: incident\ncategory: fire\nsummary: 食堂烟感报警\n"
                           "occurred_at: 2026-11-30T07:48:00+08:00\n")
    wired.drop("two.yml", "- {kind: incident, category: other, summary: 甲}\n"
                          "- kind: incident\n  category: building\n  summary: 乙\n")
    await wired.scan()
    assert names(wired.processed) == ["one.yaml", "two.yml"]
    assert count(harness, "events") == 3
    [one] = rows(harness, "SELECT body FROM events WHERE category = 'fire'")
    # a YAML timestamp is read like the same JSON string: the offset is kept
    assert json.loads(one["body"])["occurred_at"] == "2026-11-29T23:48:00Z"


@pytest.mark.parametrize("content, reason", [
    ("kind: incident\nsummary: [unclosed\n", "not valid YAML"),
    ("kind: incident\nkind: absence\n", "duplicate key"),
    ("a: &a [1,1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
     "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
     "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\n", "too large"),
])
async def test_bad_yaml_fails_with_a_reason(wired, harness, content, reason):
    wired.drop("bad.yaml", content)
    await wired.scan()
    side = wired.sidecar("bad.yaml")
    assert reason in side["reason"]
    if "unclosed" in content:
        assert re.search(r"line \d+, column \d+", side["reason"])
    assert count(harness, "events") == 0


async def test_yaml_with_bad_fields_names_them(wired):
    wired.drop("bad.yml", "kind: earthquake_drill\ncategory: fire\nsummary: x\nseverity: 5\n")
    await wired.scan()
    assert fields(wired.sidecar("bad.yml")) >= {"kind", "severity"}


# --- 11. links and folders that lead outside the spool ------------------------------------


async def test_a_hard_link_is_refused(wired, harness, tmp_path):
    outside = tmp_path / "elsewhere.json"
    outside.write_text(json.dumps(SMALL), encoding="utf-8")
    os.link(outside, wired.incoming / "linked.json")
    await wired.scan()
    assert "hard link" in wired.sidecar("linked.json")["reason"]
    assert count(harness, "events") == 0
    assert outside.read_text(encoding="utf-8") == json.dumps(SMALL)


async def test_a_processed_folder_swapped_for_a_symlink_is_not_followed(wired, harness, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.rmtree(wired.spool / "processed")
    (wired.spool / "processed").symlink_to(elsewhere)
    wired.drop("a.json", SMALL)
    await wired.scan()  # must not raise
    assert names(elsewhere) == []
    assert names(wired.incoming) == ["a.json"]     # committed, left for a later move
    assert count(harness, "events") == 1
    # the operator repairs the folder: the file is moved, and its events are not stored twice
    (wired.spool / "processed").unlink()
    harness.clock.advance(60)
    await wired.scan()
    assert names(wired.incoming) == []
    assert names(wired.processed) == ["a.json"]
    assert count(harness, "events") == 1


def test_a_spool_subfolder_that_is_a_symlink_is_refused_at_start(harness, tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    (tmp_path / "real_incoming").mkdir()
    (spool / "incoming").symlink_to(tmp_path / "real_incoming")
    with pytest.raises(ValueError, match="symlink"):
        Wired(harness, spool)


# --- 12. the live source: real inotify, real clock ----------------------------------------


def processed_files(spool: Path) -> list[str]:
    """Every file under processed/<date>/ (the date is the real local date here)."""
    return sorted(p.name for p in (spool / "processed").glob("*/*"))


class Live:
    """A running SpoolSource on the system clock (real inotify), wired to a real SQLite file."""

    def __init__(self, tmp_path: Path, **options) -> None:
        self.h = Harness(load_config(ROOT / "tests/fixtures/engine.yaml"),
                         tmp_path / "live.sqlite3", clock=SystemClock())
        self.w = Wired(self.h, tmp_path / "spool", **options)
        self.source = self.w.source
        self.task: asyncio.Task | None = None

    async def __aenter__(self) -> Live:
        self.task = asyncio.create_task(self.source.run())
        await asyncio.wait_for(self.source.ready.wait(), 10)
        return self

    async def __aexit__(self, *exc) -> None:
        assert self.task is not None
        assert not self.task.done(), "the source stopped"
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        self.h.close()

    async def after_next_pass(self) -> None:
        """Wait until a pass that started after now has finished."""
        target = self.source.passes + 2  # the one under way (if any) and a whole one after

        def done() -> bool:
            self.source._wake.set()  # keep it from idling until then
            return self.source.passes >= target

        await until(done, what="a pass")


def chunks_of(event: dict, n: int) -> list[bytes]:
    data = json.dumps(event, ensure_ascii=False).encode()
    step = len(data) // n + 1
    parts = [data[i:i + step] for i in range(0, len(data), step)]
    assert len(parts) == n
    return parts


LONG = dict(case("events/fever_single.json"), details="晨检记录：" + "体温复测38.6℃，" * 40)
PAUSE = 0.05  # the writer's pause between chunks, well under the settle interval


async def test_one_descriptor_writing_five_chunks_with_pauses_gives_one_whole_event(tmp_path):
    parts = chunks_of(LONG, 5)
    async with Live(tmp_path, settle=0.5, rescan_interval=0.02) as live:
        path = live.w.incoming / "chunked.json"
        with open(path, "wb", buffering=0) as f:
            for part in parts:
                f.write(part)
                size = f.tell()
                # a rescan has seen the file half-written, and did not take it
                await until(lambda s=size: live.source.pending.get("chunked.json", (0,))[0] == s,
                            what="a look at the partial file")
                assert processed_files(live.w.spool) == [] and names(live.w.failed) == []
                await asyncio.sleep(PAUSE)
        await until(lambda: processed_files(live.w.spool) == ["chunked.json"], what="the file")
        assert names(live.w.failed) == []
        assert live.w.ingest_calls == 1
        [results] = live.w.answers["chunked.json"]
        assert [r.status for r in results] == ["created"]
        assert count(live.h, "events") == 1
        [body] = rows(live.h, "SELECT body FROM events")
        assert json.loads(body["body"])["details"] == LONG["details"]


async def test_open_append_close_five_times_gives_one_whole_event(tmp_path):
    parts = chunks_of(LONG, 5)
    async with Live(tmp_path, settle=0.5, rescan_interval=30) as live:
        path = live.w.incoming / "samba.json"
        written = 0
        for part in parts:
            with open(path, "ab") as f:     # as Samba does: open, append, close
                f.write(part)
            written += len(part)
            # the IN_CLOSE_WRITE was seen: the file is waiting to settle, not taken
            await until(lambda w=written: live.source.pending.get("samba.json", (0,))[0] == w,
                        what="the close to be noticed")
            assert processed_files(live.w.spool) == [] and names(live.w.failed) == []
            await asyncio.sleep(PAUSE)
        await until(lambda: processed_files(live.w.spool) == ["samba.json"], what="the file")
        assert names(live.w.failed) == []
        assert live.w.ingest_calls == 1
        assert count(live.h, "events") == 1


async def test_a_file_renamed_in_is_taken_without_waiting_to_settle(tmp_path):
    async with Live(tmp_path, settle=60, rescan_interval=60) as live:
        loop = asyncio.get_running_loop()
        start = loop.time()
        live.w.drop("renamed.json", case("events/fire_alarm.json"))
        await until(lambda: processed_files(live.w.spool) == ["renamed.json"], timeout=10)
        assert loop.time() - start < 10 < live.source.settle
        assert count(live.h, "events") == 1


async def test_a_thousand_files_at_once_and_a_forced_rescan_are_each_taken_once(tmp_path):
    n = 1000
    async with Live(tmp_path, settle=0.2, rescan_interval=30) as live:
        tmp = live.w.spool / "tmp"
        for i in range(n):  # all renamed in before the source runs again: a burst
            (tmp / f"e{i:04}.json").write_text(json.dumps(dict(SMALL, summary=f"第{i}份")),
                                               encoding="utf-8")
            os.replace(tmp / f"e{i:04}.json", live.w.incoming / f"e{i:04}.json")
        live.source.request_rescan()
        await until(lambda: len(processed_files(live.w.spool)) == n, timeout=180,
                    what=f"{n} processed files")
        live.source.request_rescan()
        await live.after_next_pass()   # late inotify events and the rescan find nothing more
        assert names(live.w.incoming) == [] and names(live.w.failed) == []
        assert processed_files(live.w.spool) == [f"e{i:04}.json" for i in range(n)]
        assert live.w.ingest_calls == n
        assert all(len(a) == 1 and a[0] is not None for a in live.w.answers.values())
        assert count(live.h, "events") == n
        assert count(live.h, "spool_files") == n


async def test_without_inotify_the_rescan_takes_files(tmp_path):
    async with Live(tmp_path, settle=0.1, rescan_interval=0.05, inotify=False) as live:
        write_in_place(live.w.incoming / "nfs.json", json.dumps(SMALL).encode())
        await until(lambda: processed_files(live.w.spool) == ["nfs.json"])
        assert count(live.h, "events") == 1


async def test_when_inotify_cannot_be_set_up_it_says_so_and_rescans(tmp_path, monkeypatch):
    import asyncinotify

    def broken(*args, **kwargs):
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(asyncinotify, "Inotify", broken)
    with structlog.testing.capture_logs() as logs:
        async with Live(tmp_path, settle=0.1, rescan_interval=0.05) as live:
            live.w.drop("a.json", SMALL)
            await until(lambda: processed_files(live.w.spool) == ["a.json"])
    [warning] = [e for e in logs if e["event"] == "spool_inotify_unavailable"]
    assert "Too many open files" in warning["reason"]


async def test_a_queue_overflow_forces_a_rescan(tmp_path):
    from escalator.intake.spool.watch import IN_Q_OVERFLOW

    # no inotify and no rescan for an hour: only the overflow can make the source look
    async with Live(tmp_path, settle=0, rescan_interval=3600, inotify=False) as live:
        live.w.drop("missed.json", SMALL)
        await live.after_next_pass()
        assert names(live.w.incoming) == ["missed.json"]
        live.source.handle_inotify_event(IN_Q_OVERFLOW, None)
        await until(lambda: processed_files(live.w.spool) == ["missed.json"])
