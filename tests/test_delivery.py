"""The delivery pipeline on a fake clock and a real SQLite file: dedup against the ledger,
throttle (per channel and per address), retry with backoff, failover, re-check, ledger rows."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta
from typing import Any, ClassVar

import pytest

from escalator.config import load_config
from escalator.config.models import DigestConfig
from escalator.delivery.channels import DeliveryResult, DeliveryStatus, Message
from escalator.delivery.pipeline import ADDRESS_LIMITS, RETRY_DEADLINE, plan_hold
from escalator.delivery.ratelimit import RateLimit
from escalator.events import Event
from escalator.store.base import Notification
from escalator.testing import Harness, RecordingChannel

CONFIG = """
school:
  name: 测试小学
roles:
  crew: {name: 班组}
  crowd: {name: 多人}
people:
  - {id: p1, name: 甲, roles: [crew], contacts: [{channel: robot, to: "-"}]}
  - {id: p2, name: 乙, roles: [crew], contacts: [{channel: robot, to: "-"}]}
  - {id: p3, name: 丙, roles: [crew], contacts: [{channel: robot, to: "13800000003"}]}
  - {id: c1, name: 子, roles: [crowd], contacts: [{channel: limited, to: "1"}]}
  - {id: c2, name: 丑, roles: [crowd], contacts: [{channel: limited, to: "2"}]}
  - {id: c3, name: 寅, roles: [crowd], contacts: [{channel: limited, to: "3"}]}
  - {id: solo, name: 王老师, contacts: [{channel: sms, to: "13800000001"}, {channel: mail, to: "w@example.edu"}]}
  - {id: duo1, name: 李老师, contacts: [{channel: sms, to: "13800000011"}]}
  - {id: duo2, name: 赵老师, contacts: [{channel: sms, to: "13800000012"}]}
channels:
  robot: {type: console}
  limited: {type: console}
  sms: {type: console}
  mail: {type: console}
duty_roster:
  - {person: solo}
policies:
  shared:
    steps:
      - {targets: [role:crew], mode: inform}
  crowd:
    steps:
      - {targets: [role:crowd], mode: inform}
  solo:
    steps:
      - {targets: [person:solo], mode: inform}
  pair:
    steps:
      - {targets: [person:duo1, person:duo2], timeout: 3600, mode: escalate}
  report:
    steps:
      - {targets: [person:duo1, person:duo2], timeout: 3600, mode: report}
      - {targets: [person:solo], mode: inform}
routes:
  - match: {labels: {flow: shared}}
    policy: shared
  - match: {labels: {flow: crowd}}
    policy: crowd
  - match: {labels: {flow: pair}}
    policy: pair
  - match: {labels: {flow: report}}
    policy: report
  - default: true
    policy: solo
"""


RETRY_MAX_STEP = 400.0
"""Seconds longer than the longest backoff (300 s + 20 %)."""


def event(flow: str, n: int = 0) -> Event:
    return Event.model_validate({"kind": "incident", "category": "accident", "summary": f"{flow} {n}",
                                 "dedup_key": f"{flow}/{n}", "labels": {"flow": flow}})


class LimitedChannel(RecordingChannel):
    """A recording channel declaring a rate limit of 2 messages a minute, as the built-in robots do."""

    rate_limits: ClassVar[tuple[RateLimit, ...]] = (RateLimit(2, 60.0, "test: 2 a minute"),)


class HoldingChannel(RecordingChannel):
    """Holds every message back for its own rate limit ``holds`` times, then delivers."""

    def __init__(self, holds: int) -> None:
        super().__init__("sms")
        self.holds = holds

    async def send(self, message: Message) -> DeliveryResult:
        self.sent.append(message)
        if self.holds:
            self.holds -= 1
            return DeliveryResult(DeliveryStatus.failed_retryable,
                                  "held back: test allows 1 message a minute (room again in 60 s)",
                                  retry_after=60.0)
        return DeliveryResult(DeliveryStatus.delivered, "ok")


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "delivery.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    return load_config(path)


@pytest.fixture
def h(config, tmp_path):
    """A harness whose channel ids each have their own recording channel (``h.ch[id]``)."""
    harness = Harness(config, tmp_path / "escalator.sqlite3")
    harness.ch = {"robot": RecordingChannel("robot"), "limited": LimitedChannel("limited"),
                  "sms": RecordingChannel("sms"), "mail": RecordingChannel("mail")}
    harness.delivery.channels = harness.ch
    harness.delivery.rng = random.Random(7)
    yield harness
    harness.close()


def rows(h: Harness, incident_id: int | None = None) -> list[Notification]:
    with h.store.transaction() as tx:
        if incident_id is not None:
            return tx.notifications_of(incident_id)
        return [n for i in range(1, 100) for n in tx.notifications_of(i)]


def ledger(h: Harness, notification_id: int) -> list[str]:
    with h.store.transaction() as tx:
        return [r[0] for r in tx.c.execute(
            "SELECT outcome FROM deliveries WHERE notification_id = ? ORDER BY id", (notification_id,))]


def ingest(h: Harness, ev: Event) -> int:
    return h.engine.ingest(ev, source="test").incident_id


def delivery_config(h: Harness, **update) -> None:
    """Run ``h``'s delivery worker with the ``delivery:`` settings changed by ``update``."""
    h.delivery.config = h.config.model_copy(update={"delivery": h.config.delivery.model_copy(
        update=update)})


