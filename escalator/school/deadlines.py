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

- **Met.** Every time the engine writes a message (``Engine._notify``) on an incident with an
  open deadline, :func:`told` checks whether every target has had a message written to one of
  its recipients (the decision to tell; each delivery is in the ledger); if so
  ``deadline_met_at`` is set to now and the timer stops. Met = ``deadline_met_at`` ≤
  ``deadline_at``.
- **Due.** ``Engine.tick`` runs :func:`due` when ``deadline_check_at`` has come (a row like every
  timer: after a restart an overdue one fires at once). Unless the incident was resolved or the
  deadline met, the engine tells each target not yet told at once — messages with purpose
  ``deadline``, no acknowledge link (not a step: the walk goes on unchanged) — and logs
  ``deadline_escalation`` (rule, deadline, targets, recipients).
- **Resolved, not reported.** An incident resolved no later than its deadline with the required
  level never told (timeline ``resolved_before_report``, e.g. a false alarm) needs no report:
  :func:`status` ``resolved_unreported``, neither met nor missed. Resolved after the deadline
  passed untold, it stays ``missed``.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any

import structlog

from escalator.config.models import Config, DeadlineRule, DeadlinesConfig, Route
from escalator.engine.routing import matches
from escalator.engine.targets import Recipient
from escalator.events import Event
from escalator.school.drills import drill_excluded
from escalator.school.ledger import deadline_status
from escalator.store.base import Incident, Tx

if TYPE_CHECKING:
    from escalator.engine.engine import Engine

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


def opened(engine: Engine, tx: Tx, ev: Event, incident_id: int, now: datetime) -> None:
    """A new incident (first event ``ev``, normalised): apply the first rule whose ``match``
    holds. Only with a ``deadlines:`` section."""
    if engine.config.deadlines is None:
        return
    for rid, r in engine.config.deadlines.rules.items():
        if r.match is not None and matches(Route(match=r.match, policy="-"), ev):
            assert ev.occurred_at is not None
            apply(engine, tx, incident_id, rid, ev.occurred_at, now)
            return


def apply(engine: Engine, tx: Tx, incident_id: int, rule_id: str, start: datetime,
          now: datetime) -> bool:
    """Give incident ``incident_id`` the deadline of rule ``rule_id``, counted from ``start``
    (aware; ignored for an "at once" rule, which counts from ``now``). Keeps an earlier deadline
    already set. When the check time has come already (at once, or a late report), the check
    runs now, in this transaction. Returns whether the deadline was set."""
    r = rule(engine.config, rule_id)
    inc = tx.get_incident(incident_id)
    if r is None or inc is None or inc.state == "resolved":
        if r is None:
            log.error("deadline_rule_unknown", rule=rule_id, incident_id=incident_id)
        return False
    deadline = (now if r.within == 0 else start) + timedelta(seconds=r.within)
    if inc.deadline_at is not None and inc.deadline_at <= deadline:
        return False
    check = deadline - timedelta(seconds=lead(engine.config, r))
    tx.update_incident(incident_id, deadline_at=deadline, deadline_rule=rule_id,
                       deadline_notify=_json(r.notify), deadline_met_at=None,
                       deadline_check_at=max(check, now))
    tx.add_timeline(incident_id, now, "deadline_set", None,
                    {"rule": rule_id, "deadline_at": deadline.isoformat(), "notify": r.notify,
                     **({"source": r.source} if r.source else {})})
    inc = tx.get_incident(incident_id)
    assert inc is not None
    if not told(engine, tx, inc, now) and check <= now:
        due(engine, tx, inc, now)
    return True


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _drill_only(engine: Engine, inc: Incident, found: list[Recipient]) -> bool:
    """In a drill, whether every recipient is one drills must not reach (a unit without
    ``drills: true``): such a target counts as told, nobody is told for real."""
    return inc.drill and bool(found) and all(drill_excluded(r, engine.config) for r in found)


def missing(engine: Engine, tx: Tx, inc: Incident, now: datetime) -> list[str]:
    """The deadline targets of ``inc`` none of whose recipients has had a message written
    (in a drill, targets that drills may not reach are left out)."""
    written = {(n.recipient_kind, n.recipient_id) for n in tx.notifications_of(inc.id)}
    out = []
    for target in inc.deadline_notify or []:
        found = engine._resolve_target(target, inc, now)
        if _drill_only(engine, inc, found):
            continue
        if not any((r.kind, r.id) in written for r in found):
            out.append(target)
    return out


def told(engine: Engine, tx: Tx, inc: Incident, now: datetime) -> bool:
    """Record ``deadline_met_at`` = ``now`` if every deadline target of ``inc`` has been told.
    Called by the engine after each message it writes. Returns whether the deadline is met."""
    if inc.deadline_at is None:
        return False
    if inc.deadline_met_at is not None:
        return True
    current = tx.get_incident(inc.id)
    if current is None or current.deadline_met_at is not None:
        return current is not None
    if missing(engine, tx, current, now):
        return False
    if tx.mark_deadline_met(inc.id, now):
        tx.add_timeline(inc.id, now, "deadline_met", None,
                        {"rule": current.deadline_rule,
                         "deadline_at": current.deadline_at.isoformat() if current.deadline_at else None,
                         "late": now > current.deadline_at if current.deadline_at else False})
    return True


def due(engine: Engine, tx: Tx, inc: Incident, now: datetime) -> None:
    """The deadline timer of ``inc`` has come: tell every target not yet told, at once."""
    tx.update_incident(inc.id, deadline_check_at=None)
    if inc.state == "resolved" or inc.deadline_met_at is not None or inc.deadline_at is None:
        return
    targets = missing(engine, tx, inc, now)
    if not targets:
        told(engine, tx, inc, now)
        return
    plan: list[Recipient] = []
    unresolved: list[str] = []
    for target in targets:
        found = engine._resolve_target(target, inc, now)
        if not found:
            unresolved.append(target)
        plan.extend(r for r in found if r not in plan
                    and not (inc.drill and drill_excluded(r, engine.config)))
    tx.add_timeline(inc.id, now, "deadline_escalation", None,
                    {"rule": inc.deadline_rule, "deadline_at": inc.deadline_at.isoformat(),
                     "targets": targets, "recipients": [r.name for r in plan],
                     **({"unresolved": unresolved} if unresolved else {})})
    log.warning("deadline_escalation", incident_id=inc.id, rule=inc.deadline_rule,
                targets=targets, unresolved=unresolved)
    for r in plan:
        engine._notify(tx, inc, None, r, False, now, purpose=PURPOSE,  # type: ignore[arg-type]
                       note=inc.deadline_rule)
    told(engine, tx, inc, now)


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

    line = (f"deadline {local(inc.deadline_at)} ({inc.deadline_rule}: "
            f"{', '.join(inc.deadline_notify or [])})")
    state = status(inc, now or datetime.now(inc.deadline_at.tzinfo))
    if inc.deadline_met_at is not None:
        return f"{line}, {state}: told {local(inc.deadline_met_at)}"
    if state == "resolved_unreported":
        assert inc.resolved_at is not None
        return f"{line}, resolved, not reported: resolved {local(inc.resolved_at)}"
    return f"{line}, {'not told yet' if state == 'pending' else 'missed: not told'}"
