"""The escalation engine on a fake clock and a real SQLite file: step modes, repeat, dedup,
acknowledge/resolve, target resolution, restart."""

from __future__ import annotations

import pytest

from escalator.delivery.channels import DeliveryStatus
from escalator.engine.engine import NotFound, Submission
from escalator.events import Event
from escalator.testing import Harness

from .conftest import case

FEVER = {"kind": "suspected_case", "category": "infectious_disease", "summary": "三年级2班 发热",
         "class_id": "3-2", "subject": {"id": "S-1"}, "symptoms": ["fever"]}
OTHER = {"kind": "incident", "category": "accident", "summary": "五年级1班 学生摔伤",
         "class_id": "5-1"}
FIRE = {"kind": "incident", "category": "fire", "severity": "critical", "summary": "烟感报警",
        "place": "食堂", "dedup_key": "fire/1"}


async def test_report_chain_walks_level_by_level_with_timeouts(harness):
    r = await harness.send(FEVER)
    assert r.status == "created"
    assert harness.told() == ["王老师"]
    await harness.advance(59)
    assert harness.told() == ["王老师"]
    await harness.advance(1)  # t0 + 60 s: the clinic
    assert harness.told() == ["王老师", "赵校医"]
    await harness.advance(120)
    assert harness.told() == ["王老师", "赵校医", "张校长"]
    await harness.advance(300)
    assert harness.told() == ["王老师", "赵校医", "张校长", "区疾控"]
    tl = harness.timeline(r.incident_id)
    assert tl.count("step_overdue") == 3  # each unconfirmed report level is logged overdue
    await harness.advance(600)
    assert harness.timeline(r.incident_id)[-1] == "escalation_exhausted"
    assert harness.incident(r.incident_id).state == "triggered"


async def test_ack_at_report_step_confirms_the_level_and_fires_next_at_once(harness):
    r = await harness.send(FEVER)
    await harness.advance(10)
    res = harness.engine.acknowledge(r.incident_id, actor="t-wang", via="test")
    assert res.outcome == "step_confirmed" and res.state == "triggered"
    await harness.settle()
    assert harness.told() == ["王老师", "赵校医"]  # at t0 + 10 s, not t0 + 60 s
    sent_at = [m.notification_id for m in harness.channel.sent]
    assert len(sent_at) == 2
    tl = harness.timeline(r.incident_id)
    assert "step_confirmed" in tl and "step_overdue" not in tl
    # the clinic's own timeout now counts from the confirmation
    await harness.advance(119)
    assert harness.told() == ["王老师", "赵校医"]
    await harness.advance(1)
    assert harness.told()[-1] == "张校长"


async def test_confirming_the_last_report_level_acknowledges_the_incident(harness):
    r = await harness.send(FEVER)
    for _ in range(3):
        assert harness.engine.acknowledge(r.incident_id, actor="x", via="test").outcome == "step_confirmed"
        await harness.settle()
    assert harness.told() == ["王老师", "赵校医", "张校长", "区疾控"]
    res = harness.engine.acknowledge(r.incident_id, actor="cdc", via="test")
    assert res.outcome == "acknowledged"
    assert harness.incident(r.incident_id).state == "acknowledged"


async def test_ack_at_escalate_step_stops_the_walk(harness):
    r = await harness.send(OTHER)
    assert harness.told() == ["李老师"]
    res = harness.engine.acknowledge(r.incident_id, actor="t-li", via="test")
    assert res.outcome == "acknowledged"
    await harness.advance(3600)
    assert harness.told() == ["李老师"]
    inc = harness.incident(r.incident_id)
    assert inc.state == "acknowledged" and inc.next_step_at is None
    assert harness.engine.acknowledge(r.incident_id, actor="x", via="t").outcome == "already_acknowledged"


async def test_escalate_chain_repeats_then_exhausts(harness):
    r = await harness.send(OTHER)
    await harness.advance(60 * 4)
    assert harness.told() == ["李老师", "张校长", "李老师", "张校长"]
    tl = harness.timeline(r.incident_id)
    assert tl.count("repeat") == 1 and tl[-1] == "escalation_exhausted"
    assert tl.count("step_timed_out") == 4


