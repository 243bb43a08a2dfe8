"""Routing: which escalation policy an event goes to."""

from __future__ import annotations

from escalator.config.models import Config, Route
from escalator.events import Event

NO_POLICY = "none"
"""A route's policy ``none``: the event is logged in the ledger, no incident is opened."""


def matches(route: Route, event: Event) -> bool:
    """Whether every condition of ``route.match`` holds for ``event`` (lists mean any of)."""
    m = route.match
    if m.kind is not None and event.kind not in m.kind:
        return False
    if m.category is not None and event.category not in m.category:
        return False
    if m.severity is not None and event.severity not in m.severity:
        return False
    return all(event.labels.get(k) == v for k, v in m.labels.items())


def route(event: Event, config: Config) -> str:
    """The policy id for ``event``: the first matching non-default route, else the default route's.

    Returns :data:`NO_POLICY` when that route says ``none``. The config guarantees exactly one
    default route (``check-config``).
    """
    default = NO_POLICY
    for r in config.routes:
        if r.default:
            default = r.policy
        elif matches(r, event):
            return r.policy
    return default
