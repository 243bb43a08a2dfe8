"""The store contract, the web console's rows (:class:`escalator.store.base.ConsoleTx`):
one-time sign-in tokens, sessions, and the reads of the Today and Settings pages."""

from __future__ import annotations

from datetime import date

from escalator.store.base import CaseFact, ConsoleSession

from .conftest import new_incident, new_notification, t


def test_a_login_token_works_once_and_not_after_it_expired(store):
    with store.transaction() as tx:
        tx.add_login_token("d-once", "zhao", t(0), t(10))
        tx.add_login_token("d-late", "zhao", t(0), t(10))
    with store.transaction() as tx:
        assert tx.take_login_token("d-once", t(5)) == "zhao"
        assert tx.take_login_token("d-once", t(5)) is None  # used
        assert tx.take_login_token("d-late", t(10)) is None  # expired at its end
        assert tx.take_login_token("unknown", t(1)) is None


def test_adding_a_token_drops_expired_ones(store):
    with store.transaction() as tx:
        tx.add_login_token("old", "zhao", t(0), t(10))
        tx.add_login_token("new", "li", t(20), t(30))
        tx.add_login_token("old", "wang", t(21), t(31))  # the digest is free again
    with store.transaction() as tx:
        assert tx.take_login_token("old", t(22)) == "wang"


def test_a_session_lasts_until_it_ends_or_is_signed_out(store):
    s = ConsoleSession("zhao", "csrf-1", t(0), t(60))
    with store.transaction() as tx:
        tx.add_session("sess-1", s)
        tx.add_session("sess-2", ConsoleSession("li", "csrf-2", t(0), t(60)))
    with store.transaction() as tx:
        assert tx.get_session("sess-1", t(59)) == s
        assert tx.get_session("sess-1", t(60)) is None
        assert tx.get_session("nope", t(1)) is None
        assert tx.end_session("sess-2") is True
        assert tx.end_session("sess-2") is False
        assert tx.get_session("sess-2", t(1)) is None
        tx.add_session("sess-3", ConsoleSession("wang", "c3", t(61), t(120)))  # drops sess-1
    with store.transaction() as tx:
        assert tx.get_session("sess-1", t(0)) is None
        assert tx.get_session("sess-3", t(62)).person_id == "wang"


def test_absence_by_class_counts_pupils_of_one_day_without_drills(store):
    day = date(2026, 11, 30)
    with store.transaction() as tx:
        for ev, scope, syn, pupil, d in [
            ("e1", "class:3-2", "fever", "p1", day), ("e1", "class:3-2", "ili", "p1", day),
            ("e2", "class:3-2", "fever", "p2", day), ("e3", "class:1-1", "fever", "p3", day),
            ("e4", "dorm:B301", "fever", "p4", day), ("e5", "drill/class:1-1", "fever", "p5", day),
            ("e6", "class:1-1", "fever", "p6", date(2026, 11, 29)),
        ]:
            tx.add_case_fact(CaseFact(ev, scope, syn, pupil, d, t(0)))
    with store.transaction() as tx:
        assert tx.absence_by_class(day) == {"1-1": 1, "3-2": 2}
        assert tx.absence_by_class(date(2026, 12, 1)) == {}


def test_channel_health_names_the_last_delivery_and_failures(store):
    with store.transaction() as tx:
        inc = new_incident(tx)
        sms = new_notification(tx, inc, channel="sms")
        mail = new_notification(tx, inc, channel="email")
        tx.add_delivery(notification_id=sms, at=t(1), outcome="delivered", detail="ok", body="b")
        tx.add_delivery(notification_id=sms, at=t(2), outcome="failed_retryable",
                        detail="gateway 500", body="b")
        tx.add_delivery(notification_id=sms, at=t(3), outcome="delivered", detail="ok", body="b")
        tx.add_delivery(notification_id=mail, at=t(4), outcome="failed_permanent",
                        detail="550 no such user", body="b")
        tx.add_delivery(notification_id=mail, at=t(-10), outcome="delivered", detail="", body="b")
    with store.transaction() as tx:
        email, sms_h = tx.channel_health(t(0))
    assert (email.channel, email.last_delivered_at, email.failures) == ("email", None, 1)
    assert email.last_error == "550 no such user" and email.last_failure_at == t(4)
    assert (sms_h.channel, sms_h.last_delivered_at, sms_h.failures) == ("sms", t(3), 1)
    assert sms_h.last_error == "gateway 500"
