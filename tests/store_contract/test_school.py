"""The store contract, the school rules' rows (:class:`escalator.store.base.SchoolTx`):
heartbeat days, case facts, clusters, the reporting deadline met."""

from __future__ import annotations

from datetime import date

from escalator.store.base import CaseFact, HeartbeatDay

from .conftest import new_incident, t

D1, D2, D3 = date(2026, 11, 28), date(2026, 11, 29), date(2026, 11, 30)


def fact(event_id: str, subject: str, day: date = D3, minutes: float = 0, *,
         scope: str = "class:3-2", syndrome: str = "respiratory") -> CaseFact:
    return CaseFact(event_id, scope, syndrome, subject, day, t(minutes))


# ------------------------------------------------------------------ heartbeats


def test_a_monitor_is_watched_since_the_first_day_asked(store):
    with store.transaction() as tx:
        assert tx.heartbeat_watched_since("morning", D2) == D2
    with store.transaction() as tx:
        assert tx.heartbeat_watched_since("morning", D3) == D2
        assert tx.heartbeat_watched_since("noon", D3) == D3


def test_the_first_heartbeat_of_a_day_is_kept(store):
    with store.transaction() as tx:
        assert tx.heartbeat_day("morning", D3) is None
        tx.record_heartbeat("morning", D3, t(1), "e1")
        tx.record_heartbeat("morning", D3, t(2), "e2")
        tx.record_heartbeat("morning", D2, t(3), "e3")
    with store.transaction() as tx:
        assert tx.heartbeat_day("morning", D3) == HeartbeatDay("morning", "2026-11-30", t(1), "e1")
        assert tx.heartbeat_day("morning", D2).event_id == "e3"
        assert tx.heartbeat_day("noon", D3) is None


def test_a_missed_day_keeps_a_late_heartbeat_and_the_incident(store):
    with store.transaction() as tx:
        iid = new_incident(tx, "heartbeat/morning")
        tx.mark_heartbeat_missed("morning", D3, iid)
        assert tx.heartbeat_day("morning", D3) == HeartbeatDay("morning", "2026-11-30", None,
                                                                None, iid)
        tx.record_heartbeat("morning", D3, t(30), "late")  # reported late
        tx.record_heartbeat("morning", D3, t(40), "later")
    with store.transaction() as tx:
        assert tx.heartbeat_day("morning", D3) == HeartbeatDay("morning", "2026-11-30", t(30),
                                                                "late", iid)


# ------------------------------------------------------------------ case facts and clusters


def test_case_facts_in_a_window_of_one_scope_and_group(store):
    with store.transaction() as tx:
        tx.add_case_fact(fact("e3", "S3", D3, 5))
        tx.add_case_fact(fact("e1", "S1", D1, 1))
        tx.add_case_fact(fact("e1", "S1", D1, 1))  # again: one fact
        tx.add_case_fact(fact("e2", "S2", D2, 2))
        tx.add_case_fact(fact("e2", "S2", D2, 2, syndrome="gastro"))  # a second group
        tx.add_case_fact(fact("e4", "S4", D3, 3, scope="class:3-3"))
    with store.transaction() as tx:
        got = tx.case_facts("class:3-2", "respiratory", D1, D3)
        assert [f.event_id for f in got] == ["e1", "e2", "e3"]  # by time of the case
        assert got[0] == fact("e1", "S1", D1, 1)
        assert [f.event_id for f in tx.case_facts("class:3-2", "respiratory", D2, D2)] == ["e2"]
        assert [f.event_id for f in tx.case_facts("class:3-2", "gastro", D1, D3)] == ["e2"]
        assert tx.case_facts("class:3-4", "respiratory", D1, D3) == []
        assert sorted(tx.fact_groups("class:3-2", ["e1", "e2"])) == ["gastro", "respiratory"]
        assert tx.fact_groups("class:3-3", ["e1", "e2"]) == []


def test_clusters_groups_members_and_the_facts_they_take(store):
    with store.transaction() as tx:
        for f in (fact("e1", "S1", minutes=1), fact("e2", "S2", minutes=2),
                  fact("e2", "S2", minutes=2, syndrome="fever"), fact("e3", "S3", minutes=3)):
            tx.add_case_fact(f)
        assert tx.open_cluster("class:3-2", ["respiratory"]) is None
        cluster = new_incident(tx, "cluster/class:3-2/respiratory")
        other = new_incident(tx, "fire")
        tx.add_cluster_groups(cluster, "class:3-2", ["respiratory", "fever"])
        assert tx.add_cluster_member(cluster, fact("e2", "S2", minutes=2), t(10))
        assert tx.add_cluster_member(cluster, fact("e1", "S1", minutes=1), t(10))
        assert not tx.add_cluster_member(cluster, fact("e1", "S1", minutes=1), t(11))
    with store.transaction() as tx:
        assert tx.cluster_groups(cluster) == ["respiratory", "fever"]  # the opening group first
        assert tx.cluster_groups(other) == []
        assert [m.subject_id for m in tx.cluster_members(cluster)] == ["S1", "S2"]
        assert tx.cluster_members(cluster)[0] == fact("e1", "S1", minutes=1)
        assert tx.open_cluster("class:3-2", ["fever", "gastro"]) == cluster
        assert tx.open_cluster("class:3-2", ["gastro"]) is None
        assert tx.open_cluster("class:3-3", ["respiratory"]) is None
        assert tx.open_cluster("class:3-2", []) is None
        # facts listed by a cluster of the scope and group no longer count towards a new one
        assert [f.event_id for f in tx.case_facts("class:3-2", "respiratory", D3, D3)] == ["e3"]
        assert tx.case_facts("class:3-2", "fever", D3, D3) == []
        tx.update_incident(cluster, state="resolved", resolved_at=t(20))
    with store.transaction() as tx:
        assert tx.open_cluster("class:3-2", ["respiratory"]) is None  # resolved: not open
        assert [f.event_id for f in tx.case_facts("class:3-2", "respiratory", D3, D3)] == ["e3"]
        newer = new_incident(tx, "cluster/class:3-2/respiratory")
        older = new_incident(tx, "cluster/class:3-2/fever")
        tx.add_cluster_groups(older, "class:3-2", ["fever"])
        tx.add_cluster_groups(newer, "class:3-2", ["respiratory", "fever"])
        assert tx.open_cluster("class:3-2", ["fever"]) == min(older, newer)  # the oldest


# ------------------------------------------------------------------ deadlines


def test_a_deadline_is_met_once(store):
    with store.transaction() as tx:
        iid = new_incident(tx, deadline_at=t(120), deadline_check_at=t(100))
        assert tx.mark_deadline_met(iid, t(5))
        assert not tx.mark_deadline_met(iid, t(6))
    with store.transaction() as tx:
        inc = tx.get_incident(iid)
        assert (inc.deadline_met_at, inc.deadline_check_at, inc.deadline_at) == (t(5), None, t(120))
        assert tx.due_incidents(t(200), 10) == []  # the deadline timer stopped
