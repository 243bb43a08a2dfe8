"""Silences and maintenance windows, inhibition and grouping (docs/silences.md) on the fake
clock against a real SQLite file: what is held, who is told, what the timeline says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from escalator.config import ConfigError, load_config
from escalator.config.quieting import parse_matcher, subject_of
from escalator.engine import silences
from escalator.events import Event
from escalator.testing import Harness

FIXTURES = Path(__file__).parent / "fixtures"

QUIET = """
silences:
  - id: fire_alarm_test
    matchers: ['source="fire_panel"']
    comment: 消防报警系统月度测试（每月第一个周一 14:00–15:00）
    created_by: 总务处
    exempt_critical: false
    schedule: {weekdays: [1], nth: [1], start: "14:00", end: "15:00"}
inhibit_rules:
  - source_matchers: ['category="fire"', 'source!="smoke_detector"']
    target_matchers: ['source="smoke_detector"']
    equal: [building]
"""

GROUPING_ROUTE = """
  - match: {category: building}
    policy: inform_first
    group_by: [building, place]
    group_wait: 30s
    group_interval: 5m
    group_summary: "{place} 共 {count} 个探测器报警"
"""


def quiet_config(tmp_path: Path, extra: str = QUIET):
    """engine.yaml with the standing silence, the inhibit rule and a grouping route first."""
    text = (FIXTURES / "engine.yaml").read_text(encoding="utf-8")
    text = text.replace("routes:\n", "routes:\n" + GROUPING_ROUTE.lstrip("\n"), 1) + extra
    path = tmp_path / "escalator.yaml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


@pytest.fixture
def qh(tmp_path):
    h = Harness(quiet_config(tmp_path), tmp_path / "escalator.sqlite3")
    yield h
    h.close()


def fire(place: str = "1号楼", source: str = "fire_panel", severity: str = "high", **kw) -> dict:
    return {"kind": "incident", "category": "fire", "severity": severity,
            "summary": f"{place} 火警", "place": place, "source": source,
            "labels": {"building": place}, **kw}


def detector(n: int, floor: str = "3楼", building: str = "1号楼") -> dict:
    return {"kind": "incident", "category": "building", "summary": f"{floor} {n}号烟感探测器报警",
            "place": floor, "source": "smoke_detector", "dedup_key": f"det/{building}/{floor}/{n}",
            "labels": {"building": building}}


async def send(h: Harness, event: dict):
    """Ingest ``event`` from its own ``source`` (a spool folder or API token would name it)."""
    return await h.send(event, source=event["source"])


def create(h: Harness, **kw) -> str:
    now = h.clock.now()
    with h.store.transaction() as tx:
        return silences.create(tx, h.config, now=now, **kw).id


# ------------------------------------------------------------------------------- matchers


@pytest.mark.parametrize(("text", "subject", "expected"), [
    ('place="1号楼"', {"place": "1号楼"}, True),
    ('place="1号楼"', {"place": "2号楼"}, False),
    ("place!=1号楼", {"place": "2号楼"}, True),
    ("place!=1号楼", {}, True),
    ('place=~"1号楼.*"', {"place": "1号楼3楼"}, True),
    ('place=~"1号楼"', {"place": "1号楼3楼"}, False),  # anchored, as Alertmanager's
    ('place!~"1号楼.*"', {"place": "2号楼"}, True),
    ('building=""', {}, True),  # a missing name reads as empty
])
def test_matcher_operators(text, subject, expected):
    assert parse_matcher(text).matches(subject) is expected


@pytest.mark.parametrize(("text", "says"), [
    ("place", "is not a matcher"), ('place="1号楼', "not closed"), ("place=~(", "bad regular"),
])
def test_bad_matchers_say_what_is_wrong(text, says):
    with pytest.raises(ValueError, match=says):
        parse_matcher(text)


def test_matchers_read_fields_and_labels():
    ev = Event.model_validate(fire(labels={"building": "1号楼", "place": "label wins not"}))
    subject = subject_of(ev, "fire_panel")
    assert subject["category"] == "fire" and subject["severity"] == "high"
    assert subject["source"] == "fire_panel" and subject["drill"] == "false"
    assert subject["building"] == "1号楼" and subject["labels.building"] == "1号楼"
    assert subject["place"] == "1号楼"  # the field wins over a label of the same name
    assert subject["labels.place"] == "label wins not"


def test_weekly_windows_first_last_and_overnight():
    from zoneinfo import ZoneInfo

    from escalator.config.quieting import WeeklySchedule

    tz = ZoneInfo("Asia/Shanghai")
    first_monday = WeeklySchedule(weekdays=[1], nth=[1], start="14:00", end="15:00")
    assert first_monday.window_end(datetime(2026, 12, 7, 14, 0, tzinfo=tz), tz) == datetime(
        2026, 12, 7, 15, 0, tzinfo=tz)
    assert first_monday.window_end(datetime(2026, 12, 7, 15, 0, tzinfo=tz), tz) is None
    assert first_monday.window_end(datetime(2026, 12, 14, 14, 30, tzinfo=tz), tz) is None
    last_friday = WeeklySchedule(weekdays=[5], nth=[-1], start="16:00", end="17:00")
    assert last_friday.window_end(datetime(2026, 12, 25, 16, 30, tzinfo=tz), tz) is not None
    assert last_friday.window_end(datetime(2026, 12, 18, 16, 30, tzinfo=tz), tz) is None
    # a night window crossing midnight: Sunday 22:00 to Monday 06:00
    night = WeeklySchedule(weekdays=[7], start="22:00", end="06:00")
    assert night.window_end(datetime(2026, 12, 7, 5, 59, tzinfo=tz), tz) == datetime(
        2026, 12, 7, 6, 0, tzinfo=tz)
    assert night.window_end(datetime(2026, 12, 7, 22, 30, tzinfo=tz), tz) is None  # a Monday


# ------------------------------------------------------------------------------- silences


async def test_silenced_event_is_stored_and_counted_but_tells_nobody_then_walks(qh):
    sid = create(qh, matchers=['category="fire"', 'place=~"1号楼.*"'], created_by="admin",
                 comment="1号楼消防改造", ends_at=qh.clock.now() + timedelta(hours=1))
    r = await send(qh, fire())
    assert r.status == "created" and qh.told() == []
    again = await send(qh, fire())
    assert again.status == "deduplicated" and again.incident_id == r.incident_id
    assert qh.incident(r.incident_id).event_count == 2
    assert qh.timeline(r.incident_id) == ["triggered", "silenced", "deduplicated"]
    other = await send(qh, fire("2号楼"))
    assert qh.told() == ["派出所", "张校长", "值班员"]  # 2号楼 is not silenced
    await qh.advance(3599)
    assert qh.told() == ["派出所", "张校长", "值班员"]
    await qh.advance(1)  # the silence is over: 1号楼's incident walks from its first step
    assert qh.told()[3:] == ["派出所", "张校长", "值班员"]
    tl = qh.timeline(r.incident_id)
    assert tl[3:5] == ["silence_ended", "step_fired"] or tl[3] == "silence_ended"
    assert qh.incident(r.incident_id).step_index >= 0
    assert other.incident_id != r.incident_id
    with qh.store.transaction() as tx:
        assert tx.get_silence(sid).created_by == "admin"


async def test_critical_is_exempt_unless_the_silence_says_otherwise(qh):
    create(qh, matchers=['category="fire"'], created_by="admin", comment="演练前检修",
           ends_at=qh.clock.now() + timedelta(hours=1))
    await send(qh, fire(severity="critical"))
    assert qh.told() == ["派出所", "张校长", "值班员"]
    create(qh, matchers=['category="fire"'], created_by="admin", comment="全部静默",
           ends_at=qh.clock.now() + timedelta(hours=1), exempt_critical=False)
    r = await send(qh, fire("2号楼", severity="critical"))
    assert qh.told() == ["派出所", "张校长", "值班员"]
    assert "silenced" in qh.timeline(r.incident_id)


async def test_expiring_a_silence_lets_held_incidents_walk_at_once(qh):
    sid = create(qh, matchers=['category="fire"'], created_by="admin", comment="检修",
                 ends_at=qh.clock.now() + timedelta(hours=8))
    r = await send(qh, fire())
    await qh.advance(60)
    assert qh.told() == []
    with qh.store.transaction() as tx:
        assert silences.expire(tx, qh.config, sid, by="admin", now=qh.clock.now()) == 1
        with pytest.raises(LookupError):
            silences.expire(tx, qh.config, sid, by="admin", now=qh.clock.now())
    await qh.settle()
    assert qh.told() == ["派出所", "张校长", "值班员"]
    assert "silence_ended" in qh.timeline(r.incident_id)
    await send(qh, fire("3号楼"))  # no longer silenced
    assert qh.told()[3:] == ["派出所", "张校长", "值班员"]


async def test_a_held_incident_resolved_during_the_silence_tells_nobody(qh):
    create(qh, matchers=['category="fire"'], created_by="admin", comment="检修",
           ends_at=qh.clock.now() + timedelta(minutes=10))
    r = await send(qh, fire())
    qh.engine.resolve(r.incident_id, actor="admin", via="test")
    await qh.advance(3600)
    assert qh.told() == []
    assert "silence_ended" not in qh.timeline(r.incident_id)


async def test_the_fire_alarm_test_window_every_first_monday(qh):
    # 2026-12-07 is the first Monday of December: 14:10 school time is inside the window
    qh.clock.set(datetime(2026, 12, 7, 6, 10, tzinfo=UTC))
    r = await send(qh, fire(severity="critical"))
    assert qh.told() == []  # the standing window does not exempt critical
    tl = qh.timeline(r.incident_id)
    assert tl == ["triggered", "silenced"]
    with qh.store.transaction() as tx:
        held = tx.silence_hold(r.incident_id)
    assert held == ("fire_alarm_test", datetime(2026, 12, 7, 7, 0, tzinfo=UTC))  # 15:00
    await qh.advance(50 * 60)  # 15:00: the test is over, a fire still open is real
    assert qh.told() == ["派出所", "张校长", "值班员"]
    # the second Monday is a school day like any other
    qh.clock.set(datetime(2026, 12, 14, 6, 10, tzinfo=UTC))
    await send(qh, fire("2号楼"))
    assert qh.told()[3:] == ["派出所", "张校长", "值班员"]


async def test_a_silence_survives_a_restart(tmp_path):
    config = quiet_config(tmp_path)
    h = Harness(config, tmp_path / "db.sqlite3")
    create(h, matchers=['place="1号楼"'], created_by="admin", comment="检修",
           ends_at=h.clock.now() + timedelta(minutes=30))
    r = await send(h, fire())
    now = h.clock.now()
    h.close()
    h = Harness(config, tmp_path / "db.sqlite3", clock=type(h.clock)(now))
    try:
        assert (await send(h, fire())).status == "deduplicated"
        assert h.told() == []
        await h.advance(30 * 60)
        assert h.told() == ["派出所", "张校长", "值班员"]
        assert "silence_ended" in h.timeline(r.incident_id)
    finally:
        h.close()


def test_bad_silences_are_refused_naming_the_field(qh):
    now = qh.clock.now()
    cases = [
        (dict(matchers=[], comment="x", ends_at=now + timedelta(hours=1)), "matchers"),
        (dict(matchers=["place"], comment="x", ends_at=now + timedelta(hours=1)), "matchers"),
        (dict(matchers=["place=1"], comment=" ", ends_at=now + timedelta(hours=1)), "comment"),
        (dict(matchers=["place=1"], comment="x"), "ends_at"),
        (dict(matchers=["place=1"], comment="x", ends_at=now - timedelta(hours=1)), "ends_at"),
        (dict(matchers=["place=1"], comment="x", ends_at=now + timedelta(days=400)), "ends_at"),
        (dict(matchers=["place=1"], comment="x",
              schedule={"weekdays": [8], "start": "14:00", "end": "15:00"}), "schedule"),
    ]
    for kw, field in cases:
        with qh.store.transaction() as tx, pytest.raises(silences.SilenceError) as err:
            silences.create(tx, qh.config, created_by="admin", now=now, **kw)
        assert err.value.field == field, kw
    with qh.store.transaction() as tx, pytest.raises(silences.SilenceError, match="config"):
        silences.expire(tx, qh.config, "fire_alarm_test", by="admin", now=now)


@pytest.mark.parametrize(("yaml", "says"), [
    ("silences:\n  - {id: a, matchers: ['place'], comment: x, ends_at: 2026-12-01T00:00:00Z}\n",
     "silences[0].matchers (line"),
    ("silences:\n  - {id: a, matchers: ['place=1'], comment: x}\n", "needs ends_at or a schedule"),
    ("silences:\n  - {id: a, matchers: ['place=1'], comment: x,"
     " schedule: {weekdays: [1], start: '14:00', end: '14:00'}}\n", "same time"),
    ("inhibit_rules:\n  - {source_matchers: ['a=~('], target_matchers: ['b=1']}\n",
     "inhibit_rules[0].source_matchers (line"),
])
def test_config_problems_name_the_place(tmp_path, yaml, says):
    with pytest.raises(ConfigError) as err:
        quiet_config(tmp_path, yaml)
    assert says in str(err.value)


def test_group_settings_are_checked(tmp_path):
    text = (FIXTURES / "engine.yaml").read_text(encoding="utf-8").replace(
        "routes:\n", "routes:\n  - {match: {category: building}, policy: inform_first,"
        " group_by: [place], group_summary: '{floor} 共 {count} 个'}\n", 1)
    (tmp_path / "c.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="group_summary names 'floor'"):
        load_config(tmp_path / "c.yaml")
    text = text.replace(" group_summary: '{floor} 共 {count} 个'", "").replace(
        "group_by: [place],", "group_wait: 30s,")
    (tmp_path / "c.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="need group_by"):
        load_config(tmp_path / "c.yaml")


# ------------------------------------------------------------------------------- inhibition


async def test_a_fire_in_building_1_inhibits_its_smoke_detectors(qh):
    source = await send(qh, fire(summary="1号楼 化学实验室起火"))
    told = len(qh.told())
    inhibited = await send(qh, detector(1))
    assert inhibited.status == "inhibited" and inhibited.incident_id == source.incident_id
    assert len(qh.told()) == told  # nobody told again
    assert qh.timeline(source.incident_id).count("inhibited") == 1
    with qh.store.transaction() as tx:
        stored = tx.get_event(inhibited.event_id)
        assert stored["incident_id"] == source.incident_id and stored["outcome"] == "inhibited"
    # building 2's detectors are not covered by building 1's fire (equal: [building])
    own = await send(qh, detector(1, building="2号楼"))
    assert own.status == "created"
    # once the fire is resolved, building 1's detectors open incidents of their own again
    qh.engine.resolve(source.incident_id, actor="admin", via="test")
    assert (await send(qh, detector(2))).status == "created"


async def test_a_drill_never_inhibits_a_real_report(qh):
    await send(qh, fire(drill=True))
    r = await send(qh, detector(1))
    assert r.status == "created"


# ------------------------------------------------------------------------------- grouping


async def test_seven_detectors_on_one_floor_are_one_incident_told_once(qh):
    results = []
    for n in range(1, 8):
        results.append(await send(qh, detector(n, building="2号楼")))
        await qh.advance(3)
    assert [r.status for r in results] == ["created"] + ["deduplicated"] * 6
    assert len({r.incident_id for r in results}) == 1
    assert qh.told() == []  # group_wait: 30 s
    other_floor = await send(qh, detector(1, floor="4楼", building="2号楼"))
    assert other_floor.incident_id != results[0].incident_id
    await qh.advance(10)
    assert qh.told() == ["派出所", "张校长", "值班员"]  # 3楼's group: one walk, not seven
    assert all("3楼 共 7 个探测器报警" in m.body for m in qh.channel.sent)
    inc = qh.incident(results[0].incident_id)
    assert inc.summary == "3楼 共 7 个探测器报警" and inc.event_count == 7
    assert qh.timeline(inc.id)[:2] == ["triggered", "group_wait"]
    assert "group_wait_over" in qh.timeline(inc.id)
    # the same detector again counts as an event, not as another detector
    await send(qh, detector(7, building="2号楼"))
    assert qh.incident(inc.id).summary == "3楼 共 7 个探测器报警"


async def test_members_after_the_first_message_are_told_once_per_interval(qh):
    first = await send(qh, detector(1, building="2号楼"))
    await qh.advance(30)
    assert qh.told() == ["派出所", "张校长", "值班员"]
    for n in (2, 3):
        await send(qh, detector(n, building="2号楼"))
    assert len(qh.told()) == 3
    await qh.advance(299)
    assert len(qh.told()) == 3
    await qh.advance(1)  # group_interval: 5 minutes after the first newcomer
    assert qh.told()[3:] == ["张校长", "值班员"]  # the current step's targets
    assert "3楼 共 3 个探测器报警" in qh.channel.sent[-1].body
    assert qh.timeline(first.incident_id).count("group_update") == 1
    await qh.advance(600)  # nothing new: no more updates
    assert qh.timeline(first.incident_id).count("group_update") == 1


async def test_a_grouped_incident_is_silenced_like_any_other(qh):
    create(qh, matchers=['source="smoke_detector"'], created_by="admin", comment="探测器检修",
           ends_at=qh.clock.now() + timedelta(minutes=10))
    r = await send(qh, detector(1, building="2号楼"))
    await send(qh, detector(2, building="2号楼"))
    await qh.advance(9 * 60)
    assert qh.told() == []
    await qh.advance(60)
    assert qh.told()[0] == "派出所"
    assert "3楼 共 2 个探测器报警" in qh.channel.sent[0].body
    tl = qh.timeline(r.incident_id)
    assert tl.index("silence_ended") < tl.index("group_wait_over")


async def test_the_group_update_timer_is_a_timer_the_run_loop_waits_for(qh):
    for chain in qh.config.policies.values():  # no reminders: the group update is the only timer
        chain.remind_every = None
    r = await send(qh, detector(1, building="2号楼"))
    await qh.advance(200)  # the walk is over (escalation_exhausted): no step timer left
    assert qh.timeline(r.incident_id)[-1] == "escalation_exhausted"
    assert qh.engine.next_due() is None
    await send(qh, detector(2, building="2号楼"))
    joined = qh.clock.now()
    assert qh.engine.next_due() == joined + timedelta(minutes=5)
    told = len(qh.told())
    await qh.advance(300)  # still unanswered: the last step's people hear of the newcomer
    assert qh.told()[told:] == ["张校长", "值班员"]
    assert "3楼 共 2 个探测器报警" in qh.channel.sent[-1].body
    assert qh.engine.next_due() is None


async def test_a_drill_groups_apart_from_real_reports(qh):
    real = await send(qh, detector(1, building="2号楼"))
    drill = await send(qh, {**detector(2, building="2号楼"), "drill": True})
    assert drill.status == "created" and drill.incident_id != real.incident_id
    assert drill.dedup_key == "drill/group/inform_first/building=2号楼/place=3楼"
    assert real.dedup_key == "group/inform_first/building=2号楼/place=3楼"


async def test_a_silence_never_holds_back_a_legal_reporting_deadline(tmp_path):
    from .test_deadlines import FIXTURE, at, diagnosed, harness

    h = harness(load_config(FIXTURE), tmp_path / "db.sqlite3", at("2026-11-30", "10:00"))
    try:
        create(h, matchers=['category="infectious_disease"'], created_by="admin",
               comment="系统联调", ends_at=h.clock.now() + timedelta(hours=2))
        r = await h.send(diagnosed())
        # the case chain waits for the silence; the CDC is told at once all the same
        # (the notifiable_disease deadline rule, docs/school-rules.md "Legal deadlines")
        assert h.told() == ["区疾控"]
        assert {"silenced", "deadline_escalation"} <= set(h.timeline(r.incident_id))
        await h.advance(2 * 3600)
        assert h.told() == ["区疾控", "王老师"]
    finally:
        h.close()


async def test_a_critical_report_on_a_held_incident_ends_the_hold(qh):
    """Review r16: "宿舍楼有焦味" (high) is held by a silence that exempts critical; "宿舍楼起火"
    (critical, the same dedup key) is counted on it — and must not wait for the silence's end."""
    create(qh, matchers=['category="fire"'], created_by="admin", comment="宿舍楼电路检修",
           ends_at=qh.clock.now() + timedelta(hours=8))
    r = await send(qh, fire(dedup_key="dorm-1"))
    assert r.status == "created" and qh.told() == []
    again = await send(qh, fire(severity="critical", dedup_key="dorm-1"))
    assert again.status == "deduplicated" and again.incident_id == r.incident_id
    await qh.advance(1)
    assert qh.told() == ["派出所", "张校长", "值班员"]
    tl = qh.timeline(r.incident_id)
    assert tl[:5] == ["triggered", "silenced", "deduplicated", "severity_raised", "silence_ended"]
    assert "step_fired" in tl


async def test_a_report_the_silence_would_also_hold_keeps_the_hold(qh):
    create(qh, matchers=['category="fire"'], created_by="admin", comment="全部静默",
           ends_at=qh.clock.now() + timedelta(hours=8), exempt_critical=False)
    r = await send(qh, fire(dedup_key="dorm-1"))
    await send(qh, fire(severity="critical", dedup_key="dorm-1"))
    await qh.advance(60)
    assert qh.told() == [] and "silence_ended" not in qh.timeline(r.incident_id)
