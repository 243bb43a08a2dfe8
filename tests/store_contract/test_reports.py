"""The store contract, the ledger's reads (:class:`escalator.store.base.ReportReads`) and the
purge of personal data (:class:`escalator.store.base.RetentionTx`)."""

from __future__ import annotations

import re
from dataclasses import asdict
from datetime import date

from escalator.store.base import CaseFact, PurgeCounts, PurgeRules

from .conftest import new_event, new_incident, new_notification, new_step_run, t

# ------------------------------------------------------------------ ledger reads


def test_incidents_by_the_time_their_first_event_occurred(store):
    def opened(key: str, created: float, occurred: str | None) -> int:
        incident = new_incident(tx, key, created_at=t(created), first_event_id=f"e-{key}")
        new_event(tx, f"e-{key}", incident_id=incident, at=t(created),
                  body={"summary": key} | ({"occurred_at": occurred} if occurred else {}))
        return incident

    with store.transaction() as tx:
        # entered a week later (created t(10000)), occurred at t(5): counted at t(5)
        late_entry = opened("late-entry", 10_000, "2026-11-30T08:05:00Z")
        edge = opened("edge", 0, "2026-11-30T08:00:00.000000Z")
        same = opened("same", 3, "2026-11-30T16:05:00+08:00")     # an offset: t(5) too
        opened("future", 1, "2026-11-30T08:20:00Z")                 # t(20): outside
        opened("before", 1, "2026-11-30T07:59:00Z")
        no_event = new_incident(tx, "no-event", created_at=t(7))    # when it was opened
    with store.transaction() as tx:
        assert [i.id for i in tx.incidents_occurred(t(0), t(20))] == [
            edge, late_entry, same, no_event]
        assert tx.incidents_occurred(t(20), t(20)) == []
        assert tx.incidents_occurred(t(0), t(20))[0].dedup_key == "edge"


def test_cases_between_and_open_clusters(store):
    def case(id: str, occurred: str, **over) -> None:
        body = {"summary": "x", "occurred_at": occurred, "subject": {"id": over.pop("pupil", id)},
                "labels": over.pop("labels", {}), "drill": over.pop("drill", False)}
        tx.insert_event(id=id, received_at=t(0), source="test", kind=over.pop("kind", "absence"),
                        category=over.pop("category", "infectious_disease"), action="trigger",
                        dedup_key=id, incident_id=None, outcome=over.pop("outcome", "created"),
                        body=body, row_key=None)

    with store.transaction() as tx:
        case("a", "2026-11-30T08:01:00Z")
        case("a2", "2026-11-30T08:02:00Z", pupil="a")              # the same pupil again
        case("b", "2026-11-30T08:03:00Z", kind="suspected_case")
        case("drill", "2026-11-30T08:03:00Z", drill=True)
        case("ledger", "2026-11-30T08:03:00Z", outcome="ledger")
        case("personal", "2026-11-30T08:03:00Z", labels={"reason": "personal"})
        case("fire", "2026-11-30T08:03:00Z", kind="incident", category="fire")
        case("later", "2026-11-30T08:30:00Z")
        open_ = new_incident(tx, "cluster/fever/class:3-2/2026-11-30")
        tx.add_cluster_groups(open_, "class", ["fever"])
        done = new_incident(tx, "cluster/gi/class:3-2/2026-11-30", state="resolved")
        tx.add_cluster_groups(done, "class", ["gi"])
        new_incident(tx, "plain")
    with store.transaction() as tx:
        assert tx.cases_between(t(0), t(20)) == 2
        assert tx.cases_between(t(0), t(40)) == 3
        assert tx.cases_between(t(20), t(25)) == 0
        assert tx.open_clusters() == [open_]


def test_timeline_reads_by_incident_and_by_time(store):
    types = ("acknowledged", "step_confirmed")
    with store.transaction() as tx:
        a, b = new_incident(tx, "a"), new_incident(tx, "b")
        tx.add_timeline(a, t(5), "step_confirmed", "li", {"step": 1, "via": "link"})
        tx.add_timeline(a, t(3), "acknowledged", "wang", {"via": "sms"})
        tx.add_timeline(a, t(3), "step_confirmed", "zhao", {})  # same time, written later
        tx.add_timeline(a, t(1), "step_fired", None, {})
        tx.add_timeline(b, t(30), "acknowledged", "doc", {})
    with store.transaction() as tx:
        first = tx.first_timeline_entry(a, types)
        assert (first.at, first.type, first.actor, first.detail) == \
            (t(3), "acknowledged", "wang", {"via": "sms"})
        assert tx.first_timeline_entry(a, ("resolved",)) is None
        assert tx.first_timeline_entry(b, types).actor == "doc"
        assert [(e.incident_id, e.actor) for e in tx.timeline_between(t(0), t(30), types)] == \
            [(a, "wang"), (a, "zhao"), (a, "li")]
        assert [e.actor for e in tx.timeline_between(t(3), t(31), ("acknowledged",))] == \
            ["wang", "doc"]


