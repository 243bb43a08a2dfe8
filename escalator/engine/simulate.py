"""``escalator simulate``: the timeline of one event if nobody acts, on a simulated clock.

Uses the real engine, with the rules of the plugins (as the daemon gets them), on a throw-away
in-memory store and a :class:`~escalator.clock.FakeClock`; nothing is sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pluggy

from escalator.clock import FakeClock
from escalator.config.models import Config
from escalator.engine.engine import Engine, step_deferred
from escalator.engine.runloop import RunLoop
from escalator.events import Event
from escalator.plugins import collect_rules, get_plugin_manager, plugins_dir_of
from escalator.store import SQLiteStore
from escalator.store.base import Notification, Store, Tx

Hold = Callable[[Tx, Notification, datetime], datetime | None]
"""Until when a message must wait (quiet hours: :func:`escalator.delivery.quiet_hours.hold`), or None."""


@dataclass(frozen=True)
class TimelineRow:
    """One planned message: ``offset`` from the event (``+0:15:00``), the school-local time,
    the step (1-based, with round), its mode, the recipient, channel and address."""

    offset: str
    local_time: str
    step: str
    mode: str
    recipient: str
    channel: str
    address: str


class MarkDelivered:
    """The delivery of a simulation: claims due notification rows and marks them delivered at
    once, sending nothing (a :class:`~escalator.engine.runloop.Deliverer`); a step's first
    delivery starts its timeout, as in the daemon (:meth:`Engine.step_delivered`). ``hold``:
    quiet hours, as the daemon's delivery applies them — a message held is deferred (its due
    time and its step's timer move, :func:`~escalator.engine.engine.step_deferred`).
    ``sent_at``: when each row was marked delivered (row id → aware UTC)."""

    def __init__(self, engine: Engine, store: Store, clock: FakeClock,
                 hold: Hold | None = None) -> None:
        self.engine, self.store, self.clock, self.hold = engine, store, clock, hold
        self.sent_at: dict[int, datetime] = {}

    async def run_once(self, limit: int = 10_000) -> int:
        with self.store.transaction() as tx:
            claimed = tx.claim_notifications(self.clock.now(), limit)
            for n in claimed:
                if self.hold is not None and (until := self.hold(tx, n, self.clock.now())):
                    tx.update_notification(n.id, status="pending", due_at=until)
                    if n.step_run_id is not None:
                        step_deferred(tx, self.engine.config, n.step_run_id, until)
                    continue
                self.sent_at[n.id] = self.clock.now()
                tx.update_notification(n.id, status="delivered")
                if n.step_run_id is not None:
                    self.engine.step_delivered(tx, n.step_run_id, self.clock.now())
        return len(claimed)


def _offset(seconds: float) -> str:
    s = int(seconds)
    days, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"+{days}d " if days else "+") + f"{h}:{m:02d}:{s:02d}"


def simulate(config: Config, event: Event, *, horizon_seconds: float = 7 * 86400,
             plugin_manager: pluggy.PluginManager | None = None,
             hold: Hold | None = None) -> list[TimelineRow]:
    """Walk ``event``'s chain with nobody acting, up to ``horizon_seconds`` (seconds) after it.
    The engine's rules come from ``plugin_manager`` (default: the built-ins, the config's
    ``plugins_dir`` and the entry points); their periodic checks (``on_tick``) do not run.
    ``hold``: quiet hours (the CLI gives :func:`escalator.delivery.quiet_hours.hold`); a message
    held is listed at the time it would go, marked ``[deferred: quiet hours]``.

    Returns the planned messages in order. An event that opens no incident gives no rows.
    """
    start = event.occurred_at or datetime.now(UTC)
    if start.tzinfo is None:
        start = start.replace(tzinfo=config.school.tz)
    clock = FakeClock(start.astimezone(UTC))
    store = SQLiteStore(":memory:")
    pm = plugin_manager or get_plugin_manager(plugins_dir=plugins_dir_of(config))
    engine = Engine(store, config, clock, rules=collect_rules(pm, config))
    result = engine.ingest(event.model_copy(update={"occurred_at": start}), source="simulate")
    if result.incident_id is None:
        return []
    marker = MarkDelivered(engine, store, clock, hold)
    loop = RunLoop(engine, marker, periodic=False, send_batch=10_000)
    asyncio.run(loop.advance(clock, clock.now() + timedelta(seconds=horizon_seconds)))
    rows = []
    with store.transaction() as tx:
        runs = {}
        inc = tx.get_incident(result.incident_id)
        for n in tx.notifications_of(result.incident_id):
            if n.step_run_id is None:  # told by escalator itself: a legal deadline
                step, mode = "deadline", n.note or n.purpose
            else:
                run = runs.get(n.step_run_id) or tx.get_step_run(n.step_run_id)
                runs[n.step_run_id] = run
                step = f"{run.step_index + 1}" + (f" (round {run.round + 1})" if run.round else "")
                mode = run.mode
            who = n.recipient_name + (" [target unresolved]" if n.purpose == "target_unresolved" else "")
            at = marker.sent_at.get(n.id, n.created_at)
            if at > n.created_at:
                who += " [deferred: quiet hours]"
            rows.append(TimelineRow(
                _offset((at - start).total_seconds()),
                at.astimezone(config.school.tz).strftime("%Y-%m-%d %H:%M:%S"),
                step, mode, who, n.channel, n.address))
        if inc is not None and inc.deadline_at is not None:  # docs/school-rules.md "Legal deadlines"
            at = inc.deadline_at
            rows.append(TimelineRow(
                _offset((at - start).total_seconds()),
                at.astimezone(config.school.tz).strftime("%Y-%m-%d %H:%M:%S"), "deadline",
                inc.deadline_rule or "", f"[legal deadline: {', '.join(inc.deadline_notify or [])} "
                f"{'told' if inc.deadline_met_at and inc.deadline_met_at <= at else 'NOT told'}]",
                "", ""))
            rows.sort(key=lambda r: r.local_time)
    store.close()
    return rows
