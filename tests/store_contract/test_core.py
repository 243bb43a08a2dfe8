"""The store contract, core (:class:`escalator.store.base.CoreTx`): events, incidents, step
runs, the outbox, deliveries, the timeline and timers, spool files; transactions and faults."""

from __future__ import annotations

import threading
import time

import pytest

from escalator.store import Conflict, Incident, Notification, StoreUnavailable
from escalator.store.base import Delivery

from .conftest import T0, new_event, new_incident, new_notification, new_step_run, t

# ------------------------------------------------------------------ transactions


def test_a_failed_transaction_leaves_nothing(store):
    with pytest.raises(RuntimeError, match="boom"), store.transaction() as tx:
        tx.add_spool_file(sha256="y", name="b.json", taken_at=T0, events=1)
        new_incident(tx)
        raise RuntimeError("boom")
    with store.transaction() as tx:
        assert not tx.spool_file_seen("y")
        assert tx.count_incidents() == {}


def test_a_committed_transaction_survives_closing_the_store(backend, place):
    s = backend.open(place)
    with s.transaction() as tx:
        iid = new_incident(tx)
        new_event(tx, "e1", incident_id=iid)
    s.close()
    s = backend.open(place)
    try:
        with s.transaction() as tx:
            assert tx.get_incident(iid).dedup_key == "k/1"
            assert tx.get_event("e1")["incident_id"] == iid
    finally:
        s.close()


def test_a_snapshot_reads_what_is_committed_beside_a_running_write_transaction(store):
    with store.transaction() as tx:
        iid = new_incident(tx)
        nid = new_notification(tx, iid, status="sending")
    holding, done = threading.Event(), threading.Event()

    def writer() -> None:  # a write transaction left open on another thread
        with store.transaction() as tx:
            tx.update_incident(iid, state="acknowledged")
            holding.set()
            done.wait(10)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert holding.wait(10)
        started = time.monotonic()
        with store.snapshot() as tx:  # does not wait for the writer, sees only the commit
            assert tx.sending_states([nid]) == {nid: "triggered"}
        assert time.monotonic() - started < 2
    finally:
        done.set()
        thread.join()
    with store.snapshot() as tx:  # the writer's commit, seen by the next snapshot
        assert tx.sending_states([nid]) == {nid: "acknowledged"}
        assert tx.get_notification(nid).status == "sending"


def test_a_write_in_a_snapshot_raises_store_unavailable_and_keeps_nothing(store):
    with store.transaction() as tx:
        iid = new_incident(tx)
    with pytest.raises(StoreUnavailable), store.snapshot() as tx:
        tx.update_incident(iid, state="resolved")
    with store.snapshot() as tx:
        assert tx.count_incidents() == {"triggered": 1}


def test_a_store_that_cannot_grow_raises_store_unavailable_and_keeps_nothing(backend, store):
    with store.transaction() as tx:
        new_event(tx, "before")
    backend.fill(store)
    big = {"summary": "x" * 50_000}
    with pytest.raises(StoreUnavailable) as raised:
        for n in range(200):
            with store.transaction() as tx:
                tx.add_spool_file(sha256=f"s{n}", name="f.json", taken_at=T0, events=1)
                new_event(tx, f"big-{n}", body=big)
    assert raised.value.cause
    failed = n
    backend.unfill(store)
    with store.transaction() as tx:
        assert tx.get_event("before") is not None
        assert tx.get_event(f"big-{failed}") is None  # the failed transaction left nothing
        assert not tx.spool_file_seen(f"s{failed}")
        new_event(tx, "after", body=big)  # and the store works again
    with store.transaction() as tx:
        assert tx.get_event("after") is not None


def test_a_store_that_cannot_be_opened_raises_store_unavailable(backend, place):
    backend.break_(place)
    with pytest.raises(StoreUnavailable):
        backend.open(place)


