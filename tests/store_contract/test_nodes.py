"""The store contract, several daemons on one database (:class:`escalator.store.base.NodeTx`;
docs/reliability.md "Several daemons"): node beats, whose claims are released, leases, shared
send windows."""

from __future__ import annotations

from .conftest import new_incident, new_notification, t


def test_a_beating_node_is_live_until_its_ttl(store):
    with store.transaction() as tx:
        assert tx.live_nodes(t(0)) == []
        tx.beat_node("b:8765", t(0), 60)
        tx.beat_node("a:8765", t(0), 120)
    with store.transaction() as tx:
        assert tx.live_nodes(t(0)) == ["a:8765", "b:8765"]
        assert tx.live_nodes(t(1.5)) == ["a:8765"]  # b's minute is over
        assert tx.live_nodes(t(2)) == []  # expiry is exclusive
        tx.beat_node("b:8765", t(1.5), 60)  # beats again: alive again
        assert tx.live_nodes(t(2)) == ["b:8765"]


def test_claims_record_their_node_and_a_release_is_per_node(store):
    with store.transaction() as tx:
        iid = new_incident(tx)
        a1, a2, b1 = (new_notification(tx, iid) for _ in range(3))
        other = new_notification(tx, iid, address="13800000002")
        done = new_notification(tx, iid, status="delivered")
    with store.transaction() as tx:
        assert [n.id for n in tx.claim_notifications(t(1), 2, "a")] == [a1, a2]
        got = tx.claim_address("sms", "13800000001", 2, t(1), 5, "b")
        assert [(n.id, n.claimed_by) for n in got] == [(b1, "b")]
        assert [n.claimed_by for n in tx.claim_notifications(t(1), 5, "b")] == ["b"]  # other
        assert tx.get_notification(a1).claimed_by == "a"
    with store.transaction() as tx:
        assert tx.release_claims("a") == 2  # a's own, not b's
        assert [tx.get_notification(i).status for i in (a1, a2, b1, other, done)] == [
            "pending", "pending", "sending", "sending", "delivered"]
        assert tx.release_claims("a") == 0
        assert tx.release_claims("b") == 2


def test_dead_claims_are_those_of_expired_or_unknown_nodes(store):
    with store.transaction() as tx:
        tx.beat_node("live", t(0), 600)
        tx.beat_node("dead", t(0), 60)
        iid = new_incident(tx)
        mine, theirs, ghost = (new_notification(tx, iid) for _ in range(3))
        old = new_notification(tx, iid, status="sending")  # claimed before nodes existed
    with store.transaction() as tx:
        tx.claim_notifications(t(0), 1, "live")
        tx.claim_notifications(t(0), 1, "dead")
        tx.claim_notifications(t(0), 1, "never-beat")
    with store.transaction() as tx:
        assert tx.release_dead_claims(t(0.5)) == 2  # the one that never beat, and the old one
        assert [tx.get_notification(i).status for i in (mine, theirs, ghost, old)] == [
            "sending", "sending", "pending", "pending"]
    with store.transaction() as tx:
        assert tx.release_dead_claims(t(5)) == 1  # "dead"'s minute is over
        assert tx.get_notification(theirs).status == "pending"
        assert tx.get_notification(theirs).claimed_by is None
        assert tx.get_notification(mine).status == "sending"
        assert tx.release_dead_claims(t(5)) == 0


def test_a_lease_has_one_holder_until_it_expires(store):
    with store.transaction() as tx:
        assert tx.take_lease("purge", "a", t(0), 60) is True  # free
        assert tx.take_lease("purge", "b", t(0.5), 60) is False  # a holds it
        assert tx.take_lease("other", "b", t(0.5), 60) is True  # leases are by name
        assert tx.take_lease("purge", "a", t(0.9), 60) is True  # renewed: now until t(1.9)
    with store.transaction() as tx:
        assert tx.take_lease("purge", "b", t(1.5), 60) is False
        assert tx.take_lease("purge", "b", t(1.9), 60) is True  # expired: b takes it over
        assert tx.take_lease("purge", "a", t(2), 60) is False


def test_a_lease_taken_in_a_rolled_back_transaction_is_not_held(store):
    try:
        with store.transaction() as tx:
            assert tx.take_lease("purge", "a", t(0), 60)
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    with store.transaction() as tx:
        assert tx.take_lease("purge", "b", t(0), 60) is True


def test_a_rate_window_reads_back_in_order_and_empties(store):
    with store.transaction() as tx:
        assert tx.rate_window("address:sms:1") == []
        tx.put_rate_window("address:sms:1", [t(2), t(1)])
        tx.put_rate_window("address:sms:2", [t(3)])
    with store.transaction() as tx:
        assert tx.rate_window("address:sms:1") == [t(1), t(2)]
        tx.put_rate_window("address:sms:1", [])
    with store.transaction() as tx:
        assert tx.rate_window("address:sms:1") == []
        assert tx.rate_window("address:sms:2") == [t(3)]
