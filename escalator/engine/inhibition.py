"""Inhibition (docs/silences.md "Inhibition"; Alertmanager's ``inhibit_rules``).

While an incident is open whose opening event matches a rule's ``source_matchers`` (a fire in
1号楼), a new event matching its ``target_matchers`` with the same values of every name in
``equal`` (the smoke detectors of 1号楼) does not open an incident of its own: it is stored
with that incident's id and status ``inhibited``, and the incident's timeline gets
``inhibited`` naming it — nobody is told again about what they already know. A drill never
inhibits a real report, nor a real incident a drill's events.
"""

from __future__ import annotations

from typing import Any

import structlog

from escalator.config.models import Config
from escalator.config.quieting import parse_matchers, subject_of
from escalator.events import Event
from escalator.store.base import OPEN_STATES, Incident, Tx

log = structlog.get_logger("escalator.engine.inhibition")

SCAN_LIMIT = 1000
"""Most open incidents (newest first) looked at for a source incident."""


def incident_subject(tx: Tx, inc: Incident) -> dict[str, str] | None:
    """What matchers read of ``inc``: its opening event's fields and labels (as stored), or
    None when that event is gone."""
    stored = tx.get_event(inc.first_event_id) if inc.first_event_id else None
    if stored is None:
        return None
    try:
        event = Event.model_validate(stored["body"])
    except ValueError:  # a body purged of personal data may no longer validate
        return None
    return subject_of(event, stored["source"])


def inhibitor(tx: Tx, config: Config, event: Event, source: str) -> tuple[Incident, int] | None:
    """The open incident that inhibits ``event`` from ``source`` and the index of the rule
    that says so (the first rule, then the newest incident), or None."""
    subject = subject_of(event, source)
    rules = [(i, r) for i, r in enumerate(config.inhibit_rules)
             if all(m.matches(subject) for m in parse_matchers(r.target_matchers))]
    if not rules:
        return None
    subjects: dict[int, dict[str, str] | None] = {}
    candidates = [inc for inc in tx.list_incidents(OPEN_STATES, SCAN_LIMIT)
                  if inc.drill == event.drill]
    for index, rule in rules:
        sources = parse_matchers(rule.source_matchers)
        for inc in candidates:
            if inc.id not in subjects:
                subjects[inc.id] = incident_subject(tx, inc)
            theirs = subjects[inc.id]
            if theirs is None or not all(m.matches(theirs) for m in sources):
                continue
            if all(theirs.get(n, "") == subject.get(n, "") for n in rule.equal):
                return inc, index
    return None


def attach(tx: Tx, inc: Incident, rule: int, event: Event, event_id: str, source: str,
           now: Any) -> None:
    """Note on ``inc``'s timeline that event ``event_id`` was inhibited by it (rule index
    ``rule``); the caller stores the event with ``inc``'s id."""
    tx.add_timeline(inc.id, now, "inhibited", source,
                    {"event_id": event_id, "rule": rule, "category": event.category.value,
                     **({"place": event.place} if event.place else {})})
    log.info("event_inhibited", incident_id=inc.id, event_id=event_id, rule=rule)
