"""The store contract, early warning's rows (the ``ew_*`` methods of
:class:`escalator.store.base.SchoolTx`, docs/early-warning.md): counted cases and their series,
signals, outbreak incidents, links to clusters, the purge of old cases."""

from __future__ import annotations

from datetime import date

import pytest

from escalator.store.base import EwCase

from .conftest import new_incident, t

D1, D2, D3 = date(2026, 11, 26), date(2026, 11, 27), date(2026, 11, 30)


def case(event_id: str, pupil: str, day: date = D3, *, grp: str = "all", class_id: str = "3-2",
         dormitory: str | None = None, size: int | None = None) -> EwCase:
    return EwCase(event_id, grp, day, class_id, class_id.split("-")[0], dormitory, pupil, size)


def test_daily_counts_are_distinct_pupils_per_date_scope_and_group(store):
    with store.transaction() as tx:
        tx.ew_add_case(case("e1", "p1", D1))
        tx.ew_add_case(case("e1", "p1", D1))  # the same event and group again: one row
        tx.ew_add_case(case("e2", "p1", D1))  # the same pupil twice a day: counted once
        tx.ew_add_case(case("e3", "p2", D1, class_id="3-1"))
        tx.ew_add_case(case("e4", "p3", D3, dormitory="B301"))
        tx.ew_add_case(case("e4", "p3", D3, grp="respiratory", dormitory="B301"))
        tx.ew_add_case(case("e5", "p4", D3, class_id="5-1"))
    with store.transaction() as tx:
        assert tx.ew_daily_counts("all", "class:3-2", D1, D3) == {D1: 1, D3: 1}
        assert tx.ew_daily_counts("all", "grade:3", D1, D3) == {D1: 2, D3: 1}
        assert tx.ew_daily_counts("all", "school", D1, D3) == {D1: 2, D3: 2}
        assert tx.ew_daily_counts("all", "school", D2, D3) == {D3: 2}
        assert tx.ew_daily_counts("respiratory", "dormitory:B301", D1, D3) == {D3: 1}
        assert tx.ew_daily_counts("gastro", "school", D1, D3) == {}
        with pytest.raises(ValueError):
            tx.ew_daily_counts("all", "town:x", D1, D3)


def test_a_window_counts_each_pupil_once(store):
    with store.transaction() as tx:
        tx.ew_add_case(case("e1", "p1", D1, grp="disease:varicella"))
        tx.ew_add_case(case("e2", "p1", D2, grp="disease:varicella"))
        tx.ew_add_case(case("e3", "p2", D3, grp="disease:varicella", class_id="3-1"))
    with store.transaction() as tx:
        assert tx.ew_window_count("disease:varicella", "grade:3", D1, D3) == 2
        assert tx.ew_window_count("disease:varicella", "class:3-2", D1, D3) == 1
        assert tx.ew_window_count("disease:varicella", "school", D3, D3) == 1
        assert tx.ew_window_count("disease:mumps", "school", D1, D3) == 0


def test_first_date_classes_and_register_sizes(store):
    with store.transaction() as tx:
        assert tx.ew_first_date() is None and tx.ew_classes() == []
        assert tx.ew_register_sizes(D3) == {}
        tx.ew_add_case(case("e0", "p0", date(2026, 11, 2), grp="disease:varicella"))  # not ``all``
        tx.ew_add_case(case("e1", "p1", D2, size=45))
        tx.ew_add_case(case("e2", "p2", D1, class_id="5-1", size=40))
        tx.ew_add_case(case("e3", "p3", D3, size=44))
        tx.ew_add_case(case("e4", "p4", D3, class_id="3-1"))
    with store.transaction() as tx:
        assert tx.ew_first_date() == D1
        assert tx.ew_classes() == ["3-1", "3-2", "5-1"]
        assert tx.ew_register_sizes(D2) == {"3-2": 45, "5-1": 40}
        assert tx.ew_register_sizes(D3) == {"3-2": 44, "5-1": 40}  # the latest wins
        assert tx.ew_register_sizes(date(2026, 11, 1)) == {}


