"""Quiet hours (docs/quiet-hours.md, issue 16.4): outside school hours non-urgent messages on
a quiet channel wait for the next school morning — deferred in the ledger and the timeline,
never dropped — while critical and high go at once; the step's timeout counts from the
deferred delivery. On the fake clock, with a real SQLite file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from escalator.config import load_config
from escalator.events import Event
from escalator.testing import Harness

CONFIG = """
school:
  name: 测试小学
  calendar:
    school_hours: {start: "07:30", end: "17:30"}
    overrides: {2026-12-07: holiday}
people:
  - {id: wang, name: 王老师, contacts: [{channel: sms, to: "13800000001"}]}
  - {id: head, name: 张校长, contacts: [{channel: sms, to: "13800000003"}]}
  - {id: group, name: 班级群, contacts: [{channel: robot, to: "-"}]}
channels:
  sms: {type: console}
  robot: {type: console}
quiet_hours:
  channels: [sms]
policies:
  chain:
    steps:
      - {targets: [person:wang], timeout: 1800}
      - {targets: [person:head], timeout: 1800}
  robot:
    steps:
      - {targets: [person:group], mode: inform}
routes:
  - match: {labels: {flow: always}}
    policy: chain
    urgency: high
  - match: {labels: {flow: waits}}
    policy: chain
    urgency: low
  - match: {labels: {flow: robot}}
    policy: robot
  - default: true
    policy: chain
"""


def beijing(text: str) -> datetime:
    """A school-local time (Asia/Shanghai, UTC+8) as aware UTC."""
    return (datetime.fromisoformat(text) - timedelta(hours=8)).replace(tzinfo=UTC)


def event(severity: str = "medium", flow: str = "plain", n: int = 0) -> dict:
    return {"kind": "incident", "category": "accident", "severity": severity,
            "summary": f"操场摔伤 {n}", "dedup_key": f"{flow}/{severity}/{n}",
            "labels": {"flow": flow}}


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "quiet.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    return load_config(path)


def harness(config, tmp_path, at: str) -> Harness:
    h = Harness(config, tmp_path / "escalator.sqlite3")
    h.clock.set(beijing(at))
    return h


@pytest.fixture
def night(config, tmp_path):
    """Tuesday 2026-12-01 03:34 in Beijing: the trial's SMS at night."""
    h = harness(config, tmp_path, "2026-12-01T03:34:00")
    yield h
    h.close()


def deliveries(h: Harness, incident_id: int) -> list[tuple[str, str]]:
    with h.store.transaction() as tx:
        return [(r[0], r[1]) for r in tx.c.execute(
            "SELECT d.outcome, d.detail FROM deliveries d JOIN notifications n"
            " ON n.id = d.notification_id WHERE n.incident_id = ? ORDER BY d.id", (incident_id,))]


def timeline(h: Harness, incident_id: int, kind: str) -> list:
    with h.store.transaction() as tx:
        return [t for t in tx.timeline(incident_id) if t.type == kind]


async def test_a_non_urgent_sms_at_night_waits_for_the_school_morning_and_is_never_dropped(night):
    h = night
    inc = (await h.send(event("medium"))).incident_id
    assert h.told() == []
    assert deliveries(h, inc) == [("deferred", "推迟至 12月1日 07:30（免打扰时段，非紧急）")]
    [entry] = timeline(h, inc, "deferred")
    assert entry.detail["until"] == beijing("2026-12-01T07:30:00").isoformat()
    assert entry.detail["until_local"] == "2026-12-01 07:30"
    with h.store.transaction() as tx:
        [row] = tx.notifications_of(inc)
    assert (row.status, row.due_at, row.attempts) == ("pending", beijing("2026-12-01T07:30:00"), 0)

    await h.advance((beijing("2026-12-01T07:29:59") - h.clock.now()).total_seconds())
    assert h.told() == []  # the chain did not walk at night either
    assert [t.type for t in timeline(h, inc, "step_fired")] == ["step_fired"]
    await h.advance(1)
    assert h.told() == ["王老师"]
    assert [o for o, _ in deliveries(h, inc)] == ["deferred", "delivered"]


