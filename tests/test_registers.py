"""CSV registers (escalator/intake/registers.py): the sample registers in examples/registers read
exactly as cases/README.md says — through the parser and through the spool folder with a real
SQLite store and config/demo.yaml (classes 1-3, 3-2, 4-1) — plus encodings, the class alias
rule, the symptom table, bad rows, and a property test that the parser raises only
RegisterError."""

from __future__ import annotations

import codecs
import functools
import json
import os
import re
import stat

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from escalator.config import load_config
from escalator.events import Symptom
from escalator.intake import registers as reg
from escalator.intake.registers import RegisterError, parse_register
from escalator.testing import Harness

from .conftest import CASES, ROOT
from .test_spool import Wired, count, names, rows

REGISTERS = CASES / "registers"
GBK = REGISTERS / "absence_2026-11-30_gbk.csv"
BOM = REGISTERS / "absence_2026-11-30_utf8bom.csv"
CHECK = REGISTERS / "chenwujian_2026-11-30_gb18030.csv"
KEY = bytes(range(32))
NAMES = ["王小明", "李小红", "赵一鸣", "陈思", "刘洋"]
PHONES = [f"1380000000{i}" for i in range(1, 6)]


@functools.cache
def demo_config():
    return load_config(ROOT / "config/demo.yaml")


@pytest.fixture
def demo():
    return demo_config()


def parse(path_or_bytes, config, **kw):
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else path_or_bytes.read_bytes()
    return parse_register(data, config, key=kw.pop("key", KEY), **kw)


def body(sub) -> dict:
    return sub.event.model_dump(mode="json", exclude_none=True)


# --- encodings ----------------------------------------------------------------------------


def test_the_gbk_register_is_detected_and_decoded_exactly():
    text, encoding = reg.decode(GBK.read_bytes())
    assert encoding == "gb18030"
    assert text.splitlines()[0] == "日期,班级,学号,缺勤原因,症状,发病时间,报告人"
    assert "2026-11-30,3-2,S-2023-0142,病假,发热;咳嗽,2026-11-29 20:00,王丽" in text
    assert "2026-11-30,1-3,S-2026-0027,病假,腹泻;呕吐,2026-11-30 05:10,刘敏" in text


def test_the_bom_register_decodes_to_the_same_text():
    gbk, _ = reg.decode(GBK.read_bytes())
    bom, encoding = reg.decode(BOM.read_bytes())
    assert encoding == "utf-8-sig"
    assert bom == gbk and not bom.startswith("\ufeff")


def test_the_gb18030_check_register_decodes_exactly():
    text, encoding = reg.decode(CHECK.read_bytes())
    assert encoding == "gb18030"
    lines = text.splitlines()
    assert lines[0].startswith("编号,年级,班级,姓名,性别,年龄,联系电话,是否出勤,发热,皮疹,")
    assert "腮腺肿大或疼痛" in lines[0] and "其他(请注明)" in lines[0] and "体温(℃)" in lines[0]
    assert lines[3].startswith("3,三年级,(2)班,赵一鸣,男,8,")
    assert "咽痛,38.2,是,/,2026年11月30日" in lines[3]


def test_a_declared_encoding_is_used(demo):
    assert [body(s) for s in parse(GBK, demo, encoding="gbk")] == \
        [body(s) for s in parse(BOM, demo)]
    with pytest.raises(RegisterError, match=r"not UTF-8-SIG text: undecodable byte at offset \d+"):
        parse(GBK, demo, encoding="utf-8")
    with pytest.raises(RegisterError, match="unknown encoding"):
        parse(GBK, demo, encoding="klingon")


def test_excel_unicode_text_utf16_with_tabs_is_read(demo):
    text, _ = reg.decode(BOM.read_bytes())
    data = codecs.BOM_UTF16_LE + text.replace(",", "\t").encode("utf-16-le")
    assert [body(s) for s in parse(data, demo)] == [body(s) for s in parse(BOM, demo)]


