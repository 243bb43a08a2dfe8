"""Decisions at a level (report up / handled here), the walk that stops before a step reached
only by a decision, reminders to the last level, and the acknowledgement timeout — the engine on
a fake clock and a real SQLite file (docs/decisions.md)."""

from __future__ import annotations

import pytest

from escalator.config.models import Policy, Step
from escalator.engine.decisions import DecisionError
from escalator.engine.engine import NotFound
from escalator.events import Event
from escalator.testing import Harness

FEVER = {"kind": "suspected_case", "category": "infectious_disease", "summary": "三年级2班 发热",
         "class_id": "3-2", "subject": {"id": "S-1"}, "symptoms": ["fever"]}
OTHER = {"kind": "incident", "category": "accident", "summary": "五年级1班 学生摔伤",
         "class_id": "5-1"}


def gated_chain(remind_every: float | None = 600) -> Policy:
    """班主任 → 校医 → 领导小组, then the CDC only on a decision to report."""
    return Policy(remind_every=remind_every, steps=[
        Step(targets=["class_teacher"], timeout=60, mode="report"),
        Step(targets=["school_doctor"], timeout=120, mode="report"),
        Step(targets=["leadership"], timeout=300, mode="report"),
        Step(targets=["district_cdc"], timeout=600, mode="report", on_report_only=True),
    ])


@pytest.fixture
def gated(engine_config, tmp_path):
    engine_config.policies["report_chain"] = gated_chain()
    h = Harness(engine_config, tmp_path / "escalator.sqlite3")
    yield h
    h.close()


def names(h: Harness, purpose: str | None = None) -> list[str]:
    with h.store.transaction() as tx:
        rows = [n for i in (1, 2, 3) for n in tx.notifications_of(i)]
    return [n.recipient_name for n in sorted(rows, key=lambda n: n.id)
            if purpose is None or n.purpose == purpose]


async def test_a_single_case_stops_at_the_leadership_and_is_reminded(gated):
    r = await gated.send(FEVER)
    await gated.advance(60 + 120 + 300)  # every level times out
    assert gated.told() == ["王老师", "赵校医", "张校长"]  # never the CDC
    tl = gated.timeline(r.incident_id)
    assert tl[-1] == "awaiting_decision" and "escalation_exhausted" not in tl
    inc = gated.incident(r.incident_id)
    assert inc.state == "triggered" and inc.step_index == 2 and inc.reminders == 0
    await gated.advance(599)
    assert gated.told() == ["王老师", "赵校医", "张校长"]
    await gated.advance(1)  # remind_every 600 s after the leadership's timeout
    assert gated.told() == ["王老师", "赵校医", "张校长", "张校长"]
    await gated.advance(600 * 3)
    assert gated.told().count("张校长") == 5 and "区疾控" not in gated.told()
    assert gated.timeline(r.incident_id).count("reminder") == 4
    assert names(gated, "reminder") == ["张校长"] * 4
    assert gated.incident(r.incident_id).reminders == 4


async def test_the_leadership_deciding_to_report_tells_the_cdc_at_once(gated):
    r = await gated.send(FEVER)
    await gated.advance(60 + 120 + 300 + 600)  # stopped, one reminder sent
    res = gated.engine.decide(r.incident_id, decision="report", actor="head", via="test")
    assert res.outcome == "step_confirmed" and res.state == "triggered"
    await gated.settle()
    assert gated.told()[-1] == "区疾控"
    inc = gated.incident(r.incident_id)
    assert inc.step_index == 3 and inc.reminders is None
    await gated.advance(3600)  # no more reminders to the leadership
    assert gated.told().count("张校长") == 2


async def test_report_decisions_walk_every_level_at_once(gated):
    r = await gated.send(FEVER)
    for who in ("t-wang", "doc", "head"):
        assert gated.engine.decide(r.incident_id, decision="report", actor=who,
                                   via="test").outcome == "step_confirmed"
        await gated.settle()
    assert gated.told() == ["王老师", "赵校医", "张校长", "区疾控"]
    assert gated.engine.decide(r.incident_id, decision="report", actor="cdc",
                               via="test").outcome == "acknowledged"


async def test_handled_here_ends_the_walk_with_the_reason(gated):
    r = await gated.send(FEVER)
    await gated.advance(60)  # the school doctor is told
    res = gated.engine.decide(r.incident_id, decision="handled", reason="家长已接回，排除传染病",
                              actor="doc", via="test")
    assert (res.outcome, res.state) == ("handled", "resolved")
    inc = gated.incident(r.incident_id)
    assert inc.state == "resolved" and inc.resolved_by == "doc" and inc.next_step_at is None
    with gated.store.transaction() as tx:
        entry = next(t for t in tx.timeline(r.incident_id) if t.type == "handled_here")
        run = tx.latest_step_run(r.incident_id)
    assert entry.actor == "doc" and entry.detail["reason"] == "家长已接回，排除传染病"
    assert entry.detail["step"] == 1 and run.status == "handled"
    await gated.advance(3600)
    assert gated.told() == ["王老师", "赵校医"]
    assert gated.engine.decide(r.incident_id, decision="report", actor="x",
                               via="t").outcome == "already_resolved"


