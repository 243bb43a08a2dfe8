"""The escalation engine: intake → route → incident → steps → notification rows.

Every operation runs in one store transaction and reads time from the injected clock, so it is
deterministic in tests. Timers are rows (``incidents.next_step_at``); :meth:`Engine.tick` fires
what is due, so a restarted process resumes every walk where the store says it is (GoAlert's
reconcile-on-tick design). Step modes, per DESIGN.md "Escalation policy":

- ``escalate``: an acknowledgement by any target acknowledges the incident and stops the walk;
  with none before the timeout, the next step fires.
- ``report`` (逐级上报): an acknowledgement confirms this level — its pending sends are cancelled,
  ``step_confirmed`` is logged and the next step fires at once. A timeout fires the next step and
  logs ``step_overdue``. The incident stays ``triggered`` until an ``escalate`` step or the last
  step is acknowledged, or it is resolved. :meth:`Engine.decide` is the level's answer:
  ``report`` (the confirmation above; a step ``on_report_only`` is reached only this way) or
  ``handled`` here with a reason (the incident is resolved; :mod:`escalator.engine.decisions`).
- ``inform`` (抄送): notify and go straight on; a reply from an informed person is logged as
  ``seen`` and changes nothing.

A target that resolves to nobody is logged ``target_unresolved`` and the duty officer is told;
at a step that waits they stand in for the level (asked to act, the step waits for them with its
timeout), at an ``inform`` step they are only told. When a step reaches nobody at all the walk
goes on as if it had timed out.

A walk that reaches the end of its chain (or a step ``on_report_only`` by a timeout) stops on
the last level that waits, which is reminded every ``remind_every`` seconds until someone acts
(``reminder`` in the timeline). An acknowledged incident of a policy with ``ack_timeout`` not
resolved in that time is triggered again (``ack_timeout``) and walks from its first step.

Rules (:mod:`escalator.engine.rules`): the school rules — heartbeat monitors, legal deadlines,
symptom clusters, guardians, drills (docs/school-rules.md) — and a district's own plug in as
:class:`~escalator.engine.rules.Rule` objects handed to the engine (the daemon, the test harness
and ``simulate`` collect them through the plugin manager: :func:`escalator.plugins.collect_rules`).
The engine imports none of them. It calls each rule, in their order, inside its own
transactions: on every stored event (:meth:`Engine.ingest`), at every :meth:`Engine.tick`
(``on_tick``, then ``on_due`` for each due incident before its step fires), after every
notification row it writes, after every resolve, for relative roles it does not know itself
(``guardian``) and to leave recipients out of a step (drills).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog

from escalator.clock import Clock
from escalator.config.models import Config, ContactMethod, Policy
from escalator.engine import decisions, grouping, inhibition, silences
from escalator.engine.routing import NO_POLICY, route
from escalator.engine.rules import Rule, Skip, StoredEvent, UnknownPolicy
from escalator.engine.screening import screen
from escalator.engine.targets import Recipient, UnknownTarget, parse_target, resolve
from escalator.events import Action, Event, Kind
from escalator.store.base import Incident, Notification, StepRun, Store, Tx, priority_of

log = structlog.get_logger("escalator.engine.engine")

_RANK = {"critical": 0, "high": 1, "medium": 2, "low": 3, "info": 4}
"""Severities, most severe first (:class:`escalator.events.Severity`)."""


class NotFound(LookupError):
    """No incident (or acknowledge token) with that id."""


class InvalidAction(ValueError):
    """An action's input was refused: ``field`` names it (``text``, ``person_id``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


NOTE_MAX_CHARS = 2000
"""The longest note (characters) :meth:`Engine.add_note` takes."""


@dataclass(frozen=True)
class IngestResult:
    """The intake answer for one event.

    ``status``: ``created`` (a new incident; held quiet while a silence is in force:
    docs/silences.md), ``deduplicated`` (counted on an open incident, a group's too),
    ``inhibited`` (attached to the open incident that inhibits it), ``logged`` (stored, no
    incident: route ``none`` or a heartbeat), ``acknowledged`` /
    ``resolved`` (an ``action`` applied to the open incident with the key), ``ignored`` (an
    action for a key with no open incident), ``ledger`` (recorded only, see
    :class:`Submission`), ``duplicate_row`` (a row key seen before; nothing stored,
    ``event_id`` empty). ``source``: the source recorded for the event. ``warnings``: what
    was accepted but is worth a look (:mod:`escalator.engine.screening`: a time in the future,
    a class the school does not list), each ``{"code", "field", "message"}``.
    """

    event_id: str
    incident_id: int | None
    status: str
    dedup_key: str
    source: str = ""
    warnings: tuple[dict[str, str], ...] = ()


@dataclass(frozen=True)
class Submission:
    """An event with intake options, as a source hands it in.

    ``row_key``: the source's own key for this input row (e.g. a register's date + pupil); an
    event whose ``row_key`` was stored before is skipped (status ``duplicate_row``), so a
    re-exported register adds only its new rows. ``ledger_only``: record the event in the
    ledger without routing it (status ``ledger``; e.g. a 事假 personal-leave row).
    ``policy``: ``(id, Policy)`` to walk instead of routing (e.g. the notice about a register's
    refused rows, :mod:`escalator.intake.spool.refused`).
    """

    event: Event
    row_key: str | None = None
    ledger_only: bool = False
    policy: tuple[str, Policy] | None = None


@dataclass(frozen=True)
class ActionResult:
    """What an acknowledge, decision or resolve did: ``outcome`` is one of ``acknowledged``,
    ``step_confirmed`` (a ``report`` level confirmed; next level told), ``seen`` (an ``inform``
    recipient replied), ``resolved``, ``handled`` (handled here, no report needed: resolved),
    ``already_acknowledged``, ``already_resolved``, ``step_confirmed_late`` (a report level
    confirmed after it was overdue), ``level_closed`` (a link whose level has ended: nothing
    changed), ``not_allowed`` (a decision from a link that only informs); for a note or an assignment
    ``noted``, ``assigned``, ``already_assigned``."""

    incident_id: int
    outcome: str
    state: str


