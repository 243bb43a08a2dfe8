"""``escalator simulate``: the timeline of one event if nobody acts — or if given levels take a
decision as soon as they are told (``--decide 3=report``: docs/decisions.md) — on a simulated
clock.

Uses the real engine, with the rules of the plugins (as the daemon gets them), on a throw-away
in-memory store and a :class:`~escalator.clock.FakeClock`; nothing is sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pluggy

from escalator.clock import FakeClock
from escalator.config.models import Config
from escalator.engine import decisions
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
            claimed = tx.claim_notifications(self.clock.now(), limit, "simulate")
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
             hold: Hold | None = None,
             decide: Mapping[int, str] | None = None) -> list[TimelineRow]:
    """Walk ``event``'s chain with nobody acting, up to ``horizon_seconds`` (seconds) after it.
    The engine's rules come from ``plugin_manager`` (default: the built-ins, the config's
    ``plugins_dir`` and the entry points); their periodic checks (``on_tick``) do not run.
    ``hold``: quiet hours (the CLI gives :func:`escalator.delivery.quiet_hours.hold`); a message
    held is listed at the time it would go, marked ``[deferred: quiet hours]``.
    ``decide``: ``{level: "report" | "handled"}`` — level (1-based, as people read it:
    :func:`~escalator.engine.decisions.level_number`) answers so as soon as it is told
    (``handled`` with the reason "simulate"); a decision appears as a row of its own. The
    reminders of a stopped walk are shown once, then counted.

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
    until = clock.now() + timedelta(seconds=horizon_seconds)
    decided = asyncio.run(_walk(loop, engine, store, clock, result.incident_id, until,
                                dict(decide or {})))
    rows: list[TimelineRow] = []
    order: list[float] = []  # each row's place among rows of the same second
    with store.transaction() as tx:
        runs = {}
        reminder_runs: dict[int, int] = {}  # step index → the first reminder's run
        more: dict[int, int] = {}  # step index → reminders after the first
        seen_runs: set[int] = set()
        inc = tx.get_incident(result.incident_id)
        for n in tx.notifications_of(result.incident_id):
            if n.step_run_id is None:  # told by escalator itself: a legal deadline
                step, mode = "deadline", n.note or n.purpose
            else:
                run = runs.get(n.step_run_id) or tx.get_step_run(n.step_run_id)
                runs[n.step_run_id] = run
                level = decisions.level_number(inc.policy["steps"], run.step_index) if inc else None
                step = (str(level) if level else "copy") + (
                    f" (round {run.round + 1})" if run.round else "")
                mode = "receipt" if n.purpose == "receipt" else run.mode
                if n.purpose == "reminder":  # the first reminder shown, the others counted
                    first = reminder_runs.setdefault(run.step_index, run.id)
                    if run.id != first:
                        more[run.step_index] = more.get(run.step_index, 0) + (
                            1 if run.id not in seen_runs else 0)
                        seen_runs.add(run.id)
                        continue
                    mode = "reminder"
            who = n.recipient_name + (" [target unresolved]" if n.purpose == "target_unresolved" else "")
            at = marker.sent_at.get(n.id, n.created_at)
            if at > n.created_at:
                who += " [deferred: quiet hours]"
            order.append(n.id)
            rows.append(TimelineRow(
                _offset((at - start).total_seconds()),
                at.astimezone(config.school.tz).strftime("%Y-%m-%d %H:%M:%S"),
                step, mode, who, n.channel, n.address))
        for index, count in more.items():
            every = decisions.remind_interval(inc.policy, index) if inc else None
            rows.append(TimelineRow(
                "", "~", str(decisions.level_number(inc.policy["steps"], index) if inc else ""),
                "reminder", f"[{count} more reminders, every {_offset(every or 0)[1:]}, "
                "until someone acts]", "", ""))
        if inc is not None and inc.deadline_at is not None:  # docs/school-rules.md "Legal deadlines"
            at = inc.deadline_at
            rows.append(TimelineRow(
                _offset((at - start).total_seconds()),
                at.astimezone(config.school.tz).strftime("%Y-%m-%d %H:%M:%S"), "deadline",
                inc.deadline_rule or "", f"[legal deadline: {', '.join(inc.deadline_notify or [])} "
                f"{'told' if inc.deadline_met_at and inc.deadline_met_at <= at else 'NOT told'}]",
                "", ""))
    order += [float("inf")] * (len(rows) - len(order))  # the notes: last among their second
    for at, level, what, last in decided:  # after the messages it answers, before what follows
        order.append(last + 0.5)
        rows.append(TimelineRow(_offset((at - start).total_seconds()),
                                at.astimezone(config.school.tz).strftime("%Y-%m-%d %H:%M:%S"),
                                str(level), f"decision: {what}", "", "", ""))
    rows = [r for _, _, r in sorted(zip([r.local_time for r in rows], order, rows, strict=True),
                                    key=lambda t: (t[0], t[1]))]
    store.close()
    return rows


async def _walk(loop: RunLoop, engine: Engine, store: Store, clock: FakeClock, incident_id: int,
                until: datetime, decide: dict[int, str]) -> list[tuple[datetime, int, str, int]]:
    """:meth:`RunLoop.advance` to ``until``, taking each ``decide`` level's decision when the
    walk first waits on it. Returns ``(when, level, decision, last notification id before
    it)`` of the decisions taken."""
    taken: list[tuple[datetime, int, str, int]] = []
    while True:
        await loop.settle()
        with store.transaction() as tx:
            inc = tx.get_incident(incident_id)
        if inc is not None and inc.state == "triggered" and inc.step_index >= 0:
            level = decisions.level_number(inc.policy["steps"], inc.step_index)
            if level is not None and level in decide:
                what = decide.pop(level)
                with store.transaction() as tx:
                    last = max((n.id for n in tx.notifications_of(incident_id)), default=0)
                engine.decide(incident_id, decision=what, reason="simulate" if what == "handled"
                              else None, actor="simulate", via="simulate")
                taken.append((clock.now(), level, what, last))
                continue
        due = await loop.next_due()
        if due is None or due > until:
            break
        if due > clock.now():
            clock.set(due)
    if until > clock.now():
        clock.set(until)
    await loop.settle()
    return taken

