"""Registers never hide a case (issue 13, point 2): a register's good rows are taken even when
others are bad; the bad rows go to ``failed/`` as their own file with a reason per row; the
person ``registers.notify`` names (default: the school doctor) is told how many rows of which
file were refused and why, without pupil data; the corrected file adds only the corrected rows;
numeric 缺课 values (half days) are kept; forms of the school's own are read through
``registers.layouts``, and a form that cannot be read is refused naming its unrecognised and
missing columns. Real SQLite store, config/demo.yaml, the sample registers in
examples/registers."""

from __future__ import annotations

import csv
import io
import json

import pytest

from escalator.config.models import REGISTER_FIELDS, RegisterLayout, RegistersSection
from escalator.intake import registers as reg
from escalator.intake.registers import RegisterError, read_register
from escalator.testing import Harness

from .conftest import CASES
from .test_registers import KEY, demo_config
from .test_spool import Wired, count, names, rows

REGISTERS = CASES / "registers"
BADROW = REGISTERS / "absence_2026-11-30_badrow.csv"
CORRECTED = REGISTERS / "absence_2026-11-30_corrected.csv"
FORM = REGISTERS / "absence_form_2026-11-30_gbk.csv"
OWN = REGISTERS / "absence_own_layout_2026-11-30.csv"
OWN_LAYOUT = RegisterLayout(kind="absence", files=["absence_own_layout_*.csv"], columns={
    "填报日期": "date", "所在班级": "class", "学生": "name", "病情描述": "reason",
    "发病时刻": "onset", "缺课": "missed"})


@pytest.fixture
def demo():
    return demo_config()


@pytest.fixture
def harness(tmp_path, demo):
    h = Harness(demo, tmp_path / "db" / "escalator.sqlite3")
    yield h
    h.close()


@pytest.fixture
def spool(harness, tmp_path):
    return Wired(harness, tmp_path / "spool")


def body(sub) -> dict:
    return sub.event.model_dump(mode="json", exclude_none=True)


# --- one bad row never hides the others ---------------------------------------------------


def test_the_good_rows_of_a_register_with_a_bad_row_are_read(demo):
    r = read_register(BADROW.read_bytes(), demo, key=KEY)
    assert [s.event.subject.id for s in r.submissions] == ["S-2023-0141", "S-2023-0143"]
    [bad] = r.refused
    assert (bad.row, bad.line, bad.cells[1]) == (3, 4, "7-3")
    [err] = bad.errors
    assert err["column"] == "班级" and "unknown class '7-3'" in err["message"]
    assert r.rows == 3


async def test_good_rows_are_taken_bad_rows_go_to_failed_and_the_doctor_is_told(spool, harness):
    h = harness
    spool.drop(BADROW.name, BADROW.read_bytes())
    await spool.scan()
    # the file was read: it is in processed/, its refused row in failed/ as a file of its own
    assert names(spool.processed) == [BADROW.name]
    assert names(spool.failed) == ["absence_2026-11-30_badrow.rejected.csv",
                                   "absence_2026-11-30_badrow.rejected.csv.error.json"]
    rejected = (spool.failed / "absence_2026-11-30_badrow.rejected.csv").read_bytes()
    assert rejected.startswith(b"\xef\xbb\xbf")  # a spreadsheet opens it as UTF-8
    table = list(csv.reader(io.StringIO(rejected.decode("utf-8-sig"))))
    assert table[0][-1] == "未接收原因" and table[0][:-1] == BADROW.read_text("utf-8").splitlines()[0].split(",")
    assert [r[:-1] for r in table[1:]] == [BADROW.read_text("utf-8").splitlines()[3].split(",")]
    assert "7-3" in table[1][-1]
    side = json.loads((spool.failed / "absence_2026-11-30_badrow.rejected.csv.error.json")
                      .read_text("utf-8"))
    assert (side["file"], side["rows_read"], side["rows_taken"], side["rows_refused"]) == (
        BADROW.name, 3, 2, 1)
    assert [(e["row"], e["line"], e["column"]) for e in side["errors"]] == [(3, 4, "班级")]
    # the two good rows are incidents; the notice is the third
    assert count(h, "events") == 3
    [notice] = rows(h, "SELECT id, summary, policy_id FROM incidents WHERE dedup_key LIKE "
                       "'register-refused/%'")
    assert notice["policy_id"] == "register_refusals"
    assert f"登记表 {BADROW.name}：1 行未接收（共 3 行，其余 2 行已接收）：第3行（班级）" in notice["summary"]
    await h.settle()
    told = [m for m in h.channel.sent if m.incident_id == notice["id"]]
    assert [m.recipient_name for m in told] == ["赵春梅"]          # the school doctor
    text = told[0].title + told[0].body
    assert "1 行未接收" in text and BADROW.name in text
    assert "S-2023-0199" not in text                               # no pupil data