def without_digests(h: Harness) -> None:
    """Every message on its own (``delivery: {digest: off}``), as before digests existed."""
    delivery_config(h, digest=DigestConfig(enabled=False))


async def test_recipients_sharing_a_group_address_get_one_message_and_the_ledger_says_deduplicated(h):
    inc = ingest(h, event("shared"))
    await h.settle()
    sent = h.ch["robot"].sent
    # 甲 and 乙 share the group robot without a mention: one message; 丙 is @-mentioned: another
    assert sorted(m.address for m in sent) == ["-", "13800000003"]
    by_person = {n.recipient_id: n for n in rows(h, inc)}
    assert {n.status for n in by_person.values()} == {"delivered"}
    outcomes = sorted(ledger(h, by_person[p].id)[0] for p in ("p1", "p2"))
    assert outcomes == ["deduplicated", "delivered"]
    assert ledger(h, by_person["p3"].id) == ["delivered"]
    dup = next(by_person[p] for p in ("p1", "p2") if ledger(h, by_person[p].id) == ["deduplicated"])
    assert dup.attempts == 0
    assert h.timeline(inc).count("notified") == 3  # everyone was reached


async def test_the_same_address_in_another_incident_is_not_deduplicated(h):
    await h.send(event("shared", 1))
    await h.send(event("shared", 2))
    assert len(h.ch["robot"].sent) == 4  # dedup is per step run, not across incidents


async def test_channel_rate_limit_delays_without_counting_an_attempt(h):
    t0 = h.clock.now()
    inc = ingest(h, event("crowd"))
    await h.settle()
    assert len(h.ch["limited"].sent) == 2  # the channel declares 2 a minute
    held = [n for n in rows(h, inc) if n.status == "pending"]
    assert len(held) == 1
    assert held[0].attempts == 0 and held[0].first_attempt_at is None
    assert held[0].due_at == t0 + timedelta(seconds=60)
    assert ledger(h, held[0].id) == []  # nothing was attempted
    await h.advance(59)
    assert len(h.ch["limited"].sent) == 2
    await h.advance(1)
    assert len(h.ch["limited"].sent) == 3
    assert {n.status for n in rows(h, inc)} == {"delivered"}
    assert "failover" not in h.timeline(inc)


async def test_address_rate_limit_delays_and_keeps_the_order_per_recipient(h):
    without_digests(h)  # with digests, 13 waiting messages go as one (tests below)
    limit = ADDRESS_LIMITS[0]
    incidents = [ingest(h, event("solo", i)) for i in range(limit.count + 3)]
    await h.settle()
    sent = h.ch["sms"].sent
    assert len(sent) == limit.count
    waiting = [n for i in incidents for n in rows(h, i) if n.status == "pending"]
    assert len(waiting) == 3 and all(n.attempts == 0 for n in waiting)
    await h.advance(limit.per_seconds)
    assert [m.incident_id for m in sent] == incidents  # all delivered, in order
    assert h.ch["mail"].sent == []  # a rate limit never fails over
    assert all(n.attempts == 1 for i in incidents for n in rows(h, i))


