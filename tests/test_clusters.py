"""Symptom clusters (escalator/clusters.py) after the 2006 national rule for schools: ≥ 3
distinct pupils of one class or dormitory with similar symptoms in one school-local day, or ≥ 5
within three consecutive days; hand-foot-mouth disease ≥ 2 in one class within 7 days. The
cluster is an extra incident listing its members; case incidents keep working as before.
Fake clock, real SQLite, no sleeps."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from escalator.clock import FakeClock
from escalator.config import load_config
from escalator.config.models import ClustersConfig, Config
from escalator.school.clusters import notifiable
from escalator.testing import Harness

from .conftest import case

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "clusters.yaml"
SH = ZoneInfo("Asia/Shanghai")
DAY1 = ["events/fever_cluster_day1_1.json", "events/fever_cluster_day1_2.json",
        "events/fever_cluster_day1_3.json"]


@pytest.fixture
def config() -> Config:
    return load_config(FIXTURE)


def at(day: str, hhmm: str) -> datetime:
    return datetime.fromisoformat(f"{day}T{hhmm}").replace(tzinfo=SH)


@pytest.fixture
def h(config, tmp_path):
    harness = Harness(config, tmp_path / "db.sqlite3", clock=FakeClock(at("2026-11-30", "10:20")))
    yield harness
    harness.close()


def pupil(sid: str, when: datetime, *, class_id: str | None = "3-2",
          symptoms: tuple[str, ...] = ("fever", "cough"), **extra: Any) -> dict[str, Any]:
    """A suspected case of pupil ``sid`` at ``when`` (no name in the summary)."""
    ev: dict[str, Any] = {"kind": "suspected_case", "category": "infectious_disease",
                          "summary": "学生发热", "subject": {"id": sid},
                          "symptoms": list(symptoms), "occurred_at": when.isoformat(),
                          "source": "morning-check", **extra}
    if class_id:
        ev["class_id"] = class_id
    return ev


def clusters(h: Harness) -> list[Any]:
    with h.store.transaction() as tx:
        return [i for i in tx.list_incidents(("triggered", "acknowledged", "resolved"), 100)
                if i.dedup_key.removeprefix("drill/").startswith("cluster/")]


def members(h: Harness, incident_id: int) -> list[str]:
    with h.store.transaction() as tx:
        return [m.subject_id for m in tx.cluster_members(incident_id)]


def told_on(h: Harness, incident_id: int) -> list[str]:
    with h.store.transaction() as tx:
        return [n.recipient_name for n in tx.notifications_of(incident_id)]


async def test_three_pupils_of_3_2_on_one_local_day_make_one_cluster(h):
    results = [await h.send(case(name)) for name in DAY1]
    assert [r.status for r in results] == ["created"] * 3  # each case keeps its own incident
    [cluster] = clusters(h)
    assert cluster.id not in {r.incident_id for r in results}
    assert cluster.dedup_key == "cluster/respiratory/class:3-2/2026-11-30"
    assert (cluster.kind, cluster.category, cluster.policy_id) == (
        "incident", "infectious_disease", "cluster")
    assert cluster.summary == "三年级2班 3名学生出现发热、咳嗽等相似症状（聚集性疫情）"
    assert members(h, cluster.id) == ["S-2023-0141", "S-2023-0142", "S-2023-0143"]
    with h.store.transaction() as tx:
        [opened] = [t for t in tx.timeline(cluster.id) if t.type == "cluster_opened"]
    assert [m["event_id"] for m in opened.detail["members"]] == [r.event_id for r in results]
    assert (opened.detail["group"], opened.detail["scope"]) == ("respiratory", "class:3-2")
    # must reach the CDC and the bureau within 24 h of the first case (07:48 local)
    assert cluster.deadline_at == at("2026-11-30", "07:48") + timedelta(hours=24)
    assert cluster.deadline_met_at is None
    await h.advance(20 * 60)  # school doctor, leadership (10 min each), then CDC + bureau
    assert told_on(h, cluster.id) == ["赵校医", "张校长", "区疾控", "区教育局"]
    cluster = h.incident(cluster.id)
    assert cluster.deadline_met_at == at("2026-11-30", "10:40")
    assert "deadline_escalation" not in h.timeline(cluster.id)
    await h.advance(30 * 3600)  # past the deadline: it was met, nothing more
    assert "deadline_escalation" not in h.timeline(cluster.id)


async def test_cases_straddling_midnight_utc_in_one_local_day_still_cluster(h):
    events = [case(name) for name in DAY1]
    utc_days = {datetime.fromisoformat(e["occurred_at"]).astimezone(ZoneInfo("UTC")).date()
                for e in events}
    assert len(utc_days) == 2  # 07:48 +08:00 is the evening before in UTC
    for e in events:
        await h.send(e)
    assert len(clusters(h)) == 1


async def test_three_cases_in_one_utc_day_but_two_local_days_do_not(h):
    h.clock.set(at("2026-12-01", "01:00"))
    for sid, when in [("A", at("2026-11-30", "22:30")), ("B", at("2026-11-30", "23:30")),
                      ("C", at("2026-12-01", "00:30"))]:  # all on 2026-11-30 in UTC
        await h.send(pupil(sid, when))
    assert clusters(h) == []


async def test_the_same_pupil_reported_twice_counts_once(h):
    await h.send(case("events/fever_single.json"))             # S-2023-0142
    await h.send(case("events/fever_cluster_day1_2.json"))     # S-2023-0142 again
    await h.send(case("events/fever_cluster_day1_1.json"))     # S-2023-0141
    assert clusters(h) == []  # three reports, two pupils
    await h.send(case("events/fever_cluster_day1_3.json"))     # S-2023-0143: the third pupil
    [cluster] = clusters(h)
    assert members(h, cluster.id) == ["S-2023-0142", "S-2023-0141", "S-2023-0143"]
    assert "3名学生" in cluster.summary


async def test_five_pupils_within_three_consecutive_days(h):
    plan = [("A", "2026-11-30"), ("B", "2026-11-30"),   # two in one day: no cluster
            ("C", "2026-12-01"), ("A", "2026-12-01"),   # A again: one pupil counts once
            ("D", "2026-12-02")]                        # four pupils in three days
    for sid, day in plan:
        h.clock.set(at(day, "09:00"))
        await h.send(pupil(sid, at(day, "08:00")))
    assert clusters(h) == []
    await h.send(pupil("E", at("2026-12-02", "08:30")))  # the fifth pupil, two that day
    [cluster] = clusters(h)
    assert sorted(members(h, cluster.id)) == ["A", "B", "C", "D", "E"]
    assert cluster.dedup_key == "cluster/respiratory/class:3-2/2026-11-30"
    first = at("2026-11-30", "08:00")
    assert cluster.deadline_at == first + timedelta(hours=24)
    # reported 2 days after the first case: the deadline has passed, the CDC and the bureau
    # are told at once, and the deadline shows as missed
    assert "deadline_escalation" in h.timeline(cluster.id)
    assert h.incident(cluster.id).deadline_met_at == at("2026-12-02", "09:00")


async def test_five_pupils_over_four_days_are_no_cluster(h):
    for sid, day in [("A", "2026-11-30"), ("B", "2026-11-30"), ("C", "2026-12-01"),
                     ("D", "2026-12-03"), ("E", "2026-12-03")]:
        h.clock.set(at(day, "09:00"))
        await h.send(pupil(sid, at(day, "08:00")))
    assert clusters(h) == []


async def test_hand_foot_mouth_disease_two_in_one_class_within_seven_days(h):
    h.clock.set(at("2026-12-07", "09:00"))
    await h.send(pupil("A", at("2026-12-01", "08:00"), symptoms=("rash", "fever"),
                       diagnosis="手足口病（临床诊断）"))
    await h.send(pupil("B", at("2026-12-07", "08:00"), class_id="5-1", symptoms=("rash",),
                       diagnosis="手足口病"))  # another class
    assert clusters(h) == []
    await h.send(pupil("C", at("2026-12-07", "08:00"), symptoms=("rash",), diagnosis="HFMD"))
    [cluster] = clusters(h)
    assert cluster.dedup_key == "cluster/hfmd/class:3-2/2026-12-01"
    assert cluster.summary == "三年级2班 2名学生诊断为手足口病（聚集性疫情）"
    assert members(h, cluster.id) == ["A", "C"]
    # a rash case without a diagnosis joins (it shares the founders' rash group); the summary
    # no longer claims every pupil was diagnosed
    await h.send(pupil("D", at("2026-12-07", "10:00"), symptoms=("rash",)))
    assert members(h, cluster.id) == ["A", "C", "D"]
    assert h.incident(cluster.id).summary == \
        "三年级2班 3名学生：2名诊断为手足口病，其余有相似症状（聚集性疫情）"


async def test_hfmd_eight_days_apart_is_no_cluster(h):
    h.clock.set(at("2026-12-09", "09:00"))
    await h.send(pupil("A", at("2026-12-01", "08:00"), symptoms=("rash",), diagnosis="手足口病"))
    await h.send(pupil("B", at("2026-12-08", "08:00"), symptoms=("rash",), diagnosis="手足口病"))
    assert clusters(h) == []


async def test_a_fourth_case_joins_the_open_cluster(h):
    for name in DAY1:
        await h.send(case(name))
    [cluster] = clusters(h)
    told = list(h.told())
    await h.send(pupil("S-2023-0144", at("2026-11-30", "10:15")))
    await h.send(pupil("S-2023-0144", at("2026-11-30", "10:16")))  # the same pupil again
    assert [c.id for c in clusters(h)] == [cluster.id]  # no second cluster
    assert members(h, cluster.id)[-1] == "S-2023-0144" and len(members(h, cluster.id)) == 4
    assert h.timeline(cluster.id).count("cluster_member_joined") == 1
    assert h.incident(cluster.id).summary.startswith("三年级2班 4名学生")
    assert [n for n in h.told()[len(told):] if n == "赵校医"] == []  # no re-escalation
    # the next day, while the cluster is still open, a case joins it as well
    h.clock.set(at("2026-12-01", "09:00"))
    await h.send(pupil("S-2023-0145", at("2026-12-01", "08:00")))
    assert len(clusters(h)) == 1 and len(members(h, cluster.id)) == 5


async def test_a_resolved_cluster_lists_no_one_new_and_its_cases_are_not_counted_again(h):
    for name in DAY1:
        await h.send(case(name))
    [cluster] = clusters(h)
    h.engine.resolve(cluster.id, actor="doc", via="test")
    await h.send(pupil("S-2023-0144", at("2026-11-30", "10:15")))
    assert members(h, cluster.id) == ["S-2023-0141", "S-2023-0142", "S-2023-0143"]
    assert [c.id for c in clusters(h)] == [cluster.id]  # one new case: no second report
    await h.send(pupil("S-2023-0145", at("2026-11-30", "11:00")))
    await h.send(pupil("S-2023-0146", at("2026-11-30", "11:30")))
    [new] = [c for c in clusters(h) if c.state == "triggered"]  # three new cases: 续发
    assert members(h, new.id) == ["S-2023-0144", "S-2023-0145", "S-2023-0146"]
    # its 24 h run from its own first case, not from the reported cluster's
    assert new.deadline_at == at("2026-11-30", "10:15") + timedelta(hours=24)


def groups(h: Harness, incident_id: int) -> list[str]:
    with h.store.transaction() as tx:
        return tx.cluster_groups(incident_id)


async def test_a_case_counts_in_every_group_it_touches(h):
    # [fever, cough] ×2 + [fever]: respiratory has two pupils, fever three — under the old
    # first-group rule the first two counted only as respiratory and no cluster opened
    for sid, symptoms in [("A", ("fever", "cough")), ("B", ("fever", "cough")), ("C", ("fever",))]:
        await h.send(pupil(sid, at("2026-11-30", "08:00"), symptoms=symptoms))
    [cluster] = clusters(h)
    assert cluster.dedup_key == "cluster/fever/class:3-2/2026-11-30"
    assert members(h, cluster.id) == ["A", "B", "C"]
    assert groups(h, cluster.id) == ["fever", "respiratory"]  # the opening group first
    assert cluster.summary == "三年级2班 3名学生出现发热、咳嗽等相似症状（聚集性疫情）"
    # a later cough joins through "respiratory", one of the founding cases' groups
    await h.send(pupil("D", at("2026-11-30", "09:00"), symptoms=("cough",)))
    assert [c.id for c in clusters(h)] == [cluster.id]
    assert members(h, cluster.id) == ["A", "B", "C", "D"]
    assert h.incident(cluster.id).summary.startswith("三年级2班 4名学生")


async def test_cough_with_other_symptoms_still_counts_as_respiratory(h):
    # [cough], [cough, sore_throat], [cough, vomiting]: the third is gastrointestinal as well
    for sid, symptoms in [("A", ("cough",)), ("B", ("cough", "sore_throat")),
                          ("C", ("cough", "vomiting"))]:
        await h.send(pupil(sid, at("2026-11-30", "08:00"), class_id="5-1", symptoms=symptoms))
    [cluster] = clusters(h)
    assert cluster.dedup_key == "cluster/respiratory/class:5-1/2026-11-30"
    assert groups(h, cluster.id) == ["respiratory", "gastrointestinal"]
    with h.store.transaction() as tx:
        [opened] = [t for t in tx.timeline(cluster.id) if t.type == "cluster_opened"]
    assert opened.detail["groups"] == ["respiratory", "gastrointestinal"]


async def test_a_fourth_cough_joins_a_cluster_of_fever_and_cough(h):
    for sid in ("A", "B", "C"):
        await h.send(pupil(sid, at("2026-11-30", "08:00")))  # fever + cough
    [cluster] = clusters(h)
    assert groups(h, cluster.id) == ["respiratory", "fever"]
    await h.send(pupil("D", at("2026-11-30", "09:00"), symptoms=("cough",)))
    await h.send(pupil("E", at("2026-11-30", "09:10"), symptoms=("fever",)))  # joins via fever
    assert [c.id for c in clusters(h)] == [cluster.id]
    assert members(h, cluster.id) == ["A", "B", "C", "D", "E"]
    with h.store.transaction() as tx:
        joined = [t.detail["group"] for t in tx.timeline(cluster.id)
                  if t.type == "cluster_member_joined"]
    assert joined == ["respiratory", "fever"]


async def test_unrelated_groups_in_one_class_make_two_clusters(h):
    for sid in ("A", "B", "C"):
        await h.send(pupil(sid, at("2026-11-30", "08:00"), symptoms=("vomiting",)))
    for sid in ("D", "E", "F"):
        await h.send(pupil(sid, at("2026-11-30", "08:00"), symptoms=("rash",)))
    found = {c.dedup_key: c for c in clusters(h)}
    assert set(found) == {"cluster/gastrointestinal/class:3-2/2026-11-30",
                          "cluster/rash/class:3-2/2026-11-30"}
    assert members(h, found["cluster/gastrointestinal/class:3-2/2026-11-30"].id) == ["A", "B", "C"]
    assert members(h, found["cluster/rash/class:3-2/2026-11-30"].id) == ["D", "E", "F"]


async def test_a_case_sharing_groups_with_two_clusters_joins_each_once(h):
    for sid in ("A", "B", "C"):
        await h.send(pupil(sid, at("2026-11-30", "08:00"), symptoms=("vomiting",)))
    for sid in ("D", "E", "F"):
        await h.send(pupil(sid, at("2026-11-30", "08:00"), symptoms=("rash",)))
    older, newer = sorted(clusters(h), key=lambda c: c.id)
    await h.send(pupil("G", at("2026-11-30", "09:00"), symptoms=("rash", "vomiting")))
    await h.send(pupil("G", at("2026-11-30", "09:30"), symptoms=("rash", "vomiting")))
    assert members(h, older.id) == ["A", "B", "C", "G"]
    assert members(h, newer.id) == ["D", "E", "F", "G"]
    assert h.timeline(older.id).count("cluster_member_joined") == 1
    assert h.timeline(newer.id).count("cluster_member_joined") == 1
    assert len(clusters(h)) == 2


async def test_joining_one_cluster_does_not_hide_another_groups_cluster(h):
    # three coughs make a respiratory cluster; then two pupils vomit and a third vomits and
    # coughs: the third joins the respiratory cluster AND completes a gastrointestinal one
    for sid in ("A", "B", "C"):
        await h.send(pupil(sid, at("2026-11-30", "08:00"), symptoms=("cough",)))
    [resp] = clusters(h)
    for sid, symptoms in [("M4", ("vomiting", "diarrhoea")), ("M5", ("vomiting", "diarrhoea")),
                          ("M6", ("vomiting", "cough"))]:
        await h.send(pupil(sid, at("2026-11-30", "10:00"), symptoms=symptoms))
    assert members(h, resp.id) == ["A", "B", "C", "M6"]
    [gi] = [c for c in clusters(h) if c.id != resp.id]
    assert gi.dedup_key == "cluster/gastrointestinal/class:3-2/2026-11-30"
    assert members(h, gi.id) == ["M4", "M5", "M6"]


async def test_one_pupil_counts_once_per_group(h):
    # A twice (fever+cough, then fever), B fever: two pupils in "fever" — no cluster
    await h.send(pupil("A", at("2026-11-30", "08:00")))
    await h.send(pupil("A", at("2026-11-30", "09:00"), symptoms=("fever",)))
    await h.send(pupil("B", at("2026-11-30", "09:00"), symptoms=("fever",)))
    assert clusters(h) == []
    with h.store.transaction() as tx:
        rows = tx.c.execute("SELECT syndrome, count(*) FROM case_facts GROUP BY syndrome"
                            " ORDER BY syndrome").fetchall()
    assert [tuple(r) for r in rows] == [("fever", 3), ("respiratory", 1)]


async def test_a_hand_foot_mouth_case_counts_under_the_disease_and_its_symptoms(h):
    # the disease first: two HFMD cases open the HFMD cluster, whose groups take in the
    # founding cases' syndromes
    await h.send(pupil("A", at("2026-11-30", "08:00"), symptoms=("rash", "fever"),
                       diagnosis="hfmd"))
    await h.send(pupil("B", at("2026-11-30", "08:10"), symptoms=("rash",), diagnosis="手足口病"))
    [cluster] = clusters(h)
    assert cluster.dedup_key == "cluster/hfmd/class:3-2/2026-11-30"
    assert groups(h, cluster.id) == ["hfmd", "rash", "fever"]
    await h.send(pupil("C", at("2026-11-30", "08:20"), symptoms=("rash",)))
    assert members(h, cluster.id) == ["A", "B", "C"] and len(clusters(h)) == 1


async def test_drills_count_in_every_group_but_only_with_drills(h):
    for sid, symptoms in [("A", ("fever", "cough")), ("B", ("fever", "cough"))]:
        await h.send(pupil(sid, at("2026-11-30", "08:00"), symptoms=symptoms))
    await h.send(pupil("C", at("2026-11-30", "08:00"), symptoms=("fever",), drill=True))
    assert clusters(h) == []
    await h.send(pupil("D", at("2026-11-30", "08:00"), symptoms=("fever",)))
    [cluster] = clusters(h)
    assert not cluster.drill and members(h, cluster.id) == ["A", "B", "D"]


@pytest.mark.parametrize(("diagnosis", "found"), [
    ("hfmd", "hfmd"), ("HFMD（临床诊断）", "hfmd"), ("手足口病", "手足口病"),
    ("Hand-foot-and-mouth disease", "hand-foot-and-mouth disease"),
    ("COVID-19 positive", "COVID-19"), ("SARS-CoV-2", "SARS-CoV-2"), ("新型冠状病毒感染", "新型冠状病毒感染"),
    ("measles", "measles"), ("German measles", "German measles"), ("paratyphoid fever", "paratyphoid"),
    ("副伤寒", "副伤寒"), ("pulmonary TB", "TB"), ("Influenza A", "influenza"),
    ("人感染H7N9禽流感", "人感染H7N9禽流感"), ("cholera", "cholera"),
    # the everyday names a school doctor writes (a user trial found these missed)
    ("新冠", "新冠"), ("新冠肺炎", "新冠肺炎"), ("新型冠状病毒肺炎", "新型冠状病毒肺炎"),
    ("疑似手足口", "手足口"), ("甲流", "甲流"), ("H1N1 influenza", "influenza"), ("H1N1", "H1N1"),
    ("腮腺炎", "腮腺炎"), ("流行性腮腺炎", "流行性腮腺炎"),
    ("common cold", None), ("stomach flu", None), ("parainfluenza", None), ("hfmdx", None),
    ("ATB", None), ("typhoidal", None), ("", None), (None, None),
])
def test_notifiable_names_in_both_languages(diagnosis, found):
    cfg = ClustersConfig()
    assert notifiable(cfg, diagnosis) == found


def test_every_disease_name_is_notifiable():
    cfg = ClustersConfig()
    for disease in cfg.diseases.values():
        for name in disease.diagnoses:
            assert notifiable(cfg, name) is not None, name


async def test_other_groups_and_places_do_not_mix(h):
    await h.send(pupil("A", at("2026-11-30", "08:00")))
    await h.send(pupil("B", at("2026-11-30", "08:10"), symptoms=("diarrhoea", "vomiting")))
    await h.send(pupil("C", at("2026-11-30", "08:20"), class_id="5-1"))
    await h.send(pupil("D", at("2026-11-30", "08:30"), symptoms=("fever",)))  # fever alone
    assert clusters(h) == []


async def test_a_dormitory_is_a_scope_too(h):
    for sid, cls in [("A", "3-2"), ("B", "5-1"), ("C", None)]:
        await h.send(pupil(sid, at("2026-11-30", "08:00"), class_id=cls, dormitory="女生宿舍301",
                           symptoms=("diarrhoea",)))
    [cluster] = clusters(h)
    assert cluster.dedup_key == "cluster/gastrointestinal/dorm:女生宿舍301/2026-11-30"
    assert cluster.summary == "宿舍女生宿舍301 3名学生出现腹泻等相似症状（聚集性疫情）"


async def test_sickness_absences_with_symptoms_count(h):
    for sid in ("A", "B", "C"):
        await h.send({"kind": "absence", "category": "other", "summary": "病假", "class_id": "3-2",
                      "subject": {"id": sid}, "symptoms": ["vomiting"],
                      "occurred_at": at("2026-11-30", "07:00").isoformat()})
    assert len(clusters(h)) == 1
    for sid in ("D", "E", "F"):  # absences without symptoms (e.g. a cold not described)
        await h.send({"kind": "absence", "category": "other", "summary": "病假", "class_id": "5-1",
                      "subject": {"id": sid}, "occurred_at": at("2026-11-30", "07:00").isoformat()})
    assert len(clusters(h)) == 1


async def test_drills_cluster_only_with_drills(h):
    await h.send(pupil("A", at("2026-11-30", "08:00")))
    await h.send(pupil("B", at("2026-11-30", "08:00"), drill=True))
    await h.send(pupil("C", at("2026-11-30", "08:00"), drill=True))
    assert clusters(h) == []
    await h.send(pupil("D", at("2026-11-30", "08:00"), drill=True))
    [cluster] = clusters(h)
    assert cluster.drill
    assert cluster.dedup_key == "drill/cluster/respiratory/class:3-2/2026-11-30"
    # the units do not take drills (no `drills: true`): the deadline never tells them for real
    await h.advance(30 * 3600)
    assert "区疾控" not in told_on(h, cluster.id) and "区教育局" not in told_on(h, cluster.id)
    assert "deadline_escalation" not in h.timeline(cluster.id)


async def test_messages_carry_no_pupil_data(h):
    for i, name in enumerate(DAY1):
        ev = case(name)
        ev["subject"] = {**ev["subject"], "name": f"学生{'甲乙丙'[i]}", "guardian_phone": "13912345678"}
        await h.send(ev)
    [cluster] = clusters(h)
    await h.advance(20 * 60)
    sent = [m for m in h.channel.sent if m.incident_id == cluster.id]
    assert {m.recipient_name for m in sent} == {"赵校医", "张校长", "区疾控", "区教育局"}
    for m in sent:
        text = f"{m.title}\n{m.body}"
        for secret in ("S-2023-014", "学生甲", "学生乙", "学生丙", "13912345678"):
            assert secret not in text
    with h.store.transaction() as tx:
        body = tx.get_event(tx.get_incident(cluster.id).first_event_id)["body"]
    assert "subject" not in body and h.incident(cluster.id).event_count == 3
    assert all("传染病聚集性疫情 #" in m.title for m in sent)  # not 突发事件
    # every message counts the members as they are when it is sent (no stale figure)
    assert all("相关事件数：3" in m.body and "涉及人数" not in m.body for m in sent)


async def test_without_a_clusters_section_nothing_changes(engine_config, tmp_path):
    h = Harness(engine_config, tmp_path / "db.sqlite3")
    for name in DAY1:
        await h.send(case(name))
    assert clusters(h) == []
    h.close()


async def test_the_demo_config_reports_the_sample_cluster(tmp_path):
    demo = load_config(ROOT / "config" / "demo.yaml")
    h = Harness(demo, tmp_path / "db.sqlite3", clock=FakeClock(at("2026-11-30", "10:20")))
    for name in DAY1:
        await h.send(case(name))
    [cluster] = clusters(h)
    await h.advance(60)
    assert {"示例区疾病预防控制中心应急办", "示例区教育局安全科"} <= set(told_on(h, cluster.id))
    assert h.incident(cluster.id).deadline_met_at is not None
    h.close()
