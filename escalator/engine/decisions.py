"""Decisions at a level (逐级上报中的本级决定), reminders and what a link may still do.

At a ``report`` step the person told answers one of two decisions (docs/decisions.md):

- ``report`` (上报上一级): today's confirmation — the level is confirmed and the next level is
  told at once, including a step marked ``on_report_only`` (the district CDC and the education
  bureau in the shipped chains), which a timeout never reaches;
- ``handled`` (本级已处置，无需上报): with a reason, the walk ends for this incident: it is
  **resolved** (not acknowledged — nothing is left to follow up, an acknowledgement timeout must
  not wake it again, and its dedup key is free for the pupil's next case); the timeline gets
  ``handled_here`` with the level, actor and reason, the ledger shows 已处置，无需上报.

Source of the school's rule: 《学校和托幼机构传染病疫情报告工作规范（试行）》(2006) — the class
teacher reports to the school doctor, the school doctor to the leadership group, and the school
reports to the district CDC and the education bureau a cluster, a notifiable disease or an
unexplained illness (those reports are required by the rules in :mod:`escalator.school.clusters`
and :mod:`escalator.school.deadlines`, not by a chain's timeout).

The walk **stops** (timeline ``escalation_exhausted`` at the end of the chain, or
``awaiting_decision`` before an ``on_report_only`` step) on the last level that waits, and that
level is reminded every ``remind_every`` seconds (step's, else policy's; default one hour)
until someone acts.

This module holds the pure parts: checking a decision, where a walk stops, the reminder
interval, whether a link's level is still live, and the truthful story of a level for a link
opened again. The state changes are :class:`escalator.engine.engine.Engine`'s.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from escalator.labels import level_of
from escalator.store.base import Incident, StepRun, TimelineEntry

DECISIONS = ("report", "handled")
"""The decisions a level can take: report up, or handled here (no report needed)."""

REASON_MAX = 500
"""Longest reason kept (characters)."""


_ACK_LINK = re.compile(r"/ack/[A-Za-z0-9_\-]{8,}")
REDACTED_LINK = "/ack/（已隐去）"
"""What an acknowledge link's token becomes in kept texts (ledger, API): a live link is a
credential to act for its recipient, so it is never kept where others read."""


def redact_links(text: str | None) -> str | None:
    """``text`` with every acknowledge link's token replaced (:data:`REDACTED_LINK`)."""
    return _ACK_LINK.sub(REDACTED_LINK, text) if text else text