async def test_retryable_is_retried_with_backoff_then_delivered(h):
    sms = h.ch["sms"]
    sms.outcomes.extend([DeliveryStatus.failed_retryable, DeliveryStatus.failed_retryable])
    t0 = h.clock.now()
    inc = ingest(h, event("solo"))
    await h.settle()
    (n,) = rows(h, inc)
    assert (n.status, n.attempts, n.first_attempt_at) == ("pending", 1, t0)
    first_delay = (n.due_at - t0).total_seconds()
    assert 4.0 <= first_delay <= 6.0  # 5 s ± 20 %
    h.clock.set(n.due_at - timedelta(milliseconds=1))
    await h.settle()
    assert len(sms.sent) == 1  # not before its due time
    await h.advance(0.001)
    (n,) = rows(h, inc)
    assert (n.status, n.attempts) == ("pending", 2)
    second_delay = (n.due_at - h.clock.now()).total_seconds()
    assert 8.0 <= second_delay <= 12.0  # doubled
    await h.advance(second_delay)
    (n,) = rows(h, inc)
    assert (n.status, n.attempts) == ("delivered", 3)
    assert ledger(h, n.id) == ["failed_retryable", "failed_retryable", "delivered"]
    assert h.ch["mail"].sent == []


async def test_retryable_past_the_deadline_fails_over_to_the_next_contact_method(h):
    h.ch["sms"].outcomes.extend([DeliveryStatus.failed_retryable] * 100)
    inc = ingest(h, event("solo"))
    await h.settle()
    await h.advance(RETRY_DEADLINE - 1)
    assert h.ch["mail"].sent == []  # still within the deadline
    await h.advance(RETRY_MAX_STEP)
    assert [m.address for m in h.ch["mail"].sent] == ["w@example.edu"]
    sms_row, mail_row = rows(h, inc)
    assert sms_row.status == "failed" and mail_row.status == "delivered"
    assert ledger(h, sms_row.id) == ["failed_retryable"] * sms_row.attempts  # every attempt
    assert sms_row.attempts == len(h.ch["sms"].sent) > 3
    tl = h.timeline(inc)
    assert tl.index("failover") < tl.index("notified")


async def test_permanent_fails_over_at_once(h):
    h.ch["sms"].outcomes.append(DeliveryStatus.failed_permanent)
    inc = ingest(h, event("solo"))
    await h.settle()
    assert len(h.ch["sms"].sent) == 1 and len(h.ch["mail"].sent) == 1
    sms_row, mail_row = rows(h, inc)
    assert (sms_row.status, sms_row.attempts) == ("failed", 1)
    assert mail_row.status == "delivered" and mail_row.contact_index == 1
    assert ledger(h, sms_row.id) == ["failed_permanent"]
    assert ledger(h, mail_row.id) == ["delivered"]