class Engine:
    """Owns every incident state change. ``store``: a :class:`~escalator.store.base.Store`;
    ``config``: the running config (swap with :meth:`reload`); ``clock``: time source (UTC);
    ``rules``: the :class:`~escalator.engine.rules.Rule` objects to call, in order — None for
    those of the plugins ``config`` names (:func:`escalator.plugins.rules_for`: the built-in
    school rules, ``plugins_dir``, entry points; raises :class:`~escalator.plugins.PluginError`
    when one cannot be loaded)."""

    metrics: Any = None  # an escalator.service.metrics.Metrics when the API serves /metrics

    def __init__(self, store: Store, config: Config, clock: Clock,
                 rules: Sequence[Rule] | None = None) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        self.rules: tuple[Rule, ...] = ()
        self._use(config, rules)
        self._unlogged: list[dict[str, Any]] = []
        """``event_ingested`` lines of the transaction under way, logged after its commit."""

    def reload(self, config: Config, rules: Sequence[Rule] | None = None) -> None:
        """Use ``config`` (and ``rules``, when given) from now on. Walks under way keep their
        policy snapshot."""
        self.config = config
        if rules is not None:
            self._use(config, rules)

    def _use(self, config: Config, rules: Sequence[Rule] | None) -> None:
        if rules is None:
            from escalator.plugins import rules_for  # the plugin manager knows where rules live

            rules = rules_for(config)
        self.rules = tuple(rules)

    @contextmanager
    def _transaction(self) -> Iterator[Tx]:
        """A store transaction whose stored events are logged (``event_ingested``) and counted
        in the metrics once it committed — never for a rollback: a log line or a count names
        only events that exist."""
        with self.store.transaction() as tx:
            self._unlogged = lines = []  # under the store's lock: one transaction at a time
            yield tx
        for fields in lines:
            if fields["status"] != "duplicate_row":  # nothing stored: no line
                log.info("event_ingested", **fields)
            if self.metrics is not None:
                self.metrics.event(fields["source"], fields["status"])

    def _ops(self, tx: Tx, now: datetime) -> _Ops:
        """The :class:`~escalator.engine.rules.EngineOps` rules get in transaction ``tx``."""
        return _Ops(self, tx, now)

    # ----------------------------------------------------------------- intake

    def ingest(self, event: Event | Submission, *, source: str | None = None,
               policy: tuple[str, Policy] | None = None) -> IngestResult:
        """Store ``event``, route and dedup it, and fire a new incident's first step — all in one
        durable transaction. Returns the :class:`IngestResult`.

        ``policy``: ``(id, Policy)`` to use instead of routing (the daemon's own notices to the
        administrators)."""
        with self._transaction() as tx:
            result = self._ingest(tx, event, source, self.clock.now(), policy)
        return result

    def ingest_many(self, events: list[Event | Submission], *, source: str | None = None
                    ) -> list[IngestResult]:
        """:meth:`ingest` for several events in one transaction (all or nothing)."""
        return self.ingest_batches([(events, source)])[0]

    def ingest_batches(self, batches: list[tuple[list[Event | Submission], str | None]]
                       ) -> list[list[IngestResult]]:
        """:meth:`ingest_many` for several callers' ``(events, source)`` in one transaction
        (group commit: one fsync for all; all or nothing). Returns each caller's results."""
        now = self.clock.now()
        with self._transaction() as tx:
            out = [[self._ingest(tx, e, source, now) for e in events] for events, source in batches]
        return out

    def ingest_file(
        self, events: list[Event | Submission], *, sha256: str, name: str, source: str
    ) -> list[IngestResult] | None:
        """Ingest every event of one spool file and record its content hash in the same
        transaction. Returns None (and stores nothing) when that hash was taken before."""
        now = self.clock.now()
        with self._transaction() as tx:
            if tx.spool_file_seen(sha256):
                return None
            results = [self._ingest(tx, e, source, now) for e in events]
            tx.add_spool_file(sha256=sha256, name=name, taken_at=now, events=len(events))
        return results

    def _ingest(self, tx: Tx, item: Event | Submission, source: str | None,
                now: datetime, policy: tuple[str, Policy] | None = None) -> IngestResult:
        sub = item if isinstance(item, Submission) else Submission(item)
        policy = policy or sub.policy
        tz = self.config.school.tz
        ev, warnings = screen(sub.event.normalised(now, tz), self.config, now)
        key = ev.derived_dedup_key(tz)
        if sub.row_key is not None and tx.row_key_seen(sub.row_key):
            src = source or sub.event.source or "unknown"
            self._unlogged.append({"source": src, "status": "duplicate_row"})  # counted, not logged
            return IngestResult("", None, "duplicate_row", key, src)
        event_id = uuid.uuid4().hex
        src = source or ev.source or "unknown"
        incident_id: int | None = None
        group = (grouping.group_of(ev, src, self.config, key)  # a grouping route: the group's key
                 if policy is None and not sub.ledger_only and ev.action == Action.trigger else None)
        key = group.key if group is not None else key
        open_incident = tx.open_incident_by_key(key)
        if sub.ledger_only:
            status = "ledger"
        elif ev.action == Action.trigger:
            if open_incident is not None:
                incident_id, status = open_incident.id, "deduplicated"
                tx.update_incident(incident_id, event_count=open_incident.event_count + 1, updated_at=now)
                tx.add_timeline(incident_id, now, "deduplicated", src,
                                {"event_id": event_id, "count": open_incident.event_count + 1})
                if group is not None:
                    grouping.joined(tx, self.config, open_incident, group, now)
                if _RANK.get(str(ev.severity), 9) < _RANK.get(str(open_incident.severity), 9):
                    self._raise_severity(tx, open_incident, str(ev.severity), src, event_id, now)
                if policy is None:  # a critical report on a held incident is not kept quiet
                    silences.on_joined(tx, self.config, open_incident, ev, src, event_id, now)
            elif policy is None and (ev.kind == Kind.heartbeat
                                     or (policy_id := route(ev, self.config)) == NO_POLICY):
                status = "logged"
            elif policy is None and (found := inhibition.inhibitor(tx, self.config, ev, src)):
                incident_id, status = found[0].id, "inhibited"
                inhibition.attach(tx, found[0], found[1], ev, event_id, src, now)
            else:
                chosen = policy or (policy_id, self.config.policies[policy_id])
                incident_id = self._open(tx, ev, key, chosen, event_id, src, now,
                                         group=group, routed=policy is None)
                status = "created"
        elif open_incident is None:
            status = "ignored"
        else:
            incident_id = open_incident.id
            if ev.action == Action.acknowledge:
                self._acknowledge_incident(tx, open_incident, src, now, via="event")
                status = "acknowledged"
            else:
                self._resolve(tx, open_incident, src, now, via="event")
                status = "resolved"
        tx.insert_event(
            id=event_id, received_at=now, source=src, kind=ev.kind.value, category=ev.category.value,
            action=ev.action.value, dedup_key=key, incident_id=incident_id, outcome=status,
            body=ev.model_dump(mode="json", exclude_none=True), row_key=sub.row_key,
        )
        warned = tuple(w.as_dict() for w in warnings)
        if warned and incident_id is not None:
            tx.add_timeline(incident_id, now, "input_warning", src,
                            {"event_id": event_id, "warnings": list(warned)})
        stored = StoredEvent(ev, event_id, src, status, incident_id, routed=policy is None)
        ops = self._ops(tx, now)
        for rule in self.rules:  # school rules and a district's own (escalator/engine/rules.py)
            rule.on_event(ops, tx, stored)
        self._unlogged.append(dict(event_id=event_id, incident_id=incident_id, status=status,
                                   source=src, kind=ev.kind.value, category=ev.category.value))
        return IngestResult(event_id, incident_id, status, key, src, warned)

    def _open(self, tx: Tx, ev: Event, key: str, chosen: tuple[str, Policy], event_id: str,
              src: str, now: datetime, group: grouping.Group | None = None,
              routed: bool = False) -> int:
        policy_id, policy = chosen
        incident_id = tx.insert_incident(
            dedup_key=key, state="triggered", kind=ev.kind.value, category=ev.category.value,
            severity=ev.severity.value, summary=ev.summary, class_id=ev.class_id, grade=ev.grade,
            place=ev.place, drill=ev.drill, policy_id=policy_id,
            policy=policy.model_dump(mode="json"), step_index=-1, round=0, next_step_at=now,
            event_count=1, created_at=now, updated_at=now, first_event_id=event_id,
        )
        tx.add_timeline(incident_id, now, "triggered", src,
                        {"event_id": event_id, "policy": policy_id, "dedup_key": key,
                         **({"drill": True} if ev.drill else {})})
        inc = tx.get_incident(incident_id)
        assert inc is not None
        # a group's wait, or a silence: the first step waits on the incident's own timer
        wait = grouping.opened(tx, self.config, incident_id, group, ev.summary, now) if group else None
        active = silences.silencing(tx, self.config, ev, src, now) if routed else None
        if active is not None:
            silences.hold(tx, inc, active, now, not_before=wait)
        if wait is None and active is None:
            self._advance(tx, inc, now, opening=ev.model_dump(mode="json", exclude_none=True))
        return incident_id

    # ----------------------------------------------------------------- timers

    def tick(self, limit: int = 500, *, periodic: bool = True) -> int:
        """Fire every timer that is due (at most ``limit`` incidents): each rule's ``on_due``
        (e.g. a legal deadline), then the incident's step — one transaction. With ``periodic``,
        every rule's ``on_tick`` runs first in it (e.g. the heartbeat monitors' reconcile: the
        daily zero report). Returns how many incidents advanced, plus what ``on_tick`` counted.
        Overdue timers (e.g. after a restart) fire at once."""
        now = self.clock.now()
        with self._transaction() as tx:  # a rule's on_tick may open incidents
            ops = self._ops(tx, now)
            opened = sum(rule.on_tick(ops, tx) for rule in self.rules) if periodic else 0
            due = tx.due_incidents(now, limit)
            for incident_id in due:
                inc = tx.get_incident(incident_id)
                if inc is not None and inc.next_step_at is not None and inc.next_step_at <= now:
                    if silences.on_due(tx, self.config, inc, now):
                        continue  # a silence holds it still (docs/silences.md)
                    grouping.on_due(tx, inc, now)
                if inc is not None and any([rule.on_due(ops, tx, inc) for rule in self.rules]):
                    inc = tx.get_incident(incident_id)  # a rule's timer (a legal deadline) fired
                    if inc is not None and (inc.next_step_at is None or inc.next_step_at > now):
                        continue
                if inc is not None and inc.state == "triggered":
                    if self.metrics is not None:
                        self.metrics.step_fired(inc.next_step_at, now)
                    self._advance(tx, inc, now)
                elif inc is not None and inc.state == "acknowledged" and inc.policy.get("ack_timeout"):
                    self._retrigger(tx, inc, now)
                elif inc is not None:
                    tx.update_incident(incident_id, next_step_at=None)
            updated = grouping.send_updates(ops, tx, now, limit)
        return opened + len(due) + updated

    def next_due(self, *, steps: bool = True, sends: bool = True) -> datetime | None:
        """The earliest timer in the store (UTC), or None: with ``steps``, the step, deadline
        and group-update timers (the timer lane's); with ``sends``, the pending notifications'
        due times (the delivery lane's)."""
        with self.store.transaction() as tx:  # read only: nothing to observe
            due = [t for t in (tx.next_due(steps=steps, sends=sends),
                               tx.next_group_update() if steps else None) if t is not None]
        return min(due, default=None)

    def _advance(self, tx: Tx, inc: Incident, now: datetime,
                 opening: dict[str, Any] | None = None, *, reported: bool = False) -> None:
        """Close the current step (timed out) and fire the next ones until one must wait.
        ``opening``: the body of the event opening the incident (not stored yet).
        ``reported``: the current level decided to report (a step ``on_report_only`` fires);
        without it a walk stopped on its level (``inc.reminders`` set) sends a reminder."""
        steps: list[dict[str, Any]] = inc.policy["steps"]
        if inc.reminders is not None and not reported:
            self._remind(tx, inc, now)
            return
        current = tx.latest_step_run(inc.id) if inc.step_index >= 0 else None
        if current is not None and current.status == "open":
            overdue = current.mode == "report"
            tx.close_step_run(current.id, "overdue" if overdue else "timed_out", now)
            tx.add_timeline(inc.id, now, "step_overdue" if overdue else "step_timed_out", None,
                            {"step": current.step_index, "round": current.round})
        index, rnd = inc.step_index + 1, inc.round
        for _ in range(len(steps) * (inc.policy.get("repeat", 0) + 1) + 1):
            if index >= len(steps):
                if rnd < inc.policy.get("repeat", 0):
                    index, rnd = 0, rnd + 1
                    tx.add_timeline(inc.id, now, "repeat", None, {"round": rnd})
                else:
                    self._stop(tx, inc, index, rnd, now, "escalation_exhausted", answered=reported)
                    return
            if not reported and index > 0 and decisions.gated(steps, index):
                self._stop(tx, inc, index, rnd, now, "awaiting_decision")
                return
            if self._fire_step(tx, inc, index, rnd, now, opening):
                # the timeout counts from the first message delivered (step_delivered), waiting
                # for it at most delivery.step_wait_cap
                timeout = float(steps[index]["timeout"]) + self.config.delivery.step_wait_cap
                tx.update_incident(inc.id, step_index=index, round=rnd, updated_at=now,
                                   next_step_at=now + timedelta(seconds=timeout), reminders=None)
                return
            index += 1

    def _stop(self, tx: Tx, inc: Incident, index: int, rnd: int, now: datetime, why: str, *,
              answered: bool = False) -> None:
        """Stop the walk before step ``index`` (the chain's end, or a step ``on_report_only``):
        it waits on the last level that waits, reminded every ``remind_every`` seconds (none
        when off, when no level waits, or when that level has ``answered``: reported, with only
        ``inform`` steps after it). Timeline ``why`` (``escalation_exhausted`` /
        ``awaiting_decision``) with the 0-based ``level`` and ``remind_every``."""
        steps = inc.policy["steps"]
        level = None if answered else decisions.waiting_level(steps, index)
        every = decisions.remind_interval(inc.policy, level)
        tx.update_incident(inc.id, step_index=level if level is not None else len(steps) - 1,
                           round=rnd, updated_at=now, reminders=0 if level is not None else None,
                           next_step_at=now + timedelta(seconds=every) if every else None)
        tx.add_timeline(inc.id, now, why, None, {"round": rnd, "level": level, "remind_every": every})

    def _remind(self, tx: Tx, inc: Incident, now: datetime) -> None:
        """Remind the level a stopped walk waits on: its step fires again (a new run, new
        links, purpose ``reminder``); the run of the previous reminder is closed ``reminded``.
        Timeline ``reminder`` with the count; the next one in ``remind_every`` seconds."""
        current = tx.latest_step_run(inc.id)
        if current is not None and current.status == "open":
            tx.close_step_run(current.id, "reminded", now)
        count = (inc.reminders or 0) + 1
        tx.add_timeline(inc.id, now, "reminder", None,
                        {"step": inc.step_index, "round": inc.round, "count": count})
        self._fire_step(tx, inc, inc.step_index, inc.round, now, purpose="reminder")
        every = decisions.remind_interval(inc.policy, inc.step_index)
        tx.update_incident(inc.id, reminders=count, updated_at=now,
                           next_step_at=now + timedelta(seconds=every) if every else None)

    def _retrigger(self, tx: Tx, inc: Incident, now: datetime) -> None:
        """An acknowledged incident unresolved after its policy's ``ack_timeout``: triggered
        again (timeline ``ack_timeout``) and walked from its first step."""
        tx.update_incident(inc.id, state="triggered", step_index=-1, round=0, reminders=None,
                           next_step_at=now, updated_at=now)
        tx.add_timeline(inc.id, now, "ack_timeout", None,
                        {"acknowledged_by": inc.acknowledged_by,
                         "acknowledged_at": inc.acknowledged_at.isoformat()
                         if inc.acknowledged_at else None,
                         "ack_timeout": inc.policy.get("ack_timeout")})
        log.info("incident_retriggered", incident_id=inc.id)
        again = tx.get_incident(inc.id)
        assert again is not None
        self._advance(tx, again, now)

    def _fire_step(self, tx: Tx, inc: Incident, index: int, rnd: int, now: datetime,
                   opening: dict[str, Any] | None = None, purpose: str = "step") -> bool:
        """Fire step ``index``: resolve targets and write notification rows. Returns True when
        the walk must wait for this step (escalate/report with someone told).

        Relative roles the engine does not know (``guardian``) are resolved by the rules
        (:meth:`~escalator.engine.rules.Rule.recipients`); a recipient that cannot acknowledge
        (a guardian) is told without an acknowledge link. Recipients a rule keeps out
        (:meth:`~escalator.engine.rules.Rule.keep_out`: units and guardians in a drill) are
        skipped, with the rule's timeline entry (``drill_unit_skipped``): the walk goes on as for
        an unresolved target, but the duty officer is not told."""
        step = inc.policy["steps"][index]
        mode = step["mode"]
        run_id = tx.insert_step_run(incident_id=inc.id, step_index=index, round=rnd, mode=mode,
                                    fired_at=now)
        if purpose == "step":
            tx.add_timeline(inc.id, now, "step_fired", None,
                            {"step": index, "round": rnd, "mode": mode, "name": step.get("name"),
                             "targets": step["targets"]})
        recipients: dict[tuple[str, str], Recipient] = {}
        unresolved: list[str] = []
        ops = self._ops(tx, now)
        for text in step["targets"]:
            found = self._resolve_target(tx, text, inc, now, opening)
            kept: list[Recipient] = []
            for r in found:
                if (skip := self._kept_out(ops, inc, r)) is None:
                    kept.append(r)
                else:
                    tx.add_timeline(inc.id, now, skip.type, None,
                                    {"step": index, "target": text, "recipient": r.id,
                                     **skip.detail})
            if len(kept) < len(found):
                found = kept
                if not found:
                    continue
            if not found:
                unresolved.append(text)
                tx.add_timeline(inc.id, now, "target_unresolved", None, {"step": index, "target": text})
                log.warning("target_unresolved", incident_id=inc.id, step=index, target=text)
            for r in found:
                recipients.setdefault((r.kind, r.id), r)
        # the person who filed the report, told at a report level, gets a receipt (who is next)
        # instead of being asked to verify it; a level that is only them is confirmed by filing
        reporter = self._reporter(tx, inc, opening) if mode == "report" and purpose == "step" else None
        receipts = {key for key, r in recipients.items() if r.kind == "person" and r.id == reporter}
        told = sum(self._notify(tx, inc, run_id, r, mode != "inform" and r.can_acknowledge
                                and key not in receipts, now,
                                purpose="receipt" if key in receipts else purpose)
                   for key, r in recipients.items())
        if unresolved:  # the duty officer stands in for the level: the step waits for them
            told += self._tell_duty_officer(tx, inc, run_id, recipients, unresolved, now,
                                            ask=mode != "inform")
        if receipts and told == len(receipts) and not unresolved:
            tx.close_step_run(run_id, "confirmed", now)
            tx.add_timeline(inc.id, now, "step_confirmed", reporter,
                            {"step": index, "round": rnd, "via": "report", "cancelled": 0})
            return False
        if mode == "inform" or told == 0:
            tx.close_step_run(run_id, "done" if mode == "inform" else "unresolved", now)
            return False
        return True

    def _raise_severity(self, tx: Tx, inc: Incident, severity: str, src: str, event_id: str,
                        now: datetime) -> None:
        """A more severe event counted on open ``inc`` (a "smell in the lab" followed by "fire
        in the lab" under one dedup key): the incident takes the new ``severity``, and its
        messages still waiting — behind older ones, or deferred to the school morning by quiet
        hours — take its priority and are due now. Timeline ``severity_raised``."""
        tx.update_incident(inc.id, severity=severity, updated_at=now)
        priority = priority_of(severity)
        moved = 0
        for n in tx.notifications_of(inc.id):
            if n.status == "pending" and (n.priority > priority or n.due_at > now):
                tx.update_notification(n.id, priority=min(n.priority, priority),
                                       due_at=min(n.due_at, now), updated_at=now)
                moved += 1
        tx.add_timeline(inc.id, now, "severity_raised", src,
                        {"from": inc.severity, "to": severity, "event_id": event_id,
                         "messages": moved})
        log.info("severity_raised", incident_id=inc.id, to=severity, messages=moved)

    def _reporter(self, tx: Tx, inc: Incident, opening: Mapping[str, Any] | None) -> str | None:
        """The person id who filed ``inc``'s first event (``reported_by``), or None."""
        body = opening
        if body is None and inc.first_event_id:
            stored = tx.get_event(inc.first_event_id)
            body = stored["body"] if stored else None
        who = (body or {}).get("reported_by")
        return who if isinstance(who, str) and self.config.person(who) is not None else None

    def _kept_out(self, ops: _Ops, inc: Incident, r: Recipient) -> Skip | None:
        """The first rule's reason to leave ``r`` out of ``inc``'s steps, or None."""
        return next((skip for rule in self.rules if (skip := rule.keep_out(ops, inc, r))), None)

    def _resolve_target(self, tx: Tx, text: str, inc: Incident, now: datetime,
                        opening: Mapping[str, Any] | None = None) -> list[Recipient]:
        """Recipients of target string ``text`` for ``inc`` at ``now`` ([] for an unknown
        target): a relative or administrator-defined role is asked of the rules first
        (``guardian``; ``duty_officer`` and roster-backed roles: the roster), then
        :func:`~escalator.engine.targets.resolve`."""
        try:
            target = parse_target(text, self.config)
        except UnknownTarget:
            return []
        if target.kind in ("relative", "role"):  # a roster-backed role: the roster rule
            ops = self._ops(tx, now)
            for rule in self.rules:
                found = rule.recipients(ops, tx, inc, target.name, opening)
                if found is not None:
                    return found
        return resolve(target, self.config, class_id=inc.class_id, grade=inc.grade, at=now)

    def _notify(self, tx: Tx, inc: Incident, run_id: int | None, r: Recipient, needs_ack: bool,
                now: datetime, purpose: str = "step", note: str | None = None) -> bool:
        if not r.contacts:
            tx.add_timeline(inc.id, now, "no_contact_method", None, {"recipient": r.id})
            return False
        contact = r.contacts[0]
        tx.insert_notification(
            incident_id=inc.id, step_run_id=run_id, recipient_kind=r.kind, recipient_id=r.id,
            recipient_name=r.name, channel=contact.channel, address=contact.to, contact_index=0,
            status="pending", due_at=now, attempts=0, created_at=now, updated_at=now,
            ack_token=secrets.token_urlsafe(18), needs_ack=needs_ack, purpose=purpose, note=note,
            priority=priority_of(inc.severity),
        )
        ops = self._ops(tx, now)
        for rule in self.rules:  # e.g. the required level of a legal deadline told: deadline met
            rule.on_notified(ops, tx, inc, r)
        return True

    def _tell_duty_officer(self, tx: Tx, inc: Incident, run_id: int,
                           already: dict[tuple[str, str], Recipient], unresolved: list[str],
                           now: datetime, *, ask: bool) -> int:
        """Tell the duty officer on the roster now that ``unresolved`` targets of step run
        ``run_id`` found nobody (purpose ``target_unresolved``; asked to act when ``ask``, so
        the level waits for them like for its own people). Returns how many were told."""
        officers = self._resolve_target(tx, "duty_officer", inc, now)  # the roster, now
        told = 0
        for r in officers:
            if ("person", r.id) not in already:
                told += bool(self._notify(tx, inc, run_id, r, ask and r.can_acknowledge, now,
                                          purpose="target_unresolved",
                                          note=", ".join(unresolved)))
        if not officers:
            log.error("duty_officer_unresolved", incident_id=inc.id, targets=unresolved)
        return told

    def contacts_of(self, tx: Tx, config: Config, n: Notification, inc: Incident
                    ) -> tuple[ContactMethod, ...]:
        """The contact methods, in order, of the recipient of notification row ``n`` (for
        failover to the next one): a person's or unit's from ``config``; a rule's own recipient
        (e.g. a pupil's guardian) as the rules resolve its kind for ``inc`` now; ``()`` when
        the recipient is gone."""
        if n.recipient_kind in ("person", "unit"):
            owner = (config.person(n.recipient_id) if n.recipient_kind == "person"
                     else config.unit(n.recipient_id))
            return tuple(owner.contacts) if owner else ()
        ops = self._ops(tx, self.clock.now())
        for rule in self.rules:
            for r in rule.recipients(ops, tx, inc, n.recipient_kind, None) or ():
                if r.kind == n.recipient_kind and r.id == n.recipient_id:
                    return tuple(r.contacts)
        return ()

    def step_delivered(self, tx: Tx, step_run_id: int, at: datetime) -> None:
        """The first message of step run ``step_run_id`` was delivered, or failed for good, at
        ``at`` (aware UTC): called by the delivery record stage (and ``simulate``) inside its
        transaction ``tx``, for every message of a step run — only the first counts.

        When the run is still the incident's waiting step, its timer becomes ``at`` + the
        step's timeout — never later than when it fired + ``delivery.step_wait_cap`` + the
        timeout, the timer set when it fired (or later where a quiet-hours deferral moved it:
        :func:`step_deferred`) — and the timeline gets ``step_delivered`` with both
        times (``fired_at``, ``delivered_at``: ISO-8601 UTC) and the wait in seconds. With
        ``step_wait_cap`` 0 nothing is done: the timeout counts from the fire."""
        step_delivered(tx, self.config, step_run_id, at)

    # ----------------------------------------------------------------- actions

    def acknowledge(self, incident_id: int | None = None, *, actor: str, via: str,
                    token: str | None = None) -> ActionResult:
        """Acknowledge an incident, or, with ``token``, the step whose notification carried it.

        Without a token (CLI, API) the current step is acknowledged with its mode's meaning;
        with a token from an ``inform`` step the reply is logged ``seen``; a token whose level
        has ended (:func:`~escalator.engine.decisions.link_live`) changes nothing
        (``level_closed``). Pending sends covered are cancelled in the same transaction. At a
        ``report`` step this is :meth:`decide` ``report``. Raises :class:`NotFound`.
        """
        return self.decide(incident_id, decision="report", actor=actor, via=via, token=token)

    def decide(self, incident_id: int | None = None, *, decision: str,
               reason: str | None = None, actor: str, via: str,
               token: str | None = None) -> ActionResult:
        """The decision of a level on an incident (or, with ``token``, on the level whose
        notification carried it), in one transaction (docs/decisions.md):

        - ``report``: :meth:`acknowledge` — at a ``report`` step the level is confirmed, its
          pending sends cancelled and the next level (a step ``on_report_only`` too) told at
          once; the last level's confirmation acknowledges the incident; at an ``escalate``
          step the incident is acknowledged.
        - ``handled`` (本级已处置，无需上报): ``reason`` required; the walk ends — the incident is
          **resolved** by ``actor``, every pending send cancelled, the current run closed
          ``handled``, timeline ``handled_here`` (``step``, ``round``, ``reason``, ``via``)
          before ``resolved``; the rules' ``on_resolved`` run (a legal deadline not met is
          recorded as resolved before report).

        ``via``: ``link`` / ``api`` / ``cli`` / …, recorded. Returns an :class:`ActionResult`.
        Raises :class:`NotFound` (no incident / unknown token) and
        :class:`~escalator.engine.decisions.DecisionError` (a ``ValueError`` naming the field:
        unknown decision, missing reason).
        """
        decision, reason = decisions.check(decision, reason)
        now = self.clock.now()
        with self._transaction() as tx:
            if token is not None:
                n = tx.notification_by_token(token)
                if n is None:
                    raise NotFound("unknown acknowledge token")
                inc, run = tx.get_incident(n.incident_id), tx.get_step_run(n.step_run_id or 0)
            else:
                inc = tx.get_incident(incident_id or 0)
                run = tx.latest_step_run(inc.id) if inc else None
            if inc is None:
                raise NotFound(f"no incident {incident_id}")
            if inc.state != "triggered":
                return ActionResult(inc.id, f"already_{inc.state}", inc.state)
            if run is not None and run.mode == "inform" and token is not None:
                if decision == "handled":
                    return ActionResult(inc.id, "not_allowed", inc.state)
                tx.add_timeline(inc.id, now, "seen", actor, {"step": run.step_index, "via": via})
                return ActionResult(inc.id, "seen", inc.state)
            if token is not None and not decisions.link_live(inc, run):
                return ActionResult(inc.id, "level_closed", inc.state)
            if decision == "handled":
                level = run if run is not None else None
                tx.add_timeline(inc.id, now, "handled_here", actor,
                                {"step": level.step_index if level else inc.step_index,
                                 "round": level.round if level else inc.round,
                                 "reason": reason, "via": via})
                self._resolve(tx, inc, actor, now, via=via, run_status="handled")
                return ActionResult(inc.id, "handled", "resolved")
            if run is not None and run.mode == "report":
                return self._confirm_level(tx, inc, run, actor, via, now)
            self._acknowledge_incident(tx, inc, actor, now, via=via)
            return ActionResult(inc.id, "acknowledged", "acknowledged")

    def _confirm_level(self, tx: Tx, inc: Incident, run: StepRun, actor: str, via: str,
                       now: datetime) -> ActionResult:
        last = run.step_index == len(inc.policy["steps"]) - 1
        current = (run.step_index, run.round) == (inc.step_index, inc.round)
        if run.status != "open":
            tx.add_timeline(inc.id, now, "step_confirmed_late", actor,
                            {"step": run.step_index, "round": run.round, "via": via})
            if last and current:
                self._acknowledge_incident(tx, inc, actor, now, via=via)
                return ActionResult(inc.id, "acknowledged", "acknowledged")
            if current and inc.reminders is not None:  # the walk waited on this level: go on
                latest = tx.latest_step_run(inc.id)  # a reminder's run, answered by this
                if latest is not None and latest.status == "open":
                    tx.close_step_run(latest.id, "confirmed", now)
                    tx.cancel_notifications(inc.id, latest.id, now)
                self._advance(tx, inc, now, reported=True)
                return ActionResult(inc.id, "step_confirmed", "triggered")
            return ActionResult(inc.id, "step_confirmed_late", inc.state)
        tx.close_step_run(run.id, "confirmed", now)
        cancelled = tx.cancel_notifications(inc.id, run.id, now)
        tx.add_timeline(inc.id, now, "step_confirmed", actor,
                        {"step": run.step_index, "round": run.round, "via": via,
                         "cancelled": cancelled})
        if last:
            self._acknowledge_incident(tx, inc, actor, now, via=via)
            return ActionResult(inc.id, "acknowledged", "acknowledged")
        if current:
            self._advance(tx, inc, now, reported=True)  # the next level is told at once
        return ActionResult(inc.id, "step_confirmed", "triggered")

    def _acknowledge_incident(self, tx: Tx, inc: Incident, actor: str, now: datetime, *,
                              via: str) -> None:
        if inc.state == "triggered":
            self._stop_walk(tx, inc, "acknowledged", "confirmed", actor, now, via)
            if wait := inc.policy.get("ack_timeout"):  # re-triggered if still open then
                tx.update_incident(inc.id, next_step_at=now + timedelta(seconds=float(wait)))

    def _stop_walk(self, tx: Tx, inc: Incident, state: str, run_status: str, actor: str,
                   now: datetime, via: str) -> None:
        """Move ``inc`` to ``state`` (``acknowledged`` / ``resolved``) by ``actor``: close its
        current step run as ``run_status``, cancel every pending send, stop its timer, and
        record the transition in the timeline — in the caller's transaction."""
        run = tx.latest_step_run(inc.id)
        if run is not None:
            tx.close_step_run(run.id, run_status, now)
        cancelled = tx.cancel_notifications(inc.id, None, now)
        tx.update_incident(inc.id, state=state, **{f"{state}_at": now, f"{state}_by": actor},
                           next_step_at=None, reminders=None, updated_at=now)
        tx.add_timeline(inc.id, now, state, actor, {"via": via, "cancelled": cancelled})
        log.info(f"incident_{state}", incident_id=inc.id, actor=actor, via=via)

    def resolve(self, incident_id: int, *, actor: str, via: str) -> ActionResult:
        """Resolve an incident: stop its walk and cancel every pending send, in one transaction.
        Raises :class:`NotFound`."""
        now = self.clock.now()
        with self._transaction() as tx:
            inc = tx.get_incident(incident_id)
            if inc is None:
                raise NotFound(f"no incident {incident_id}")
            if inc.state == "resolved":
                return ActionResult(inc.id, "already_resolved", "resolved")
            self._resolve(tx, inc, actor, now, via=via)
            return ActionResult(inc.id, "resolved", "resolved")

    def add_note(self, incident_id: int, *, text: str, actor: str, via: str) -> ActionResult:
        """Write a note (``text``, 1..:data:`NOTE_MAX_CHARS` characters, stripped) to the
        incident's timeline as ``note`` by ``actor``; the walk is not changed (outcome
        ``noted``). Notes are allowed on resolved incidents too (an after-action remark).
        Raises :class:`NotFound`, :class:`InvalidAction` (field ``text``)."""
        body = (text or "").strip()
        if not body:
            raise InvalidAction("text", "a note needs some text")
        if len(body) > NOTE_MAX_CHARS:
            raise InvalidAction("text", f"longer than {NOTE_MAX_CHARS} characters")
        now = self.clock.now()
        with self._transaction() as tx:
            inc = tx.get_incident(incident_id)
            if inc is None:
                raise NotFound(f"no incident {incident_id}")
            tx.add_timeline(inc.id, now, "note", actor, {"text": body, "via": via})
        log.info("incident_noted", incident_id=incident_id, actor=actor, via=via)
        return ActionResult(inc.id, "noted", inc.state)

    def assign(self, incident_id: int, *, person_id: str, actor: str, via: str) -> ActionResult:
        """Assign the incident to ``person_id`` (a person of the running config): timeline
        ``assigned`` with the person's id and name, by ``actor`` (outcome ``assigned``, or
        ``already_assigned`` when the latest assignment names the same person). Assigning
        tells nobody and does not change the walk. Raises :class:`NotFound`,
        :class:`InvalidAction` (field ``person_id``: not a person of the config)."""
        person = self.config.person(person_id)
        if person is None:
            raise InvalidAction("person_id", f"no person {person_id!r} in the config")
        now = self.clock.now()
        with self._transaction() as tx:
            inc = tx.get_incident(incident_id)
            if inc is None:
                raise NotFound(f"no incident {incident_id}")
            latest = assignee(tx.timeline(inc.id))
            if latest == person.id:
                return ActionResult(inc.id, "already_assigned", inc.state)
            tx.add_timeline(inc.id, now, "assigned", actor,
                            {"person_id": person.id, "name": person.name, "via": via,
                             **({"previous": latest} if latest else {})})
        log.info("incident_assigned", incident_id=incident_id, actor=actor, via=via,
                 person_id=person.id)
        return ActionResult(inc.id, "assigned", inc.state)

    def _resolve(self, tx: Tx, inc: Incident, actor: str, now: datetime, *, via: str,
                 run_status: str = "done") -> None:
        if inc.state == "resolved":
            return
        self._stop_walk(tx, inc, "resolved", run_status, actor, now, via)
        ops = self._ops(tx, now)
        for rule in self.rules:  # e.g. resolved before a legal deadline's level was told
            rule.on_resolved(ops, tx, inc, actor)