async def test_inform_step_does_not_wait_and_its_reply_is_only_seen(harness):
    r = await harness.send(FIRE)
    # police (inform) and, at the same instant, leadership + duty officer (escalate)
    assert sorted(harness.told()) == sorted(["派出所", "张校长", "值班员"])
    police = next(m for m in harness.channel.sent if m.recipient_name == "派出所")
    assert police.ack_hint is None  # inform messages carry no acknowledge link
    with harness.store.transaction() as tx:
        token = next(n.ack_token for n in tx.notifications_of(r.incident_id) if n.recipient_id == "police")
    res = harness.engine.acknowledge(actor="police", via="link", token=token)
    assert res.outcome == "seen" and harness.incident(r.incident_id).state == "triggered"
    assert "seen" in harness.timeline(r.incident_id)


async def test_dedup_counts_without_re_escalating(harness):
    a = await harness.send(case("events/duplicate_a.json"))
    told = list(harness.told())
    b = await harness.send(case("events/duplicate_b.json"))
    assert (a.status, b.status) == ("created", "deduplicated")
    assert a.incident_id == b.incident_id
    assert harness.told() == told
    assert harness.incident(a.incident_id).event_count == 2
    assert harness.timeline(a.incident_id).count("deduplicated") == 1


async def test_derived_dedup_key_one_pupil_one_day_is_one_incident(harness):
    a = await harness.send(case("events/fever_single.json"))
    b = await harness.send(case("events/fever_cluster_day1_2.json"))  # the same pupil, same day
    c = await harness.send(case("events/fever_cluster_day1_1.json"))  # another pupil
    assert b.incident_id == a.incident_id and b.status == "deduplicated"
    assert c.incident_id != a.incident_id and c.status == "created"
    assert a.dedup_key == "suspected_case/infectious_disease/subject:S-2023-0142/2026-11-30"


async def test_resolve_cancels_pending_sends_in_the_same_transaction(harness):
    r = await harness.send(OTHER)
    # a send that is due but not yet delivered when the resolve commits
    harness.channel.outcomes.append(DeliveryStatus.failed_retryable)
    await harness.advance(60)
    with harness.store.transaction() as tx:
        pending = [n for n in tx.notifications_of(r.incident_id) if n.status == "pending"]
    assert pending, "a retry should be pending"
    harness.engine.resolve(r.incident_id, actor="admin", via="test")
    with harness.store.transaction() as tx:
        statuses = {n.status for n in tx.notifications_of(r.incident_id)}
    assert "pending" not in statuses and "cancelled" in statuses
    before = len(harness.channel.sent)
    await harness.advance(3600)
    assert len(harness.channel.sent) == before
    assert harness.engine.resolve(r.incident_id, actor="a", via="t").outcome == "already_resolved"


async def test_ack_after_claim_but_before_send_sends_nothing(harness):
    r = harness.engine.ingest(Event.model_validate(OTHER))
    with harness.store.transaction() as tx:
        claimed = tx.claim_notifications(harness.clock.now(), 10, "test")
    assert claimed
    harness.engine.acknowledge(r.incident_id, actor="t-li", via="test")
    for n in claimed:
        await harness.delivery._deliver(n)
    assert harness.channel.sent == []


async def test_class_teacher_falls_back_to_grade_leader_and_unresolved_target_tells_duty_officer(harness):
    ev = dict(OTHER, class_id=None, grade="3", summary="三年级 走廊摔伤")
    r = await harness.send(ev)
    assert harness.told() == ["三年级组长"]
    ev2 = dict(OTHER, class_id=None, grade="6", summary="六年级 走廊摔伤")
    r2 = await harness.send(ev2)
    assert "target_unresolved" in harness.timeline(r2.incident_id)
    # the duty officer is told and stands in for the level: the walk waits for them, with the
    # level's timeout, then goes on to leadership
    assert harness.told()[-1:] == ["值班员"]
    assert r.incident_id != r2.incident_id
    await harness.advance(61)
    assert harness.told()[-1:] == ["张校长"]