class DecisionError(ValueError):
    """A decision that cannot be taken: ``field`` names the input at fault (``decision`` or
    ``reason``), the message says why (for a 422 answer or the CLI)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def check(decision: str, reason: str | None) -> tuple[str, str | None]:
    """``(decision, reason)`` cleaned: ``decision`` one of :data:`DECISIONS`; ``reason``
    stripped, required (non-empty) for ``handled``, at most :data:`REASON_MAX` characters.
    Raises :class:`DecisionError`."""
    if decision not in DECISIONS:
        raise DecisionError("decision", f"unknown decision {decision!r}: use report or handled")
    text = (reason or "").strip() or None
    if decision == "handled" and text is None:
        raise DecisionError("reason", "a reason is required for handled (本级已处置，无需上报)")
    if text is not None and len(text) > REASON_MAX:
        raise DecisionError("reason", f"reason longer than {REASON_MAX} characters")
    return decision, text


def waiting_level(steps: Sequence[dict[str, Any]], before: int) -> int | None:
    """The last step index below ``before`` that waits for an answer (not ``inform``): the
    level a stopped walk reminds. None when there is none."""
    for i in range(min(before, len(steps)) - 1, -1, -1):
        if steps[i]["mode"] != "inform":
            return i
    return None


def level_number(steps: Sequence[dict[str, Any]], index: int) -> int | None:
    """The 1-based level a person reads for step ``index`` (:func:`escalator.labels.level_of`:
    only steps that wait are counted), or None for an ``inform`` step (a copy to guardians or
    the bureau is not a level) and for an index outside the chain."""
    if not 0 <= index < len(steps) or steps[index]["mode"] == "inform":
        return None
    return level_of(list(steps), index)


def next_waiting(steps: Sequence[dict[str, Any]], index: int) -> int | None:
    """The first step after ``index`` that waits (the level a report from ``index`` reaches),
    or None."""
    return next((i for i in range(index + 1, len(steps)) if steps[i]["mode"] != "inform"), None)


def gated(steps: Sequence[dict[str, Any]], index: int) -> bool:
    """Whether step ``index`` is reached only by a decision to report (``on_report_only``)."""
    return 0 <= index < len(steps) and bool(steps[index].get("on_report_only"))


def remind_interval(policy: dict[str, Any], level: int | None) -> float | None:
    """Seconds between reminders to step ``level`` of a policy snapshot: the step's
    ``remind_every``, else the policy's; None when off (or no level). A snapshot taken before
    reminders existed has neither: None."""
    if level is None:
        return None
    own = policy["steps"][level].get("remind_every")
    value = own if own is not None else policy.get("remind_every")
    return float(value) if value else None


def link_live(inc: Incident, run: StepRun | None) -> bool:
    """Whether a link of step run ``run`` may still act: the incident is ``triggered`` and the
    run's level is the one the walk waits on — its run is open, or the walk stopped on it
    (``inc.reminders`` set, same step and round). A level confirmed, handled, passed by a
    timeout or by a reminder's newer run, or an incident acknowledged or resolved, ends it."""
    if inc.state != "triggered" or run is None:
        return False
    if run.status == "open":
        return True
    return (inc.reminders is not None and run.status in ("overdue", "timed_out", "reminded")
            and (run.step_index, run.round) == (inc.step_index, inc.round))


@dataclass(frozen=True)
class LevelStory:
    """What became of a link's level, for a page that must not lie: ``what`` is one of
    ``confirmed`` (reported up), ``handled`` (handled here), ``acknowledged``, ``resolved``,
    ``overdue`` (its time ran out and the next level was told), ``seen`` or ``open``;
    ``actor`` (a person or token name, or None for the system) and ``at`` (aware UTC) say who
    and when; ``reason`` the handled reason; ``next_level`` the 1-based level told next."""

    what: str
    actor: str | None = None
    at: datetime | None = None
    reason: str | None = None
    next_level: int | None = None


_ACTED = {"step_confirmed": "confirmed", "step_confirmed_late": "confirmed",
          "handled_here": "handled"}


def level_story(inc: Incident, run: StepRun | None, timeline: Sequence[TimelineEntry]) -> LevelStory:
    """The truthful story of ``run``'s level in ``inc`` from its ``timeline`` (oldest first):
    who decided at that level and when, else how the incident ended, else that the level ran
    out of time and which level was told next, else ``open``."""
    step = run.step_index if run else None
    rnd = run.round if run else None
    for t in timeline:
        d = t.detail or {}
        if t.type in _ACTED and d.get("step") == step and d.get("round", rnd) == rnd \
                and (run is None or t.at >= run.fired_at):
            return LevelStory(_ACTED[t.type], t.actor, t.at, d.get("reason"))
    if inc.state in ("acknowledged", "resolved"):
        at = inc.acknowledged_at if inc.state == "acknowledged" else inc.resolved_at
        actor = inc.acknowledged_by if inc.state == "acknowledged" else inc.resolved_by
        return LevelStory(inc.state, actor, at)
    if run is not None and run.status in ("overdue", "timed_out", "reminded", "done"):
        steps = inc.policy["steps"]
        nxt = next((d["step"] for t in timeline if t.type == "step_fired"
                    for d in [t.detail or {}]
                    if isinstance(d.get("step"), int) and t.at >= run.fired_at
                    and (d.get("round", rnd), d["step"]) > (rnd, step)
                    and level_number(steps, d["step"]) is not None), None)
        return LevelStory("overdue", None, run.closed_at,
                          next_level=level_number(steps, nxt) if nxt is not None else None)
    return LevelStory("open")
