"""Group commit for intake (escalator/group_commit.py): concurrent callers share one
transaction, each answered after the commit; one caller's failure stays its own."""

from __future__ import annotations

import asyncio
import sqlite3

from escalator.events import Event
from escalator.intake.group_commit import GroupCommit
from escalator.store.base import StoreUnavailable

OTHER = {"kind": "incident", "category": "accident", "summary": "五年级1班 学生摔伤",
         "class_id": "5-1"}


def event(n: int) -> Event:
    return Event.model_validate({**OTHER, "dedup_key": f"gc/{n}"})


def count_commits(harness) -> list[int]:
    commits: list[int] = []
    inner = harness.store.transaction

    def counted():
        commits.append(1)
        return inner()

    harness.store.transaction = counted
    return commits


async def test_concurrent_callers_share_one_commit_and_each_gets_its_results(harness):
    gc = GroupCommit(harness.engine)
    commits = count_commits(harness)
    results = await asyncio.gather(*(gc.ingest([event(i)], f"src{i % 3}") for i in range(20)))
    assert len(commits) == 1 and gc.batches == 1 and gc.callers == 20
    assert [r.status for [r] in results] == ["created"] * 20
    assert [r.source for [r] in results] == [f"src{i % 3}" for i in range(20)]
    with harness.store.transaction() as tx:
        assert all(tx.get_incident(r.incident_id).dedup_key == f"gc/{i}"
                   for i, [r] in enumerate(results))


async def test_callers_in_one_batch_dedup_against_each_other(harness):
    gc = GroupCommit(harness.engine)
    same = Event.model_validate({**OTHER, "dedup_key": "gc/same"})
    [a], [b] = await asyncio.gather(gc.ingest([same], "s"), gc.ingest([same], "s"))
    assert (a.status, b.status) == ("created", "deduplicated") and a.incident_id == b.incident_id


async def test_one_failing_caller_does_not_fail_the_others(harness, monkeypatch):
    gc = GroupCommit(harness.engine)
    ingest = harness.engine._ingest

    def failing(tx, item, *args, **kwargs):
        if item.dedup_key == "gc/3":
            raise ValueError("bad event 3")
        return ingest(tx, item, *args, **kwargs)

    monkeypatch.setattr(harness.engine, "_ingest", failing)
    results = await asyncio.gather(*(gc.ingest([event(i)], "s") for i in range(6)),
                                   return_exceptions=True)
    assert isinstance(results[3], ValueError)
    assert [r[0].status for i, r in enumerate(results) if i != 3] == ["created"] * 5
    with harness.store.transaction() as tx:
        assert tx.open_incident_by_key("gc/3") is None
        assert all(tx.open_incident_by_key(f"gc/{i}") is not None for i in (0, 1, 2, 4, 5))


async def test_a_store_that_cannot_write_fails_every_caller(harness, monkeypatch):
    gc = GroupCommit(harness.engine)

    def full(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(harness.engine, "_ingest", full)
    results = await asyncio.gather(*(gc.ingest([event(i)], "s") for i in range(4)),
                                   return_exceptions=True)
    assert all(isinstance(r, StoreUnavailable) for r in results)
    monkeypatch.undo()
    [r] = await gc.ingest([event(9)], "s")  # and it goes on once the store can write
    assert r.status == "created"


async def test_one_caller_alone_is_committed_at_once(harness):
    gc = GroupCommit(harness.engine)
    for i in range(3):
        [r] = await gc.ingest([event(i)], "s")
        assert r.status == "created"
    assert gc.batches == 3
