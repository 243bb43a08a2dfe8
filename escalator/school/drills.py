"""Drills (应急演练): who a drill may reach, and the drill report.

An event with ``drill: true`` opens an incident marked ``drill`` (``incidents.drill``, the
``triggered`` timeline entry, ``escalator incidents``, the API) and walks its chain as usual;
every message says 【演练】/[DRILL] (the templates). External units are left out unless the
config names them for drills (``units[].drills: true``), and guardians unless
``guardians.drills: true``: the engine logs ``drill_unit_skipped`` / ``drill_guardian_skipped``
and goes on as for an unresolved target, without telling the duty officer (:class:`DrillRule`,
a rule's ``keep_out``: :mod:`escalator.engine.rules`).

:func:`drill_report` reads the ledger of one drill: per level (step and round) when it fired,
the first acknowledgement or confirmation and the seconds between; and who never answered —
recipients of messages that asked for an acknowledgement (sent, not cancelled unsent) with no
acknowledgement, confirmation or "seen" under their own id (a reply by link carries the
recipient's id; one from the CLI or the API carries the OS user or the token name).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from escalator.config.models import Config
from escalator.engine.rules import EngineOps, Rule, Skip
from escalator.engine.targets import Recipient
from escalator.labels import STATE, level_of
from escalator.store.base import Incident, Store

ANSWERS = ("acknowledged", "step_confirmed", "step_confirmed_late", "seen")
"""Timeline entry types that answer a level."""


def drill_excluded(recipient: Recipient, config: Config) -> bool:
    """Whether a drill must not reach ``recipient``:
    a unit without ``drills: true``, or a guardian unless ``guardians.drills`` is true."""
    if recipient.kind == "unit":
        unit = config.unit(recipient.id)
        return unit is None or not unit.drills
    if recipient.kind == "guardian":
        return config.guardians is None or not config.guardians.drills
    return False


class DrillRule(Rule):
    """Drills as a rule: a drill's steps leave out the recipients :func:`drill_excluded` names
    (timeline ``drill_unit_skipped`` with the unit's name, ``drill_guardian_skipped``)."""

    name = "drills"

    def keep_out(self, ops: EngineOps, incident: Incident, recipient: Recipient) -> Skip | None:
        if not incident.drill or not drill_excluded(recipient, ops.config):
            return None
        return Skip(f"drill_{recipient.kind}_skipped",
                    {"name": recipient.name} if recipient.kind == "unit" else {})


class NotADrill(ValueError):
    """The incident exists but is not a drill."""


@dataclass
class Level:
    """One firing of a step in the drill: ``step`` (0-based), ``round``, ``name``, ``mode``,
    ``fired_at``; the first answer (``answered_at``, ``answered_by``, ``answer``: the timeline
    type) or None; ``seconds`` between them; ``asked``: whether anyone at this level was asked to
    acknowledge (False for ``inform`` and for a level whose targets were all left out);
    ``number``: the level number people read."""

    step: int
    round: int
    name: str | None
    mode: str
    fired_at: datetime
    answered_at: datetime | None = None
    answered_by: str | None = None
    answer: str | None = None
    asked: bool = False
    number: int = 0
    """The level number people read (:func:`escalator.labels.level_of`; a copy shares it)."""

    @property
    def seconds(self) -> float | None:
        if self.answered_at is None:
            return None
        return (self.answered_at - self.fired_at).total_seconds()


@dataclass
class Silent:
    """A recipient who never answered: id, name, kind, the first level (1-based) that asked,
    and the status of their last message (``delivered``, ``failed``, ``pending``, …)."""

    recipient_id: str
    name: str
    kind: str
    level: int | None
    status: str


@dataclass
class DrillReport:
    incident_id: int
    summary: str
    category: str
    kind: str
    state: str
    created_at: datetime
    levels: list[Level] = field(default_factory=list)
    never_answered: list[Silent] = field(default_factory=list)


def drill_report(store: Store, incident_id: int) -> DrillReport:
    """The report of drill ``incident_id``. Raises :class:`escalator.engine.engine.NotFound` for an
    unknown id and :class:`NotADrill` for an incident that is not a drill."""
    from escalator.engine.engine import NotFound

    with store.transaction() as tx:
        inc = tx.get_incident(incident_id)
        if inc is None:
            raise NotFound(f"no incident {incident_id}")
        if not inc.drill:
            raise NotADrill(f"incident #{incident_id} is not a drill (drill: true)")
        timeline = tx.timeline(incident_id)
        notes = tx.notifications_of(incident_id)
        runs = {n.step_run_id: tx.get_step_run(n.step_run_id) for n in notes if n.step_run_id}
    report = DrillReport(inc.id, inc.summary, inc.category, inc.kind, inc.state, inc.created_at)
    asked = {(r.step_index, r.round) for n in notes if n.needs_ack and n.step_run_id
             and (r := runs.get(n.step_run_id)) is not None}
    answered: set[str] = set()
    for t in timeline:
        d = t.detail
        if t.type == "step_fired":
            step, rnd = d["step"], d.get("round", 0)
            report.levels.append(Level(step, rnd, d.get("name"), d.get("mode", ""), t.at,
                                       asked=(step, rnd) in asked,
                                       number=level_of(inc.policy["steps"], step)))
            continue
        if t.type not in ANSWERS:
            continue
        if t.actor:
            answered.add(t.actor)
        level = _level_answered(report.levels, t.type, d)
        if level is not None and level.answered_at is None:
            level.answered_at, level.answered_by, level.answer = t.at, t.actor, t.type
    silent: dict[tuple[str, str], Silent] = {}
    for n in notes:
        if not n.needs_ack or n.recipient_id in answered:
            continue
        if n.status == "cancelled" and n.attempts == 0:
            continue  # never sent: the recipient was not asked
        run = runs.get(n.step_run_id)
        level = level_of(inc.policy["steps"], run.step_index) if run else None
        key = (n.recipient_kind, n.recipient_id)
        if key in silent:
            silent[key].status = n.status
        else:
            silent[key] = Silent(n.recipient_id, n.recipient_name, n.recipient_kind, level,
                                 n.status)
    report.never_answered = list(silent.values())
    return report


def _level_answered(levels: list[Level], type_: str, detail: dict[str, Any]) -> Level | None:
    """The level an answer belongs to: by step and round when the entry names them, else the
    level fired last (an acknowledgement of the incident answers the current step)."""
    if "step" in detail:
        for level in reversed(levels):
            if level.step == detail["step"] and ("round" not in detail
                                                 or level.round == detail["round"]):
                return level
    if type_ != "acknowledged":
        return None
    # the incident's acknowledgement answers the step it waits on: the last one fired that
    # asks for one (an ``inform`` step fires and the walk goes straight on)
    return next((lv for lv in reversed(levels) if lv.asked), None)


TEXT = {
    "zh": {
        "title": "应急演练报告 事件 #{id}：{summary}",
        "state": "状态：{state}　开始：{start}",
        "headers": ["环节", "名称", "方式", "通知时间", "首次确认", "确认人", "用时（秒）"],
        "level": "第{n}级", "round": "（第{r}轮）",
        "none": "未确认", "inform": "抄送，无需确认", "nobody": "无人需确认",
        "silent": "未应答（{n}）：", "silent_none": "未应答：无",
        "silent_line": "  {name}（{who}，第{level}级，消息状态：{status}）",
        "states": STATE["zh"],
    },
    "en": {
        "title": "Drill report, incident #{id}: {summary}",
        "state": "State: {state}  started: {start}",
        "headers": ["level", "name", "mode", "fired", "first answer", "by", "seconds"],
        "level": "{n}", "round": " (round {r})",
        "none": "no answer", "inform": "inform: none asked", "nobody": "nobody asked",
        "silent": "Never answered ({n}):", "silent_none": "Never answered: nobody",
        "silent_line": "  {name} ({who}, level {level}, last message: {status})",
        "states": STATE["en"],
    },
}


def report_rows(report: DrillReport, config: Config, lang: str) -> list[list[str]]:
    """The per-level table rows (headers: ``TEXT[lang]["headers"]``)."""
    t, tz = TEXT[lang], config.school.tz

    def local(dt: datetime | None) -> str:
        return dt.astimezone(tz).strftime("%m-%d %H:%M:%S") if dt else "-"

    rows = []
    for lv in report.levels:
        label = t["level"].format(n=lv.number or lv.step + 1) + (t["round"].format(r=lv.round + 1)
                                                      if lv.round else "")
        secs = lv.seconds
        rows.append([label, lv.name or "", lv.mode, local(lv.fired_at),
                     local(lv.answered_at) if lv.answered_at
                     else t["inform"] if lv.mode == "inform"
                     else t["none"] if lv.asked else t["nobody"],
                     lv.answered_by or "", f"{secs:g}" if secs is not None else "-"])
    return rows


def format_header(report: DrillReport, config: Config, lang: str) -> list[str]:
    t = TEXT[lang]
    start = report.created_at.astimezone(config.school.tz).strftime("%Y-%m-%d %H:%M:%S")
    return [t["title"].format(id=report.incident_id, summary=report.summary),
            t["state"].format(state=t["states"].get(report.state, report.state), start=start)]


def format_silent(report: DrillReport, lang: str) -> list[str]:
    t = TEXT[lang]
    if not report.never_answered:
        return [t["silent_none"]]
    return [t["silent"].format(n=len(report.never_answered))] + [
        t["silent_line"].format(name=s.name, who=s.recipient_id, level=s.level or "-",
                                status=s.status)
        for s in report.never_answered]