def test_the_store_names_its_backend_and_schema_version(backend, place):
    s = backend.open(place)
    try:
        name, _, version = s.describe().partition(" ")
        assert name in ("SQLite", "PostgreSQL") and version[0].isdigit()
        assert "@" not in s.describe() and "/" not in s.describe()
        first = s.schema_version()
        assert first >= 12  # every migration ran (12: several daemons)
    finally:
        s.close()
    s = backend.open(place)  # opened again: nothing more to migrate
    try:
        assert s.schema_version() == first
    finally:
        s.close()


# ------------------------------------------------------------------ events


def test_events_are_stored_read_back_and_listed_per_incident(store):
    with store.transaction() as tx:
        iid = new_incident(tx)
        new_event(tx, "e2", incident_id=iid, at=t(2), body={"summary": "第二", "n": [1, 2]})
        new_event(tx, "e1", incident_id=iid, at=t(1))
        new_event(tx, "e3", at=t(3))
    with store.transaction() as tx:
        e = tx.get_event("e2")
        assert e["body"] == {"summary": "第二", "n": [1, 2]}
        assert e["received_at"] == t(2) and e["received_at"].utcoffset().total_seconds() == 0
        assert (e["source"], e["kind"], e["category"], e["action"], e["dedup_key"],
                e["incident_id"], e["outcome"], e["row_key"]) == \
            ("test", "incident", "accident", "trigger", "k/1", iid, "opened", None)
        assert [x["id"] for x in tx.events_of(iid)] == ["e1", "e2"]  # by time received
        assert tx.get_event("nope") is None
        assert tx.events_of(iid + 1) == []


def test_an_event_id_is_stored_once(store):
    with store.transaction() as tx:
        new_event(tx, "e1")
    with pytest.raises(Conflict), store.transaction() as tx:
        new_event(tx, "e1")


def test_row_keys_are_seen_and_unique(store):
    with store.transaction() as tx:
        assert not tx.row_key_seen("absence/2026-11-30/S-1")
        new_event(tx, "e1", row_key="absence/2026-11-30/S-1")
        new_event(tx, "e2")  # no row key: any number of them
        new_event(tx, "e3")
    with store.transaction() as tx:
        assert tx.row_key_seen("absence/2026-11-30/S-1")
        assert not tx.row_key_seen("absence/2026-11-30/S-2")
    with pytest.raises(Conflict), store.transaction() as tx:
        new_event(tx, "e4", row_key="absence/2026-11-30/S-1")


# ------------------------------------------------------------------ incidents


def test_an_incident_reads_back_as_written(store):
    with store.transaction() as tx:
        iid = new_incident(tx, drill=True, next_step_at=t(5), deadline_at=t(60),
                           deadline_check_at=t(45), deadline_rule="fever",
                           deadline_notify=["unit:health"], first_event_id="e1")
    with store.transaction() as tx:
        inc = tx.get_incident(iid)
    assert isinstance(inc, Incident)
    assert (inc.id, inc.dedup_key, inc.state, inc.summary, inc.drill) == \
        (iid, "k/1", "triggered", "摔伤", True)
    assert inc.policy == {"steps": [{"targets": ["person:wang"]}]}
    assert (inc.step_index, inc.round, inc.event_count) == (-1, 0, 1)
    assert (inc.next_step_at, inc.created_at, inc.deadline_at, inc.deadline_check_at) == \
        (t(5), T0, t(60), t(45))
    assert inc.next_step_at.utcoffset().total_seconds() == 0
    assert (inc.deadline_rule, inc.deadline_notify, inc.first_event_id) == \
        ("fever", ["unit:health"], "e1")
    assert inc.acknowledged_at is inc.resolved_at is inc.deadline_met_at is None
    with store.transaction() as tx:
        assert tx.get_incident(iid + 1) is None