async def test_the_corrected_register_adds_only_the_corrected_row(spool, harness):
    spool.drop(BADROW.name, BADROW.read_bytes())
    await spool.scan()
    spool.drop(CORRECTED.name, CORRECTED.read_bytes())
    await spool.scan()
    [results] = spool.answers[CORRECTED.name]
    assert [r.status for r in results] == ["duplicate_row", "duplicate_row", "created"]
    assert count(harness, "events") == 4  # two rows, the notice, the corrected row
    [new] = rows(harness, "SELECT class_id FROM incidents WHERE id = ?", results[2].incident_id)
    assert new["class_id"] == "1-3"
    assert names(spool.failed) == ["absence_2026-11-30_badrow.rejected.csv",
                                   "absence_2026-11-30_badrow.rejected.csv.error.json"]


async def test_the_rejected_file_itself_can_be_corrected_and_dropped_again(spool, harness):
    spool.drop(BADROW.name, BADROW.read_bytes())
    await spool.scan()
    text = (spool.failed / "absence_2026-11-30_badrow.rejected.csv").read_text("utf-8-sig")
    spool.drop("fixed.csv", text.replace(",7-3,", ",1-3,").encode("utf-8"))
    await spool.scan()
    [results] = spool.answers["fixed.csv"]
    assert [r.status for r in results] == ["created"]  # the reason column is ignored


async def test_a_register_dropped_twice_writes_its_refused_rows_once(spool, harness):
    spool.drop(BADROW.name, BADROW.read_bytes())
    await spool.scan()
    spool.drop(BADROW.name, BADROW.read_bytes())
    await spool.scan()
    assert len(names(spool.failed)) == 2
    assert count(harness, "incidents", ) == 3


async def test_refused_rows_go_to_the_targets_registers_notify_names(tmp_path, demo):
    config = demo.model_copy(update={"registers": RegistersSection(notify=["leadership"])})
    h = Harness(config, tmp_path / "db" / "escalator.sqlite3")
    try:
        w = Wired(h, tmp_path / "spool")
        w.drop(BADROW.name, BADROW.read_bytes())
        await w.scan()
        await h.settle()
        [notice] = rows(h, "SELECT id FROM incidents WHERE dedup_key LIKE 'register-refused/%'")
        assert sorted(m.recipient_name for m in h.channel.sent
                      if m.incident_id == notice["id"]) == ["刘建国", "张伟"]
    finally:
        h.close()


# --- 缺课, free text, times as written ------------------------------------------------------


def test_half_days_and_other_numeric_missed_values_are_kept(demo):
    r = read_register(BADROW.read_bytes(), demo, key=KEY)
    assert [(s.event.labels["missed"], s.event.labels["missed_unit"]) for s in r.submissions] == [
        ("1", "days"), ("0.5", "days")]
    assert "缺课0.5天" in r.submissions[1].event.details


def test_a_missed_value_that_is_no_number_is_a_row_error(demo):
    data = ("日期,班级,学号,缺勤原因,缺课\n2026-11-30,3-2,S-1,病假,很久\n"
            "2026-11-30,3-2,S-2,病假,半天\n").encode()
    r = read_register(data, demo, key=KEY)
    assert [e["column"] for b in r.refused for e in b.errors] == ["缺课"]
    assert r.submissions[0].event.labels["missed"] == "0.5"


def test_the_form_with_names_and_a_free_text_reason_is_read(demo):
    r = read_register(FORM.read_bytes(), demo, key=KEY)
    assert r.kind == reg.ABSENCE and r.refused == [] and r.unrecognised == []
    first, second, third = (body(s) for s in r.submissions)
    # free text mapped to WS/T 772 codes; the rest kept as other
    assert first["symptoms"] == ["fever", "cough"]
    assert "其他：发烧38.5度、已到社区医院就诊" in first["details"]
    assert second["symptoms"] == ["abdominal_pain", "diarrhoea"]
    assert third["symptoms"] == [] and "其他：手骨折住院" in third["details"]
    assert third["labels"]["reason"] == "sick"
    # names, sex, age and the parent's phone are the subject's personal data only
    assert first["subject"]["name"] == "钱小军" and first["subject"]["guardian_phone"] == "13800000011"
    assert first["subject"]["id"].startswith("P-")
    assert all("钱小军" not in json.dumps({k: v for k, v in b.items() if k != "subject"},
                                         ensure_ascii=False) for b in (first, second, third))
    # times as written: an onset the same day is the time of the case, an earlier onset kept
    assert first["occurred_at"] == "2026-11-30T06:50:00+08:00"
    assert second["labels"]["onset_at"] == "2026-11-29T22:30:00+08:00"
    assert (first["labels"]["missed"], first["labels"]["missed_unit"]) == ("4", "lessons")
    assert (second["labels"]["missed"], second["labels"]["missed_unit"]) == ("0.5", "days")


def test_a_form_of_its_own_is_refused_naming_unrecognised_and_missing_columns(demo):
    with pytest.raises(RegisterError) as e:
        read_register(OWN.read_bytes(), demo, key=KEY, name=OWN.name)
    assert "unrecognised column(s): 填报日期, 所在班级, 学生, 病情描述, 发病时刻" in e.value.reason
    assert "needs 日期, 班级, 学号 or 姓名, 缺勤原因" in e.value.reason
    assert "registers.layouts" in e.value.reason
    assert {(x["column"], x["message"]) for x in e.value.errors} >= {
        ("填报日期", "unrecognised column"), ("日期", "required column missing")}