def test_bytes_that_are_neither_utf8_nor_gb18030_are_refused_not_garbled(demo):
    with pytest.raises(RegisterError, match="undecodable byte at offset 9"):
        parse(b"\xe6\x97\xa5\xe6\x9c\x9f,x\n\x80\xff\xfe", demo)


# --- the sickness-absence register --------------------------------------------------------


def test_absence_register_one_event_per_sick_row_and_personal_leave_to_the_ledger(demo):
    subs = parse(GBK, demo)
    assert [(s.event.kind.value, s.ledger_only) for s in subs] == [
        ("absence", False), ("absence", False), ("absence", True), ("absence", False)]
    assert [s.row_key for s in subs] == [
        "absence/2026-11-30/S-2023-0142", "absence/2026-11-30/S-2023-0145",
        "absence/2026-11-30/S-2022-0311", "absence/2026-11-30/S-2026-0027"]
    assert [s.event.symptoms for s in subs] == [
        [Symptom.fever, Symptom.cough], [Symptom.fever], [], [Symptom.diarrhoea, Symptom.vomiting]]
    assert [s.event.class_id for s in subs] == ["3-2", "3-2", "4-1", "1-3"]
    assert [s.event.subject.id for s in subs] == [
        "S-2023-0142", "S-2023-0145", "S-2022-0311", "S-2026-0027"]
    assert [s.event.summary for s in subs] == [
        "三年级2班 1名学生因病缺勤：发热、咳嗽", "三年级2班 1名学生因病缺勤：发热",
        "四年级1班 1名学生事假缺勤", "一年级3班 1名学生因病缺勤：腹泻、呕吐"]
    for s in subs:
        assert s.event.category.value == "infectious_disease"
        assert s.event.source == "absence-register"
    # a reporter named in the register is matched to the config's person
    assert subs[0].event.reported_by == "t-wang-li"


def test_absence_register_times_without_a_zone_are_school_local(demo):
    first, second, _, fourth = parse(GBK, demo)
    # onset on the register's day: that is when it occurred, read in Asia/Shanghai
    assert body(second)["occurred_at"] == "2026-11-30T06:30:00+08:00"
    assert body(fourth)["occurred_at"] == "2026-11-30T05:10:00+08:00"
    # onset the evening before: the absence belongs to the register's day; the onset is kept
    assert body(first)["occurred_at"] == "2026-11-30T00:00:00+08:00"
    assert first.event.labels["onset_at"] == "2026-11-29T20:00:00+08:00"
    assert "发病时间：2026-11-29 20:00" in first.event.details


def test_gbk_and_utf8_bom_registers_give_the_same_events(demo):
    gbk, bom = parse(GBK, demo), parse(BOM, demo)
    assert [(s.row_key, s.ledger_only, body(s)) for s in gbk] == \
        [(s.row_key, s.ledger_only, body(s)) for s in bom]


# --- the morning/noon-check register ------------------------------------------------------