def test_one_open_incident_per_dedup_key(store):
    with store.transaction() as tx:
        first = new_incident(tx, "fever/3-2")
        assert tx.open_incident_by_key("fever/3-2").id == first
        assert tx.open_incident_by_key("fever/3-3") is None
    with pytest.raises(Conflict), store.transaction() as tx:
        new_incident(tx, "fever/3-2")  # a second open incident of the key: a lost race
    with store.transaction() as tx:
        tx.update_incident(first, state="acknowledged")
    with pytest.raises(Conflict), store.transaction() as tx:
        new_incident(tx, "fever/3-2")  # acknowledged is open too
    with store.transaction() as tx:
        tx.update_incident(first, state="resolved", resolved_at=t(1), resolved_by="doc")
        assert tx.open_incident_by_key("fever/3-2") is None
        second = new_incident(tx, "fever/3-2")  # resolved ones do not count
        assert tx.open_incident_by_key("fever/3-2").id == second
    with store.transaction() as tx:
        assert tx.get_incident(first).resolved_by == "doc"


def test_update_incident_changes_only_the_fields_given(store):
    with store.transaction() as tx:
        iid = new_incident(tx, next_step_at=t(5))
        tx.update_incident(iid, state="acknowledged", acknowledged_at=t(2),
                           acknowledged_by="wang", step_index=0, next_step_at=None,
                           policy={"steps": []})
    with store.transaction() as tx:
        inc = tx.get_incident(iid)
    assert (inc.state, inc.acknowledged_at, inc.acknowledged_by, inc.step_index) == \
        ("acknowledged", t(2), "wang", 0)
    assert inc.next_step_at is None and inc.policy == {"steps": []}
    assert inc.summary == "摔伤" and inc.created_at == T0


def test_incidents_are_listed_newest_first_by_state_and_counted(store):
    with store.transaction() as tx:
        a = new_incident(tx, "a")
        b = new_incident(tx, "b", state="acknowledged")
        c = new_incident(tx, "c", state="resolved")
        d = new_incident(tx, "d")
    with store.transaction() as tx:
        assert [i.id for i in tx.list_incidents(("triggered", "acknowledged"), 10)] == [d, b, a]
        assert [i.id for i in tx.list_incidents(("triggered",), 1)] == [d]
        assert [i.id for i in tx.list_incidents(("triggered", "acknowledged", "resolved"), 10)] \
            == [d, c, b, a]
        assert tx.count_incidents() == {"triggered": 2, "acknowledged": 1, "resolved": 1}


def test_due_incidents_by_either_timer_earliest_first(store):
    with store.transaction() as tx:
        assert tx.due_incidents(t(100), 10) == []
        late = new_incident(tx, "late", next_step_at=t(10))
        deadline = new_incident(tx, "deadline", deadline_check_at=t(3))
        both = new_incident(tx, "both", next_step_at=t(1), deadline_check_at=t(20))
        new_incident(tx, "idle")
        new_incident(tx, "future", next_step_at=t(11))
    with store.transaction() as tx:
        assert tx.due_incidents(t(10), 10) == [both, deadline, late]  # ≤ now, inclusive
        assert tx.due_incidents(t(10), 2) == [both, deadline]
        assert tx.due_incidents(t(2), 10) == [both]
        assert tx.due_incidents(T0, 10) == []


def test_next_due_is_the_earliest_timer_of_any_kind(store):
    with store.transaction() as tx:
        assert tx.next_due() is None
        iid = new_incident(tx, "a", next_step_at=t(30))
    with store.transaction() as tx:
        assert tx.next_due() == t(30)
        new_incident(tx, "b", deadline_check_at=t(20))
        assert tx.next_due() == t(20)
        new_notification(tx, iid, due_at=t(5), status="delivered")  # not pending: no timer
        assert tx.next_due() == t(20)
        new_notification(tx, iid, due_at=t(10))
        assert tx.next_due() == t(10)
        assert tx.next_due().utcoffset().total_seconds() == 0


# ------------------------------------------------------------------ step runs


