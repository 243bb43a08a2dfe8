"""One class rule on every input (issue 13, point 3; escalator/classes.py, docs/classes.md):
full-width digits and dashes, Chinese numerals and the common forms read as the school's
``3-2`` ids before routing, dedup and cluster counting — over HTTP, in spool JSON/YAML, in
registers and in PagerDuty/Alertmanager labels; a class the school does not list is accepted
with a warning in the answer and the timeline, and the duty officer is told why nobody else
was. Real SQLite store, real HTTP server."""

from __future__ import annotations

import json

import pytest

from escalator.classes import class_id, normalise_class, normalise_grade
from escalator.events import Event
from escalator.intake.compat import AmAlert, am_event
from escalator.intake.parsing import IntakeError, parse_event

from .test_api import ADMIN, SOURCE, api, bearer, env  # noqa: F401 (fixtures)
from .test_spool import names


@pytest.mark.parametrize("written, cid", [
    ("３－１", "3-1"), ("3－1", "3-1"), ("3—1", "3-1"), ("3 - 1", "3-1"), ("03-01", "3-1"),
    ("三年级二班", "3-2"), ("三年级2班", "3-2"), ("3年级2班", "3-2"), ("三(2)班", "3-2"),
    ("三（２）班", "3-2"), ("四年级三班", "4-3"), ("七年级1班", "7-1"), ("初一(1)班", "7-1"),
    ("初一1班", "7-1"), ("初中一年级(1)班", "7-1"), ("初三（4）班", "9-4"), ("高一(1)班", "10-1"),
    ("高三(12)班", "12-12"), ("3.2", "3-2"), ("3/2班", "3-2"), ("六年级二十一班", "6-21"),
])
def test_the_forms_schools_write(written, cid):
    assert normalise_class(written) == cid


@pytest.mark.parametrize("written", ["甲班", "三年级", "32", "初四(1)班", "高0(1)班", "3-0", ""])
def test_what_is_not_a_class_is_refused_naming_it(written):
    with pytest.raises(ValueError):
        class_id(None, written)


@pytest.mark.parametrize("written, grade", [("三年级", "3"), ("初一", "7"), ("高二", "11"),
                                            ("３", "3"), ("12", "12")])
def test_grades(written, grade):
    assert normalise_grade(written) == grade


def test_the_event_model_normalises_class_and_grade():
    ev = parse_event({"kind": "absence", "category": "infectious_disease", "summary": "缺勤",
                      "class_id": "３－１", "grade": "三年级"})
    assert (ev.class_id, ev.grade) == ("3-1", "3")
    with pytest.raises(IntakeError) as e:
        parse_event({"kind": "absence", "category": "other", "summary": "x", "class_id": "甲班"})
    [err] = e.value.errors
    assert err["field"] == "class_id" and "三年级2班" in err["message"] and "甲班" in err["message"]


def test_alertmanager_labels_use_the_rule_and_never_refuse_an_alert():
    alert = AmAlert.model_validate({"status": "firing", "labels": {"alertname": "x",
                                                                    "班级": "三年级二班"}})
    assert Event.model_validate(am_event(alert)).class_id == "3-2"
    odd = AmAlert.model_validate({"status": "firing", "labels": {"alertname": "x",
                                                                  "class_id": "机房"}})
    assert "class_id" not in am_event(odd)


async def test_one_class_one_cluster_whichever_way_it_is_written(harness):
    """Three pupils of 3-2 written three ways: one class teacher told, one cluster count."""
    forms = ["３－２", "三年级二班", "3(2)班"]
    for i, written in enumerate(forms):
        r = await harness.send({"kind": "suspected_case", "category": "infectious_disease",
                                "summary": "发热", "class_id": written, "symptoms": ["fever"],
                                "subject": {"id": f"S-{i}"}})
        assert r.warnings == ()
        assert r.dedup_key == f"suspected_case/infectious_disease/subject:S-{i}/2026-11-30"
    assert harness.told() == ["王老师"] * 3   # the class teacher of 3-2, never the duty officer
    with harness.store.transaction() as tx:
        assert {i.class_id for i in tx.list_incidents(("triggered",), 10)} == {"3-2"}