def test_notifications_and_deliveries_in_a_range(store):
    with store.transaction() as tx:
        iid = new_incident(tx, category="infectious_disease")
        run = new_step_run(tx, iid, 2, mode="report")
        with_step = new_notification(tx, iid, step_run_id=run, created_at=t(2))
        notice = new_notification(tx, iid, purpose="target_unresolved", created_at=t(1))
        new_notification(tx, iid, created_at=t(60))
        tx.add_delivery(notification_id=with_step, at=t(4), outcome="delivered", detail="ok",
                        body="text 2")
        tx.add_delivery(notification_id=notice, at=t(3), outcome="failed_permanent",
                        detail="bad number", body="text 1")
        tx.add_delivery(notification_id=notice, at=t(61), outcome="delivered", detail="ok",
                        body="later")
    with store.transaction() as tx:
        rows = tx.notifications_created(t(0), t(60))
        assert [(r.notification.id, r.category, r.step_index, r.mode) for r in rows] == [
            (notice, "infectious_disease", None, None),
            (with_step, "infectious_disease", 2, "report")]
        assert rows[0].notification.purpose == "target_unresolved"
        got = tx.deliveries_between(t(0), t(60))
        assert [(d.delivery.notification_id, d.delivery.at, d.delivery.outcome, d.delivery.detail,
                 d.delivery.body, d.notification.id, d.notification.incident_id,
                 d.notification.recipient_name) for d in got] == [
            (notice, t(3), "failed_permanent", "bad number", "text 1", notice, iid, "王老师"),
            (with_step, t(4), "delivered", "ok", "text 2", with_step, iid, "王老师")]
        assert got[0].delivery.id != got[1].delivery.id


def test_heartbeat_days_in_a_range_of_dates(store):
    with store.transaction() as tx:
        for day in (30, 28, 29):
            tx.record_heartbeat("noon", date(2026, 11, day), t(day), f"n{day}")
            tx.record_heartbeat("morning", date(2026, 11, day), t(day), f"m{day}")
        tx.record_heartbeat("morning", date(2026, 12, 1), t(99), "dec")
    with store.transaction() as tx:
        got = tx.heartbeat_days_between(date(2026, 11, 29), date(2026, 11, 30))
    assert [(d.local_date, d.monitor, d.event_id) for d in got] == [
        ("2026-11-29", "morning", "m29"), ("2026-11-29", "noon", "n29"),
        ("2026-11-30", "morning", "m30"), ("2026-11-30", "noon", "n30")]


# ------------------------------------------------------------------ the purge

RULES = PurgeRules(
    body_fields=("subject", "details"), detail_keys=frozenset({"subject", "subjects"}),
    scrub_key=lambda key: re.sub(r"subject:[^/-][^/]*", "subject:-", key),
    key_marker="subject:", scrubbed_marker="subject:-/", purged="(gone)",
    guardian_kind="guardian")
"""A small set of rules (the school's own are escalator.school.retention.RULES)."""

PUPIL = {"id": "S-1", "name": "李小明"}