def test_step_runs(store):
    with store.transaction() as tx:
        iid = new_incident(tx)
        assert tx.latest_step_run(iid) is None
        r0 = new_step_run(tx, iid, 0, at=t(1))
        r1 = new_step_run(tx, iid, 1, mode="report", at=t(2))
    with store.transaction() as tx:
        run = tx.get_step_run(r0)
        assert (run.incident_id, run.step_index, run.round, run.mode, run.fired_at, run.status,
                run.closed_at) == (iid, 0, 0, "escalate", t(1), "open", None)
        assert tx.latest_step_run(iid).id == r1
        assert tx.get_step_run(r1 + 1) is None
        tx.close_step_run(r0, "confirmed", t(3))
        tx.close_step_run(r0, "overdue", t(4))  # only an open run closes
    with store.transaction() as tx:
        run = tx.get_step_run(r0)
        assert (run.status, run.closed_at) == ("confirmed", t(3))
        assert tx.get_step_run(r1).status == "open"


# ------------------------------------------------------------------ the outbox


def test_a_notification_reads_back_by_id_token_and_incident(store):
    with store.transaction() as tx:
        iid = new_incident(tx)
        run = new_step_run(tx, iid)
        n1 = new_notification(tx, iid, step_run_id=run, ack_token="abc", needs_ack=False,
                              purpose="target_unresolved", note="unit:x")
        n2 = new_notification(tx, iid)
    with store.transaction() as tx:
        n = tx.get_notification(n1)
        assert isinstance(n, Notification)
        assert (n.id, n.incident_id, n.step_run_id, n.recipient_kind, n.recipient_id,
                n.recipient_name, n.channel, n.address, n.contact_index, n.status, n.due_at,
                n.attempts, n.created_at, n.ack_token, n.needs_ack, n.purpose, n.note,
                n.first_attempt_at, n.last_error) == \
            (n1, iid, run, "person", "wang", "王老师", "sms", "13800000001", 0, "pending", T0,
             0, T0, "abc", False, "target_unresolved", "unit:x", None, None)
        assert tx.notification_by_token("abc").id == n1
        assert tx.notification_by_token("nope") is None
        assert tx.get_notification(n2 + 1) is None
        assert [x.id for x in tx.notifications_of(iid)] == [n1, n2]


def test_an_ack_token_is_unique(store):
    with store.transaction() as tx:
        iid = new_incident(tx)
        new_notification(tx, iid, ack_token="same")
    with pytest.raises(Conflict), store.transaction() as tx:
        new_notification(tx, iid, ack_token="same")


def test_claiming_takes_due_pending_rows_in_order_once(store):
    with store.transaction() as tx:
        iid = new_incident(tx)
        later = new_notification(tx, iid, due_at=t(2))
        first = new_notification(tx, iid, due_at=t(1))
        tie = new_notification(tx, iid, due_at=t(2))
        new_notification(tx, iid, due_at=t(9))  # not due
        new_notification(tx, iid, due_at=t(0), status="delivered")
    with store.transaction() as tx:
        claimed = tx.claim_notifications(t(5), 2, "n1")
        assert [n.id for n in claimed] == [first, later]
        assert {n.status for n in claimed} == {"sending"}
        assert tx.get_notification(first).status == "sending"
    with store.transaction() as tx:
        assert [n.id for n in tx.claim_notifications(t(5), 10, "n1")] == [tie]
        assert tx.claim_notifications(t(5), 10, "n1") == []


def test_release_claims_puts_sending_rows_back(store):
    with store.transaction() as tx:
        iid = new_incident(tx)
        a = new_notification(tx, iid)
        b = new_notification(tx, iid)
        c = new_notification(tx, iid, status="delivered")
        tx.claim_notifications(t(1), 10, "n1")
    with store.transaction() as tx:
        assert tx.release_claims("n1") == 2
        assert [tx.get_notification(i).status for i in (a, b, c)] == \
            ["pending", "pending", "delivered"]
        assert tx.release_claims("n1") == 0


