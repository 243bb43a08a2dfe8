"""The spool-folder source (DESIGN.md "Spool folder") against real temp folders and a real
SQLite store: accepted files, bad files with sidecars, ignored names, content-hash dedup,
symlinks and size limits, lists of events, name collisions."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
from pathlib import Path

import pytest
from escalator_plugins.spool import SpoolSource

from escalator.config import load_config
from escalator.events import Kind
from escalator.settings import load_settings
from escalator.sources import SourceContext
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

        async def ingest(events, source):
            return [harness.engine.ingest(e, source=source) for e in events]

        async def ingest_file(events, sha256, name, source):
            results = harness.engine.ingest_file(events, sha256=sha256, name=name, source=source)
            self.answers.setdefault(name, []).append(results)
            return results

        ctx = SourceContext(settings=load_settings(spool_dir=spool), config=harness.config,
                            clock=harness.clock, ingest=ingest, ingest_file=ingest_file)
        self.source = SpoolSource("spool", options, ctx)

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

    assert await w.source.scan_once() == len(GOOD)

    assert names(w.incoming) == []
    assert names(w.failed) == []
    assert names(w.processed) == sorted(p.name for p in GOOD)
    assert not (spool / "processed" / UTC_DAY).exists()
    for src in GOOD:  # moved, not rewritten
        assert (w.processed / src.name).read_bytes() == src.read_bytes()
    # one event per file, each file's hash recorded once
    assert count(h, "events") == len(GOOD)
    assert count(h, "spool_files") == len(GOOD)
    assert sorted(r["name"] for r in rows(h, "SELECT name FROM spool_files")) == sorted(
        p.name for p in GOOD)
    stored = rows(h, "SELECT id, source FROM events")
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
    with_incident = rows(h, "SELECT COUNT(*) AS n FROM events WHERE incident_id IS NOT NULL")
    assert with_incident[0]["n"] == len(GOOD) - 1


# --- 2. bad files go to failed/ with a sidecar naming the problem --------------------------


def fields(sidecar: dict) -> set[str]:
    return {e["field"] for e in sidecar["errors"]}


async def test_wrong_types_names_severity_and_occurred_at(wired, harness):
    wired.drop("wrong_types.json", (CASES / "bad" / "wrong_types.json").read_bytes())
    await wired.source.scan_once()
    side = wired.sidecar("wrong_types.json")
    assert side["file"] == "wrong_types.json"
    assert {"severity", "occurred_at"} <= fields(side)
    assert count(harness, "events") == 0


async def test_unknown_kind_names_kind_and_the_allowed_kinds(wired, harness):
    wired.drop("unknown_kind.json", (CASES / "bad" / "unknown_kind.json").read_bytes())
    await wired.source.scan_once()
    side = wired.sidecar("unknown_kind.json")
    [err] = [e for e in side["errors"] if e["field"] == "kind"]
    assert "earthquake_drill" in err["message"]
    for k in Kind:
        assert k.value in err["message"]
    assert count(harness, "events") == 0


async def test_huge_summary_is_rejected_with_a_size_error(wired, harness):
    wired.drop("huge_summary.json", (CASES / "bad" / "huge_summary.json").read_bytes())
    await wired.source.scan_once()
    side = wired.sidecar("huge_summary.json")
    [err] = [e for e in side["errors"] if e["field"] == "summary"]
    assert "too long" in err["message"] and "500" in err["message"]
    assert count(harness, "events") == 0
    assert harness.channel.sent == []


@pytest.mark.parametrize("name", ["truncated.json", "not_json.txt"])
async def test_not_json_names_the_line(wired, harness, name):
    wired.drop(name, (CASES / "bad" / name).read_bytes())
    await wired.source.scan_once()
    side = wired.sidecar(name)
    assert side["reason"].startswith("not valid JSON")
    assert re.search(r"line \d+ column \d+", side["reason"])
    assert count(harness, "events") == 0


async def test_all_bad_files_fail_and_scanning_goes_on(wired, harness):
    for src in BAD:
        wired.drop(src.name, src.read_bytes())
    # sorted between the bad files, and after all of them
    wired.drop("fever_single.json", (CASES / "events" / "fever_single.json").read_bytes())
    wired.drop("zz_fire.json", (CASES / "events" / "fire_alarm.json").read_bytes())

    assert await wired.source.scan_once() == len(BAD) + 2

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
    await wired.source.scan_once()  # must not raise
    assert names(wired.incoming) == []
    assert wired.sidecar("a_poison.json")["reason"].startswith("not valid JSON")
    assert names(wired.processed) == ["b_good.json"]
    assert count(harness, "events") == 1


async def test_a_file_that_vanished_is_skipped(wired, harness):
    await wired.source.take(wired.incoming / "gone.json")  # e.g. taken by another process
    assert names(wired.failed) == []
    assert count(harness, "events") == 0


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
async def test_an_unreadable_file_fails_and_scanning_goes_on(wired, harness):
    p = wired.drop("a_locked.json", case("events/fire_alarm.json"))
    p.chmod(0)
    wired.drop("b_good.json", case("events/fever_single.json"))
    await wired.source.scan_once()
    assert "a_locked.json" in names(wired.failed)
    assert names(wired.processed) == ["b_good.json"]
    assert count(harness, "events") == 1


# --- 3. files present at start ------------------------------------------------------------


async def test_files_present_before_start_are_taken_by_the_first_scan(harness, spool):
    incoming = spool / "incoming"
    incoming.mkdir(parents=True)
    shutil.copyfile(CASES / "events" / "fire_alarm.json", incoming / "fire_alarm.json")
    shutil.copyfile(CASES / "events" / "bullying.json", incoming / "bullying.json")

    w = Wired(harness, spool, poll_interval=3600)
    scanned = asyncio.Event()
    scan = w.source.scan_once

    async def first_scan_then_signal():
        n = await scan()
        scanned.set()
        return n

    w.source.scan_once = first_scan_then_signal
    task = asyncio.create_task(w.source.run())
    try:
        await asyncio.wait_for(scanned.wait(), 5)
        assert names(w.incoming) == []
        assert names(w.processed) == ["bullying.json", "fire_alarm.json"]
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

    assert await wired.source.scan_once() == 1

    assert names(wired.incoming) == sorted(ignored)
    assert names(wired.processed) == ["real.json"]
    assert names(wired.failed) == []
    assert count(harness, "events") == 1
    await wired.source.scan_once()  # and on every later scan
    assert names(wired.incoming) == sorted(ignored)
    assert count(harness, "events") == 1


# --- 5. content-hash dedup ----------------------------------------------------------------


async def test_redropping_identical_content_adds_nothing(wired, harness):
    data = (CASES / "events" / "fever_single.json").read_bytes()
    wired.drop("fever_single.json", data)
    await wired.source.scan_once()
    assert count(harness, "events") == 1
    incidents = count(harness, "incidents")

    wired.drop("fever_single.json", data)          # same name, same bytes
    wired.drop("copy_of_fever.json", data)          # other name, same bytes
    await wired.source.scan_once()

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
    await wired.source.scan_once()
    assert count(harness, "events") == 2


# --- 6. symlinks and size -----------------------------------------------------------------


async def test_a_symlink_is_failed_without_being_followed(wired, harness, tmp_path):
    outside = tmp_path / "outside" / "event.json"
    outside.parent.mkdir()
    outside.write_text(json.dumps(case("events/fire_alarm.json")), encoding="utf-8")
    before = outside.read_bytes()
    (wired.incoming / "link.json").symlink_to(outside)
    (wired.incoming / "dangling.json").symlink_to(tmp_path / "nowhere.json")

    await wired.source.scan_once()

    assert names(wired.incoming) == []
    for name in ("link.json", "dangling.json"):
        moved = wired.failed / name
        assert moved.is_symlink()
        assert "symlink" in wired.sidecar(name)["reason"]
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

    await w.source.scan_once()

    reason = w.sidecar("big.json")["reason"]
    assert "too large" in reason and str(len(big)) in reason and "100" in reason
    assert names(w.processed) == ["small.json"]
    assert count(harness, "events") == 1


async def test_a_directory_in_incoming_is_failed(wired, harness):
    (wired.incoming / "subdir").mkdir()
    await wired.source.scan_once()
    assert (wired.failed / "subdir").is_dir()
    assert "not a regular file" in wired.sidecar("subdir")["reason"]


# --- 7. lists of events -------------------------------------------------------------------


async def test_a_list_of_events_gives_all_of_them(wired, harness):
    batch = [case("events/fever_single.json"), case("events/fire_alarm.json"),
             case("events/bullying.json")]
    wired.drop("batch.json", batch)
    await wired.source.scan_once()

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
    await wired.source.scan_once()

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
    await wired.source.scan_once()
    wired.drop("report.json", second)
    await wired.source.scan_once()

    assert names(wired.processed) == ["report.1.json", "report.json"]
    assert (wired.processed / "report.json").read_bytes() == first
    assert (wired.processed / "report.1.json").read_bytes() == second
    assert count(harness, "events") == 2


async def test_same_name_failed_twice_keeps_both_and_their_sidecars(wired):
    wired.drop("x.json", b"{first")
    await wired.source.scan_once()
    wired.drop("x.json", b"[second")
    await wired.source.scan_once()

    assert names(wired.failed) == ["x.1.json", "x.1.json.error.json", "x.json",
                                   "x.json.error.json"]
    assert (wired.failed / "x.json").read_bytes() == b"{first"
    assert (wired.failed / "x.1.json").read_bytes() == b"[second"
    assert wired.sidecar("x.1.json")["file"] == "x.json"


async def test_a_sidecar_never_overwrites_an_earlier_failed_file(wired):
    # an operator moved a sidecar back into incoming/; later a bad file whose sidecar would
    # carry that very name arrives
    wired.drop("a.json.error.json", b'{"file": "a.json"')
    await wired.source.scan_once()
    wired.drop("a.json", b"not json")
    await wired.source.scan_once()

    assert (wired.failed / "a.json.error.json").read_bytes() == b'{"file": "a.json"'
    failed = names(wired.failed)
    [moved] = [n for n in failed if n.startswith("a.") and not n.endswith(".error.json")
               and n != "a.json.error.json"]
    assert (wired.failed / moved).read_bytes() == b"not json"
    assert wired.sidecar(moved)["file"] == "a.json"