async def test_the_step_timeout_counts_from_the_deferred_delivery(night):
    h = night
    inc = (await h.send(event("medium"))).incident_id
    # the timer waits for the deferred message: 07:30 + step_wait_cap (600 s) + 1800 s at most
    assert h.incident(inc).next_step_at == beijing("2026-12-01T08:10:00")
    await h.advance((beijing("2026-12-01T07:30:00") - h.clock.now()).total_seconds())
    [delivered] = timeline(h, inc, "step_delivered")
    assert delivered.detail["delivered_at"] == beijing("2026-12-01T07:30:00").isoformat()
    assert h.incident(inc).next_step_at == beijing("2026-12-01T08:00:00")  # delivery + timeout
    await h.advance(1800)
    assert h.told() == ["王老师", "张校长"]  # the next level at 08:00, in school hours


async def test_with_no_step_wait_cap_the_deferral_still_moves_the_timer(config, tmp_path):
    config.delivery.step_wait_cap = 0
    h = harness(config, tmp_path, "2026-12-01T03:34:00")
    inc = (await h.send(event("low"))).incident_id
    assert h.incident(inc).next_step_at == beijing("2026-12-01T08:00:00")
    await h.advance(3 * 3600)
    assert h.told() == []
    h.close()


@pytest.mark.parametrize("severity", ["critical", "high"])
async def test_critical_and_high_go_at_once_at_night(night, severity):
    inc = (await night.send(event(severity))).incident_id
    assert night.told() == ["王老师"]
    assert [o for o, _ in deliveries(night, inc)] == ["delivered"]
    assert timeline(night, inc, "deferred") == []


async def test_a_route_says_its_urgency_over_the_severity(night):
    always = (await night.send(event("low", "always"))).incident_id
    waits = (await night.send(event("critical", "waits"))).incident_id
    assert night.told() == ["王老师"]
    assert [o for o, _ in deliveries(night, always)] == ["delivered"]
    assert [o for o, _ in deliveries(night, waits)] == ["deferred"]


async def test_a_channel_left_out_of_quiet_hours_still_gets_it_at_night(night):
    inc = (await night.send(event("info", "robot"))).incident_id
    assert night.told() == ["班级群"]
    assert timeline(night, inc, "deferred") == []


async def test_in_school_hours_nothing_waits(config, tmp_path):
    h = harness(config, tmp_path, "2026-12-01T10:00:00")
    await h.send(event("low"))
    assert h.told() == ["王老师"]
    h.close()


async def test_friday_evening_waits_for_the_next_school_day_of_the_calendar(config, tmp_path):
    # Friday 2026-12-04 18:00; Monday 12-07 is a holiday (school.calendar.overrides)
    h = harness(config, tmp_path, "2026-12-04T18:00:00")
    inc = (await h.send(event("medium"))).incident_id
    assert timeline(h, inc, "deferred")[0].detail["until_local"] == "2026-12-08 07:30"
    await h.advance((beijing("2026-12-08T07:29:00") - h.clock.now()).total_seconds())
    assert h.told() == []
    await h.advance(60)
    assert h.told() == ["王老师"]
    h.close()


async def test_a_deferred_message_survives_a_restart(config, tmp_path):
    h = harness(config, tmp_path, "2026-12-01T03:34:00")
    inc = (await h.send(event("medium"))).incident_id
    h.close()
    again = harness(config, tmp_path, "2026-12-01T07:31:00")  # a new process in the morning
    await again.settle()
    assert again.told() == ["王老师"]
    assert [o for o, _ in deliveries(again, inc)] == ["deferred", "delivered"]
    again.close()


async def test_without_quiet_hours_everything_goes_at_once(config, tmp_path):
    config.quiet_hours = None
    h = harness(config, tmp_path, "2026-12-01T03:34:00")
    await h.send(event("info"))
    assert h.told() == ["王老师"]
    h.close()


async def test_an_acknowledgement_before_the_morning_cancels_the_deferred_message(night):
    inc = (await night.send(event("medium"))).incident_id
    night.engine.acknowledge(inc, actor="王老师", via="cli")
    await night.advance((beijing("2026-12-01T08:00:00") - night.clock.now()).total_seconds())
    assert night.told() == []
    with night.store.transaction() as tx:
        assert [n.status for n in tx.notifications_of(inc)] == ["cancelled"]