async def test_channel_hold_back_delays_without_using_the_retry_deadline(h):
    holds = int(RETRY_DEADLINE // 60) + 5  # held back for longer than the whole deadline
    h.delivery.channels = dict(h.ch, sms=HoldingChannel(holds))
    inc = ingest(h, event("solo"))
    await h.settle()
    (n,) = rows(h, inc)
    assert (n.status, n.attempts, n.first_attempt_at) == ("pending", 0, None)
    assert (n.due_at - h.clock.now()).total_seconds() == 60.0  # as the channel said
    await h.advance(60 * (holds + 1))
    (n,) = rows(h, inc)
    assert (n.status, n.attempts) == ("delivered", 1)
    assert h.ch["mail"].sent == []  # no failover
    assert ledger(h, n.id) == ["failed_retryable"] * holds + ["delivered"]  # every call a row


async def test_held_back_is_the_typed_retry_after_not_the_detail_text(h):
    class SaysHeldBack(RecordingChannel):  # the words without retry_after: an ordinary failure
        async def send(self, message: Message) -> DeliveryResult:
            self.sent.append(message)
            return DeliveryResult(DeliveryStatus.failed_retryable, "held back (room again in 60 s)")

    h.delivery.channels = dict(h.ch, sms=SaysHeldBack("sms"))
    inc = ingest(h, event("solo"))
    await h.settle()
    (n,) = rows(h, inc)
    assert (n.status, n.attempts) == ("pending", 1)  # an attempt counted: a retry, not a hold
    assert n.first_attempt_at is not None


def test_a_hold_moves_the_deadline_start_by_the_wait(h):
    t0 = h.clock.now()
    n = Notification(1, 1, 1, "person", "solo", "王老师", "sms", "1", 0, "sending", t0, 2, t0,
                     "tok", True, first_attempt_at=t0 - timedelta(seconds=100))
    plan = plan_hold(n, t0, 30.0)
    assert plan.attempts == 2 and plan.due_at == t0 + timedelta(seconds=30)
    assert plan.first_attempt_at == t0 - timedelta(seconds=70)


@pytest.mark.parametrize("flow", ["pair", "report"])
async def test_an_acknowledgement_after_the_claim_stops_the_sends_not_yet_made(h, flow):
    # "pair": the ack acknowledges the incident; "report": it only confirms the step, the
    # incident stays triggered and the row's own cancellation is what stops the send.
    # One send at a time per channel: the second row is re-checked after the first send (with
    # more, it may already be in flight at the ack: the next test)
    delivery_config(h, concurrency_per_channel=1)
    sms = h.ch["sms"]
    inc = ingest(h, event(flow))
    original = sms.send

    async def send_then_ack(message: Message) -> DeliveryResult:
        result = await original(message)
        if len(sms.sent) == 1:  # the other row is already claimed, not yet sent
            h.engine.acknowledge(inc, actor="duo1", via="test")
        return result

    sms.send = send_then_ack
    assert await h.delivery.run_once() == 2  # both rows claimed in one batch
    assert [m.address for m in sms.sent] == ["13800000011"]
    first, second = rows(h, inc)[:2]  # the ack cancelled both; the first was already on its way
    assert (first.status, second.status) == ("cancelled", "cancelled")
    assert ledger(h, first.id) == ["delivered"] and ledger(h, second.id) == []
    await h.advance(3600)
    assert "13800000012" not in [m.address for m in sms.sent]
    assert h.incident(inc).state == ("acknowledged" if flow == "pair" else "triggered")


async def test_every_store_transaction_of_the_worker_goes_through_the_db_runner(h):
    from escalator.store.thread import StoreThread

    thread = StoreThread()
    calls: list[str] = []

    async def run(fn, /, *args, **kwargs):
        calls.append(getattr(fn, "__name__", "?"))
        return await thread.run(fn, *args, **kwargs)

    async def read(fn, /, *args, **kwargs):
        calls.append(getattr(fn, "__name__", "?"))
        return await thread.read(fn, *args, **kwargs)

    h.delivery.db, h.delivery.read = run, read
    real, real_snapshot = h.store.transaction, h.store.snapshot
    on_loop: list[bool] = []

    def on_the_loop() -> bool:
        import threading
        return threading.current_thread() is threading.main_thread()

    def watched():
        on_loop.append(on_the_loop())
        return real()

    def watched_snapshot():
        on_loop.append(on_the_loop())
        return real_snapshot()

    h.store.transaction, h.store.snapshot = watched, watched_snapshot
    try:
        inc = ingest(h, event("solo"))
        on_loop.clear()
        assert await h.delivery.run_once() == 1
    finally:
        h.store.transaction, h.store.snapshot = real, real_snapshot
        thread.close()
    # every transaction ran on the store thread, the re-check's snapshot on the read thread
    assert calls == ["_tx", "_snapshot", "_tx"] and len(on_loop) >= 3 and not any(on_loop)
    assert [n.status for n in rows(h, inc)] == ["delivered"]


async def test_the_recheck_before_sends_does_not_wait_for_the_write_transaction_running(h):
    # under a burst the store thread runs intake commits of hundreds of events; the re-check
    # before each group of sends reads a snapshot on the read thread, so the sends go on while
    # such a commit holds the store thread and the write lock, and only the record waits for it
    import threading

    from escalator.store.thread import StoreThread

    without_digests(h)
    thread, gate, held = StoreThread(), threading.Event(), []

    def long_commit() -> None:  # an intake commit that takes its time
        with h.store.transaction():
            held.append(True)
            gate.wait(10)

    async def db(fn, /, *args):
        result = await thread.urgent(fn, *args)
        if args and getattr(args[0], "__name__", "") == "_claim" and not held:
            asyncio.ensure_future(thread.run(long_commit))
            while not held:
                await asyncio.sleep(0.001)
        return result

    h.delivery.db, h.delivery.read = db, thread.read
    incidents = [ingest(h, event("solo", i)) for i in range(3)]
    try:
        task = asyncio.ensure_future(h.delivery.run_once())
        deadline = asyncio.get_running_loop().time() + 10
        while len(h.ch["sms"].sent) < 3 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.005)
        assert [m.incident_id for m in h.ch["sms"].sent] == incidents  # sent, in order
        assert not task.done()  # the record waits for the commit running
        gate.set()
        assert await task == 3
    finally:
        gate.set()
        thread.close()
    assert [rows(h, i)[0].status for i in incidents] == ["delivered"] * 3