def assignee(timeline: Sequence[Any]) -> str | None:
    """The person id of the latest ``assigned`` entry of an incident's ``timeline`` (its
    :class:`~escalator.store.base.TimelineEntry` list, oldest first), or None."""
    for entry in reversed(timeline):
        if entry.type == "assigned":
            return str(entry.detail.get("person_id"))
    return None


def step_delivered(tx: Tx, config: Config, step_run_id: int, at: datetime) -> None:
    """:meth:`Engine.step_delivered` with the running ``config`` (the delivery worker, which
    has no engine, calls this)."""
    if config.delivery.step_wait_cap <= 0:  # off: the timeout counts from the fire, as set
        return
    run = tx.get_step_run(step_run_id)
    if run is None or run.status != "open" or not tx.mark_step_delivered(step_run_id, at):
        return
    inc = tx.get_incident(run.incident_id)
    if (inc is None or inc.state != "triggered" or inc.next_step_at is None
            or inc.reminders is not None  # a reminder's run: the reminder timer stands
            or (inc.step_index, inc.round) != (run.step_index, run.round)):
        return
    timeout = timedelta(seconds=float(inc.policy["steps"][run.step_index]["timeout"]))
    # never later than the timer set when it fired (fired + step_wait_cap + timeout), or as a
    # quiet-hours deferral moved it (step_deferred)
    due = min(max(at, run.fired_at) + timeout, inc.next_step_at)
    tx.update_incident(inc.id, next_step_at=due, updated_at=at)
    tx.add_timeline(inc.id, at, "step_delivered", None,
                    {"step": run.step_index, "round": run.round,
                     "fired_at": run.fired_at.isoformat(), "delivered_at": at.isoformat(),
                     "waited": round((at - run.fired_at).total_seconds(), 3)})