async def test_a_class_written_another_way_over_http_reaches_its_teacher(api):  # noqa: F811
    r = await api.client.post("/api/v1/events", headers=bearer(SOURCE), json={
        "kind": "suspected_case", "category": "infectious_disease", "summary": "发热",
        "class_id": "３－２", "subject": {"id": "S-1"}})
    assert r.status_code == 202 and r.json()["warnings"] == []
    inc = (await api.client.get(f"/api/v1/incidents/{r.json()['incident_id']}",
                                headers=bearer(ADMIN))).json()
    assert inc["class_id"] == "3-2"
    assert inc["notifications"][0]["recipient_name"] == "王老师"
    bad = await api.client.post("/api/v1/events", headers=bearer(SOURCE), json={
        "kind": "absence", "category": "infectious_disease", "summary": "x", "class_id": "甲班"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "class_id"


async def test_a_class_the_school_does_not_list_is_taken_with_a_warning(api):  # noqa: F811
    r = await api.client.post("/api/v1/events", headers=bearer(SOURCE), json={
        "kind": "suspected_case", "category": "infectious_disease", "summary": "发热",
        "class_id": "七年级三班", "subject": {"id": "S-9"}})
    assert r.status_code == 202
    body = r.json()
    assert body["status"] == "created"
    [w] = body["warnings"]
    assert w["code"] == "class_unknown" and w["field"] == "class_id" and "7-3" in w["message"]
    inc = (await api.client.get(f"/api/v1/incidents/{body['incident_id']}",
                                headers=bearer(ADMIN))).json()
    [entry] = [t for t in inc["timeline"] if t["type"] == "input_warning"]
    assert entry["detail"]["warnings"][0]["code"] == "class_unknown"
    # nobody teaches 7-3: the duty officer is told and stands in for the level (the walk
    # waits for them: their link and buttons act)
    assert [n["recipient_name"] for n in inc["notifications"]] == ["值班员"]
    assert inc["notifications"][0]["needs_ack"] is True


async def test_the_duty_officer_is_told_why_nobody_else_was(harness):
    await harness.send({"kind": "suspected_case", "category": "infectious_disease",
                        "summary": "发热", "class_id": "7-3", "subject": {"id": "S-9"}})
    [m] = [m for m in harness.channel.sent if m.recipient_name == "值班员"]
    assert "班级 7-3 不在学校班级名单（school.classes）中，因此找不到班主任" in m.body


async def test_spool_json_yaml_and_registers_use_the_same_rule(harness, tmp_path):
    from .test_spool import Wired

    w = Wired(harness, tmp_path / "spool")
    w.drop("a.json", {"kind": "suspected_case", "category": "infectious_disease",
                      "summary": "发热", "class_id": "三年级二班", "subject": {"id": "S-1"}})
    w.drop("b.yaml", "kind: suspected_case\ncategory: infectious_disease\nsummary: 发热\n"
                     "class_id: 3（2）班\nsubject: {id: S-2}\n")
    w.drop("c.csv", "日期,班级,学号,缺勤原因\n2026-11-30,３－２,S-3,病假\n".encode("gbk"))
    await w.scan()
    assert names(w.failed) == []
    with harness.store.transaction() as tx:
        assert sorted(i.class_id for i in tx.list_incidents(("triggered",), 10)) == ["3-2"] * 3
    await harness.settle()
    assert harness.told() == ["王老师"] * 3


def test_the_cli_send_prints_the_warnings(tmp_path):
    from .conftest import FIXTURES
    from .test_cli import run

    state = {"ESCALATOR_STATE_DIR": str(tmp_path / "state"),
             "ESCALATOR_CONFIG": str(FIXTURES / "engine.yaml")}
    event = tmp_path / "e.json"
    event.write_text(json.dumps({"kind": "suspected_case", "category": "infectious_disease",
                                 "summary": "发热", "class_id": "七年级三班",
                                 "subject": {"id": "S-9"}}, ensure_ascii=False), "utf-8")
    r = run("send", str(event), env=state)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [w["code"] for w in out["warnings"]] == ["class_unknown"]
    plain = tmp_path / "p.json"
    plain.write_text(json.dumps({"kind": "incident", "category": "accident", "summary": "摔伤",
                                 "class_id": "3-2"}), "utf-8")
    assert "warnings" not in json.loads(run("send", str(plain), env=state).stdout)


async def test_an_alertmanager_class_label_is_read_and_warned_about(api):  # noqa: F811
    doc = {"version": "4", "status": "firing", "alerts": [
        {"status": "firing", "labels": {"alertname": "教室空气质量", "班级": "三年级二班"}},
        {"status": "firing", "labels": {"alertname": "教室空气质量", "班级": "七年级三班"}}]}
    r = await api.client.post("/api/v1/alertmanager", json=doc, headers=bearer(SOURCE))
    assert r.status_code == 200, r.text
    first, second = r.json()["results"]
    assert first["warnings"] == []
    assert [w["code"] for w in second["warnings"]] == ["class_unknown"]
    inc = (await api.client.get(f"/api/v1/incidents/{first['incident_id']}",
                                headers=bearer(ADMIN))).json()
    assert inc["class_id"] == "3-2"


def test_the_reasons_are_in_the_administrators_language():
    """A register's refused class reaches the school doctor in Chinese by default."""
    from escalator import i18n

    try:
        i18n.set_language("zh")
        with pytest.raises(ValueError, match=r"未知班级 '7-3'（读作 7-3）；本校班级：3-2"):
            class_id(None, "7-3", ["3-2"])
        with pytest.raises(ValueError, match="不是年级"):
            class_id("甲年级", "2班")
        i18n.set_language("en")
        with pytest.raises(ValueError, match=r"unknown class '7-3' \(read as 7-3\)"):
            class_id(None, "7-3", ["3-2"])
    finally:
        i18n.set_language(None)