async def test_a_row_the_snapshot_finds_resolved_is_not_sent_and_cancelled_in_the_record(h):
    without_digests(h)
    inc = ingest(h, event("solo"))
    claimed: list[Any] = []
    real_read = h.delivery.read

    async def read(fn, /, *args):
        if not claimed:  # between the claim and the re-check: resolved (its rows left alone)
            claimed.append(True)
            with h.store.transaction() as tx:
                tx.update_incident(inc, state="resolved")
        return await real_read(fn, *args)

    h.delivery.read = read
    assert await h.delivery.run_once() == 1
    assert h.ch["sms"].sent == []
    assert [n.status for n in rows(h, inc)] == ["cancelled"]


class FailingFirst(RecordingChannel):
    """Answers the first message "retry later" (a 503), the rest delivered."""

    async def send(self, message: Message) -> DeliveryResult:
        self.sent.append(message)
        if len(self.sent) == 1:
            return DeliveryResult(DeliveryStatus.failed_retryable, "HTTP 503")
        return DeliveryResult(DeliveryStatus.delivered, "ok")


async def test_a_retry_in_a_claimed_batch_holds_the_later_rows_to_that_address_behind_it(h):
    # three messages to one address claimed together: the first is to be retried, so the two
    # after it are not sent in this pass — they wait (pending) until its retry, then go in order
    without_digests(h)
    h.ch["sms"] = channel = FailingFirst("sms")
    h.delivery.channels = h.ch
    incidents = [ingest(h, event("solo", i)) for i in range(3)]
    assert await h.delivery.run_once() == 3
    assert [m.incident_id for m in channel.sent] == [incidents[0]]
    first, second, third = (rows(h, i)[0] for i in incidents)
    assert (first.status, second.status, third.status) == ("pending", "pending", "pending")
    assert second.due_at == third.due_at == first.due_at > h.clock.now()
    assert ledger(h, second.id) == ledger(h, third.id) == []  # no attempt counted
    await h.advance(RETRY_MAX_STEP)
    assert [m.incident_id for m in channel.sent] == [incidents[0], *incidents]
    assert {n.status for i in incidents for n in rows(h, i)} == {"delivered"}


async def test_one_claim_transaction_one_recheck_and_one_record_for_a_batch_to_one_address(h):
    without_digests(h)
    calls: list[str] = []

    async def run(fn, /, *args, **kwargs):
        calls.append(getattr(args[0], "__name__", "?") if args else fn.__name__)
        return fn(*args, **kwargs)

    h.delivery.db = h.delivery.read = run
    for i in range(5):
        ingest(h, event("solo", i))
    assert await h.delivery.run_once() == 5
    # 5 rows, 8 send slots: claimed and prepared in one transaction, re-checked in one read, recorded
    # in one — not two transactions per message
    assert calls == ["_claim", "_recheck", "_record_all"]
    assert len(h.ch["sms"].sent) == 5


async def test_a_pass_sends_at_most_its_claim_limit_of_messages_with_digests_on(h):
    # digests on (after 5): 4 rows to one address are not a digest, so each is a message;
    # a pass of 2 sends 2 of them (the rows it takes beyond its claim go back to pending):
    # one kill between a send and its record re-sends at most one pass (tests/test_crash_lane.py)
    delivery_config(h, digest=DigestConfig(enabled=True, after=5))
    incidents = [ingest(h, event("solo", i)) for i in range(4)]
    assert await h.delivery.run_once(2) == 2
    assert [m.incident_id for m in h.ch["sms"].sent] == incidents[:2]
    assert [rows(h, i)[0].status for i in incidents] == ["delivered", "delivered", "pending",
                                                         "pending"]
    assert await h.delivery.run_once(2) == 2
    assert [m.incident_id for m in h.ch["sms"].sent] == incidents