def test_check_register_rows_1_to_4_and_row_5_as_specified(demo):
    subs = parse(CHECK, demo)
    assert len(subs) == 5
    one, two, three, four, five = subs
    assert [(s.event.kind.value, s.event.class_id, s.ledger_only) for s in subs] == [
        ("absence", "3-2", False),          # absent with fever and cough
        ("suspected_case", "3-2", False),   # present with fever: 带病来校
        ("absence", "3-2", False),          # written (2)班; 咽痛 in 其他
        ("absence", "1-3", False),          # 一年级 + 3班
        ("absence", "4-1", True),           # 事假, no symptom: ledger only
    ]
    assert one.event.symptoms == [Symptom.fever, Symptom.cough]
    assert two.event.symptoms == [Symptom.fever]
    assert three.event.symptoms == [Symptom.fever, Symptom.cough, Symptom.sore_throat]
    assert four.event.symptoms == [Symptom.diarrhoea, Symptom.vomiting]
    assert five.event.symptoms == []
    assert [s.event.labels.get("temperature") for s in subs] == ["38.6", "37.8", "38.2", None, None]
    assert "体温38.6℃" in one.event.details
    assert one.event.diagnosis == "流感" and four.event.diagnosis == "胃肠炎"
    assert one.event.summary == "三年级2班 1名学生因病缺勤：发热、咳嗽（晨检）"
    assert two.event.summary == "三年级2班 1名学生带病来校：发热（晨检）"
    assert five.event.summary == "四年级1班 1名学生事假缺勤（晨检）"
    for s in subs:
        e = s.event
        assert e.category.value == "infectious_disease" and e.source == "morning-check-register"
        assert e.grade == e.class_id.split("-")[0]
        assert body(s)["occurred_at"] == "2026-11-30T00:00:00+08:00"   # 2026年11月30日
        assert re.fullmatch(r"P-[0-9a-f]{16}", e.subject.id)
        assert s.row_key == f"chenwujian/2026-11-30/{e.subject.id}"


def test_check_register_names_and_phones_only_in_the_subject(demo):
    subs = parse(CHECK, demo)
    for s, name, phone in zip(subs, NAMES, PHONES, strict=True):
        assert s.event.subject.name == name
        assert s.event.subject.guardian_phone == phone
        without_subject = json.dumps(
            s.event.model_dump(mode="json", exclude={"subject"}), ensure_ascii=False)
        assert name not in without_subject and phone not in without_subject
        assert name not in s.row_key and s.event.subject.id not in (name, phone)
    assert (subs[0].event.subject.sex, subs[0].event.subject.age) == ("男", 9)


def test_pseudonymous_ids_are_stable_and_keyed(demo):
    a, b = parse(CHECK, demo), parse(CHECK, demo)
    assert [s.event.subject.id for s in a] == [s.event.subject.id for s in b]
    assert len({s.event.subject.id for s in a}) == 5
    other = parse(CHECK, demo, key=b"another key, another installation")
    assert not {s.event.subject.id for s in a} & {s.event.subject.id for s in other}
    assert a[0].event.subject.id == reg.pseudonym(KEY, "示例小学", "3-2", "王小明")
    assert reg.pseudonym(KEY, "示例小学", "3-2", "王 小明") == a[0].event.subject.id


def test_the_key_is_asked_for_only_when_a_pupil_needs_an_id(demo):
    calls = []

    def key():
        calls.append(1)
        return KEY

    parse_register(GBK.read_bytes(), demo, key=key)
    assert calls == []
    parse_register(CHECK.read_bytes(), demo, key=key)
    assert calls == [1]

    def broken():
        raise OSError("state dir is read-only")

    with pytest.raises(OSError, match="read-only"):  # not a row error: raised unchanged
        parse_register(CHECK.read_bytes(), demo, key=broken)


# --- the class alias rule -----------------------------------------------------------------


@pytest.mark.parametrize("grade, cls, expected", [
    ("三年级", "2班", "3-2"), ("三年级", "(2)班", "3-2"), ("三年级", "（2）班", "3-2"),
    ("一年级", "3班", "1-3"), ("3", "2", "3-2"), ("３年级", "（２）", "3-2"),
    ("三", "二班", "3-2"), ("三年级", "【2】班", "3-2"), ("三年级", "三年级2班", "3-2"),
    (None, "3-2", "3-2"), (None, "三年级2班", "3-2"), (None, "三(2)班", "3-2"),
    (None, "3年级(2)班", "3-2"), (None, "3.2", "3-2"), ("十二年级", "十一班", "12-11"),
    ("六年级", "二十一班", "6-21"), ("初三", "2班", "9-2"), ("高一", "(1)班", "10-1"),
])
def test_class_alias_rule(grade, cls, expected):
    assert reg.class_id(grade, cls) == expected