def test_cancel_notifications_of_an_incident_or_one_step(store):
    with store.transaction() as tx:
        iid = new_incident(tx, "a")
        other = new_incident(tx, "b")
        r0, r1 = new_step_run(tx, iid, 0), new_step_run(tx, iid, 1)
        a = new_notification(tx, iid, step_run_id=r0)
        b = new_notification(tx, iid, step_run_id=r1, status="sending")
        c = new_notification(tx, iid, step_run_id=r1)
        done = new_notification(tx, iid, step_run_id=r1, status="delivered")
        elsewhere = new_notification(tx, other)
    with store.transaction() as tx:
        assert tx.cancel_notifications(iid, r1, t(1)) == 2
        assert [tx.get_notification(i).status for i in (a, b, c, done)] == \
            ["pending", "cancelled", "cancelled", "delivered"]
        assert tx.cancel_notifications(iid, None, t(2)) == 1
        assert tx.get_notification(a).status == "cancelled"
        assert tx.get_notification(elsewhere).status == "pending"


def test_update_notification(store):
    with store.transaction() as tx:
        iid = new_incident(tx)
        n = new_notification(tx, iid)
        tx.update_notification(n, status="failed", attempts=3, first_attempt_at=t(1),
                               last_error="timeout", due_at=t(9), updated_at=t(2))
    with store.transaction() as tx:
        got = tx.get_notification(n)
    assert (got.status, got.attempts, got.first_attempt_at, got.last_error, got.due_at) == \
        ("failed", 3, t(1), "timeout", t(9))
    assert got.recipient_name == "王老师"


def test_waiting_ahead_is_the_earliest_older_pending_row_to_the_same_address(store):
    with store.transaction() as tx:
        iid = new_incident(tx)
        sent = new_notification(tx, iid, status="delivered")
        older = new_notification(tx, iid)
        new_notification(tx, iid, address="13800000002")  # another address
        new_notification(tx, iid, channel="mail")  # another channel
        middle = new_notification(tx, iid)
        me = new_notification(tx, iid)
    with store.transaction() as tx:
        assert tx.waiting_ahead("sms", "13800000001", me).id == older
        assert tx.waiting_ahead("sms", "13800000001", older) is None
        assert tx.waiting_ahead("sms", "13800000001", sent) is None
        tx.update_notification(older, status="delivered")
        assert tx.waiting_ahead("sms", "13800000001", me).id == middle


def test_claim_takes_the_most_urgent_first_then_by_due_time(store):
    with store.transaction() as tx:
        iid = new_incident(tx)
        normal = new_notification(tx, iid, due_at=t(1))
        high = new_notification(tx, iid, due_at=t(3), priority=1)
        critical = new_notification(tx, iid, due_at=t(4), priority=0)
        early_normal = new_notification(tx, iid, due_at=t(0))
        new_notification(tx, iid, due_at=t(9), priority=0)  # not due
    with store.transaction() as tx:
        claimed = tx.claim_notifications(t(5), 3, "n1")
        assert [(n.id, n.priority) for n in claimed] == [(critical, 0), (high, 1),
                                                         (early_normal, 2)]
        assert [n.id for n in tx.claim_notifications(t(5), 10, "n1")] == [normal]


def test_a_notification_is_of_normal_priority_unless_given(store):
    with store.transaction() as tx:
        n = new_notification(tx, new_incident(tx))
        assert tx.get_notification(n).priority == 2


def test_waiting_ahead_is_within_one_priority(store):
    with store.transaction() as tx:
        iid = new_incident(tx)
        normal = new_notification(tx, iid)
        high = new_notification(tx, iid, priority=1)
        me = new_notification(tx, iid, priority=1)
        later_normal = new_notification(tx, iid)
    with store.transaction() as tx:
        assert tx.waiting_ahead("sms", "13800000001", me, 1).id == high
        assert tx.waiting_ahead("sms", "13800000001", high, 1) is None  # the normal one waits
        assert tx.waiting_ahead("sms", "13800000001", later_normal, 2).id == normal


def test_claim_address_takes_the_due_pending_rows_of_one_address_and_priority(store):
    with store.transaction() as tx:
        iid = new_incident(tx)
        a = new_notification(tx, iid)
        new_notification(tx, iid, address="13800000002")  # another address
        new_notification(tx, iid, priority=0)  # another priority
        new_notification(tx, iid, due_at=t(9))  # not due
        new_notification(tx, iid, status="delivered")
        b = new_notification(tx, iid, due_at=t(1))
        c = new_notification(tx, iid)
    with store.transaction() as tx:
        got = tx.claim_address("sms", "13800000001", 2, t(5), 2, "n1")
        assert [n.id for n in got] == [a, b] and {n.status for n in got} == {"sending"}
        assert [n.id for n in tx.claim_address("sms", "13800000001", 2, t(5), 10, "n1")] == [c]
        assert tx.claim_address("sms", "13800000001", 2, t(5), 10, "n1") == []


