"""Issue "A morning's burst": delivery that keeps up (concurrency per channel, order per
address, priority, digests, critical past escalator's own address limit), no level passed over
untold (the step timeout counts from the first delivery, capped), and the measured own-code
costs (the order query uses an index; the notifiable check skips events without a diagnosis).
On the FakeClock with the Harness; a real local HTTP server where a channel is involved."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import ClassVar

import pytest
from escalator_plugins.sms_http import SmsHttpChannel

from escalator.config import load_config
from escalator.config.models import ClustersConfig, DigestConfig
from escalator.delivery.channels import DeliveryResult, DeliveryStatus, Message
from escalator.delivery.pipeline import ADDRESS_LIMITS, DIGEST_LINES
from escalator.events import Event
from escalator.school import clusters
from escalator.testing import Harness, RecordingChannel
from tests.channel_servers import Answer, HTTPRecorder

CONFIG = """
school:
  name: 测试小学
  language: zh
people:
  - {id: duty, name: 值班员, contacts: [{channel: sms, to: "13800000001"}]}
  - {id: boss, name: 校长, contacts: [{channel: sms, to: "13800000002"}]}
  - {id: m1, name: 甲, contacts: [{channel: sms, to: "13900000001"}]}
  - {id: m2, name: 乙, contacts: [{channel: sms, to: "13900000002"}]}
  - {id: m3, name: 丙, contacts: [{channel: sms, to: "13900000003"}]}
  - {id: m4, name: 丁, contacts: [{channel: sms, to: "13900000004"}]}
channels:
  sms: {type: console}
policies:
  chain:
    steps:
      - {targets: [person:duty], timeout: 300, mode: escalate}
      - {targets: [person:boss], timeout: 3600, mode: escalate}
  many:
    steps:
      - {targets: [person:m1, person:m2, person:m3, person:m4], mode: inform}
routes:
  - match: {labels: {flow: many}}
    policy: many
  - default: true
    policy: chain