def test_a_layout_in_the_config_reads_the_form(demo):
    config = demo.model_copy(update={"registers": RegistersSection(layouts=[OWN_LAYOUT])})
    r = read_register(OWN.read_bytes(), config, key=KEY, name=OWN.name)
    assert [(s.event.class_id, s.event.symptoms) for s in r.submissions] == [
        ("3-1", ["fever", "headache"]), ("3-1", ["sore_throat"])]
    assert r.submissions[0].event.labels["missed"] == "0.5"
    # only for the files it names
    with pytest.raises(RegisterError):
        read_register(OWN.read_bytes(), config, key=KEY, name="other.csv")


def test_a_layout_by_source(demo):
    layout = OWN_LAYOUT.model_copy(update={"files": [], "sources": ["district-share"]})
    config = demo.model_copy(update={"registers": RegistersSection(layouts=[layout])})
    assert len(read_register(OWN.read_bytes(), config, key=KEY, name="x.csv",
                             source="district-share").submissions) == 2


def test_a_layout_naming_an_unknown_field_is_a_config_error():
    with pytest.raises(ValueError, match="unknown field 'pupils'"):
        RegisterLayout(columns={"学生": "pupils"})
    with pytest.raises(ValueError, match="unknown symptom code"):
        RegisterLayout(kind="chenwujian", columns={"烧": "symptom:burn"})


def test_the_layout_fields_are_the_fields_the_parser_reads():
    assert set(REGISTER_FIELDS["absence"]) == set(reg._ABSENCE_COLUMNS)
    assert set(REGISTER_FIELDS["chenwujian"]) == set(reg._CHECK_COLUMNS)


# --- Excel workbooks (.xlsx) ---------------------------------------------------------------


def badrow_workbook() -> bytes:
    """The bad-row register as a school keeps it in Excel: an instructions sheet first, then
    the register sheet with a title row above the header, dates and times as Excel dates, the
    days missed as numbers (a half day as 0.5)."""
    from datetime import datetime

    from openpyxl import Workbook

    book = Workbook()
    book.active.title = "填写说明"
    book.active.append(["请按班级填写，每天下午4点前提交"])
    sheet = book.create_sheet("因病缺勤登记")
    sheet.append(["示例小学因病缺勤登记表"])
    sheet.merge_cells("A1:H1")
    lines = list(csv.reader(io.StringIO(BADROW.read_text("utf-8"))))
    sheet.append(lines[0])
    for cells in lines[1:]:
        day = datetime.fromisoformat(cells[0])
        onset = datetime.fromisoformat(cells[5])
        sheet.append([day, cells[1], cells[2], cells[3], cells[4], onset, float(cells[6]),
                      cells[7]])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def test_an_excel_register_is_read_like_its_csv(demo):
    data = badrow_workbook()
    assert reg.is_xlsx(data) and not reg.is_xlsx(BADROW.read_bytes())
    r = read_register(data, demo, key=KEY)
    from_csv = read_register(BADROW.read_bytes(), demo, key=KEY)
    assert [body(s) for s in r.submissions] == [body(s) for s in from_csv.submissions]
    assert [(s.event.labels["missed"]) for s in r.submissions] == ["1", "0.5"]
    [bad] = r.refused
    assert (bad.row, bad.line, bad.cells[:3]) == (3, 5, ["2026-11-30", "7-3", "S-2023-0199"])
    assert "unknown class '7-3'" in bad.errors[0]["message"]


def test_a_file_that_only_looks_like_a_workbook_is_refused_naming_excel(demo):
    with pytest.raises(RegisterError, match="Excel"):
        read_register(b"PK\x03\x04 not really a zip", demo, key=KEY)


async def test_an_excel_registers_bad_rows_go_to_failed_as_csv(spool, harness):
    spool.drop("absence_2026-11-30.xlsx", badrow_workbook())
    await spool.scan()
    assert names(spool.processed) == ["absence_2026-11-30.xlsx"]
    assert names(spool.failed) == ["absence_2026-11-30.rejected.csv",
                                   "absence_2026-11-30.rejected.csv.error.json"]
    table = list(csv.reader(io.StringIO(
        (spool.failed / "absence_2026-11-30.rejected.csv").read_text("utf-8-sig"))))
    assert table[1][:3] == ["2026-11-30", "7-3", "S-2023-0199"] and "7-3" in table[1][-1]
    assert count(harness, "events") == 3  # the two good rows and the doctor's notice


def test_a_workbook_that_unpacks_too_large_is_refused_before_it_is_read(demo):
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("xl/worksheets/sheet1.xml", b"\0" * (reg.XLSX_MAX_UNPACKED + 1))
    assert len(out.getvalue()) < 1024 * 1024  # fits the spool's max_bytes
    with pytest.raises(RegisterError, match="too large"):
        read_register(out.getvalue(), demo, key=KEY)
