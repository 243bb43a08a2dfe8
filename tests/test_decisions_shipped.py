"""The shipped chains (config/example.yaml, config/demo.yaml) walked on a fake clock: a single
case stops at the leadership group with reminders and reaches the district CDC only on a
decision to report; a cluster reaches the CDC by the rule. Plus the decision from the API, the
CLI and the acknowledge page, link texts, and the wording of messages (docs/decisions.md)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from escalator.config import load_config
from escalator.engine.decisions import redact_links
from escalator.events import Event
from escalator.testing import Harness

from .conftest import case

ROOT = Path(__file__).resolve().parents[1]
CDC, BUREAU = "示例区疾病预防控制中心应急办", "示例区教育局安全科"
LEADERS = ["刘建国", "张伟"]


@pytest.fixture(params=["example.yaml", "demo.yaml"])
def shipped(request, tmp_path):
    config = load_config(ROOT / "config" / request.param)
    config.daemon.public_base_url = "https://esc.school.example"
    h = Harness(config, tmp_path / "db.sqlite3")
    h.name = request.param
    yield h
    h.close()


def of(h: Harness, incident_id: int) -> list[str]:
    return [m.recipient_name for m in h.channel.sent if m.incident_id == incident_id]


def step_timeouts(h: Harness, policy: str) -> list[float]:
    return [s.timeout for s in h.config.policies[policy].steps if s.mode != "inform"]


async def test_a_single_case_stops_at_the_leadership_with_reminders(shipped):
    h = shipped
    r = await h.send(case("events/fever_single.json"))
    _, doctor, leaders, _ = step_timeouts(h, "suspected_case")
    every = h.config.policies["suspected_case"].remind_every
    await h.advance(doctor + leaders + 20 * every)  # nobody acting: 20 reminders
    told = of(h, r.incident_id)
    assert CDC not in told and BUREAU not in told  # the CDC is never told of one sick pupil
    assert told[0] == "王丽"  # the class teacher who filed it: a receipt
    assert "赵春梅" in told
    inc = h.incident(r.incident_id)
    assert inc.state == "triggered" and inc.reminders == 20
    assert {m.recipient_name for m in h.channel.sent[-2:]} == set(LEADERS)  # still reminded
    reminders = [m for m in h.channel.sent if "【提醒】本环节尚未答复" in m.body]
    assert {m.recipient_name for m in reminders} == set(LEADERS)
    assert "awaiting_decision" in h.timeline(r.incident_id)


async def test_the_leadership_reporting_tells_the_cdc_and_the_bureau(shipped):
    h = shipped
    r = await h.send(case("events/fever_single.json"))
    await h.advance(step_timeouts(h, "suspected_case")[1])  # the doctor's level times out
    assert set(of(h, r.incident_id)[-2:]) == set(LEADERS)
    res = h.engine.decide(r.incident_id, decision="report", actor="p-zhang-wei", via="test")
    assert res.outcome == "step_confirmed"
    await h.settle()
    assert set(of(h, r.incident_id)[-2:]) == {CDC, BUREAU}


async def test_the_school_doctor_handling_it_ends_the_walk(shipped):
    h = shipped
    r = await h.send(case("events/fever_single.json"))
    res = h.engine.decide(r.incident_id, decision="handled", actor="clinic-zhao", via="test",
                          reason="体温复测正常，家长已接回观察")
    assert res.state == "resolved"
    await h.advance(86400)
    assert not set(LEADERS + [CDC]) & set(of(h, r.incident_id))


async def test_a_cluster_reaches_the_cdc_without_a_decision(shipped):
    h = shipped
    for name in ("events/fever_cluster_day1_1.json", "events/fever_cluster_day1_2.json",
                 "events/fever_cluster_day1_3.json"):
        await h.send(case(name))
    with h.store.transaction() as tx:
        [cluster] = [i for i in tx.list_incidents(("triggered",), 50) if i.policy_id == "cluster"]
    await h.advance(sum(step_timeouts(h, "cluster")[:2]))  # nobody acts
    assert {CDC, BUREAU} <= set(of(h, cluster.id))
    singles = [m for m in h.channel.sent if m.incident_id != cluster.id]
    assert CDC not in {m.recipient_name for m in singles}


# ------------------------------------------------------------------ wording


async def test_the_reporter_gets_a_receipt_naming_the_next_level(tmp_path):
    config = load_config(ROOT / "config" / "example.yaml")
    h = Harness(config, tmp_path / "db.sqlite3")
    r = await h.send(case("events/fever_single.json"))  # filed by 王丽, the class teacher
    teacher = next(m for m in h.channel.sent if m.recipient_name == "王丽")
    assert "已收到您报告的事件，已通知第2级（校医（保健室））处理" in teacher.body
    assert "确认" not in teacher.body.replace("无需再核实确认", "") and teacher.ack_hint is None
    doctor = next(m for m in h.channel.sent if m.recipient_name == "赵春梅")
    assert "环节：第2级" in doctor.body  # the guardians' copy is not a level: never 第3级
    assert "上报上一级" in doctor.body and "本级已处置" in doctor.body
    assert h.timeline(r.incident_id)[:4].count("step_confirmed") == 1
    h.close()


async def test_no_doubled_signature_or_drill_mark_in_an_sms(tmp_path):
    from escalator_plugins.sms_http import SmsHttpChannel

    from escalator.delivery.channels import Message

    config = load_config(ROOT / "config" / "example.yaml")
    h = Harness(config, tmp_path / "db.sqlite3")
    await h.send(case("events/fever_single.json"))
    await h.send({**case("events/fever_single.json"), "drill": True})
    h.close()
    sms = SmsHttpChannel("sms", {"url": "http://127.0.0.1:9/send", "signature": "【示例小学】"})

    def text(m: Message) -> str:
        return sms.text(m)

    guardian = next(m for m in h.channel.sent if "母亲" in m.recipient_name)
    assert text(guardian).count("【示例小学】") == 1, text(guardian)  # not 【示例小学】【示例小学】
    drill = [m for m in h.channel.sent if m.incident_id == 2]
    assert drill and all(text(m).count("【演练】") == 1 for m in drill), [text(m) for m in drill]


async def test_an_overdue_deadline_is_said_overdue_never_near(tmp_path):
    config = load_config(ROOT / "config" / "example.yaml")
    h = Harness(config, tmp_path / "db.sqlite3")
    h.clock.set(h.clock.now() + timedelta(days=6))  # a cluster entered six days after it began
    for name in ("events/fever_cluster_day1_1.json", "events/fever_cluster_day1_2.json",
                 "events/fever_cluster_day1_3.json"):
        await h.send(case(name))
    h.close()
    texts = [m.body for m in h.channel.sent if m.recipient_name == CDC]
    assert texts, [m.recipient_name for m in h.channel.sent]
    assert all("时限将至" not in t for t in texts)
    assert any(re.search(r"已超过法定报告时限\d+天", t) for t in texts), texts


# ------------------------------------------------------------------ links


async def test_a_group_message_never_carries_a_personal_link(tmp_path):
    from escalator.delivery.render import RenderContext, render_templates

    config = load_config(ROOT / "config" / "example.yaml")
    config.daemon.public_base_url = "https://esc.school.example"
    h = Harness(config, tmp_path / "db.sqlite3")
    r = await h.send(case("events/fever_single.json"))
    with h.store.transaction() as tx:
        inc = tx.get_incident(r.incident_id)
        n = next(n for n in tx.notifications_of(r.incident_id) if n.needs_ack)
    h.close()
    person = render_templates(RenderContext(inc, n, config, audience="person", step=(2, "x")))
    group = render_templates(RenderContext(inc, n, config, audience="group", step=(2, "x")))
    assert n.ack_token in person.body and person.ack_hint.endswith(n.ack_token)
    assert n.ack_token not in group.body and "/ack/" not in group.body
    assert group.ack_hint == f"escalator ack {inc.id}"


async def test_kept_texts_and_the_exported_ledger_carry_no_live_link(tmp_path):
    from datetime import date

    from escalator.school.ledger import ledger_tables

    config = load_config(ROOT / "config" / "example.yaml")
    config.daemon.public_base_url = "https://esc.school.example"
    h = Harness(config, tmp_path / "db.sqlite3")
    r = await h.send(case("events/fever_single.json"))
    with h.store.transaction() as tx:
        tokens = [n.ack_token for n in tx.notifications_of(r.incident_id)]
    assert any(t in m.body for m in h.channel.sent for t in tokens)  # the messages have links
    h.engine.decide(r.incident_id, decision="handled", reason="复测正常", actor="clinic-zhao",
                    via="test")
    tables = ledger_tables(h.store, config, date(2026, 11, 29), date(2026, 12, 1), h.clock.now())
    text = json.dumps([t.rows for t in tables], ensure_ascii=False, default=str)
    h.close()
    assert "/ack/（已隐去）" in text and not any(t in text for t in tokens)
    incidents = next(t for t in tables if t.key == "incidents")
    assert "已处置，无需上报" in incidents.rows[0]
    acks = next(t for t in tables if t.key == "acknowledgements")
    assert any(str(row[2]) == "已处置，无需上报：复测正常" and row[3] == "clinic-zhao"
               for row in acks.rows), acks.rows
    assert redact_links("x https://a/ack/AbCdEf123456 y") == "x https://a/ack/（已隐去） y"


# ------------------------------------------------------------------ the CLI


def test_the_cli_decides_and_refuses_a_handled_without_a_reason(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ESCALATOR_")}
    env.update({"ESCALATOR_STATE_DIR": str(tmp_path / "state"),
                "ESCALATOR_CONFIG": str(ROOT / "config" / "example.yaml")})

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "escalator.cli", *args], env=env,
                              capture_output=True, text=True, timeout=120)

    assert run("send", str(ROOT / "examples/events/fever_single.json")).returncode == 0
    bad = run("decide", "1", "handled")
    assert bad.returncode == 2 and "--reason" in bad.stderr
    ok = run("--lang", "zh", "decide", "1", "handled", "--reason", "家长已接回，排除传染病")
    assert ok.returncode == 0 and "handled" in ok.stdout and "已解除" in ok.stdout, ok.stderr
    assert ok.stdout.startswith("事件 1：本级已处置，无需上报") and "#" not in ok.stdout
    again = run("--lang", "zh", "decide", "1", "report")  # Chinese, the id as it is typed
    assert again.stdout.startswith("事件 1：此前已解除") and "#" not in again.stdout, again
    assert "状态：已解除" in again.stdout
    shown = run("incidents", "1")
    assert "handled_here" in shown.stdout
    assert run("decide", "42", "report").returncode == 3
    sim = run("simulate", "--event", str(ROOT / "examples/events/fever_single.json"),
              "--decide", "3=report")
    assert sim.returncode == 0 and CDC in sim.stdout and "decision: report" in sim.stdout
    quiet = run("simulate", "--event", str(ROOT / "examples/events/fever_single.json"))
    assert CDC not in quiet.stdout and "reminder" in quiet.stdout


def test_simulate_shows_both_paths():
    from escalator.engine.simulate import simulate

    config = load_config(ROOT / "config" / "example.yaml")
    ev = Event.model_validate(case("events/fever_single.json"))
    silent = simulate(config, ev, horizon_seconds=86400)
    assert CDC not in [r.recipient for r in silent]
    assert [r.mode for r in silent].count("reminder") >= 2  # the first, and the count after it
    reported = simulate(config, ev, horizon_seconds=86400, decide={3: "report"})
    who = [r.recipient for r in reported]
    assert who.index(CDC) > [r.mode for r in reported].index("decision: report")
    handled = simulate(config, ev, horizon_seconds=86400, decide={2: "handled"})
    assert not set(LEADERS) & {r.recipient for r in handled}


async def test_an_at_once_deadline_says_at_once_and_a_second_late_is_not_overdue(tmp_path):
    from escalator.delivery.render import RenderContext, render_templates

    config = load_config(ROOT / "config" / "example.yaml")
    h = Harness(config, tmp_path / "db.sqlite3")
    ev = {**case("events/fever_single.json"), "diagnosis": "influenza", "subject": {"id": "S-9"}}
    r = await h.send(ev)  # a notifiable diagnosis: the CDC told at once by the deadline rule
    with h.store.transaction() as tx:
        inc = tx.get_incident(r.incident_id)
        n = next(n for n in tx.notifications_of(r.incident_id) if n.purpose == "deadline")
    h.close()
    for late in (0, 5, 59):
        body = render_templates(RenderContext(inc, n, config, now=n.created_at
                                              + timedelta(seconds=late))).body
        assert "本事件须立即报告" in body and "超过" not in body and "将至" not in body, body
    body = render_templates(RenderContext(inc, n, config, now=n.created_at + timedelta(hours=2))).body
    assert "本事件已超过法定报告时限2小时" in body and "（已超时2小时）" in body, body
