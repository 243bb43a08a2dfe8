"""The store contract, reply codes (:class:`escalator.store.base.ReplyTx`): one row per
(recipient, code), one code per (recipient, incident), read with the incident's state."""

from __future__ import annotations

from escalator.store.base import ReplyCode

from .conftest import new_incident, new_notification, t


def code(iid: int, nid: int, c: str = "a", who: str = "wang", minutes: float = 0,
         token: str = "tok") -> ReplyCode:
    return ReplyCode("person", who, c, iid, nid, token, t(minutes))


def test_a_code_reads_back_with_its_incident_state(store):
    with store.transaction() as tx:
        iid = new_incident(tx)
        nid = new_notification(tx, iid)
        assert tx.reply_code("person", "wang", "a") is None
        assert tx.reply_codes_of("person", "wang") == []
        tx.put_reply_code(code(iid, nid, token="T1"))
    with store.transaction() as tx:
        got = tx.reply_code("person", "wang", "a")
        assert got == ReplyCode("person", "wang", "a", iid, nid, "T1", t(0), "triggered")
        assert tx.reply_code("person", "li", "a") is None  # codes are per recipient
        assert tx.reply_code("unit", "wang", "a") is None
        tx.update_incident(iid, state="resolved")
    with store.transaction() as tx:
        assert tx.reply_code("person", "wang", "a").incident_state == "resolved"


def test_one_code_per_incident_and_per_code(store):
    with store.transaction() as tx:
        i1, i2, i3 = new_incident(tx, "k/1"), new_incident(tx, "k/2"), new_incident(tx, "k/3")
        n1, n2, n3 = (new_notification(tx, i) for i in (i1, i2, i3))
        tx.put_reply_code(code(i1, n1, "a"))
        tx.put_reply_code(code(i2, n2, "b"))
        tx.put_reply_code(code(i3, n3, "aa"))
        tx.put_reply_code(code(i1, n1, "a", who="li"))
    with store.transaction() as tx:
        assert [(r.code, r.incident_id) for r in tx.reply_codes_of("person", "wang")] == [
            ("a", i1), ("b", i2), ("aa", i3)]  # by length, then code
        n1b = new_notification(tx, i1)
        tx.put_reply_code(code(i1, n1b, "a", minutes=5, token="T2"))  # a later message: same code
        tx.put_reply_code(code(i3, n3, "b", minutes=6))  # code b taken over: i2's row goes
    with store.transaction() as tx:
        rows = tx.reply_codes_of("person", "wang")
        assert [(r.code, r.incident_id, r.notification_id) for r in rows] == [
            ("a", i1, n1b), ("b", i3, n3)]
        assert rows[0].ack_token == "T2" and rows[0].assigned_at == t(5)
        assert [r.code for r in tx.reply_codes_of("person", "li")] == ["a"]


def test_a_rolled_back_code_is_not_kept(store):
    try:
        with store.transaction() as tx:
            iid = new_incident(tx)
            tx.put_reply_code(code(iid, new_notification(tx, iid)))
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    with store.transaction() as tx:
        assert tx.reply_codes_of("person", "wang") == []
