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
from escalator.config.quieting import parse_matchers, subject_of, subject_of_body
from escalator.events import Event
from escalator.store.base import Incident, Tx

log = structlog.get_logger("escalator.engine.inhibition")

SCAN_LIMIT = 1000
"""Most open incidents (newest first) looked at per rule for a source incident."""


def inhibitor(tx: Tx, config: Config, event: Event, source: str) -> tuple[Incident, int] | None:
    """The open incident that inhibits ``event`` from ``source`` and the index of the rule
    that says so (the first rule, then the newest incident), or None. Reads the opening events
    of open incidents of the same drill flag — of the one category a rule's source matchers
    name with ``category=…``, when they do — at most :data:`SCAN_LIMIT` of them."""
    subject = subject_of(event, source)
    for index, rule in enumerate(config.inhibit_rules):
        if not all(m.matches(subject) for m in parse_matchers(rule.target_matchers)):
            continue
        sources = parse_matchers(rule.source_matchers)
        category = next((m.value for m in sources if m.name == "category" and m.op == "="), None)
        same = {n: subject.get(n, "") for n in rule.equal if n != "drill"}
        for incident_id, their_source, body in tx.open_openings(event.drill, category,
                                                                SCAN_LIMIT, same):
            theirs = subject_of_body(body, their_source)
            if (all(m.matches(theirs) for m in sources)
                    and all(theirs.get(n, "") == subject.get(n, "") for n in rule.equal)):
                inc = tx.get_incident(incident_id)
                if inc is not None:
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