def test_a_signal_keeps_its_incident_and_takes_new_methods(store):
    with store.transaction() as tx:
        iid = new_incident(tx, "early_warning/class:3-2/all/2026-11-30")
        assert tx.ew_signal("class:3-2/all", D3) is None
        tx.ew_record_signal("class:3-2/all", D3, iid, ["C2"], t(0))
        tx.ew_record_signal("school/all", D3, None, ["C1"], t(0))  # its policy was unknown
    with store.transaction() as tx:
        assert tx.ew_signal("class:3-2/all", D3) == (iid, ["C2"])
        tx.ew_record_signal("class:3-2/all", D3, iid, ["C2", "C3"], t(5))
        assert tx.ew_signal("class:3-2/all", D3) == (iid, ["C2", "C3"])
        assert tx.ew_signal("school/all", D3) == (None, ["C1"])
        assert tx.ew_signal("class:3-2/all", D2) is None


def test_open_signals_leave_out_resolved_incidents_and_other_dates(store):
    with store.transaction() as tx:
        a = new_incident(tx, "ew/a")
        b = new_incident(tx, "ew/b")
        c = new_incident(tx, "ew/c", state="resolved", resolved_at=t(1))
        tx.ew_record_signal("class:3-2/all", D3, a, ["C2"], t(0))
        tx.ew_record_signal("grade:3/all", D1, b, ["C1"], t(0))
        tx.ew_record_signal("school/all", D2, c, ["C3"], t(0))
        tx.ew_record_signal("school/respiratory", D2, None, ["C3"], t(0))
    with store.transaction() as tx:
        keys = ["class:3-2/all", "grade:3/all", "school/all", "school/respiratory"]
        assert tx.ew_open_signals(keys, D1, D3) == [("grade:3/all", D1, b),
                                                    ("class:3-2/all", D3, a)]
        assert tx.ew_open_signals(keys, D2, D3) == [("class:3-2/all", D3, a)]
        assert tx.ew_open_signals(["school/all"], D1, D3) == []
        assert tx.ew_open_signals([], D1, D3) == []


def test_outbreak_incidents_open_and_resolved(store):
    with store.transaction() as tx:
        assert tx.ew_open_outbreak("varicella", "school") is None
        assert tx.ew_outbreak_since("varicella", "school") is None
        old = new_incident(tx, "outbreak/varicella/school/1", state="resolved", resolved_at=t(10))
        older = new_incident(tx, "outbreak/varicella/school/0", state="resolved",
                             resolved_at=t(5))
        now = new_incident(tx, "outbreak/varicella/school/2")
        other = new_incident(tx, "outbreak/varicella/grade:3/2")
        tx.ew_add_outbreak(old, "varicella", "school", D1, t(0))
        tx.ew_add_outbreak(older, "varicella", "school", D1, t(0))
        tx.ew_add_outbreak(now, "varicella", "school", D3, t(20))
        tx.ew_add_outbreak(now, "varicella", "school", D3, t(30))  # again: ignored
        tx.ew_add_outbreak(other, "varicella", "grade:3", D3, t(20))
    with store.transaction() as tx:
        assert tx.ew_open_outbreak("varicella", "school") == now
        assert tx.ew_open_outbreak("varicella", "grade:3") == other
        assert tx.ew_open_outbreak("mumps", "school") is None
        assert tx.ew_outbreak_since("varicella", "school") == t(10)  # the latest resolved
        assert tx.ew_outbreak_since("varicella", "grade:3") is None


def test_a_link_is_recorded_once(store):
    with store.transaction() as tx:
        warning, cluster = new_incident(tx, "ew/w"), new_incident(tx, "cluster/c")
        assert tx.ew_link(warning, cluster, t(0)) is True
        assert tx.ew_link(warning, cluster, t(1)) is False
    with store.transaction() as tx:
        assert tx.ew_link(warning, cluster, t(2)) is False
        assert tx.ew_link(cluster, warning, t(2)) is True


def test_the_purge_drops_cases_before_a_date(store):
    with store.transaction() as tx:
        tx.ew_add_case(case("e1", "p1", D1))
        tx.ew_add_case(case("e1", "p1", D1, grp="respiratory"))
        tx.ew_add_case(case("e2", "p2", D2))
        tx.ew_add_case(case("e3", "p3", D3))
    with store.transaction() as tx:
        assert tx.ew_purge(D2) == 2
        assert tx.ew_purge(D2) == 0
    with store.transaction() as tx:
        assert tx.ew_daily_counts("all", "school", D1, D3) == {D2: 1, D3: 1}
        assert tx.ew_first_date() == D2
