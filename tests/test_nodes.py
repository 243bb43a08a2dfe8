"""Several daemons on one database, on a fake clock (docs/reliability.md "Several daemons"):
node beats and leases (escalator/service/nodes.py), the per-address throttle decided in the
store, and a :class:`~escalator.store.base.Conflict` retried at the edges (a real SQLite store
wrapped to raise one) or redone by the next pass. The real-process tests (kill -9, purge once)
are in tests/test_several_daemons.py."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
import structlog

from escalator.clock import FakeClock
from escalator.delivery.pipeline import ADDRESS_LIMITS, Throttle
from escalator.engine.engine import Engine
from escalator.events import Event
from escalator.intake.group_commit import GroupCommit
from escalator.service.nodes import PERIODIC, PURGE, Node
from escalator.store import SQLiteStore
from escalator.store.base import Conflict
from escalator.store.retry import ATTEMPTS, retrying
from escalator.testing import Harness

from .test_api import ADMIN, api, bearer, env, post_case  # noqa: F401 (fixtures)
from .test_engine import OTHER

T0 = Harness.START


class Flaky:
    """A real store whose next ``times`` transactions that call ``on`` (a :class:`Tx` method;
    any transaction when None) raise :class:`Conflict` at their end — rolled back, as a lost
    race is. (With ``on``, the daemon's other lanes' reads do not use up the conflicts.)"""

    def __init__(self, inner: Any, times: int = 1, on: str | None = None) -> None:
        self.inner, self.times, self.on = inner, times, on

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        called: list[str] = []
        with self.inner.transaction() as tx:
            class Tx:
                def __getattr__(self, name: str) -> Any:
                    called.append(name)
                    return getattr(tx, name)
            yield Tx()
            if self.times > 0 and (self.on is None or self.on in called):
                self.times -= 1
                raise Conflict("injected: could not serialize access")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class StaleRead:
    """A real SQLite store whose first ``open_incident_by_key`` reads nothing: the read of a
    transaction that began before another daemon committed the same key (PostgreSQL's READ
    COMMITTED), so its insert hits the real unique index."""

    def __init__(self, inner: SQLiteStore) -> None:
        self.inner, self.stale = inner, 1

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        outer = self
        with self.inner.transaction() as tx:
            class Tx:
                def __getattr__(self, name: str) -> Any:
                    return getattr(tx, name)

                def open_incident_by_key(self, key: str) -> Any:
                    if outer.stale:
                        outer.stale -= 1
                        return None
                    return tx.open_incident_by_key(key)
            yield Tx()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


# ------------------------------------------------------------------ nodes and leases


def test_a_lease_has_one_holder_and_passes_on_when_it_is_not_renewed(tmp_path):
    clock = FakeClock(T0)
    db = tmp_path / "escalator.sqlite3"
    sa, sb = SQLiteStore(db), SQLiteStore(db)
    a, b = Node(sa, "a:1", clock, 8), Node(sb, "b:1", clock, 8)
    assert a.holds(PURGE) and not b.holds(PURGE)
    assert b.holds(PERIODIC) and not a.holds(PERIODIC)  # leases are by name
    clock.advance(5)  # past half the TTL: a renews (b asks again, still a's)
    assert a.holds(PURGE) and not b.holds(PURGE)
    clock.advance(9)  # a asked at +5: it held until +13; b takes it over now
    assert b.holds(PURGE)
    assert not a.holds(PURGE)  # a asks again: b's
    clock.advance(1)
    assert not a.holds(PURGE)  # and in between answers from memory
    sa.close()
    sb.close()


def test_a_beat_keeps_a_node_alive_and_releases_dead_nodes_sends(tmp_path, engine_config):
    clock = FakeClock(T0)
    h = Harness(engine_config, tmp_path / "escalator.sqlite3", clock=clock)
    a, b = Node(h.store, "a:1", clock, 8), Node(h.store, "b:1", clock, 8)
    a.beat()
    b.beat()
    h.engine.ingest(Event.model_validate(OTHER))
    with h.store.transaction() as tx:
        claimed = tx.claim_notifications(clock.now(), 10, "a:1")
    assert claimed
    clock.advance(6)
    assert b.beat() == 0  # a is alive until +8
    clock.advance(2)
    assert b.beat() == len(claimed)  # a's row expired: its sends are pending again
    with h.store.transaction() as tx:
        assert tx.live_nodes(clock.now()) == ["b:1"]
        assert {tx.get_notification(n.id).status for n in claimed} == {"pending"}
    h.close()


def test_a_node_ttl_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="node_ttl"):
        Node(SQLiteStore(tmp_path / "x.sqlite3"), "a", FakeClock(T0), 0)


# ------------------------------------------------------------------ the shared throttle


def test_the_per_address_limit_holds_across_daemons_and_a_rollback_gives_the_slot_back(
        tmp_path):
    clock = FakeClock(T0)
    db = tmp_path / "escalator.sqlite3"
    stores = SQLiteStore(db), SQLiteStore(db)
    throttles = Throttle(clock), Throttle(clock)  # two daemons' throttles, one database
    limit = ADDRESS_LIMITS[0]
    try:
        with stores[0].transaction() as tx:
            assert throttles[0].acquire(tx, "sms", None, "13800000001") == 0
            raise RuntimeError("rolled back")
    except RuntimeError:
        pass
    for i in range(limit.count):
        with stores[i % 2].transaction() as tx:
            assert throttles[i % 2].acquire(tx, "sms", None, "13800000001") == 0
            clock.advance(1)
    for k in (0, 1):
        with stores[k].transaction() as tx:
            wait = throttles[k].acquire(tx, "sms", None, "13800000001")
        assert wait == pytest.approx(limit.per_seconds - limit.count)  # the first slot's end
        with stores[k].transaction() as tx:  # another address, and a critical message: room
            assert throttles[k].acquire(tx, "sms", None, "13800000002") == 0
            assert throttles[k].acquire(tx, "sms", None, "13800000001", urgent=True) == 0
    clock.advance(wait)
    with stores[1].transaction() as tx:
        assert throttles[1].acquire(tx, "sms", None, "13800000001") == 0
    for s in stores:
        s.close()


# ------------------------------------------------------------------ conflicts


def test_retrying_runs_a_call_again_and_gives_up_after_the_attempts():
    calls, slept = [], []

    def fn(x: int) -> int:
        calls.append(x)
        if len(calls) < 3:
            raise Conflict("lost a race")
        return x * 2

    assert retrying(fn, 21, sleep=slept.append) == 42
    assert len(calls) == 3 and len(slept) == 2 and all(0 < s < 0.1 for s in slept)

    def never(): raise Conflict("always")
    with pytest.raises(Conflict):
        retrying(never, sleep=slept.append)


async def test_two_daemons_opening_one_dedup_key_make_one_incident(tmp_path, engine_config):
    clock = FakeClock(T0)
    db = tmp_path / "escalator.sqlite3"
    first = Engine(SQLiteStore(db), engine_config, clock)
    second = Engine(StaleRead(SQLiteStore(db)), engine_config, clock)
    event = {**OTHER, "dedup_key": "race/1"}
    opened = first.ingest(Event.model_validate(event))
    # the second daemon read "no open incident" before the first committed: its insert hits
    # the unique index (a Conflict), the group commit runs it again and it finds the incident
    [[r]] = [await GroupCommit(second).ingest([Event.model_validate(event)], "test")]
    assert r.incident_id == opened.incident_id and r.status == "deduplicated"
    with first.store.transaction() as tx:
        assert len(tx.list_incidents(("triggered",), 10)) == 1
    second.store.stale = 1  # without the retry the race is an error, not a second incident
    with pytest.raises(Conflict):
        second.ingest(Event.model_validate(event))


def test_two_engines_on_one_file_opening_the_same_keys_at_once_make_one_incident_each(
        tmp_path, engine_config):
    clock = FakeClock(T0)
    db = tmp_path / "escalator.sqlite3"
    engines = [Engine(SQLiteStore(db), engine_config, clock) for _ in range(2)]
    start = threading.Barrier(2)
    results: list[list[int]] = [[], []]

    def run(k: int) -> None:
        start.wait()
        for i in range(20):
            ev = Event.model_validate({**OTHER, "dedup_key": f"race/{i}"})
            results[k].append(retrying(engines[k].ingest, ev).incident_id)

    threads = [threading.Thread(target=run, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results[0] == results[1]  # each key: the same incident from both
    with engines[0].store.transaction() as tx:
        assert len(tx.list_incidents(("triggered",), 100)) == 20


async def test_a_conflict_in_a_tick_rolls_it_back_and_the_next_pass_does_it(harness):
    r = await harness.send(OTHER)
    told = len(harness.channel.sent)
    harness.clock.advance(61)
    real = harness.engine.store
    harness.engine.store = Flaky(real, times=1)
    with structlog.testing.capture_logs() as logs:
        assert await harness.runloop.timer_pass() == 0  # rolled back, logged, no crash
    assert any(e["event"] == "timer_pass_conflict" for e in logs)
    assert harness.incident(r.incident_id).step_index == 0
    assert await harness.runloop.timer_pass() == 1  # the next pass fires the step
    harness.engine.store = real
    assert harness.incident(r.incident_id).step_index == 1
    await harness.settle()
    assert len(harness.channel.sent) > told


async def test_an_api_action_that_loses_a_race_is_retried_and_never_a_5xx_of_its_own(api):  # noqa: F811
    c, daemon = api.client, api.daemon
    iid = (await post_case(c, "events/bullying.json")).json()["incident_id"]
    real = daemon.engine.store
    daemon.engine.store = Flaky(real, times=1, on="update_incident")
    r = await c.post(f"/api/v1/incidents/{iid}/acknowledge", headers=bearer(ADMIN))
    assert r.status_code == 200 and r.json()["outcome"] == "acknowledged"
    daemon.engine.store = Flaky(real, times=ATTEMPTS, on="update_incident")  # loses every try: 503, Retry-After
    r = await c.post(f"/api/v1/incidents/{iid}/resolve", headers=bearer(ADMIN))
    assert r.status_code == 503 and r.headers["Retry-After"]
    assert "try again" in r.json()["detail"]
    daemon.engine.store = real
    assert (await c.get(f"/api/v1/incidents/{iid}", headers=bearer(ADMIN))).json()["state"] == \
        "acknowledged"  # nothing of the failed resolve was stored


async def test_an_event_whose_commit_loses_a_race_is_retried_by_the_group_commit(api):  # noqa: F811
    c, daemon = api.client, api.daemon
    real = daemon.engine.store
    daemon.engine.store = Flaky(real, times=2, on="insert_event")
    r = await post_case(c, "events/bullying.json")
    assert r.status_code in (200, 201, 202), r.text
    daemon.engine.store = real
    with real.transaction() as tx:
        assert [i.id for i in tx.list_incidents(("triggered",), 10)] == [r.json()["incident_id"]]


def test_node_name_defaults_to_host_and_port():
    import socket

    from escalator.config.settings import Settings

    assert Settings(http_listen="0.0.0.0:9001").node_name == f"{socket.gethostname()}:9001"
    assert Settings(http_listen="off").node_name == f"{socket.gethostname()}:off"
    assert Settings(node="east-1", http_listen="0.0.0.0:9001").node_name == "east-1"
    with pytest.raises(ValueError, match="node_ttl"):
        Settings(node_ttl=0)
    assert timedelta(seconds=Settings().node_ttl) <= timedelta(seconds=10)


# ------------------------------------------------------------------ PostgreSQL: the key's lock


def test_on_postgresql_a_second_daemon_deciding_on_one_address_waits_for_the_first(pg_url):
    from escalator.store import open_store

    from .test_store_postgres import backend_pid, in_thread

    clock = FakeClock(T0)
    a, b = open_store(pg_url), open_store(pg_url)
    limit = ADDRESS_LIMITS[0]
    try:
        with a.transaction() as tx:  # all but one slot of the window used
            tx.put_rate_window("address:sms:1", [T0 - timedelta(seconds=1)] * (limit.count - 1))

        def second() -> float:
            with b.transaction() as tx:
                return Throttle(clock).acquire(tx, "sms", None, "1")

        with a.transaction() as tx:
            assert Throttle(clock).acquire(tx, "sms", None, "1") == 0  # the last slot
            waiting = in_thread(second, pg_url, backend_pid(tx))
            assert not waiting.done()  # held on the key's row until the first commits
        assert waiting.result(30) > 0  # then it sees the window full: waits, sends nothing
    finally:
        a.close()
        b.close()
