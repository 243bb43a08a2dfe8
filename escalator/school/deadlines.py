"""Legal reporting deadlines (docs/school-rules.md "Legal deadlines").

A rule (``deadlines.rules`` in the config, :class:`~escalator.config.models.DeadlineRule`;
defaults and their sources in :mod:`escalator.config.school_defaults`) says that by ``within``
seconds after an incident's first event the ``notify`` targets (step-target syntax, e.g. the
units ``district_cdc`` and ``education_bureau``) must have been told. An incident gets a rule:

- when it opens and its first event matches the rule's ``match`` (only with a ``deadlines:``
  section; :func:`opened`);
- from :mod:`escalator.school.clusters`: a cluster incident (``clusters.deadline``), a case whose
  diagnosis is notifiable (``clusters.notifiable.deadline``).

:func:`apply` stores, on the incident row, ``deadline_at`` (``occurred_at`` of the first event
+ ``within``; for an "at once" rule, ``within: 0``, the time escalator received it),
``deadline_rule``, the snapshotted targets (``deadline_notify``: a config reload never changes
an obligation already running) and the timer ``deadline_check_at`` = ``deadline_at`` − lead
(``lead`` of the rule, else ``deadlines.lead``, default 30 min). An incident keeps the earliest
deadline it was given.

- **Met.** Every time the engine writes a message on an incident with an open deadline
  (:class:`LegalDeadlineRule` ``on_notified``), :func:`told` checks whether every target has
  had a message written to one of its recipients (the decision to tell; each delivery is in the
  ledger); if so
  ``deadline_met_at`` is set to now and the timer stops. Met = ``deadline_met_at`` ≤
  ``deadline_at``.
- **Due.** ``Engine.tick`` runs :func:`due` when ``deadline_check_at`` has come
  (:class:`LegalDeadlineRule` ``on_due``; a row like every timer: after a restart an overdue one
  fires at once). Unless the incident was resolved or the
  deadline met, the engine tells each target not yet told at once — messages with purpose
  ``deadline``, no acknowledge link (not a step: the walk goes on unchanged) — and logs
  ``deadline_escalation`` (rule, deadline, targets, recipients).
- **Resolved, not reported.** An incident resolved no later than its deadline with the required
  level never told (timeline ``resolved_before_report``, e.g. a false alarm) needs no report:
  :func:`status` ``resolved_unreported``, neither met nor missed. Resolved after the deadline
  passed untold, it stays ``missed`` (:class:`LegalDeadlineRule` ``on_resolved``).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, tzinfo
from typing import Any

import structlog

from escalator.config.models import Config, DeadlineRule, DeadlinesConfig, Route
from escalator.engine.routing import matches
from escalator.engine.rules import EngineOps, Rule, StoredEvent
from escalator.engine.targets import Recipient
from escalator.events import Event
from escalator.i18n import _
from escalator.school.drills import drill_excluded
from escalator.school.ledger import deadline_status
from escalator.store.base import Incident, Tx

log = structlog.get_logger("escalator.school.deadlines")

PURPOSE = "deadline"
"""``notifications.purpose`` of the messages :func:`due` writes."""


def settings(config: Config) -> DeadlinesConfig:
    """The ``deadlines:`` section, or the defaults when there is none."""
    return config.deadlines or DeadlinesConfig()


def rule(config: Config, rule_id: str) -> DeadlineRule | None:
    return settings(config).rules.get(rule_id)


def lead(config: Config, r: DeadlineRule) -> float:
    """Seconds before the deadline at which the engine tells the required level itself."""
    return settings(config).lead if r.lead is None else r.lead


def opened(ops: EngineOps, tx: Tx, ev: Event, incident_id: int) -> None:
    """A new incident (first event ``ev``, normalised): apply the first rule whose ``match``
    holds. Only with a ``deadlines:`` section."""
    if ops.config.deadlines is None:
        return
    for rid, r in ops.config.deadlines.rules.items():
        if r.match is not None and matches(Route(match=r.match, policy="-"), ev):
            assert ev.occurred_at is not None
            apply(ops, tx, incident_id, rid, ev.occurred_at)
            return


def apply(ops: EngineOps, tx: Tx, incident_id: int, rule_id: str, start: datetime) -> bool:
    """Give incident ``incident_id`` the deadline of rule ``rule_id``, counted from ``start``
    (aware; ignored for an "at once" rule, which counts from ``ops.now``). Keeps an earlier
    deadline already set. When the check time has come already (at once, or a late report), the
    check runs now, in this transaction. Returns whether the deadline was set."""
    now = ops.now
    r = rule(ops.config, rule_id)
    inc = tx.get_incident(incident_id)
    if r is None or inc is None or inc.state == "resolved":
        if r is None:
            log.error("deadline_rule_unknown", rule=rule_id, incident_id=incident_id)
        return False
    deadline = (now if r.within == 0 else start) + timedelta(seconds=r.within)
    if inc.deadline_at is not None and inc.deadline_at <= deadline:
        return False
    check = deadline - timedelta(seconds=lead(ops.config, r))
    tx.update_incident(incident_id, deadline_at=deadline, deadline_rule=rule_id,
                       deadline_notify=_json(r.notify), deadline_met_at=None,
                       deadline_check_at=max(check, now))
    tx.add_timeline(incident_id, now, "deadline_set", None,
                    {"rule": rule_id, "deadline_at": deadline.isoformat(), "notify": r.notify,
                     **({"source": r.source} if r.source else {})})
    inc = tx.get_incident(incident_id)
    assert inc is not None
    if not told(ops, tx, inc) and check <= now:
        due(ops, tx, inc)
    return True


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _drill_only(config: Config, inc: Incident, found: list[Recipient]) -> bool:
    """In a drill, whether every recipient is one drills must not reach (a unit without
    ``drills: true``): such a target counts as told, nobody is told for real."""
    return inc.drill and bool(found) and all(drill_excluded(r, config) for r in found)


def missing(ops: EngineOps, tx: Tx, inc: Incident) -> list[str]:
    """The deadline targets of ``inc`` none of whose recipients has had a message written
    (in a drill, targets that drills may not reach are left out)."""
    written = {(n.recipient_kind, n.recipient_id) for n in tx.notifications_of(inc.id)}
    out = []
    for target in inc.deadline_notify or []:
        found = ops.recipients(inc, target)
        if _drill_only(ops.config, inc, found):
            continue
        if not any((r.kind, r.id) in written for r in found):
            out.append(target)
    return out


def told(ops: EngineOps, tx: Tx, inc: Incident) -> bool:
    """Record ``deadline_met_at`` = ``ops.now`` if every deadline target of ``inc`` has been
    told. Called after each message the engine writes. Returns whether the deadline is met."""
    now = ops.now
    if inc.deadline_at is None:
        return False
    if inc.deadline_met_at is not None:
        return True
    current = tx.get_incident(inc.id)
    if current is None or current.deadline_met_at is not None:
        return current is not None
    if missing(ops, tx, current):
        return False
    if tx.mark_deadline_met(inc.id, now):
        tx.add_timeline(inc.id, now, "deadline_met", None,
                        {"rule": current.deadline_rule,
                         "deadline_at": current.deadline_at.isoformat() if current.deadline_at else None,
                         "late": now > current.deadline_at if current.deadline_at else False})
    return True


def due(ops: EngineOps, tx: Tx, inc: Incident) -> None:
    """The deadline timer of ``inc`` has come: tell every target not yet told, at once."""
    now = ops.now
    tx.update_incident(inc.id, deadline_check_at=None)
    if inc.state == "resolved" or inc.deadline_met_at is not None or inc.deadline_at is None:
        return
    targets = missing(ops, tx, inc)
    if not targets:
        told(ops, tx, inc)
        return
    plan: list[Recipient] = []
    unresolved: list[str] = []
    for target in targets:
        found = ops.recipients(inc, target)
        if not found:
            unresolved.append(target)
        plan.extend(r for r in found if r not in plan
                    and not (inc.drill and drill_excluded(r, ops.config)))
    tx.add_timeline(inc.id, now, "deadline_escalation", None,
                    {"rule": inc.deadline_rule, "deadline_at": inc.deadline_at.isoformat(),
                     "targets": targets, "recipients": [r.name for r in plan],
                     **({"unresolved": unresolved} if unresolved else {})})
    log.warning("deadline_escalation", incident_id=inc.id, rule=inc.deadline_rule,
                targets=targets, unresolved=unresolved)
    ops.notify(inc, plan, purpose=PURPOSE, note=inc.deadline_rule)
    told(ops, tx, inc)


def status(inc: Incident, now: datetime) -> str | None:
    """``met``, ``missed`` (told after the deadline, or not told and the deadline passed before
    it was resolved), ``resolved_unreported`` (resolved by the deadline, never told),
    ``pending`` (not told yet, deadline ahead), or None without a deadline:
    :func:`escalator.school.ledger.deadline_status` of the incident, the one place that decides."""
    return deadline_status(inc.deadline_at, inc.deadline_met_at, now,
                           inc.resolved_at if inc.state == "resolved" else None)


def describe(inc: Incident, tz: tzinfo, now: datetime | None = None) -> str:
    """One line for ``escalator incidents ID``: the deadline (school-local), its rule and
    targets, and whether it was met."""
    assert inc.deadline_at is not None

    def local(dt: datetime) -> str:
        return dt.astimezone(tz).strftime("%Y-%m-%d %H:%M")

    line = _("deadline {due} ({rule}: {notify})").format(
        due=local(inc.deadline_at), rule=inc.deadline_rule,
        notify=", ".join(inc.deadline_notify or []))
    state = status(inc, now or datetime.now(inc.deadline_at.tzinfo))
    if inc.deadline_met_at is not None:
        told = (_("{line}, met: told {at}") if state == "met"
                else _("{line}, missed: told {at}"))
        return told.format(line=line, at=local(inc.deadline_met_at))
    if state == "resolved_unreported":
        assert inc.resolved_at is not None
        return _("{line}, resolved, not reported: resolved {at}").format(
            line=line, at=local(inc.resolved_at))
    return (_("{line}, not told yet") if state == "pending"
            else _("{line}, missed: not told")).format(line=line)


class LegalDeadlineRule(Rule):
    """Legal deadlines as a rule: set by a matching first event (:func:`opened`), met when the
    required level is told (:func:`told`), escalated when the timer is due (:func:`due`), and
    noted when resolved before the report (``resolved_before_report``)."""

    name = "deadlines"

    def on_event(self, ops: EngineOps, tx: Tx, event: StoredEvent) -> None:
        if event.status == "created" and event.incident_id is not None:  # by its match
            opened(ops, tx, event.event, event.incident_id)

    def on_due(self, ops: EngineOps, tx: Tx, incident: Incident) -> bool:
        if incident.deadline_check_at is None or incident.deadline_check_at > ops.now:
            return False
        due(ops, tx, incident)
        return True

    def on_notified(self, ops: EngineOps, tx: Tx, incident: Incident,
                    recipient: Recipient) -> None:
        if incident.deadline_at is not None and incident.deadline_met_at is None:
            told(ops, tx, incident)  # the required level told: deadline met

    def on_resolved(self, ops: EngineOps, tx: Tx, incident: Incident, actor: str) -> None:
        if incident.deadline_at is not None and incident.deadline_met_at is None:
            # resolved before the level the legal deadline requires was told: no deadline
            # escalation will follow; the ledger shows it resolved_unreported (解除，未报告)
            tx.add_timeline(incident.id, ops.now, "resolved_before_report", actor,
                            {"rule": incident.deadline_rule,
                             "deadline": incident.deadline_at.isoformat(),
                             "notify": incident.deadline_notify})
            log.warning("resolved_before_report", incident_id=incident.id,
                        rule=incident.deadline_rule)