@pytest.mark.parametrize("grade, cls", [
    ("三年级", ""), ("三年级", "甲班"), ("初四", "2班"), (None, "32"), ("三年级", "0班"),
    ("百年级", "2班"), (None, "三年级"),
])
def test_class_alias_rule_refuses_what_it_cannot_read(grade, cls):
    with pytest.raises(ValueError):
        reg.class_id(grade, cls)


def test_a_class_the_school_does_not_have_is_refused(demo):
    with pytest.raises(ValueError, match=r"unknown class .*read as 3-9"):
        reg.class_id("三年级", "9班", demo.school.classes)


# --- the symptom table --------------------------------------------------------------------


@pytest.mark.parametrize("word, code", [
    ("发热", "fever"), ("发烧", "fever"), ("咳嗽", "cough"), ("咽痛", "sore_throat"),
    ("咽喉痛", "sore_throat"), ("腹泻", "diarrhoea"), ("呕吐", "vomiting"), ("皮疹", "rash"),
    ("腮腺肿大", "parotid_swelling"), ("头痛", "headache"), ("腹痛", "abdominal_pain"),
    ("乏力", "fatigue"), ("头晕", "dizziness"), ("结膜充血", "conjunctival_congestion"),
    ("红眼", "conjunctival_congestion"), ("黄疸", "jaundice"),
])
def test_symptom_words_map_to_ws_t_772_codes(word, code):
    assert reg.map_symptoms(word) == ([Symptom(code)], [])


def test_free_text_symptoms():
    assert reg.map_symptoms("发热;咳嗽") == ([Symptom.fever, Symptom.cough], [])
    assert reg.map_symptoms("发热伴咳嗽、流涕") == ([Symptom.fever, Symptom.cough], ["流涕"])
    assert reg.map_symptoms("轻微咽痛") == ([Symptom.sore_throat], ["轻微咽痛"])
    assert reg.map_symptoms("无发热") == ([], ["无发热"])   # a negation maps to nothing
    assert reg.map_symptoms("/") == ([], [])


# --- bad rows -----------------------------------------------------------------------------

HEADER = "编号,年级,班级,姓名,性别,年龄,联系电话,是否出勤,发热,咳嗽,其他(请注明),体温(℃),晨检日期"


def check_register(*lines: str, encoding: str = "gb18030") -> bytes:
    return ("\r\n".join((HEADER, *lines)) + "\r\n").encode(encoding)


def test_bad_rows_reject_the_file_listing_every_row_column_and_reason(demo):
    data = check_register(
        "1,三年级,2班,王小明,男,9,13800000001,否,√,,,38.6,2026年11月30日",
        "2,三年级,9班,李小红,女,9,13800000002,是,√,,,37.8,2026年11月30日",
        "3,三年级,2班,赵一鸣,男,8,13800000003,否,有点,,,高烧,2026年13月30日",
    )
    with pytest.raises(RegisterError) as e:
        parse(data, demo)
    assert "2 bad row(s): 2, 3" in e.value.reason
    by = {(x["row"], x["column"]): x for x in e.value.errors}
    assert set(by) == {(2, "班级"), (3, "发热"), (3, "体温(℃)"), (3, "晨检日期")}
    assert "unknown class" in by[2, "班级"]["message"] and "3-9" in by[2, "班级"]["message"]
    assert by[2, "班级"]["line"] == 3 and by[2, "班级"]["field"] == "row 2 (line 3), 班级"
    assert "not a tick" in by[3, "发热"]["message"]
    assert "not a temperature" in by[3, "体温(℃)"]["message"]
    assert "no such date" in by[3, "晨检日期"]["message"]


def test_a_bad_phone_is_reported_without_echoing_it(demo):
    with pytest.raises(RegisterError) as e:
        parse(check_register("1,三年级,2班,王小明,男,9,138-ABC-0001,否,√,,,38.6,2026-11-30"), demo)
    [err] = e.value.errors
    assert err["column"] == "联系电话" and "ABC" not in json.dumps(err, ensure_ascii=False)


