"""The store contract, silences and groups (:class:`escalator.store.base.QuietTx`): silences
and their expiry, the incidents they hold, incident groups, their members and update timers."""

from __future__ import annotations

import pytest

from escalator.store import Conflict
from escalator.store.base import IncidentGroup, Silence

from .conftest import T0, new_event, new_incident, t


def silence(id: str = "s1", **fields) -> Silence:
    values = dict(id=id, matchers=['place=~"1号楼.*"', 'category="fire"'], starts_at=T0,
                  ends_at=t(60), created_by="总务处", comment="消防测试", created_at=T0)
    values.update(fields)
    return Silence(**values)


def test_a_silence_is_stored_whole_and_its_id_is_unique(store):
    weekly = {"weekdays": [1], "nth": [1], "start": "14:00:00", "end": "15:00:00"}
    with store.transaction() as tx:
        tx.insert_silence(silence())
        tx.insert_silence(silence("s2", starts_at=None, ends_at=None, schedule=weekly,
                                  exempt_critical=False))
    with store.transaction() as tx:
        assert tx.get_silence("s1") == silence()
        s2 = tx.get_silence("s2")
        assert s2.schedule == weekly and s2.exempt_critical is False and s2.ends_at is None
        assert tx.get_silence("nope") is None
    with pytest.raises(Conflict), store.transaction() as tx:
        tx.insert_silence(silence())


def test_listing_leaves_out_what_is_over_and_expiry_ends_a_silence(store):
    with store.transaction() as tx:
        tx.insert_silence(silence("ends", ends_at=t(10), created_at=t(1)))
        tx.insert_silence(silence("open", ends_at=None, created_at=t(2)))
        tx.insert_silence(silence("later", starts_at=t(100), ends_at=t(200), created_at=t(3)))
    with store.transaction() as tx:
        assert [s.id for s in tx.list_silences(None)] == ["ends", "open", "later"]
        assert [s.id for s in tx.list_silences(t(5))] == ["ends", "open", "later"]
        assert [s.id for s in tx.list_silences(t(10))] == ["open", "later"]
        assert tx.expire_silence("open", t(20), "admin")
        assert not tx.expire_silence("open", t(21), "admin")  # over already
        assert not tx.expire_silence("ends", t(20), "admin")  # ended by itself
        assert not tx.expire_silence("nope", t(20), "admin")
        assert [s.id for s in tx.list_silences(t(20))] == ["later"]
        gone = tx.get_silence("open")
        assert gone.expired_at == t(20) and gone.expired_by == "admin"


def test_holds_name_their_silence_and_are_released(store):
    with store.transaction() as tx:
        a, b, c = (new_incident(tx, f"k/{n}") for n in range(3))
        tx.hold_incident(a, "s1", t(60))
        tx.hold_incident(b, "s1", t(60))
        tx.hold_incident(c, "s2", t(30))
        tx.hold_incident(c, "s2", t(45))  # a moved end replaces the hold
    with store.transaction() as tx:
        assert tx.silence_hold(a) == ("s1", t(60))
        assert tx.silence_hold(c) == ("s2", t(45))
        assert tx.held_by("s1") == [a, b]
        tx.release_hold(a)
        assert tx.silence_hold(a) is None and tx.held_by("s1") == [b]


def test_a_group_counts_distinct_members_and_keeps_its_update_timer(store):
    with store.transaction() as tx:
        a, b = new_incident(tx, "group/p/place=3楼"), new_incident(tx, "group/p/place=4楼")
        tx.add_group(IncidentGroup(a, "group/p/place=3楼", 0, {"place": "3楼"}))
        tx.add_group(IncidentGroup(b, "group/p/place=4楼", 0, {"place": "4楼"}))
        assert tx.add_group_member(a, "m1", T0)
        assert tx.add_group_member(a, "m2", T0)
        assert not tx.add_group_member(a, "m1", t(1))  # the same member again
        assert tx.add_group_member(b, "m1", T0)  # another group's member
        assert tx.next_group_update() is None
        tx.set_group_update(a, t(5))
        tx.set_group_update(b, t(3), told=1)
    with store.transaction() as tx:
        g = tx.incident_group(a)
        assert (g.members, g.told, g.values, g.update_at) == (2, 0, {"place": "3楼"}, t(5))
        assert tx.incident_group(b).told == 1
        assert tx.incident_group(999) is None
        assert tx.next_group_update() == t(3)
        assert tx.due_group_updates(t(4), 10) == [b]
        assert tx.due_group_updates(t(5), 10) == [b, a]
        assert tx.due_group_updates(t(5), 1) == [b]
        tx.set_group_update(b, None, told=2)
        assert tx.due_group_updates(t(5), 10) == [a] and tx.incident_group(b).told == 2


def test_open_openings_lists_the_opening_events_of_open_incidents(store):
    with store.transaction() as tx:
        fire = new_incident(tx, "k/fire", category="fire", first_event_id="e-fire")
        new_event(tx, "e-fire", incident_id=fire, body={"summary": "1号楼 火警",
                                                        "labels": {"building": "1号楼"}})
        other = new_incident(tx, "k/other", first_event_id="e-other")
        new_event(tx, "e-other", incident_id=other)
        drill = new_incident(tx, "drill/k", category="fire", drill=True, first_event_id="e-drill")
        new_event(tx, "e-drill", incident_id=drill)
        gone = new_incident(tx, "k/gone", category="fire", state="resolved", first_event_id="e-g")
        new_event(tx, "e-g", incident_id=gone)
        new_incident(tx, "k/no-event", category="fire", first_event_id=None)
    with store.transaction() as tx:
        assert [i for i, _, _ in tx.open_openings(False, None, 10)] == [other, fire]
        assert tx.open_openings(False, "fire", 10) == [
            (fire, "test", {"summary": "1号楼 火警", "labels": {"building": "1号楼"}})]
        assert [i for i, _, _ in tx.open_openings(True, "fire", 10)] == [drill]
        assert [i for i, _, _ in tx.open_openings(False, None, 1)] == [other]


def test_open_openings_filters_on_equal_fields_labels_and_source(store):
    with store.transaction() as tx:
        for n, (building, place) in enumerate([("1号楼", "实验室"), ("2号楼", "实验室"), ("1号楼", None)]):
            body = {"summary": "火警", "labels": {"building": building}}
            if place:
                body["place"] = place
            iid = new_incident(tx, f"k/{n}", category="fire", first_event_id=f"e{n}")
            new_event(tx, f"e{n}", incident_id=iid, body=body)
    with store.transaction() as tx:
        def ids(equal):
            return [body["labels"]["building"] + (body.get("place") or "-")
                    for _, _, body in tx.open_openings(False, "fire", 10, equal)]
        assert ids({"building": "1号楼"}) == ["1号楼-", "1号楼实验室"]
        assert ids({"building": "1号楼", "place": "实验室"}) == ["1号楼实验室"]
        assert ids({"place": ""}) == ["1号楼-"]  # missing reads as empty
        assert ids({"source": "test", "building": "2号楼"}) == ["2号楼实验室"]
        assert ids({"source": "panel"}) == []