def step_deferred(tx: Tx, config: Config, step_run_id: int, until: datetime) -> datetime | None:
    """A message of step run ``step_run_id`` waits for school hours until ``until`` (aware UTC;
    quiet hours, :mod:`escalator.delivery.quiet_hours`), inside the delivery's transaction ``tx``.

    While the run is the incident's waiting step and none of its messages was delivered yet,
    its timer moves to ``until`` + ``delivery.step_wait_cap`` + the step's timeout when that is
    later: the step waits for its deferred message as for any first delivery, and
    :func:`step_delivered` then counts the timeout from the delivery. Returns the new timer, or
    None when it did not move (a message of the run was already delivered: the timeout counts
    from that one)."""
    run = tx.get_step_run(step_run_id)
    if run is None or run.status != "open" or run.first_delivered_at is not None:
        return None
    inc = tx.get_incident(run.incident_id)
    if (inc is None or inc.state != "triggered" or inc.next_step_at is None
            or (inc.step_index, inc.round) != (run.step_index, run.round)):
        return None
    timeout = float(inc.policy["steps"][run.step_index]["timeout"])
    due = until + timedelta(seconds=timeout + config.delivery.step_wait_cap)
    if due <= inc.next_step_at:
        return None
    tx.update_incident(inc.id, next_step_at=due)
    return due