def test_an_unquoted_comma_that_shifts_the_columns_is_a_row_error(demo):
    with pytest.raises(RegisterError) as e:
        parse(check_register("1,三年级,2班,王小明,男,9,13800000001,否,√,,咽痛,头痛,38.6,2026-11-30"),
              demo)
    assert "unquoted comma" in e.value.errors[0]["message"]


@pytest.mark.parametrize("data, reason", [
    (b"", "empty register"),
    ("标题\n甲,乙,丙\n1,2,3\n".encode(), "not a known register"),
    ("日期,班级,学号,症状\n2026-11-30,3-2,S-1,发热\n".encode(), "required column(s) missing: 缺勤原因"),
])
def test_files_that_are_not_registers(demo, data, reason):
    with pytest.raises(RegisterError, match=re.escape(reason)):
        parse(data, demo)


def test_a_title_row_above_the_header_is_skipped(demo):
    text, _ = reg.decode(CHECK.read_bytes())
    data = ("示例小学晨午检登记表（2026年11月30日）,,,,\r\n" + text).encode("gb18030")
    assert [body(s) for s in parse(data, demo)] == [body(s) for s in parse(CHECK, demo)]


def test_absence_register_bad_rows(demo):
    data = ("日期,班级,学号,缺勤原因,症状,发病时间,报告人\n"
            "2026-11-30,3-2,,病假,发热,2026-11-29 20:00,王丽\n"
            "2026-11-30,3-2,S-1,旷课,,,王丽\n"
            "2026-11-30,3-2,S-2,病假,发热,2026-12-01 08:00,王丽\n").encode("gbk")
    with pytest.raises(RegisterError) as e:
        parse(data, demo)
    assert {(x["row"], x["column"]) for x in e.value.errors} == {(1, "学号"), (3, "发病时间")}
    # 旷课 is not refused: an absence to follow up (a row is never lost over its reason)
    [s] = reg.read_register(data, demo, key=KEY).submissions
    assert s.event.labels["reason"] == "unknown" and "原因待查" in s.event.summary


def test_healthy_pupils_who_are_present_give_nothing(demo):
    assert parse(check_register("1,三年级,2班,王小明,男,9,,是,,,,36.5,2026-11-30"), demo) == []


def test_an_absence_without_a_reason_is_an_event_to_follow_up(demo):
    [s] = parse(check_register("1,三年级,2班,王小明,男,9,,否,,,,/,2026-11-30"), demo)
    assert s.event.kind.value == "absence" and not s.ledger_only
    assert "原因待查" in s.event.summary


def test_a_fever_temperature_without_a_tick_counts_as_fever(demo):
    [s] = parse(check_register("1,三年级,2班,王小明,男,9,,是,,,,37.5,2026-11-30"), demo)
    assert s.event.kind.value == "suspected_case" and s.event.symptoms == [Symptom.fever]


# --- the parser never raises anything but RegisterError -----------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_give_events_or_register_error(data):
    try:
        parse_register(data, demo_config(), key=KEY)
    except RegisterError as e:
        assert e.reason


CELL = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["√", "是", "否", "/", "", "三年级", "(2)班", "2班", "3-2", "38.6", "37.3",
                     "事假", "病假", "咽痛", "2026年11月30日", "2026-11-30 06:30", "9岁", "男",
                     "十二年级", "0226-02-30", "9999-12-31 23:59", "nan", "1e309", "十十班"]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(header=st.sampled_from([HEADER, "日期,班级,学号,缺勤原因,症状,发病时间,报告人"]),
       table=st.lists(st.lists(CELL, max_size=16), max_size=6),
       encoding=st.sampled_from(["utf-8", "gb18030", "utf-8-sig"]))