async def test_acknowledge_heartbeat_and_actions_by_event(harness):
    hb = await harness.send(case("events/zero_report.json"))
    assert hb.status == "logged" and hb.incident_id is None
    await harness.send(FIRE)
    ack = await harness.send(dict(FIRE, action="acknowledge"))
    assert ack.status == "acknowledged"
    res = await harness.send(dict(FIRE, action="resolve"))
    assert res.status == "resolved"
    again = await harness.send(dict(FIRE, action="resolve"))
    assert again.status == "ignored"


async def test_unknown_incident_raises_not_found(harness):
    with pytest.raises(NotFound):
        harness.engine.acknowledge(999, actor="x", via="t")
    with pytest.raises(NotFound):
        harness.engine.resolve(999, actor="x", via="t")


async def test_chain_snapshot_survives_a_config_reload(harness, engine_config):
    r = await harness.send(OTHER)
    changed = engine_config.model_copy(deep=True)
    changed.policies["escalate_chain"].steps[1].targets = ["police"]
    harness.engine.reload(changed)
    await harness.advance(60)
    assert harness.told() == ["李老师", "张校长"]  # the snapshot, not the reloaded policy
    assert harness.incident(r.incident_id).policy["steps"][1]["targets"] == ["leadership"]


async def test_new_process_resumes_mid_walk_and_sends_nothing_twice(engine_config, tmp_path):
    db = tmp_path / "escalator.sqlite3"
    first = Harness(engine_config, db)
    r = await first.send(FEVER)
    await first.advance(60)
    assert first.told() == ["王老师", "赵校医"]
    clock = first.clock
    first.close()  # the process dies here

    clock.advance(30)
    second = Harness(engine_config, db, clock=clock)
    second.delivery.release_claims()
    await second.settle()
    assert second.told() == []  # nothing is sent twice
    await second.advance(89)
    assert second.told() == []
    await second.advance(1)  # the clinic's 120 s from t0 + 60 s
    assert second.told() == ["张校长"]
    assert second.incident(r.incident_id).step_index == 2
    second.close()


async def test_overdue_step_fires_at_once_after_a_long_outage(engine_config, tmp_path):
    db = tmp_path / "escalator.sqlite3"
    first = Harness(engine_config, db)
    await first.send(OTHER)
    clock = first.clock
    first.close()
    clock.advance(3600)  # down for an hour
    second = Harness(engine_config, db, clock=clock)
    await second.settle()
    assert second.told()[0] == "张校长"
    second.close()


async def test_row_keys_skip_rows_seen_before_and_ledger_only_rows_open_nothing(harness):
    sick = Submission(Event.model_validate(dict(FEVER, kind="absence")), row_key="reg/2026-11-30/S-1")
    leave = Submission(Event.model_validate(dict(OTHER, kind="absence", category="other",
                                                 summary="事假")), row_key="reg/2026-11-30/S-2",
                       ledger_only=True)
    first = harness.engine.ingest_file([sick, leave], sha256="a" * 64, name="r1.csv", source="reg")
    assert [r.status for r in first] == ["created", "ledger"]
    assert first[1].incident_id is None
    # the register re-exported with one new row: only the new row is added
    new = Submission(Event.model_validate(dict(FEVER, kind="absence", subject={"id": "S-3"})),
                     row_key="reg/2026-11-30/S-3")
    second = harness.engine.ingest_file([sick, leave, new], sha256="b" * 64, name="r2.csv",
                                        source="reg")
    assert [r.status for r in second] == ["duplicate_row", "duplicate_row", "created"]
    with harness.store.transaction() as tx:
        assert tx.c.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 3
    assert harness.engine.ingest_file([new], sha256="b" * 64, name="again.csv", source="reg") is None


def test_a_zero_time_is_rejected_naming_occurred_at():
    from escalator.intake.parsing import IntakeError, parse_event

    with pytest.raises(IntakeError) as e:
        parse_event(dict(OTHER, occurred_at="0001-01-01T00:00:00+08:00"))
    assert e.value.errors[0]["field"] == "occurred_at"