async def test_the_work_ledger_lists_the_deferral_in_the_schools_words(night):
    from datetime import date

    from escalator.school import ledger

    await night.send(event("medium"))
    await night.advance(5 * 3600)
    tables = ledger.ledger_tables(night.store, night.config, date(2026, 12, 1), date(2026, 12, 1),
                                  night.clock.now())
    rows = next(t for t in tables if t.key == "deliveries").rows
    cells = [" ".join(str(c) for c in r) for r in rows]
    assert "推迟（免打扰时段）" in cells[0] and "推迟至 12月1日 07:30" in cells[0]
    assert "已送达" in cells[1]


async def test_an_incident_with_a_legal_deadline_never_waits(night):
    inc = (await night.send(event("low"))).incident_id
    with night.store.transaction() as tx:  # as the deadline rule sets it (docs/school-rules.md)
        tx.update_incident(inc, deadline_at=night.clock.now() + timedelta(hours=24))
        [row] = tx.notifications_of(inc)
        tx.update_notification(row.id, status="pending", due_at=night.clock.now())
    await night.settle()
    assert night.told() == ["王老师"]


async def test_an_urgent_message_does_not_queue_behind_a_deferred_one_to_the_same_phone(night):
    waiting = (await night.send(event("medium", n=1))).incident_id
    urgent = (await night.send(event("low", "always", n=2))).incident_id  # same priority
    assert night.told() == ["王老师"]
    assert [o for o, _ in deliveries(night, urgent)] == ["delivered"]
    assert [o for o, _ in deliveries(night, waiting)] == ["deferred"]


async def test_a_night_of_messages_waits_and_goes_as_one_digest_in_the_morning(night):
    incidents = [night.engine.ingest(Event.model_validate(event("medium", n=n)),
                                     source="test").incident_id for n in range(7)]
    await night.settle()
    assert night.told() == []
    assert all([o for o, _ in deliveries(night, i)] == ["deferred"] for i in incidents)
    await night.advance((beijing("2026-12-01T07:30:00") - night.clock.now()).total_seconds())
    assert len(night.channel.sent) == 1  # more than delivery.digest.after (5): one digest
    assert "另有 6 条事件待处理" in night.channel.sent[0].body


def test_simulate_lists_a_deferred_message_at_the_school_morning(config):
    from escalator.delivery.quiet_hours import hold
    from escalator.engine.simulate import simulate
    from escalator.school.calendar import SchoolCalendar

    ev = Event.model_validate({**event("medium"), "occurred_at": "2026-12-01T03:34:00+08:00"})
    rows = simulate(config, ev, horizon_seconds=6 * 3600, hold=hold(config, SchoolCalendar(config)))
    assert [(r.local_time, r.recipient) for r in rows if r.mode != "reminder"] == [
        ("2026-12-01 07:30:00", "王老师 [deferred: quiet hours]"),
        ("2026-12-01 08:00:00", "张校长")]
    plain = simulate(config, ev, horizon_seconds=6 * 3600)  # without quiet hours: at once
    assert [(r.local_time, r.recipient) for r in plain][:1] == [("2026-12-01 03:34:00", "王老师")]


async def test_a_critical_report_on_a_deferred_incident_goes_at_once(night):
    """A "smell in the lab" at night waits for the morning; "fire in the lab" under the same
    dedup key raises the incident to critical: its waiting message goes now, and the next level
    follows the step's own timeout, not the morning's."""
    h = night
    smell = dict(event("medium"), summary="实验楼有焦糊味", dedup_key="lab")
    inc = (await h.send(smell)).incident_id
    assert h.told() == []
    r = await h.send(dict(smell, severity="critical", summary="实验楼起火"))
    assert (r.status, r.incident_id) == ("deduplicated", inc)
    assert h.incident(inc).severity == "critical"
    [raised] = timeline(h, inc, "severity_raised")
    assert (raised.detail["from"], raised.detail["to"], raised.detail["messages"]) == (
        "medium", "critical", 1)
    await h.advance(1)
    assert h.told() == ["王老师"]  # at 03:34, not 07:30
    await h.advance(1800)
    assert h.told() == ["王老师", "张校长"]  # the step's timeout from the delivery