def test_arbitrary_rows_give_events_or_register_error(header, table, encoding):
    out = [header] + [",".join(c.replace(",", "，").replace('"', "") for c in r) for r in table]
    try:
        data = "\n".join(out).encode(encoding)
    except UnicodeEncodeError:
        return
    try:
        subs = parse_register(data, demo_config(), key=KEY)
    except RegisterError as e:
        assert e.reason
        for err in e.errors:
            assert err["message"] and ("row" not in err or err["row"] >= 1)
        return
    for s in subs:
        assert s.row_key and s.event.summary


# --- through the spool folder -------------------------------------------------------------


@pytest.fixture
def demo_harness(tmp_path, demo):
    h = Harness(demo, tmp_path / "db" / "escalator.sqlite3")
    yield h
    h.close()


@pytest.fixture
def spool(demo_harness, tmp_path):
    return Wired(demo_harness, tmp_path / "spool")


def statuses(w: Wired, name: str, i: int = -1) -> list[str] | None:
    results = w.answers[name][i]
    return None if results is None else [r.status for r in results]


async def test_absence_register_through_the_spool_and_redrops(spool, demo_harness):
    h = demo_harness
    spool.drop(GBK.name, GBK.read_bytes())
    await spool.scan()
    assert names(spool.processed) == [GBK.name] and names(spool.failed) == []
    assert statuses(spool, GBK.name) == ["created", "created", "ledger", "created"]
    assert count(h, "events") == 4
    stored = rows(h, "SELECT kind, outcome, incident_id, row_key FROM events ORDER BY row_key")
    assert [(r["kind"], r["outcome"]) for r in stored] == [
        ("absence", "ledger"), ("absence", "created"), ("absence", "created"),
        ("absence", "created")]
    assert stored[0]["incident_id"] is None            # 事假: the ledger only
    await h.settle()
    assert "王丽" in h.told()                          # 3-2's class teacher is told

    # the same register again: nothing new
    spool.drop(GBK.name, GBK.read_bytes())
    await spool.scan()
    assert statuses(spool, GBK.name) is None
    # the same register saved as UTF-8 with a BOM: the same rows, nothing new
    spool.drop(BOM.name, BOM.read_bytes())
    await spool.scan()
    assert statuses(spool, BOM.name) == ["duplicate_row"] * 4
    assert count(h, "events") == 4
    assert names(spool.processed) == sorted([GBK.name, "absence_2026-11-30_gbk.1.csv", BOM.name])


async def test_a_re_exported_register_adds_only_its_new_row(spool, demo_harness):
    spool.drop(GBK.name, GBK.read_bytes())
    await spool.scan()
    incidents = count(demo_harness, "incidents")
    extra = "2026-11-30,3-2,S-2023-0150,病假,咽喉痛;头痛,2026-11-30 07:00,王丽\r\n".encode("gbk")
    spool.drop("absence_2026-11-30_export2.csv", GBK.read_bytes() + extra)
    await spool.scan()
    assert statuses(spool, "absence_2026-11-30_export2.csv") == ["duplicate_row"] * 4 + ["created"]
    # the new row, and the school cluster it completes: a third pupil of 3-2 in the fever group
    # (headache) that day, with S-2023-0142 (fever, cough) and S-2023-0145 (fever)
    assert count(demo_harness, "events") == 6
    assert count(demo_harness, "incidents") == incidents + 2
    assert [r["dedup_key"] for r in rows(demo_harness, "SELECT dedup_key FROM incidents WHERE "
                                         "dedup_key LIKE 'cluster/%'")] == [
        "cluster/fever/class:3-2/2026-11-30"]
    [new] = rows(demo_harness, "SELECT body FROM events WHERE row_key = ?",
                 "absence/2026-11-30/S-2023-0150")
    assert json.loads(new["body"])["symptoms"] == ["sore_throat", "headache"]