class _Ops:
    """The engine's :class:`~escalator.engine.rules.EngineOps`: one store transaction ``tx`` at
    time ``now`` (every method is documented on the protocol)."""

    def __init__(self, engine: Engine, tx: Tx, now: datetime) -> None:
        self._engine, self._tx, self._now = engine, tx, now

    @property
    def config(self) -> Config:
        return self._engine.config

    @property
    def now(self) -> datetime:
        return self._now

    def open_incident(self, event: Event, *, policy: str, source: str) -> IngestResult:
        chosen = self._engine.config.policies.get(policy)
        if chosen is None:
            raise UnknownPolicy(f"unknown policy {policy!r}")
        return self._engine._ingest(self._tx, event, source, self._now, (policy, chosen))

    def notify(self, incident: Incident, recipients: list[Recipient], *, purpose: str,
               note: str | None = None) -> int:
        return sum(self._engine._notify(self._tx, incident, None, r, False, self._now,
                                        purpose=purpose, note=note) for r in recipients)

    def resolve(self, incident: Incident, *, actor: str, via: str) -> None:
        self._engine._resolve(self._tx, incident, actor, self._now, via=via)

    def recipients(self, incident: Incident, target: str) -> list[Recipient]:
        return self._engine._resolve_target(self._tx, target, incident, self._now)

    def add_timeline(self, incident_id: int, type: str, actor: str | None,
                     detail: Mapping[str, Any]) -> None:
        self._tx.add_timeline(incident_id, self._now, type, actor, dict(detail))