"""
TIMEOUT = 300.0
CAP = 600.0


def event(n: int, severity: str = "medium", flow: str = "chain") -> Event:
    return Event.model_validate({"kind": "incident", "category": "accident", "severity": severity,
                                 "summary": f"事件 {n}", "dedup_key": f"burst/{n}",
                                 "labels": {"flow": flow}})


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "burst.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    return load_config(path)


@pytest.fixture
def h(config, tmp_path):
    harness = Harness(config, tmp_path / "escalator.sqlite3")
    yield harness
    harness.close()


def with_delivery(h: Harness, **update) -> None:
    """The engine and the worker with ``delivery:`` settings changed."""
    config = h.config.model_copy(update={"delivery": h.config.delivery.model_copy(update=update)})
    h.engine.reload(config)
    h.delivery.config = config


def ledger(h: Harness) -> list[tuple[int, str, str]]:
    with h.store.transaction() as tx:
        return [tuple(r) for r in tx.c.execute(
            "SELECT notification_id, outcome, detail FROM deliveries ORDER BY id")]


def timeline(h: Harness, incident_id: int) -> list:
    with h.store.transaction() as tx:
        return tx.timeline(incident_id)


# ------------------------------------------------------------------------------ config


def test_the_delivery_section_defaults_and_digest_off(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG + "delivery:\n  digest: off\n", encoding="utf-8")
    cfg = load_config(path)
    assert cfg.delivery.digest.enabled is False
    assert cfg.delivery.concurrency_per_channel == 8 and cfg.delivery.step_wait_cap == CAP
    path.write_text(CONFIG + "delivery:\n  concurrency_per_channel: 2\n"
                    "  digest: {after: 3}\n  step_wait_cap: 2m\n", encoding="utf-8")
    cfg = load_config(path)
    assert (cfg.delivery.concurrency_per_channel, cfg.delivery.digest.after,
            cfg.delivery.digest.enabled, cfg.delivery.step_wait_cap) == (2, 3, True, 120.0)


def test_the_benchmarks_digests_off_constant_parses_as_disabled(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    try:
        import harness as bench
    finally:
        sys.path.pop(0)
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG + bench.DIGESTS_OFF, encoding="utf-8")
    assert load_config(path).delivery.digest.enabled is False


# ------------------------------------------------------------------------------ point 1


async def test_more_than_after_messages_waiting_for_one_address_go_as_one_digest(h):
    incidents = [h.engine.ingest(event(i), source="test").incident_id for i in range(12)]
    await h.settle()
    (msg,) = h.channel.sent  # one message for twelve
    assert msg.incident_id == incidents[0]
    assert "另有 11 条事件待处理" in msg.body
    assert f"#{incidents[1]} " in msg.body and f"#{incidents[DIGEST_LINES]} " in msg.body
    assert "及另外 1 条" in msg.body  # the eleventh is counted, not listed
    rows = ledger(h)
    assert len(rows) == 12  # nothing dropped: every notification is in the ledger
    head = rows[0][0]
    assert rows[0][1] == "delivered"
    assert all(o == "digested" and f"notification {head}" in d for _, o, d in rows[1:])
    with h.store.transaction() as tx:
        assert {n.status for i in incidents for n in tx.notifications_of(i)} == {"delivered"}
    assert "notified" in [t.type for t in timeline(h, incidents[5])]


async def test_a_digest_for_a_group_lists_no_summary(h):
    class Group(RecordingChannel):
        audience: ClassVar[str] = "group"

    h.delivery.channels = {"sms": Group("sms")}
    for i in range(7):
        h.engine.ingest(event(i), source="test")
    await h.settle()
    (msg,) = h.delivery.channels["sms"].sent
    digest = msg.body.split("另有", 1)[1]
    assert "事件 " not in digest and "accident" in digest


async def test_up_to_after_messages_go_one_by_one_and_digests_can_be_switched_off(h):
    for i in range(5):  # after: 5 — not more than five
        h.engine.ingest(event(i), source="test")
    await h.settle()
    assert len(h.channel.sent) == 5
    with_delivery(h, digest=DigestConfig(enabled=False))
    for i in range(5, 12):
        h.engine.ingest(event(i), source="test")
    await h.settle()
    await h.advance(60)
    assert len(h.channel.sent) == 12 and "另有" not in "".join(m.body for m in h.channel.sent)


async def test_a_failed_digest_is_an_attempt_of_every_row_retried_on_its_own(h):
    h.channel.outcomes.append(DeliveryStatus.failed_retryable)
    for i in range(7):
        h.engine.ingest(event(i), source="test")
    await h.settle()
    rows = ledger(h)
    assert [o for _, o, _ in rows] == ["failed_retryable"] * 7
    await h.advance(20)  # after the backoff: one digest again, delivered
    assert len(h.channel.sent) == 2
    assert sorted(o for _, o, _ in ledger(h)[7:]) == ["delivered"] + ["digested"] * 6


async def test_critical_goes_before_the_rest_and_past_escalators_own_address_limit(h):
    with_delivery(h, digest=DigestConfig(enabled=False))
    limit = ADDRESS_LIMITS[0]
    for i in range(limit.count + 5):
        h.engine.ingest(event(i), source="test")
    await h.settle()
    assert len(h.channel.sent) == limit.count  # the address limit holds the rest
    t0 = h.clock.now()
    crit = h.engine.ingest(event(99, "critical"), source="test").incident_id
    await h.settle()
    assert h.channel.sent[-1].incident_id == crit  # at once, not in a minute
    assert h.clock.now() == t0
    assert len(h.channel.sent) == limit.count + 1


async def test_high_is_claimed_before_medium(h):
    with_delivery(h, digest=DigestConfig(enabled=False))
    low = h.engine.ingest(event(1, "low"), source="test").incident_id
    high = h.engine.ingest(event(2, "high"), source="test").incident_id
    await h.settle()
    assert [m.incident_id for m in h.channel.sent] == [high, low]


async def test_a_critical_message_overtakes_a_storm_of_5000_at_the_real_limit(h):
    with_delivery(h, digest=DigestConfig(enabled=False))
    h.engine.ingest_many([event(i) for i in range(5000)], source="test")
    await h.settle()
    crit = h.engine.ingest(event(5000, "critical"), source="test").incident_id
    started = h.clock.now()
    await h.settle()
    told = [m.incident_id for m in h.channel.sent]
    assert crit in told and h.clock.now() - started <= timedelta(seconds=5)


async def test_sends_to_different_addresses_are_concurrent_and_bounded_per_channel(config, tmp_path):
    with HTTPRecorder(Answer(delay=0.3)) as server:
        channel = SmsHttpChannel("sms", {"url": f"{server.url}/send"})
        h = Harness(config, tmp_path / "db.sqlite3")
        try:
            h.delivery.channels = {"sms": channel}
            with_delivery(h, concurrency_per_channel=2)
            inc = h.engine.ingest(event(1, flow="many"), source="test").incident_id
            began = time.monotonic()
            assert await h.delivery.run_once() == 4
            took = time.monotonic() - began
            assert len(server.requests) == 4
            assert 0.55 <= took < 1.1, took  # two at a time: two rounds of 0.3 s, not four
            with h.store.transaction() as tx:
                assert {n.status for n in tx.notifications_of(inc)} == {"delivered"}
        finally:
            await channel.aclose()
            h.close()


async def test_one_send_in_flight_per_address_in_creation_order(h):
    in_flight: dict[str, int] = {}
    order: list[int] = []

    class Slow(RecordingChannel):
        async def send(self, message: Message) -> DeliveryResult:
            in_flight[message.address] = in_flight.get(message.address, 0) + 1
            assert in_flight[message.address] == 1
            await asyncio.sleep(0.01)
            in_flight[message.address] -= 1
            order.append(message.incident_id)
            return await super().send(message)

    h.delivery.channels = {"sms": Slow("sms")}
    incidents = [h.engine.ingest(event(i), source="test").incident_id for i in range(4)]
    await h.settle()
    assert order == incidents


# ------------------------------------------------------------------------------ point 2


class Flaky(RecordingChannel):
    """Fails (retryable) until the clock reaches ``until``, then delivers."""

    def __init__(self, h: Harness, seconds: float | None) -> None:
        super().__init__("sms")
        self.h = h
        self.until = None if seconds is None else h.clock.now() + timedelta(seconds=seconds)

    async def send(self, message: Message) -> DeliveryResult:
        self.sent.append(message)
        if self.until is None or self.h.clock.now() < self.until:
            return DeliveryResult(DeliveryStatus.failed_retryable, "gateway down")
        return DeliveryResult(DeliveryStatus.delivered, "ok")


async def test_the_next_level_is_told_timeout_after_the_delivery_not_after_the_fire(h):
    h.delivery.channels = {"sms": Flaky(h, 180)}
    fired = h.clock.now()
    inc = h.engine.ingest(event(1), source="test").incident_id
    await h.settle()
    await h.advance(400)  # past fire + timeout: the first level was not told yet then
    delivered = next(t.at for t in timeline(h, inc) if t.type == "notified")
    assert delivered >= fired + timedelta(seconds=180)
    assert "boss" not in [m.address for m in h.delivery.channels["sms"].sent]
    assert h.incident(inc).next_step_at == delivered + timedelta(seconds=TIMEOUT)
    await h.advance((delivered - h.clock.now()).total_seconds() + TIMEOUT)
    boss = [t for t in timeline(h, inc) if t.type == "step_fired" and t.detail["step"] == 1]
    assert boss and boss[0].at == delivered + timedelta(seconds=TIMEOUT)
    step = next(t for t in timeline(h, inc) if t.type == "step_delivered")
    assert step.detail["fired_at"] == fired.isoformat()
    assert step.detail["delivered_at"] == delivered.isoformat()
    assert step.detail["waited"] == (delivered - fired).total_seconds()


async def test_a_channel_down_for_good_times_the_step_out_at_cap_plus_timeout(h):
    h.delivery.channels = {"sms": Flaky(h, None)}
    fired = h.clock.now()
    inc = h.engine.ingest(event(1), source="test").incident_id
    await h.settle()
    assert h.incident(inc).next_step_at == fired + timedelta(seconds=CAP + TIMEOUT)
    await h.advance(CAP + TIMEOUT)
    second = [t for t in timeline(h, inc) if t.type == "step_fired" and t.detail["step"] == 1]
    assert second and second[0].at <= fired + timedelta(seconds=CAP + TIMEOUT)


async def test_delivered_at_once_the_timings_are_as_before(h):
    fired = h.clock.now()
    inc = h.engine.ingest(event(1), source="test").incident_id
    await h.settle()
    assert h.incident(inc).next_step_at == fired + timedelta(seconds=TIMEOUT)


def test_simulate_applies_the_same_rule(config):
    from escalator.engine.simulate import simulate

    rows = simulate(config, event(1))
    assert [(r.offset, r.recipient) for r in rows
            if r.mode != "reminder"] == [("+0:00:00", "值班员"), ("+0:05:00", "校长")]


# ------------------------------------------------------------------------------ point 3


def test_the_order_query_seeks_an_index_and_reads_no_backlog(h):
    with h.store.transaction() as tx:
        plan = " ".join(r[3] for r in tx.c.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM notifications INDEXED BY notifications_address"
            " WHERE channel = 'sms' AND address = '1' AND status = 'pending' AND priority = 2"
            " AND id < 9 ORDER BY id LIMIT 1"))
    assert "USING INDEX notifications_address" in plan and "id<?" in plan
    assert "SCAN" not in plan


def test_the_notifiable_check_does_nothing_without_a_diagnosis(monkeypatch):
    cfg = ClustersConfig()
    calls: list[str] = []
    monkeypatch.setattr(clusters, "mentions", lambda text, name: calls.append(name) or False)
    assert clusters.notifiable(cfg, None) is None and clusters.notifiable(cfg, "") is None
    assert calls == []
    clusters.notifiable(cfg, "感冒")
    assert calls  # with a diagnosis the list is tried