async def test_check_register_through_the_spool_keeps_names_out_of_messages(spool, demo_harness):
    h = demo_harness
    spool.drop(CHECK.name, CHECK.read_bytes())
    await spool.scan()
    assert names(spool.failed) == []
    assert statuses(spool, CHECK.name) == ["created"] * 4 + ["ledger"]
    key_file = spool.spool.parent / "state" / "pseudonym.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    await h.settle()
    assert h.channel.sent, "the class teachers are told"
    for m in h.channel.sent:
        text = f"{m.title}\n{m.body}"
        for secret in NAMES + PHONES:
            assert secret not in text
    for inc in rows(h, "SELECT summary FROM incidents"):
        assert not any(n in inc["summary"] for n in NAMES)
    bodies = [json.loads(r["body"]) for r in rows(h, "SELECT body FROM events ORDER BY rowid")]
    # three 3-2 pupils with fever: the school cluster, whose event names nobody
    [cluster] = [b for b in bodies if b["source"] == "escalator"]
    assert "subject" not in cluster and cluster["labels"]["cluster"] == "fever"
    [members] = rows(h, "SELECT event_count FROM incidents WHERE dedup_key LIKE 'cluster/%'")
    assert members["event_count"] == 3  # the cluster counts its members
    bodies = [b for b in bodies if b["source"] != "escalator"]
    assert [b["subject"]["name"] for b in bodies] == NAMES       # kept, in the subject only
    for b in bodies:
        rest = json.dumps({k: v for k, v in b.items() if k != "subject"}, ensure_ascii=False)
        assert not any(s in rest for s in NAMES + PHONES)
    # re-dropping the file adds nothing; a copy under another name neither
    spool.drop(CHECK.name, CHECK.read_bytes())
    spool.drop("copy.csv", CHECK.read_bytes())
    await spool.scan()
    assert count(h, "events") == 6  # five rows and the cluster


async def test_a_bad_row_goes_to_failed_naming_its_row_and_the_good_row_is_taken(
        spool, demo_harness):
    data = check_register("1,三年级,2班,王小明,男,9,13800000001,否,√,,,38.6,2026年11月30日",
                          "2,七年级,2班,李小红,女,9,13800000002,是,√,,,37.8,2026年11月30日")
    spool.drop("bad.csv", data)
    await spool.scan()
    side = spool.sidecar("bad.rejected.csv")
    assert side["reason"].endswith("1 bad row(s): 2")
    [err] = side["errors"]
    assert (err["row"], err["line"], err["column"]) == (2, 3, "班级")
    assert "7-2" in err["message"]
    assert "李小红" not in json.dumps(side, ensure_ascii=False)
    assert statuses(spool, "bad.csv") == ["created", "created"]  # row 1 and the notice


async def test_a_declared_encoding_through_the_spool(demo_harness, tmp_path):
    w = Wired(demo_harness, tmp_path / "spool", encoding="utf-8")
    w.drop(GBK.name, GBK.read_bytes())
    w.drop(BOM.name, BOM.read_bytes())
    await w.scan()
    assert "undecodable byte" in w.sidecar(GBK.name)["reason"]
    assert names(w.processed) == [BOM.name]


async def test_a_corrupt_pseudonym_key_leaves_the_file_for_later(spool, demo_harness):
    key_file = spool.spool.parent / "state" / "pseudonym.key"
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.write_text("not hex\n", encoding="ascii")
    spool.drop(CHECK.name, CHECK.read_bytes())
    with structlog.testing.capture_logs() as logs:
        await spool.scan()
    assert names(spool.incoming) == [CHECK.name] and names(spool.failed) == []
    assert any(e["event"] == "spool_file_deferred" for e in logs)
    assert key_file.read_text(encoding="ascii") == "not hex\n"   # never replaced
    os.unlink(key_file)
    demo_harness.clock.advance(60)
    await spool.scan()
    assert names(spool.processed) == [CHECK.name]
    assert count(demo_harness, "events") == 6  # five rows and the 3-2 fever cluster
