"""Test doubles shipped with escalator: a recording channel and a harness that drives the
engine and delivery on a fake clock against a real SQLite file.

Example::

    h = Harness(load_config("config/demo.yaml"), tmp_path / "db.sqlite3")
    result = await h.send(event)
    await h.advance(60)          # 60 simulated seconds, in milliseconds of real time
    assert h.told() == ["王丽", "赵医生"]
"""

from __future__ import annotations

import atexit
import os
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import pluggy

from escalator.clock import FakeClock
from escalator.config.models import Config
from escalator.delivery.channels import DeliveryResult, DeliveryStatus, Message
from escalator.delivery.pipeline import Delivery
from escalator.engine.engine import Engine, IngestResult
from escalator.engine.runloop import RunLoop
from escalator.events import Event
from escalator.plugins import collect_rules, get_plugin_manager, plugins_dir_of
from escalator.store import open_store


class RecordingChannel:
    """A channel that records every message in ``sent`` and answers from ``outcomes`` (a queue
    of :class:`DeliveryStatus`; delivered when empty)."""

    type_name: ClassVar[str] = "recording"
    audience: ClassVar[str] = "person"

    def __init__(self, channel_id: str = "recording", options: dict[str, Any] | None = None) -> None:
        self.channel_id = channel_id
        self.sent: list[Message] = []
        self.outcomes: deque[DeliveryStatus] = deque()

    async def send(self, message: Message) -> DeliveryResult:
        self.sent.append(message)
        status = self.outcomes.popleft() if self.outcomes else DeliveryStatus.delivered
        return DeliveryResult(status, "recorded")


STORE_ENV = "ESCALATOR_TEST_STORE"
"""``postgresql``: :class:`Harness` opens its store in a scratch PostgreSQL schema
(:func:`escalator.store.pg_scratch.create_schema`, on ``$ESCALATOR_TEST_PG``) instead of the
SQLite file it is given; unset or ``sqlite``: the file."""


class Harness:
    """Engine + delivery on a :class:`FakeClock` and a real SQLite file at ``db`` (or a
    scratch PostgreSQL schema with ``ESCALATOR_TEST_STORE=postgresql``: :data:`STORE_ENV`); every
    configured channel id is served by one :class:`RecordingChannel` (``channel``). The engine's
    rules come from ``plugin_manager`` as in the daemon (default: the built-ins, the config's
    ``plugins_dir`` and the entry points)."""

    START = datetime(2026, 11, 29, 23, 48, tzinfo=UTC)  # 2026-11-30 07:48 in Asia/Shanghai

    def __init__(self, config: Config, db: Path | str, clock: FakeClock | None = None,
                 channel: RecordingChannel | None = None, heartbeats: bool = False,
                 plugin_manager: pluggy.PluginManager | None = None) -> None:
        self.config = config
        self.heartbeats = heartbeats
        """Whether :meth:`settle` runs the rules' periodic checks (``on_tick``: heartbeat
        monitors), as the daemon's loop does (off by default so tests of other things are not
        joined by a missed zero report)."""
        self.clock = clock or FakeClock(self.START)
        backend = os.environ.get(STORE_ENV, "sqlite")
        if backend == "postgresql":
            self.store = open_store(_scratch_for(db))
        elif backend == "sqlite":
            self.store = open_store(db)
        else:
            raise ValueError(f"{STORE_ENV}: sqlite or postgresql, not {backend!r}")
        self.pm = plugin_manager or get_plugin_manager(plugins_dir=plugins_dir_of(config))
        self.engine = Engine(self.store, config, self.clock, rules=collect_rules(self.pm, config))
        self.channel = channel or RecordingChannel()
        self.delivery = Delivery(self.store, config, {c: self.channel for c in config.channels},
                                 self.clock)
        self.delivery.contacts_of = self.engine.contacts_of
        self.delivery.school_hours = lambda c: self.pm.hook.school_hours(config=c)
        self.runloop = RunLoop(self.engine, self.delivery, periodic=heartbeats, send_batch=50)
        """The daemon's run loop (:mod:`escalator.engine.runloop`), inline on the fake clock."""

    async def send(self, event: Event | dict[str, Any], source: str = "test") -> IngestResult:
        """Ingest one event and deliver what is due now."""
        ev = event if isinstance(event, Event) else Event.model_validate(event)
        result = self.engine.ingest(ev, source=source)
        await self.settle()
        return result

    async def settle(self) -> None:
        """Fire every due step and send every due notification at the current fake time."""
        self.runloop.periodic = self.heartbeats
        await self.runloop.settle()

    async def advance(self, seconds: float) -> None:
        """Move the clock forward in small steps, settling at every timer on the way."""
        end = datetime.fromtimestamp(self.clock.now().timestamp() + seconds, UTC)
        self.runloop.periodic = self.heartbeats
        await self.runloop.advance(self.clock, end)

    def told(self) -> list[str]:
        """Recipient names of every message sent so far, in order."""
        return [m.recipient_name for m in self.channel.sent]

    def timeline(self, incident_id: int) -> list[str]:
        """The incident's timeline entry types, in order."""
        with self.store.transaction() as tx:
            return [t.type for t in tx.timeline(incident_id)]

    def incident(self, incident_id: int) -> Any:
        with self.store.transaction() as tx:
            return tx.get_incident(incident_id)

    def close(self) -> None:
        self.store.close()


_scratches: dict[str, str] = {}
"""The scratch PostgreSQL schema standing in for each SQLite path (so a second
:class:`Harness` on the same path — a restart — opens the same data); dropped at exit."""


def _scratch_for(db: Path | str) -> str:
    from escalator.store.pg_scratch import create_schema, drop_schema

    key = str(Path(db).resolve())
    if key not in _scratches:
        if not _scratches:
            atexit.register(lambda: [drop_schema(u) for u in _scratches.values()])
        _scratches[key] = create_schema()
    return _scratches[key]
