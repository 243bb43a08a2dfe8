"""Grouping (docs/silences.md "Grouping"; Alertmanager's ``group_by``/``group_wait``/
``group_interval``, Grafana OnCall's alert groups).

A route with ``group_by: [category, place]`` makes its events with the same values one
incident instead of one each. The group is a dedup key — ``group/<policy>/<name>=<value>/…``
(``drill/`` in front for drills, as every drill key) — so the engine's dedup does the joining:
while the group's incident is open, a new event of the group is counted on it
(docs/engine.md "Dedup key"). Each distinct member (by the event's own dedup key, kept as a
digest: a key may hold a pupil id) is counted once, and the incident's summary says how many:
``"{place} 共 {count} 个探测器报警"`` (the route's ``group_summary``) → "3楼 共 7 个探测器报警".

``group_wait``: a new group waits that long for more members before its first step fires
(timeline ``group_wait``, then ``group_wait_over`` with the count): the incident's own durable
timer. ``group_interval``: once the walk has begun, members that arrive are told to the
current step's targets at most once per interval (timeline ``group_update``, notifications
with purpose ``group_update``): a durable timer on the group's row.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from escalator.config.models import Config, Route
from escalator.config.quieting import subject_of
from escalator.engine.routing import NO_POLICY, matches
from escalator.engine.rules import EngineOps
from escalator.events import Event, Kind
from escalator.store.base import Incident, IncidentGroup, Tx

log = structlog.get_logger("escalator.engine.grouping")

DEFAULT_SUMMARY = {"zh": "{group} 共 {count} 条报警（首条：{first}）",
                   "en": "{group}: {count} alerts (first: {first})"}
"""The group summary when a route gives no ``group_summary``."""


@dataclass(frozen=True)
class Group:
    """The group an event belongs to: its dedup ``key``, the route (index and model), the
    route's ``values`` for the event and the event's ``member`` digest."""

    key: str
    route: int
    spec: Route
    values: dict[str, str]
    member: str


def route_of(event: Event, config: Config) -> tuple[int, Route] | None:
    """The route :func:`escalator.engine.routing.route` picks for ``event``, with its index."""
    default = None
    for i, r in enumerate(config.routes):
        if r.default:
            default = (i, r)
        elif matches(r, event):
            return i, r
    return default


def group_of(event: Event, source: str, config: Config, own_key: str) -> Group | None:
    """The group of a trigger ``event`` from ``source`` whose own dedup key is ``own_key``, or
    None when its route does not group (or logs only, or the event is a heartbeat)."""
    if event.kind == Kind.heartbeat:
        return None
    found = route_of(event, config)
    if found is None or not found[1].group_by or found[1].policy == NO_POLICY:
        return None
    index, r = found
    subject = subject_of(event, source)
    values = {n: subject.get(n, "") for n in r.group_by}
    key = ("drill/" if event.drill else "") + f"group/{r.policy}/" + "/".join(
        f"{n}={v}" for n, v in values.items())
    member = hashlib.sha256(own_key.encode()).hexdigest()[:32]
    return Group(key, index, r, values, member)


def summary(spec: Route, values: dict[str, str], count: int, first: str, lang: str) -> str:
    """The group incident's summary (≤ 500 characters): the route's ``group_summary``, else
    :data:`DEFAULT_SUMMARY`, filled with ``values``, ``group`` (the non-empty values joined),
    ``count`` and ``first`` (the first member's summary)."""
    template = spec.group_summary or DEFAULT_SUMMARY.get(lang, DEFAULT_SUMMARY["zh"])
    group = " ".join(v for v in values.values() if v) or "-"
    return template.format(**values, group=group, count=count, first=first)[:500]


def opened(tx: Tx, config: Config, incident_id: int, group: Group, first: str,
           now: datetime) -> datetime | None:
    """A group's incident was just opened by its first member (summary ``first``): record the
    group and its member, set the summary; with ``group_wait``, hold the first step until then
    (timeline ``group_wait``) and return that time, else None."""
    tx.add_group(IncidentGroup(incident_id, group.key, group.route, group.values))
    tx.add_group_member(incident_id, group.member, now)
    text = summary(group.spec, group.values, 1, first, config.school.language)
    tx.update_incident(incident_id, summary=text, updated_at=now)
    if group.spec.group_wait <= 0:
        tx.set_group_update(incident_id, None, told=1)
        return None
    until = now + timedelta(seconds=group.spec.group_wait)
    tx.update_incident(incident_id, next_step_at=until)
    tx.add_timeline(incident_id, now, "group_wait", None,
                    {"until": until.isoformat(), "group": group.values})
    return until


def joined(tx: Tx, config: Config, inc: Incident, group: Group, now: datetime) -> None:
    """An event of ``group`` was counted on its open incident ``inc``: count its member (once
    per own dedup key), refresh the summary, and when the walk has begun and the route has a
    ``group_interval``, set the update timer (if none is set) an interval from now."""
    if not tx.add_group_member(inc.id, group.member, now):
        return
    g = tx.incident_group(inc.id)
    if g is None:  # an incident that took the group's key some other way
        return
    stored = tx.get_event(inc.first_event_id) if inc.first_event_id else None
    first = stored["body"].get("summary", "") if stored else ""
    text = summary(group.spec, g.values, g.members, first, config.school.language)
    tx.update_incident(inc.id, summary=text, updated_at=now)
    if (inc.state == "triggered" and inc.step_index >= 0 and group.spec.group_interval > 0
            and g.update_at is None):
        tx.set_group_update(inc.id, now + timedelta(seconds=group.spec.group_interval))


def on_due(tx: Tx, inc: Incident, now: datetime) -> None:
    """``inc`` came due and its first step is about to fire: a group records that its wait is
    over (timeline ``group_wait_over`` with the count) and that this many are being told."""
    if inc.step_index >= 0 or inc.state != "triggered":
        return
    g = tx.incident_group(inc.id)
    if g is None:
        return
    tx.set_group_update(inc.id, None, told=g.members)
    tx.add_timeline(inc.id, now, "group_wait_over", None, {"count": g.members})


def send_updates(ops: EngineOps, tx: Tx, now: datetime, limit: int = 100) -> int:
    """Fire due group update timers: for each group incident still walking with members its
    people were not told of, tell its current step's targets (notifications with purpose
    ``group_update``; the message carries the refreshed summary) and record it (timeline
    ``group_update``). Returns how many incidents were updated."""
    done = 0
    for incident_id in tx.due_group_updates(now, limit):
        inc, g = tx.get_incident(incident_id), tx.incident_group(incident_id)
        tx.set_group_update(incident_id, None, told=max(g.members, g.told) if g else None)
        if inc is None or g is None:
            continue
        new = g.members - g.told
        if inc.state != "triggered" or inc.step_index < 0 or new <= 0:
            continue
        step = inc.policy["steps"][inc.step_index]
        recipients = {}
        for target in step["targets"]:
            for r in ops.recipients(inc, target):
                recipients.setdefault((r.kind, r.id), r)
        told = ops.notify(inc, list(recipients.values()), purpose="group_update",
                          note=f"+{new}/{g.members}")
        ops.add_timeline(inc.id, "group_update", None,
                         {"count": g.members, "new": new, "told": told})
        log.info("group_update", incident_id=inc.id, count=g.members, new=new)
        done += 1
    return done