def test_mark_step_delivered_keeps_the_first_time(store):
    with store.transaction() as tx:
        run = new_step_run(tx, new_incident(tx))
        assert tx.get_step_run(run).first_delivered_at is None
        assert tx.mark_step_delivered(run, t(3)) is True
        assert tx.mark_step_delivered(run, t(4)) is False
        assert tx.get_step_run(run).first_delivered_at == t(3)


def test_deliveries_are_recorded_per_notification(store):
    with store.transaction() as tx:
        iid = new_incident(tx)
        n, other = new_notification(tx, iid), new_notification(tx, iid)
        assert tx.deliveries_of(n) == []
        tx.add_delivery(notification_id=n, at=t(1), outcome="failed_retryable",
                        detail="HTTP 500", body="【测试小学】摔伤")
        tx.add_delivery(notification_id=n, at=t(2), outcome="delivered", detail="ok",
                        body="【测试小学】摔伤")
        tx.add_delivery(notification_id=other, at=t(1), outcome="deduplicated", detail="{}",
                        body="")
    with store.transaction() as tx:
        got = tx.deliveries_of(n)
        assert all(isinstance(d, Delivery) for d in got)
        assert [(d.notification_id, d.at, d.outcome, d.detail, d.body) for d in got] == [
            (n, t(1), "failed_retryable", "HTTP 500", "【测试小学】摔伤"),
            (n, t(2), "delivered", "ok", "【测试小学】摔伤")]
        assert [d.detail for d in tx.deliveries_of(other)] == ["{}"]  # text, never parsed


# ------------------------------------------------------------------ timeline, spool files


def test_the_timeline_keeps_the_order_written(store):
    with store.transaction() as tx:
        iid = new_incident(tx)
        other = new_incident(tx, "other")
        tx.add_timeline(iid, t(5), "triggered", "api", {"event_id": "e1", "中文": ["是"]})
        tx.add_timeline(other, t(5), "triggered", None, {})
        tx.add_timeline(iid, t(1), "step_fired", None, {"step": 0})  # written later, earlier time
    with store.transaction() as tx:
        entries = tx.timeline(iid)
        assert [(e.incident_id, e.at, e.type, e.actor, e.detail) for e in entries] == [
            (iid, t(5), "triggered", "api", {"event_id": "e1", "中文": ["是"]}),
            (iid, t(1), "step_fired", None, {"step": 0})]
        assert entries[0].id < entries[1].id
        assert tx.timeline(other + 1) == []


def test_spool_files_are_remembered_once(store):
    with store.transaction() as tx:
        assert not tx.spool_file_seen("abc")
        tx.add_spool_file(sha256="abc", name="发热报告.json", taken_at=T0, events=3)
    with store.transaction() as tx:
        assert tx.spool_file_seen("abc") and not tx.spool_file_seen("abd")
    with pytest.raises(Conflict), store.transaction() as tx:
        tx.add_spool_file(sha256="abc", name="again.json", taken_at=T0, events=3)


def test_sending_states_names_the_incident_state_of_rows_still_sending(store):
    with store.transaction() as tx:
        open_ = new_incident(tx)
        acked = new_incident(tx, "k/2", state="acknowledged")
        sending = new_notification(tx, open_, status="sending")
        of_acked = new_notification(tx, acked, status="sending")
        cancelled = new_notification(tx, open_, status="cancelled")
        pending = new_notification(tx, open_)
    with store.transaction() as tx:
        assert tx.sending_states([sending, of_acked, cancelled, pending, 999_999]) == {
            sending: "triggered", of_acked: "acknowledged"}
        assert tx.sending_states([]) == {}
