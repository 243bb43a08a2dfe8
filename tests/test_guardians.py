"""Guardians (监护人): the ``guardian`` target from a roster file, its own audience and templates,
check-config, and what is never logged. Fake clock, real SQLite and CSV files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import structlog

from escalator.config import check_config, load_config
from escalator.delivery.channels import DeliveryStatus
from escalator.school.guardians import RosterError, parse_roster, single_subject
from escalator.testing import Harness

from .conftest import FIXTURES, case

ROSTER = (
    "学号,监护人,关系,渠道,联系方式\n"
    "S-2023-0142,王芳,母亲,main,13900000001\n"
    "S-2023-0142,王芳,母亲,backup,wangfang@example.com\n"
    "S-2023-0142,李强,父亲,main,13900000002\n"
    "S-2023-0141,赵敏,母亲,main,13900000003\n"
    "P-0123456789abcdef,孙亮,爷爷,main,13900000004\n"
)
STEPS = """\
      - {targets: [class_teacher], timeout: 60, mode: report}
      - {targets: [guardian], mode: inform}
      - {targets: [school_doctor], timeout: 120, mode: report}
"""


def write_config(tmp_path: Path, roster: bytes | None = ROSTER.encode(), *, steps: str = STEPS,
                 guardians: str = "  roster: roster.csv\n  contact: 校医室 010-12345678\n",
                 language: str = "zh") -> Path:
    """engine.yaml plus a ``suspected`` policy (routed for suspected_case) using ``guardian``."""
    if roster is not None:
        (tmp_path / "roster.csv").write_bytes(roster)
    text = (FIXTURES / "engine.yaml").read_text(encoding="utf-8")
    text = text.replace("policies:\n", f"policies:\n  suspected:\n    steps:\n{steps}", 1)
    text = text.replace("routes:\n", "routes:\n  - match: {kind: suspected_case}\n"
                                     "    policy: suspected\n", 1)
    text = text.replace("  name: 测试小学\n", f"  name: 测试小学\n  language: {language}\n", 1)
    if guardians:
        text += "guardians:\n" + guardians
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def make(tmp_path):
    made: list[Harness] = []

    def _make(**kw) -> Harness:
        h = Harness(load_config(write_config(tmp_path, **kw)), tmp_path / f"db{len(made)}.sqlite3")
        made.append(h)
        return h

    yield _make
    for h in made:
        h.close()


def guardian_messages(h: Harness) -> list:
    return [m for m in h.channel.sent if m.values and m.values.get("audience") == "guardian"]


@pytest.mark.parametrize("encoding", ["gbk", "utf-8", "utf-8-sig"])
async def test_guardians_are_resolved_from_the_roster(make, encoding):
    h = make(roster=ROSTER.encode(encoding))
    r = await h.send(case("events/fever_single.json"))  # pupil S-2023-0142, class 3-2
    assert r.status == "created"
    # step 1 (class teacher, report) waits; the guardians come after its confirmation
    assert h.told() == ["王老师"]
    h.engine.acknowledge(r.incident_id, actor="t-wang", via="cli")
    await h.settle()
    assert h.told() == ["王老师", "王芳（母亲）", "李强（父亲）", "赵校医"]
    sent = guardian_messages(h)
    assert [(m.address, m.ack_hint) for m in sent] == [("13900000001", None), ("13900000002", None)]
    body = sent[0].body
    assert "王芳（母亲），您好" in body and "3-2班" in body and "发热、咳嗽" in body
    assert "请尽快来校接孩子" in body and "校医室 010-12345678" in body
    assert sent[0].title == "【测试小学】关于您孩子的健康提醒"
    with h.store.transaction() as tx:
        rows = [n for n in tx.notifications_of(r.incident_id) if n.recipient_kind == "guardian"]
    assert [(n.recipient_id, n.needs_ack) for n in rows] == [("guardian-1", False), ("guardian-2", False)]
    assert "target_unresolved" not in h.timeline(r.incident_id)


async def test_an_unknown_pupil_reaches_nobody_and_the_duty_officer_is_told(make):
    h = make(steps="      - {targets: [guardian], mode: inform}\n"
                   "      - {targets: [school_doctor], timeout: 120, mode: report}\n")
    ev = case("events/fever_single.json") | {"subject": {"id": "S-9999-0000"}}
    r = await h.send(ev)
    assert h.told() == ["值班员", "赵校医"]
    duty = h.channel.sent[0]
    assert "监护人" in duty.body and "未能找到接收人" in duty.body
    assert h.timeline(r.incident_id)[:4] == ["triggered", "step_fired", "target_unresolved",
                                             "step_fired"]


async def test_no_single_subject_reaches_nobody_class_level_and_cluster(make):
    h = make(steps="      - {targets: [class_teacher], timeout: 60, mode: escalate}\n"
                   "      - {targets: [guardian], mode: inform}\n")
    # a class-level incident: no subject
    cls = await h.send({"kind": "suspected_case", "category": "infectious_disease",
                        "summary": "3-2班 多名学生发热", "class_id": "3-2"})
    # a cluster: two pupils' events on one incident (one dedup key)
    a = case("events/fever_cluster_day1_1.json") | {"dedup_key": "cluster/3-2"}
    b = case("events/fever_single.json") | {"dedup_key": "cluster/3-2"}
    clu = await h.send(a)
    assert (await h.send(b)).status == "deduplicated"
    await h.advance(61)
    assert guardian_messages(h) == []
    for inc in (cls.incident_id, clu.incident_id):
        assert "target_unresolved" in h.timeline(inc)
    # a single pupil reported twice is still one subject: the guardian is told
    one = case("events/fever_cluster_day1_1.json") | {"dedup_key": "one/0141"}
    r = await h.send(one)
    await h.send(one)
    await h.advance(61)
    assert [m.recipient_name for m in guardian_messages(h)] == ["赵敏（母亲）"]
    assert "target_unresolved" not in h.timeline(r.incident_id)


def test_single_subject_rule():
    assert single_subject([{"subject": {"id": "A"}}, {"subject": {"id": "A"}}]) == "A"
    assert single_subject([{"subject": {"id": "A"}}, {"subject": {"id": "B"}}]) is None
    assert single_subject([{"subject": {"id": "A"}}, {}]) is None
    assert single_subject([{"subject": {"id": "A"}}, {"action": "resolve"}]) == "A"
    assert single_subject([]) is None


OTHERS = {"B": ("S-2023-0145", "李小红"), "C": ("S-2023-0146", "赵小刚")}


@pytest.mark.parametrize("language", ["zh", "en"])
async def test_a_guardian_message_never_mentions_other_pupils_nor_the_summary(make, language):
    h = make(steps="      - {targets: [guardian], mode: inform}\n"
                   "      - {targets: [class_teacher], timeout: 60, mode: report}\n",
             language=language)
    base = {"kind": "suspected_case", "category": "infectious_disease", "class_id": "3-2",
            "symptoms": ["fever"], "occurred_at": "2026-11-30T07:50:00+08:00",
            "reported_by": "t-wang"}
    for pid, name in OTHERS.values():  # pupils B and C of the same class are ill too
        await h.send(base | {"summary": f"3-2班 {name} 发热", "subject": {"id": pid, "name": name}})
    summary = "3-2班 张小明发热，同班李小红、赵小刚昨日也发热"
    a = await h.send(base | {
        "summary": summary, "details": "同桌李小红（S-2023-0145）也咳嗽，共3人",
        "affected_count": 3, "subject": {"id": "S-2023-0141", "name": "张小明",
                                         "guardian_phone": "13900000003"}})
    mine = [m for m in guardian_messages(h) if m.incident_id == a.incident_id]
    assert [m.recipient_name for m in mine] == ["赵敏（母亲）"]
    text = mine[0].title + "\n" + mine[0].body
    for pid, name in [*OTHERS.values(), ("S-2023-0141", "张小明")]:
        assert pid not in text and name not in text
    for forbidden in (summary, "同桌", "共3人", "涉及人数", "People affected", "王老师", "报告人",
                      "Reported by", "Related events", "相关事件"):
        assert forbidden not in text
    assert ("发热" if language == "zh" else "fever") in text
    assert "3-2" in text
    # the values a cloud-SMS template could map carry nothing else either
    values = json.dumps(dict(mine[0].values), ensure_ascii=False)
    assert "李小红" not in values and summary not in values and "S-2023" not in values
    # the teacher (a person audience) still gets the summary
    teacher = [m for m in h.channel.sent if m.incident_id == a.incident_id
               and m.recipient_name == "王老师"]
    assert summary in teacher[0].body


async def test_guardian_failover_to_the_next_contact_from_the_roster(make):
    h = make(steps="      - {targets: [guardian], mode: inform}\n"
                   "      - {targets: [school_doctor], timeout: 120, mode: report}\n")
    h.channel.outcomes.append(DeliveryStatus.failed_permanent)
    r = await h.send(case("events/fever_single.json"))
    assert [(m.recipient_name, m.address) for m in h.channel.sent][:4] == [
        ("王芳（母亲）", "13900000001"), ("李强（父亲）", "13900000002"),
        ("赵校医", "13800000004"), ("王芳（母亲）", "wangfang@example.com")]
    assert "failover" in h.timeline(r.incident_id)


async def test_roster_contents_are_never_logged(make):
    h = make()
    with structlog.testing.capture_logs() as logs:
        r = await h.send(case("events/fever_single.json"))
        h.engine.acknowledge(r.incident_id, actor="t-wang", via="cli")
        await h.settle()
    assert len(guardian_messages(h)) == 2
    text = json.dumps(logs, ensure_ascii=False, default=str)
    for secret in ("王芳", "李强", "13900000001", "13900000002", "S-2023-0142", "母亲"):
        assert secret not in text


async def test_drills_leave_guardians_out_unless_configured(make):
    h = make(steps="      - {targets: [guardian], mode: inform}\n"
                   "      - {targets: [school_doctor], timeout: 120, mode: report}\n")
    r = await h.send(case("events/fever_single.json") | {"drill": True})
    assert h.told() == ["赵校医"]
    assert h.timeline(r.incident_id).count("drill_guardian_skipped") == 2
    assert "target_unresolved" not in h.timeline(r.incident_id)


# ------------------------------------------------------------------ the roster file and checks


def test_parse_roster_groups_contacts_per_guardian():
    roster = parse_roster(ROSTER.encode("gbk"))
    mum, dad = roster["S-2023-0142"]
    assert (mum.name, mum.relation, [c.to for c in mum.contacts]) == (
        "王芳", "母亲", ["13900000001", "wangfang@example.com"])
    assert dad.label == "李强（父亲）"
    english = parse_roster(b"pupil_id,guardian,relation,to\nX1,Ann,mother,555\n",
                           default_channel="main")
    assert english["X1"][0].contacts[0].channel == "main"


def test_a_bad_roster_names_rows_and_columns_never_values():
    data = ("学号,监护人,关系,渠道,联系方式\n"
            "S-1,王芳,母亲,main,\n"            # no contact
            "S-2,李强,父亲,pigeon,13900000009\n"  # unknown channel (with a config)
            ",赵敏,母亲,main,13900000008\n").encode()
    config = load_config(FIXTURES / "engine.yaml")
    with pytest.raises(RosterError) as e:
        parse_roster(data, config)
    rows = [(x["row"], x["line"], x["column"]) for x in e.value.errors]
    assert rows == [(1, 2, "联系方式"), (2, 3, "渠道"), (3, 4, "学号")]
    assert "13900000009" not in str(e.value) and "王芳" not in str(e.value)
    with pytest.raises(RosterError, match="lacks the column"):
        parse_roster("姓名,电话\n".encode())
    with pytest.raises(RosterError, match="not UTF-8 or GBK"):
        parse_roster(b"\xff\xfe\x00\x81\x30")


def problems(path: Path) -> list[str]:
    _, found = check_config(path)
    return [f"{p.level}: {p}" for p in found]


def test_check_config_guardian_roster(tmp_path):
    assert problems(write_config(tmp_path)) == []
    # a policy uses guardian, no roster configured
    found = problems(write_config(tmp_path, guardians=""))
    assert any("needs a guardian roster" in p and "targets[0]" in p for p in found), found
    # the file is missing
    (tmp_path / "roster.csv").unlink()
    found = problems(write_config(tmp_path, roster=None))
    assert any("guardians.roster" in p and "cannot read the guardian roster" in p
               for p in found), found
    # a bad row, and a group channel
    text = (FIXTURES / "engine.yaml").read_text(encoding="utf-8")
    bad = ROSTER + "S-1,某某,母亲,robot,13900000077\n"
    path = write_config(tmp_path, roster=bad.encode("gbk"))
    path.write_text(path.read_text(encoding="utf-8").replace(
        "  backup: {type: console}\n",
        "  backup: {type: console}\n  robot: {type: dingtalk, options: {webhook_env: X}}\n"),
        encoding="utf-8")
    assert "robot" not in text
    found = problems(path)
    errors = [p for p in found if p.startswith("error") and "guardians.roster" in p]
    assert len(errors) == 1 and "row 6 (line 7), column 渠道" in errors[0]
    assert "posts to a group" in errors[0] and "13900000077" not in errors[0]


def test_shipped_configs_wire_a_guardian_roster():
    root = Path(__file__).resolve().parents[1] / "config"
    for name in ("demo.yaml", "example.yaml"):
        config, found = check_config(root / name)
        assert config is not None and config.guardians is not None, name
        assert not [p for p in found if p.level == "error"], found
        targets = {t for p in config.policies.values() for s in p.steps for t in s.targets}
        assert "guardian" in targets, name


# --- guardians told what fits (issue 13, point 5) --------------------------------------------


async def test_a_pupil_absent_at_home_gets_the_home_reminder_not_collect(make):
    h = make(steps="      - {targets: [guardian], mode: inform}\n"
                   "      - {targets: [school_doctor], timeout: 120, mode: report}\n")
    at_home = case("events/fever_single.json") | {"labels": {"attendance": "absent"}}
    await h.send(at_home)
    body = guardian_messages(h)[0].body
    assert "请让孩子在家观察休息，及时就医，并将就诊结果告知班主任" in body
    assert "来校接孩子" not in body
    # written as a place, the same
    h.channel.sent.clear()
    await h.send(case("events/fever_cluster_day1_1.json") | {"place": "家中"})
    body = guardian_messages(h)[0].body
    assert "在家观察" in body and "来校接孩子" not in body


async def test_a_pupil_at_school_is_to_be_collected(make):
    h = make(steps="      - {targets: [guardian], mode: inform}\n")
    await h.send(case("events/fever_cluster_day1_1.json") | {"labels": {"attendance": "present"}})
    [m] = guardian_messages(h)
    assert "请尽快来校接孩子" in m.body and "在家观察" not in m.body


async def test_a_pupil_at_school_with_37_8_from_the_check_register_gets_a_guardian_message(
        make, tmp_path):
    """The morning check's pupils have no school number, so the roster does not know them:
    the parent's phone the register gives is used, through guardians.channel."""
    from escalator.intake.registers import parse_register

    h = make(steps="      - {targets: [guardian], mode: inform}\n",
             guardians="  roster: roster.csv\n  channel: main\n")
    data = ("编号,年级,班级,姓名,性别,年龄,联系电话,是否出勤,发热,咳嗽,其他(请注明),体温(℃),晨检日期\r\n"
            "2,三年级,2班,李小红,女,9,13800000002,是,,,,37.8,2026年11月30日\r\n").encode("gb18030")
    [sub] = parse_register(data, h.config, key=bytes(range(32)))
    assert sub.event.kind.value == "suspected_case" and sub.event.symptoms[0].value == "fever"
    h.engine.ingest(sub, source="spool")
    await h.settle()
    [m] = guardian_messages(h)
    assert m.address == "13800000002" and m.recipient_name == "家长"
    assert "请尽快来校接孩子" in m.body and "李小红" not in m.body


async def test_without_a_guardian_the_duty_officer_gets_the_class_teacher_and_nothing_more(make):
    h = make(steps="      - {targets: [guardian], mode: inform}\n"
                   "      - {targets: [school_doctor], timeout: 120, mode: report}\n")
    ev = case("events/fever_single.json") | {"subject": {"id": "S-9999-0000", "name": "钱多多",
                                                          "guardian_phone": "13911112222"}}
    await h.send(ev)
    duty = h.channel.sent[0]
    assert duty.recipient_name == "值班员"
    assert "班级：3-2" in duty.body
    assert "班主任：王老师，联系方式：13800000001" in duty.body
    assert "请联系班主任，由班主任通知家长" in duty.body
    for private in ("S-9999-0000", "钱多多", "13911112222"):
        assert private not in duty.body
