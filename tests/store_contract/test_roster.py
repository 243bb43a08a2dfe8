"""The store contract, roster overrides (:class:`escalator.store.base.SchoolTx`, docs/rosters.md):
stored durably, read by overlap with a span and role, withdrawn (a swap's two halves together)."""

from __future__ import annotations

from .conftest import t


def add(tx, person="zhang", replaces="li", start=0, end=60, role="duty_officer", **kw):
    return tx.add_roster_override(role=role, person=person, replaces=replaces, starts_at=t(start),
                                  ends_at=t(end), created_by="admin", created_at=t(-10), **kw)


def test_an_override_is_kept_and_read_by_overlap(backend, place):
    store = backend.open(place)
    with store.transaction() as tx:
        first = add(tx, comment="张老师 替 李老师 12月8日")
        add(tx, person="wang", replaces=None, start=120, end=180, role="night_guard")
    store.close()
    store = backend.open(place)  # durable: read back after the store was closed
    with store.transaction() as tx:
        got = tx.roster_overrides(t(30), t(31))
        assert [(o.id, o.person, o.replaces, o.starts_at, o.ends_at, o.comment, o.created_by)
                for o in got] == [(first, "zhang", "li", t(0), t(60), "张老师 替 李老师 12月8日",
                                   "admin")]
        assert tx.roster_overrides(t(60), t(120)) == []  # half-open: [start, end)
        assert [o.person for o in tx.roster_overrides(t(0), t(200))] == ["zhang", "wang"]
        assert [o.person for o in tx.roster_overrides(t(0), t(200), "night_guard")] == ["wang"]
    store.close()


def test_a_withdrawn_override_is_no_longer_in_force(store):
    with store.transaction() as tx:
        oid = add(tx)
        assert tx.cancel_roster_override(oid, t(5), "admin") == [oid]
        assert tx.cancel_roster_override(oid, t(6), "admin") == []
        assert tx.cancel_roster_override(999, t(6), "admin") == []
        assert tx.roster_overrides(t(0), t(60)) == []
        [gone] = tx.roster_overrides(t(0), t(60), cancelled=True)
        assert (gone.cancelled_at, gone.cancelled_by) == (t(5), "admin")


def test_both_halves_of_a_swap_are_withdrawn_together(store):
    with store.transaction() as tx:
        one = add(tx, person="li", replaces="zhang", start=0, end=60)
        two = add(tx, person="zhang", replaces="li", start=120, end=180, swap_id=one)
        assert sorted(tx.cancel_roster_override(two, t(1), "admin")) == sorted([one, two])
        assert tx.roster_overrides(t(0), t(200)) == []