async def test_handled_here_cancels_the_sends_not_yet_made(gated):
    r = gated.engine.ingest(Event.model_validate(FEVER))  # the row is written, not sent
    gated.engine.decide(r.incident_id, decision="handled", reason="误报", actor="t-wang", via="test")
    await gated.settle()
    assert gated.told() == []
    with gated.store.transaction() as tx:
        assert [n.status for n in tx.notifications_of(r.incident_id)] == ["cancelled"]


@pytest.mark.parametrize(("decision", "reason", "field"), [
    ("handled", None, "reason"), ("handled", "   ", "reason"), ("escalate", None, "decision"),
    ("handled", "x" * 501, "reason")])
async def test_a_bad_decision_is_refused_naming_the_field(gated, decision, reason, field):
    r = await gated.send(FEVER)
    with pytest.raises(DecisionError) as e:
        gated.engine.decide(r.incident_id, decision=decision, reason=reason, actor="x", via="t")
    assert e.value.field == field and isinstance(e.value, ValueError)
    assert gated.incident(r.incident_id).state == "triggered"
    with pytest.raises(NotFound):
        gated.engine.decide(999, decision="report", actor="x", via="t")


async def test_the_last_level_of_any_chain_is_reminded(harness):
    # escalate_chain: 班主任 → 张校长, walked twice (repeat 1), then reminders every hour
    r = await harness.send(OTHER)
    await harness.advance(60 * 4)
    assert harness.timeline(r.incident_id)[-1] == "escalation_exhausted"
    await harness.advance(3600)
    assert harness.told() == ["李老师", "张校长", "李老师", "张校长", "张校长"]
    res = harness.engine.acknowledge(r.incident_id, actor="head", via="test")
    assert res.outcome == "acknowledged"
    await harness.advance(3 * 3600)
    assert harness.told().count("张校长") == 3


async def test_reminders_off(engine_config, tmp_path):
    engine_config.policies["report_chain"] = gated_chain(remind_every=None)
    h = Harness(engine_config, tmp_path / "db.sqlite3")
    r = await h.send(FEVER)
    await h.advance(86400)
    assert h.told() == ["王老师", "赵校医", "张校长"]
    assert h.incident(r.incident_id).next_step_at is None
    h.close()


async def test_an_acknowledged_incident_unresolved_re_triggers(engine_config, tmp_path):
    engine_config.policies["escalate_chain"].ack_timeout = 1800
    h = Harness(engine_config, tmp_path / "db.sqlite3")
    r = await h.send(OTHER)
    h.engine.acknowledge(r.incident_id, actor="t-li", via="test")
    await h.advance(1799)
    assert h.incident(r.incident_id).state == "acknowledged" and h.told() == ["李老师"]
    await h.advance(1)
    inc = h.incident(r.incident_id)
    assert inc.state == "triggered" and inc.step_index == 0
    assert h.told() == ["李老师", "李老师"]  # walked again from the first step
    tl = h.timeline(r.incident_id)
    assert tl[tl.index("ack_timeout") + 1] == "step_fired"
    h.engine.resolve(r.incident_id, actor="t-li", via="test")  # resolved: nothing re-triggers
    await h.advance(7200)
    assert h.told() == ["李老师", "李老师"]
    h.close()


async def test_no_ack_timeout_by_default(harness):
    r = await harness.send(OTHER)
    harness.engine.acknowledge(r.incident_id, actor="t-li", via="test")
    await harness.advance(30 * 86400)
    assert harness.incident(r.incident_id).state == "acknowledged"


def test_a_chain_cannot_start_with_a_step_reached_only_by_a_decision():
    with pytest.raises(ValueError, match="first step"):
        Policy(steps=[Step(targets=["x"], on_report_only=True)])
    assert Policy(steps=[Step(targets=["x"])], remind_every="off").remind_every is None
    assert Policy(steps=[Step(targets=["x"])]).remind_every == 3600


async def test_the_first_message_of_a_reminded_level_still_decides(gated):
    r = await gated.send(FEVER)
    await gated.advance(60 + 120 + 300 + 600 * 2)  # stopped on the leadership, two reminders
    with gated.store.transaction() as tx:
        first = next(n for n in tx.notifications_of(r.incident_id)
                     if n.recipient_id == "head" and n.purpose == "step")
    res = gated.engine.decide(decision="report", actor="head", via="link", token=first.ack_token)
    assert res.outcome == "step_confirmed"
    await gated.settle()
    assert gated.told()[-1] == "区疾控"
    tl = gated.timeline(r.incident_id)
    assert tl.count("step_overdue") == 3  # the three levels' own timeouts, not the reminders
    with gated.store.transaction() as tx:
        runs = {n.step_run_id for n in tx.notifications_of(r.incident_id) if n.purpose == "reminder"}
        assert [tx.get_step_run(i).status for i in sorted(runs)] == ["reminded", "confirmed"]
    # the class teacher's link ended long ago: it changes nothing
    with gated.store.transaction() as tx:
        teacher = next(n for n in tx.notifications_of(r.incident_id) if n.recipient_id == "t-wang")
    late = gated.engine.decide(decision="handled", reason="x", actor="t-wang", via="link",
                               token=teacher.ack_token)
    assert late.outcome == "level_closed" and gated.incident(r.incident_id).state == "triggered"
