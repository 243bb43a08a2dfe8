"""Drills (应急演练): 【演练】 messages, units left out unless configured, the ledger mark, and
``escalator drill-report`` (figures on a fake clock; the real CLI on a real SQLite file)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from escalator.config import load_config
from escalator.drills import NotADrill, drill_report
from escalator.engine import NotFound
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
        assert m.title.startswith("【演练】") and m.body.startswith("【演练】"), m
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
    from escalator.api import _incident_out

    incident_id = await walk_drill(drill_harness)
    assert _incident_out(drill_harness.incident(incident_id))["drill"] is True