def build(tx) -> dict[str, int]:
    """Before ``t(0)``: an incident about a pupil, resolved (with an event, a register row,
    a guardian and a staff notification each with a delivery, a timeline entry naming the
    pupil, a case fact and a cluster member), an incident still open, and an event with no
    incident. After: a resolved incident about another pupil."""
    ids = {}
    old = ids["old"] = new_incident(tx, "fever/subject:S-1/2026-06-01", created_at=t(-500),
                                    state="resolved", resolved_at=t(-400), first_event_id="e-old")
    new_event(tx, "e-old", incident_id=old, at=t(-500), key="fever/subject:S-1/2026-06-01",
              body={"summary": "发热", "subject": PUPIL, "details": "昨晚发热"},
              row_key="absence/2026-06-01/S-1")
    new_event(tx, "e-loose", at=t(-450), body={"summary": "缺勤", "subject": PUPIL})
    tx.add_timeline(old, t(-500), "triggered", "api",
                    {"dedup_key": "fever/subject:S-1/2026-06-01", "subjects": ["S-1"], "n": 1})
    tx.add_timeline(old, t(-490), "step_fired", None, {"step": 0})
    g = ids["guardian"] = new_notification(tx, old, recipient_kind="guardian",
                                           recipient_name="李小明家长", address="13911112222")
    s = ids["staff"] = new_notification(tx, old)
    tx.add_delivery(notification_id=g, at=t(-490), outcome="failed_permanent",
                    detail="13911112222 unreachable", body="李小明发热")
    tx.add_delivery(notification_id=s, at=t(-490), outcome="delivered", detail="ok",
                    body="李小明发热")
    tx.add_case_fact(CaseFact("e-old", "class:3-2", "fever", "S-1", date(2026, 6, 1), t(-500)))
    tx.add_cluster_member(old, CaseFact("e-old", "class:3-2", "fever", "S-1",
                                        date(2026, 6, 1), t(-500)), t(-500))
    opened = ids["open"] = new_incident(tx, "fever/subject:S-2/2026-06-01", created_at=t(-300))
    new_event(tx, "e-open", incident_id=opened, at=t(-300), key="fever/subject:S-2/2026-06-01",
              body={"summary": "发热", "subject": {"id": "S-2"}})
    newer = ids["new"] = new_incident(tx, "fever/subject:S-3/2026-12-01", created_at=t(10),
                                      state="resolved", resolved_at=t(20))
    new_event(tx, "e-new", incident_id=newer, at=t(10), key="fever/subject:S-3/2026-12-01",
              body={"summary": "发热", "subject": {"id": "S-3"}})
    return ids


def test_the_purge_applies_the_rules_to_old_rows_only(store):
    with store.transaction() as tx:
        ids = build(tx)
    with store.transaction() as tx:
        counts = tx.purge_personal_data(t(0), RULES)
    assert counts == PurgeCounts(events=2, incidents=1, timeline=1, notifications=1,
                                 deliveries=2, case_facts=1, cluster_members=1, held_open=1)
    with store.transaction() as tx:
        old = tx.get_event("e-old")
        assert old["body"] == {"summary": "发热"}
        assert old["dedup_key"] == "fever/subject:-/2026-06-01"
        assert old["row_key"] != "absence/2026-06-01/S-1"
        assert tx.row_key_seen("absence/2026-06-01/S-1")  # a re-dropped register adds nothing
        assert tx.get_event("e-loose")["body"] == {"summary": "缺勤"}
        assert tx.get_incident(ids["old"]).dedup_key == "fever/subject:-/2026-06-01"
        assert [e.detail for e in tx.timeline(ids["old"])] == [
            {"dedup_key": "fever/subject:-/2026-06-01", "n": 1}, {"step": 0}]
        guardian, staff = tx.get_notification(ids["guardian"]), tx.get_notification(ids["staff"])
        assert guardian.recipient_name == guardian.address == "(gone)"
        assert (staff.recipient_name, staff.address) == ("王老师", "13800000001")
        [gd], [sd] = tx.deliveries_of(ids["guardian"]), tx.deliveries_of(ids["staff"])
        assert (gd.body, gd.detail) == ("(gone)", "(gone)")
        assert (sd.body, sd.detail) == ("(gone)", "ok")
        [member] = tx.cluster_members(ids["old"])
        assert member.subject_id.startswith("purged-")
        [case] = tx.case_facts("class:3-2", "fever", date(2026, 1, 1), date(2026, 12, 31))
        assert case.subject_id.startswith("purged-")
        # the open incident and the newer one keep everything
        assert tx.get_event("e-open")["body"]["subject"] == {"id": "S-2"}
        assert tx.get_incident(ids["open"]).dedup_key == "fever/subject:S-2/2026-06-01"
        assert tx.get_event("e-new")["body"]["subject"] == {"id": "S-3"}


def test_the_purge_is_idempotent_and_rolls_back_with_its_transaction(store):
    with store.transaction() as tx:
        build(tx)

    class DryRun(Exception):
        pass

    try:
        with store.transaction() as tx:
            dry = tx.purge_personal_data(t(0), RULES)
            raise DryRun
    except DryRun:
        pass
    with store.transaction() as tx:
        assert tx.get_event("e-old")["body"]["subject"] == PUPIL  # rolled back
        real = tx.purge_personal_data(t(0), RULES)
    assert asdict(real) == asdict(dry) and real.changed == 9
    with store.transaction() as tx:
        again = tx.purge_personal_data(t(0), RULES)
    assert again.changed == 0 and again.held_open == 1
    with store.transaction() as tx:
        assert tx.purge_personal_data(t(-1000), RULES) == PurgeCounts()
