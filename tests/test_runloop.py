"""The run loop (escalator/engine/runloop.py) and the engine's logging after commit: passes
in bounded transactions, lanes' progress records, and no log line for a rolled-back event."""

from __future__ import annotations

import threading

import pytest
from structlog.testing import capture_logs

from escalator.engine.runloop import TICK_BATCH, RunLoop
from escalator.events import Event
from escalator.store.base import StoreUnavailable
from escalator.store.thread import StoreThread

OTHER = {"kind": "incident", "category": "accident", "summary": "五年级1班 学生摔伤",
         "class_id": "5-1"}


def event(n: int) -> Event:
    return Event.model_validate({**OTHER, "dedup_key": f"rl/{n}"})


async def test_a_timer_pass_ticks_in_bounded_transactions(harness):
    harness.engine.ingest_many([event(i) for i in range(2 * TICK_BATCH + 10)], source="t")
    await harness.settle()
    harness.clock.advance(61)  # every first step timed out at once
    sizes: list[int] = []
    tick = harness.engine.tick

    def counted(limit, **kwargs):
        fired = tick(limit, **kwargs)
        sizes.append(fired)
        return fired

    harness.engine.tick = counted
    fired = await RunLoop(harness.engine, harness.delivery, periodic=False).timer_pass()
    assert fired == 2 * TICK_BATCH + 10
    assert sizes == [TICK_BATCH, TICK_BATCH, 10, 0]  # never more than one batch per transaction


async def test_lanes_record_work_and_progress(harness):
    loop = RunLoop(harness.engine, harness.delivery)
    harness.engine.ingest(event(1), source="t")
    start = harness.clock.now()
    harness.clock.advance(5)
    assert await loop.delivery_pass() == 1
    assert loop.delivery_lane.busy and loop.delivery_lane.progress_at > start  # may have more
    assert await loop.delivery_pass() == 0
    assert not loop.delivery_lane.busy and loop.delivery_lane.stuck_for(harness.clock.now()) is None

    async def failing(limit):
        raise StoreUnavailable("disk I/O error")

    loop.delivery.run_once = failing  # a pass that fails leaves the lane busy: stuck in time
    with pytest.raises(StoreUnavailable):
        await loop.delivery_pass()
    harness.clock.advance(40)
    assert loop.delivery_lane.stuck_for(harness.clock.now()) == 40


async def test_the_daemon_runner_keeps_store_work_off_the_loop_thread(harness):
    store_thread = StoreThread()
    seen: set[str] = set()
    tick = harness.engine.tick

    def where(*args, **kwargs):
        seen.add(threading.current_thread().name)
        return tick(*args, **kwargs)

    harness.engine.tick = where
    try:
        loop = RunLoop(harness.engine, harness.delivery, db=store_thread.run)
        await loop.timer_pass()
    finally:
        store_thread.close()
    assert seen and threading.main_thread().name not in seen


def test_a_failed_ingest_transaction_logs_no_event(harness, monkeypatch):
    inner = harness.store.transaction

    class Failing:
        def __init__(self):
            self.cm = inner()

        def __enter__(self):
            tx = self.cm.__enter__()
            monkeypatch.setattr(tx, "add_spool_file", self.fail, raising=False)
            return tx

        def fail(self, **kwargs):
            raise StoreUnavailable("disk I/O error")

        def __exit__(self, *exc):
            return self.cm.__exit__(*exc)

    monkeypatch.setattr(harness.store, "transaction", Failing)
    with capture_logs() as logs, pytest.raises(StoreUnavailable):
        harness.engine.ingest_file([event(i) for i in range(3)], sha256="ab" * 32, name="f.json",
                                   source="spool")
    assert [e for e in logs if e["event"] == "event_ingested"] == []
    monkeypatch.undo()
    with capture_logs() as logs:  # committed: each event logged, after the commit
        harness.engine.ingest_file([event(i) for i in range(3)], sha256="ab" * 32, name="f.json",
                                   source="spool")
    assert len([e for e in logs if e["event"] == "event_ingested"]) == 3



async def test_the_store_thread_runs_urgent_calls_before_waiting_normal_ones():
    import asyncio

    thread = StoreThread()
    gate, order = threading.Event(), []
    try:
        first = asyncio.ensure_future(thread.run(gate.wait))  # holds the thread
        await asyncio.sleep(0.05)
        normal = [asyncio.ensure_future(thread.run(order.append, f"normal {i}")) for i in range(3)]
        await asyncio.sleep(0)
        urgent = asyncio.ensure_future(thread.urgent(order.append, "urgent"))
        await asyncio.sleep(0.05)
        gate.set()
        await asyncio.gather(first, *normal, urgent)
    finally:
        thread.close()
    assert order == ["urgent", "normal 0", "normal 1", "normal 2"]


async def test_a_store_call_error_reaches_the_caller():
    thread = StoreThread()
    try:
        with pytest.raises(ZeroDivisionError):
            await thread.urgent(lambda: 1 / 0)
        assert await thread.run(sum, [1, 2]) == 3
    finally:
        thread.close()
