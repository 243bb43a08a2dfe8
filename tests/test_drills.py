"""Drills (应急演练): 【演练】 messages, units left out unless configured, the ledger mark, and
``escalator drill-report`` (figures on a fake clock; the real CLI on a real SQLite file)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from escalator.config import load_config
from escalator.config.models import Policy, Step
from escalator.engine.engine import NotFound
from escalator.school.drills import NotADrill, drill_report
from escalator.testing import Harness

from .conftest import FIXTURES

DRILL_POLICY = """\
  drill_chain:
    steps:
      - {name: 班主任, targets: [class_teacher], timeout: 60, mode: report}
      - {name: 报告区疾控和派出所, targets: [police, district_cdc], timeout: 120, mode: report}
      - {name: 派出所, targets: [police], timeout: 60, mode: escalate}
      - {name: 领导小组, targets: [leadership], timeout: 300, mode: escalate}
"""
EVENT = {"kind": "incident", "category": "accident", "summary": "演练：3-2班学生在操场摔伤",
         "class_id": "3-2", "severity": "high", "drill": True}


def write_config(tmp_path: Path, language: str = "zh") -> Path:
    """engine.yaml with the district CDC open to drills, the police not, and a drill chain."""
    text = (FIXTURES / "engine.yaml").read_text(encoding="utf-8")
    text = text.replace("policies:\n", "policies:\n" + DRILL_POLICY, 1)
    text = text.replace("routes:\n", "routes:\n  - match: {category: accident}\n"
                                     "    policy: drill_chain\n", 1)
    text = text.replace('contacts: [{channel: main, to: "010-1"}]}',
                        'contacts: [{channel: main, to: "010-1"}], drills: true}', 1)
    text = text.replace("  name: 测试小学\n", f"  name: 测试小学\n  language: {language}\n", 1)
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def drill_harness(tmp_path):
    h = Harness(load_config(write_config(tmp_path)), tmp_path / "state" / "escalator.sqlite3")
    yield h
    h.close()


def token_of(h: Harness, incident_id: int, name: str) -> tuple[str, str]:
    with h.store.transaction() as tx:
        n = next(n for n in tx.notifications_of(incident_id) if n.recipient_name == name)
    return n.ack_token, n.recipient_id


async def walk_drill(h: Harness) -> int:
    """The drill: the teacher confirms by link after 30 s; the CDC never answers (level 2
    overdue after 120 s); level 3 (police only) is skipped; leadership acks by link 45 s later."""
    r = await h.send(EVENT)
    await h.advance(30)
    token, who = token_of(h, r.incident_id, "王老师")
    assert h.engine.acknowledge(token=token, actor=who, via="link").outcome == "step_confirmed"
    await h.settle()
    await h.advance(120)
    await h.advance(45)
    token, who = token_of(h, r.incident_id, "张校长")
    assert h.engine.acknowledge(token=token, actor=who, via="link").outcome == "acknowledged"
    return r.incident_id


async def test_a_drill_walks_with_the_drill_mark_and_skips_units_not_open_to_drills(drill_harness):
    h = drill_harness
    incident_id = await walk_drill(h)
    # police (no drills: true) never told; the district CDC (drills: true) told; no duty officer
    assert h.told() == ["王老师", "区疾控", "张校长"]
    for m in h.channel.sent:
        assert m.title.startswith("【演练】") and m.body.startswith("本消息为应急演练"), m
        assert (m.title + m.body).count("【演练】") == 1, m  # one mark, not doubled in an SMS
        assert m.drill
    timeline = h.timeline(incident_id)
    assert timeline.count("drill_unit_skipped") == 2  # level 2 and level 3
    assert "target_unresolved" not in timeline
    with h.store.transaction() as tx:
        entries = tx.timeline(incident_id)
        assert tx.get_incident(incident_id).drill is True
    triggered = next(t for t in entries if t.type == "triggered")
    assert triggered.detail["drill"] is True
    skipped = [t.detail for t in entries if t.type == "drill_unit_skipped"]
    assert skipped[0] == {"step": 1, "target": "police", "recipient": "police", "name": "派出所"}
    # level 3 reached nobody but a skipped unit: the walk went straight on to leadership
    fired = [(t.detail["step"], t.at) for t in entries if t.type == "step_fired"]
    assert [s for s, _ in fired] == [0, 1, 2, 3] and fired[2][1] == fired[3][1]


async def test_the_same_chain_outside_a_drill_tells_the_police(drill_harness):
    h = drill_harness
    r = await h.send(EVENT | {"drill": False, "summary": "3-2班学生在操场摔伤"})
    await h.advance(61)
    assert h.told() == ["王老师", "派出所", "区疾控"]
    assert not any(m.title.startswith("【演练】") for m in h.channel.sent)
    assert "drill_unit_skipped" not in h.timeline(r.incident_id)
    with pytest.raises(NotADrill):
        drill_report(h.store, r.incident_id)
    with pytest.raises(NotFound):
        drill_report(h.store, 999)


async def test_drill_report_figures_and_who_never_answered(drill_harness):
    h = drill_harness
    incident_id = await walk_drill(h)
    report = drill_report(h.store, incident_id)
    rows = [(lv.step, lv.seconds, lv.answered_by, lv.answer) for lv in report.levels]
    assert rows == [(0, 30.0, "t-wang", "step_confirmed"),
                    (1, None, None, None),
                    (2, None, None, None),
                    (3, 45.0, "head", "acknowledged")]
    assert report.levels[1].fired_at - report.levels[0].fired_at == \
        report.levels[0].answered_at - report.levels[0].fired_at
    assert [(s.recipient_id, s.name, s.level, s.status) for s in report.never_answered] == [
        ("district_cdc", "区疾控", 2, "delivered")]
    # level 3 (the police only) was left out of the drill: nobody there was asked
    assert [lv.asked for lv in report.levels] == [True, True, False, True]
    rows = drill_report_rows(h, incident_id)
    assert rows[2][4] == "无人需确认" and rows[1][4] == "未确认"


def drill_report_rows(h: Harness, incident_id: int) -> list[list[str]]:
    from escalator.school.drills import report_rows

    return report_rows(drill_report(h.store, incident_id), h.engine.config, "zh")


async def test_an_acknowledgement_is_credited_to_the_level_that_asked_not_an_inform_step(tmp_path):
    config = load_config(write_config(tmp_path))
    config.policies["drill_chain"] = Policy(repeat=1, steps=[
        Step(name="班主任", targets=["class_teacher"], timeout=60, mode="escalate"),
        Step(name="抄送领导", targets=["leadership"], mode="inform")])
    h = Harness(config, tmp_path / "db.sqlite3")
    try:
        r = await h.send(EVENT)
        await h.advance(60)   # level 1 timed out: inform, then round 2 of level 1
        await h.advance(60)   # round 2 timed out: inform again; the walk is exhausted
        await h.advance(10)
        assert h.engine.acknowledge(r.incident_id, actor="admin", via="cli").outcome == "acknowledged"
        report = drill_report(h.store, r.incident_id)
        got = [(lv.step, lv.round, lv.mode, lv.seconds) for lv in report.levels]
        assert got == [(0, 0, "escalate", None), (1, 0, "inform", None),
                       (0, 1, "escalate", 70.0), (1, 1, "inform", None)]
        rows = drill_report_rows(h, r.incident_id)
        assert [row[4] for row in rows][1::2] == ["抄送，无需确认"] * 2
    finally:
        h.close()


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("ESCALATOR_")} | env
    return subprocess.run([sys.executable, "-m", "escalator.cli", *args], capture_output=True,
                          text=True, env=full, timeout=60)


@pytest.mark.parametrize("language", ["zh", "en"])
async def test_cli_drill_report_on_a_real_database(tmp_path, language):
    config = write_config(tmp_path, language)
    h = Harness(load_config(config), tmp_path / "state" / "escalator.sqlite3")
    try:
        drill = await walk_drill(h)
        plain = (await h.send(EVENT | {"drill": False, "summary": "真实事件"})).incident_id
    finally:
        h.close()
    env = {"ESCALATOR_STATE_DIR": str(tmp_path / "state"), "ESCALATOR_CONFIG": str(config)}
    r = run_cli("drill-report", str(drill), env=env)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    if language == "zh":
        assert lines[0] == f"应急演练报告 事件 #{drill}：演练：3-2班学生在操场摔伤"
        first = next(line for line in lines if line.startswith("第1级"))
        fourth = next(line for line in lines if line.startswith("第4级"))
        second = next(line for line in lines if line.startswith("第2级"))
        assert "未确认" in second
        assert "未应答（1）：" in lines and "  区疾控（district_cdc，第2级，消息状态：delivered）" in lines
    else:
        assert lines[0] == f"Drill report, incident #{drill}: 演练：3-2班学生在操场摔伤"
        first = next(line for line in lines if line.split()[:1] == ["1"])
        fourth = next(line for line in lines if line.split()[:1] == ["4"])
        assert "Never answered (1):" in lines
        assert "  区疾控 (district_cdc, level 2, last message: delivered)" in lines
    assert first.split()[-2:] == ["t-wang", "30"]
    assert fourth.split()[-2:] == ["head", "45"]
    # an unknown id: the CLI's not-found code; an incident that is not a drill: an error
    missing = run_cli("drill-report", "999", env=env)
    assert missing.returncode == 3 and "no incident 999" in missing.stderr
    not_drill = run_cli("drill-report", str(plain), env=env)
    assert not_drill.returncode == 1 and "is not a drill" in not_drill.stderr
    # the incidents list and the incident's page show the drill
    listed = run_cli("incidents", "--all", env=env)
    row = next(line for line in listed.stdout.splitlines() if line.startswith(f"#{drill} "))
    assert "【演练】" in row
    assert "【演练】" not in next(line for line in listed.stdout.splitlines()
                                if line.startswith(f"#{plain} "))
    one = run_cli("incidents", str(drill), env=env)
    assert "【演练 DRILL】" in one.stdout.splitlines()[0] and '"drill": true' in one.stdout


async def test_the_api_shows_the_drill(drill_harness):
    from escalator.web.models import incident_out as _incident_out

    incident_id = await walk_drill(drill_harness)
    assert _incident_out(drill_harness.incident(incident_id))["drill"] is True


async def test_a_drill_and_a_real_report_of_the_same_pupil_never_share_an_incident(drill_harness):
    h = drill_harness
    pupil = {"kind": "suspected_case", "category": "infectious_disease", "class_id": "3-2",
             "summary": "3-2 学生发热", "subject": {"id": "S-2023-0142"}, "symptoms": ["fever"],
             "occurred_at": "2026-11-30T07:30:00+08:00"}
    drill = await h.send({**pupil, "drill": True})
    real = await h.send(pupil)
    again = await h.send({**pupil, "drill": True})
    assert real.status == "created" and real.incident_id != drill.incident_id
    assert again.status == "deduplicated" and again.incident_id == drill.incident_id
    assert drill.dedup_key == "drill/" + real.dedup_key
    assert not h.incident(real.incident_id).drill and h.incident(drill.incident_id).drill
    real_msgs = [m for m in h.channel.sent if m.incident_id == real.incident_id]
    assert real_msgs and all("【演练】" not in m.title + m.body for m in real_msgs)


def test_a_given_dedup_key_cannot_take_the_drill_namespace():
    from escalator.intake.parsing import IntakeError, parse_event

    base = {"kind": "incident", "category": "fire", "summary": "实验室烟感"}
    with pytest.raises(IntakeError) as e:
        parse_event({**base, "dedup_key": "drill/lab-1"})
    assert [err["field"] for err in e.value.errors] == ["dedup_key"]
    assert "drill: true" in e.value.errors[0]["message"]
    assert parse_event({**base, "dedup_key": "lab-1", "drill": True}).dedup_key == "lab-1"
