"""Rendering a notification into a message for one recipient (Simplified Chinese or English).

The render stage calls the ``render_notification`` hook with a :class:`RenderContext`; the
built-in plugin ``escalator_plugins.rendering`` answers with Jinja2 templates (per language,
overridable per channel in config), and a third-party plugin may answer first.

Privacy (PIPL Arts. 28, 31: all personal information of a child under 14 is sensitive): the
template variables (:func:`template_vars`) never carry a pupil's id or name; for a ``group``
audience (chat-group robots) they carry no free-text summary either — only the category,
class/place, the count and the incident number — because a summary written by a teacher may
contain a name.

Guardians (``notification.recipient_kind == "guardian"``) are an audience of their own
(:func:`guardian_vars`): they see only their own child's facts — class, kind, time, symptoms —
what to do and the school's contact, never the summary, details, reporter, counts or anything
that could name or count other pupils, and they get their own templates
(``{zh,en}/guardian_{title,body}.j2``; channel overrides do not apply to them).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from escalator.config.models import Config
from escalator.delivery.reply_codes import hint as reply_hint
from escalator.engine import decisions
from escalator.engine.decisions import level_number
from escalator.engine.targets import Target, resolve
from escalator.labels import (  # noqa: F401 (template values)
    CATEGORY,
    KIND,
    ROLE,
    SEVERITY,
    SYMPTOM,
    level_of,
)
from escalator.store.base import Incident, Notification


@dataclass(frozen=True)
class Rendered:
    """``title`` (one line), ``body`` (several lines), ``ack_hint`` (None when no ack is asked)."""

    title: str
    body: str
    ack_hint: str | None


@dataclass(frozen=True)
class RenderContext:
    """What the render stage knows about one message.

    ``audience``: ``person`` or ``group`` (the channel's); ``occurred_local``: the event time in
    the school's zone, formatted; ``step``: (0-based step index, step name) or None;
    ``templates``: per-channel overrides ``{"title": …, "body": …}`` (Jinja2 source);
    ``event``: the first event's body; ``reply_code``: the reply code, if any.
    """

    incident: Incident
    notification: Notification
    config: Config
    audience: str = "person"
    occurred_local: str | None = None
    step: tuple[int, str | None] | None = None
    templates: dict[str, str] = field(default_factory=dict)
    event: dict[str, Any] = field(default_factory=dict)
    """The incident's first event body (JSON form), for symptoms, count, details, reporter."""
    reply_code: str | None = None
    """The recipient's reply code for this incident (:mod:`escalator.delivery.reply_codes`), or
    None when the message takes no reply by SMS or e-mail."""
    now: datetime | None = None
    """When the message is rendered (aware UTC; None: when its row was written) — a legal
    deadline already passed then is said to be overdue, never near."""

    @property
    def language(self) -> str:
        return self.config.school.language


def ack_url(ctx: RenderContext) -> str | None:
    """The acknowledge link (``{public_base_url}/ack/{token}``), or None without a base URL."""
    base = ctx.config.daemon.public_base_url
    return f"{base.rstrip('/')}/ack/{ctx.notification.ack_token}" if base else None


DETAILS_SHOWN = 200
"""Characters of an event's ``details`` shown to a person (never to a group)."""


def target_label(target: str, config: Config, lang: str) -> str:
    """A step target as a person reads it: 班主任, a role's or unit's or person's name."""
    kind, _, name = target.rpartition(":")
    if name in ROLE[lang]:
        return ROLE[lang][name]
    if kind in ("", "role") and name in config.roles and config.roles[name].name:
        return config.roles[name].name
    if kind in ("", "unit") and (unit := config.unit(name)) is not None:
        return unit.name
    if kind == "person" and (person := config.person(name)) is not None:
        return person.name
    return target


GUARDIAN_ACTION = {
    "zh": {"at_school": "请尽快来校接孩子，并带孩子到医院就诊，就诊后请将诊断结果告知班主任。",
           "at_home": "请让孩子在家观察休息，及时就医，并将就诊结果告知班主任；痊愈后凭复课证明返校。",
           "": "请尽快与学校联系。"},
    "en": {"at_school": "Please come to the school to collect your child as soon as "
                        "possible and take them to a doctor; tell the class teacher the "
                        "diagnosis.",
           "at_home": "Please keep your child at home and watch their health, see a doctor "
                      "promptly and tell the class teacher the diagnosis; bring a recovery "
                      "note when they return.",
           "": "Please contact the school as soon as possible."},
}
"""What a guardian is asked to do, by where the pupil is (:func:`pupil_whereabouts`)."""

HOME_WORDS = ("家", "home")
"""A ``place`` naming one of these means the pupil is at home."""


def pupil_whereabouts(kind: str, event: dict[str, Any]) -> str:
    """Where the pupil of an incident is, from its first event: ``at_home`` for a sickness
    absence (``kind: absence``), ``labels.attendance: absent`` (a register's 缺勤) or a
    ``place`` at home (家中, 在家); ``at_school`` for any other suspected case (a pupil ill at
    school: 晨午检 found them, or a teacher reported them); ``""`` otherwise. Only a pupil at
    school is asked to be collected (请尽快来校接孩子)."""
    labels = event.get("labels") or {}
    place = str(event.get("place") or "").lower()
    if (kind == "absence" or labels.get("attendance") == "absent"
            or any(w in place for w in HOME_WORDS)):
        return "at_home"
    if kind == "suspected_case":
        return "at_school"
    return ""


def guardian_vars(ctx: RenderContext) -> dict[str, Any]:
    """The variables of a guardian's message: the same names as :func:`template_vars` (so a
    cloud SMS mapping still works) but only the child's own facts. No summary, details,
    reporter, affected count, event count, step or acknowledge link; plus ``action`` (what to
    do: ``guardians.message``, else per event kind) and ``contact`` (``guardians.contact``)."""
    inc, lang, ev, config = ctx.incident, ctx.language, ctx.event, ctx.config
    sep = "、" if lang == "zh" else ", "
    g = config.guardians
    actions = GUARDIAN_ACTION[lang]
    return {
        "school": config.school.name,
        "symptoms": sep.join(SYMPTOM[lang].get(s, s.replace("_", " ")) for s in ev.get("symptoms", [])),
        "affected_count": None, "details": None, "reported_by": None, "summary": None,
        "id": inc.id, "drill": inc.drill,
        "severity": SEVERITY[lang].get(inc.severity, inc.severity),
        "severity_level": str(inc.severity),
        "category": CATEGORY[lang].get(inc.category, inc.category),
        "kind": KIND[lang].get(inc.kind, inc.kind),
        "event_kind": inc.kind,
        "class_id": inc.class_id, "grade": inc.grade, "place": None,
        "occurred": ctx.occurred_local, "step": None, "event_count": 1,
        "unresolved_targets": None, "unresolved_help": [], "needs_ack": False, "ack_url": None,
        "decide": False, "reminder": False, "receipt": False, "next_level": None,
        "deadline_overdue": None, "deadline_at_once": False,
        "recipient_name": ctx.notification.recipient_name, "audience": "guardian",
        "action": (g.message if g and g.message
                   else actions[pupil_whereabouts(inc.kind, ev)]),
        "contact": g.contact if g else None,
        "deadline": None, "deadline_escalation": False, "reply_code": None, "reply_hint": None,
    }


def template_vars(ctx: RenderContext) -> dict[str, Any]:
    """The variables a template sees. No pupil id or name; no summary or details for a group
    audience; a guardian's own set (:func:`guardian_vars`). ``deadline``: the legal reporting
    deadline, school-local, or None; ``deadline_escalation``: this message was sent because that
    deadline is near and this level had not been told (``notifications.purpose`` ``deadline``)."""
    if ctx.notification.recipient_kind == "guardian":
        return guardian_vars(ctx)
    inc, n, lang, ev, config = ctx.incident, ctx.notification, ctx.language, ctx.event, ctx.config
    person = ctx.audience == "person"
    steps = inc.policy["steps"]
    mode = steps[ctx.step[0]]["mode"] if ctx.step and ctx.step[0] < len(steps) else None
    sep = "、" if lang == "zh" else ", "
    count = ev.get("affected_count") or ev.get("labels", {}).get("affected_count")
    reporter = ev.get("reported_by")
    if reporter and (who := config.person(reporter)) is not None:
        reporter = who.name
    details = ev.get("details") if person else None
    if details and len(details) > DETAILS_SHOWN:
        details = details[:DETAILS_SHOWN] + "…"
    unresolved = None
    help_lines: list[str] = []
    if n.purpose == "target_unresolved" and n.note:
        targets = [t.strip() for t in n.note.split(",")]
        unresolved = sep.join(target_label(t, config, lang) for t in targets)
        help_lines = unresolved_help(inc, targets, config, lang) if person else []
    return {
        "school": config.school.name,
        "symptoms": sep.join(SYMPTOM[lang].get(s, s.replace("_", " ")) for s in ev.get("symptoms", [])),
        "affected_count": count,
        "details": details,
        "reported_by": reporter if person else None,
        "id": inc.id,
        "drill": inc.drill,
        "severity": SEVERITY[lang].get(inc.severity, inc.severity),
        "severity_level": str(inc.severity),
        "category": CATEGORY[lang].get(inc.category, inc.category),
        "kind": KIND[lang]["cluster"] if ev.get("labels", {}).get("cluster")
        else KIND[lang].get(inc.kind, inc.kind),
        "summary": inc.summary if ctx.audience == "person" else None,
        "class_id": inc.class_id,
        "grade": inc.grade,
        "place": inc.place,
        "occurred": ctx.occurred_local,
        "step": {"number": level_number(steps, ctx.step[0]), "name": ctx.step[1]}
        if ctx.step else None,
        "event_count": inc.event_count,
        "unresolved_targets": unresolved,
        "unresolved_help": help_lines,
        "needs_ack": n.needs_ack,
        # a group (a chat robot) never gets a personal link: whoever opens it would act as
        # the recipient
        "ack_url": ack_url(ctx) if n.needs_ack and person else None,
        "decide": bool(n.needs_ack and mode == "report"),
        "reminder": n.purpose == "reminder",
        "receipt": n.purpose == "receipt",
        "next_level": _next_level(ctx, lang) if n.purpose == "receipt" else None,
        "recipient_name": n.recipient_name,
        "audience": ctx.audience,
        "deadline": _deadline_local(ctx),
        "deadline_overdue": _overdue(ctx, lang),
        "deadline_at_once": bool(inc.deadline_at
                                 and (inc.deadline_at - inc.created_at).total_seconds() < 60),
        "deadline_escalation": n.purpose == "deadline",
        "reply_code": ctx.reply_code if n.needs_ack else None,
        "reply_hint": (reply_hint(ctx.reply_code, lang, decide=mode == "report")
                       if n.needs_ack else None),
    }


def _next_level(ctx: RenderContext, lang: str) -> dict[str, Any] | None:
    """For a receipt to the person who filed the report: the level told next, ``{number,
    names}``, or None."""
    steps = ctx.incident.policy["steps"]
    nxt = decisions.next_waiting(steps, ctx.step[0]) if ctx.step else None
    if nxt is None:
        return None
    sep = "、" if lang == "zh" else ", "
    return {"number": decisions.level_number(steps, nxt),
            "names": sep.join(target_label(t, ctx.config, lang) for t in steps[nxt]["targets"])}


def _overdue(ctx: RenderContext, lang: str) -> str | None:
    """How long ago the legal reporting deadline passed when the message is rendered
    (``6天2小时`` / ``6 d 2 h``; minutes under an hour), or None when it has not."""
    at, now = ctx.incident.deadline_at, ctx.now or ctx.notification.created_at
    if at is None or (now - at).total_seconds() < 60:  # seconds late are not "overdue"
        return None
    minutes = int((now - at).total_seconds() // 60)
    d, h, m = minutes // 1440, minutes % 1440 // 60, minutes % 60
    units = ("天", "小时", "分钟") if lang == "zh" else (" d", " h", " min")
    parts = [f"{v}{u}" for v, u in zip((d, h, m), units, strict=True) if v]
    if d:
        parts = parts[:2] if h else parts[:1]
    return ("" if lang == "zh" else " ").join(parts) or ("1分钟" if lang == "zh" else "1 min")


def unresolved_help(inc: Incident, targets: list[str], config: Config, lang: str) -> list[str]:
    """What the duty officer, told because ``targets`` of ``inc``'s step reached nobody, needs
    to act — and nothing more: why nobody was found (a class the school does not list; no
    class teacher for the class; a pupil whose guardians are not in the roster) and the class
    teacher with the first way to reach them. No pupil data: the class teacher knows the
    pupil. Lines in ``lang``."""
    zh = lang == "zh"
    lines: list[str] = []
    cid = inc.class_id
    if cid and config.school.classes and cid not in config.school.classes:
        lines.append(f"班级 {cid} 不在学校班级名单（school.classes）中，因此找不到班主任；请核实班级。"
                     if zh else f"Class {cid} is not in the school's class list (school.classes), "
                     "so no class teacher could be found; please check the class.")
    teachers = resolve(Target("relative", "class_teacher"), config, class_id=cid,
                       grade=inc.grade, at=inc.created_at) if cid else []
    if "guardian" in targets:
        lines.append("监护人名册中没有该生的监护人联系方式（或无法确定是哪一名学生）。"
                     if zh else "The guardian roster has no contact for this pupil (or the "
                     "incident is not about one pupil).")
    for t in teachers:
        reach = t.contacts[0].to if t.contacts else ("（无联系方式）" if zh else "(no contact)")
        lines.append(f"班主任：{t.name}，联系方式：{reach}" if zh
                     else f"Class teacher: {t.name}, contact: {reach}")
    if cid and not teachers and "class_teacher" not in targets:
        lines.append(f"班级 {cid} 没有配置班主任。" if zh else f"Class {cid} has no class teacher "
                     "in the config.")
    if "guardian" in targets:
        lines.append("请联系班主任，由班主任通知家长。" if zh and teachers else
                     "请联系学校保健室或年级组，尽快通知家长。" if zh else
                     "Please ask the class teacher to reach the parents." if teachers else
                     "Please ask the school clinic or the grade office to reach the parents.")
    return lines


def _deadline_local(ctx: RenderContext) -> str | None:
    """The incident's legal reporting deadline (escalator/deadlines.py), school-local
    ``YYYY-MM-DD HH:MM``, or None."""
    at = ctx.incident.deadline_at
    return at.astimezone(ctx.config.school.tz).strftime("%Y-%m-%d %H:%M") if at else None


_env = SandboxedEnvironment(
    loader=jinja2.PackageLoader("escalator.delivery", "templates"),
    autoescape=False, trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined,
    auto_reload=False,  # packaged templates do not change under a running daemon: no stat per message
)


@functools.lru_cache(maxsize=256)
def _override(source: str) -> jinja2.Template:
    """A channel's override template, compiled once (not for every message)."""
    return _env.from_string(source)


def render_templates(ctx: RenderContext) -> Rendered:
    """Render with the channel's override templates, else the packaged ones for the language.

    Raises ``jinja2.TemplateError`` for a broken override (``check-config`` compiles them).
    """
    values = template_vars(ctx)
    guardian = ctx.notification.recipient_kind == "guardian"
    out = {}
    for part in ("title", "body"):
        source = None if guardian else ctx.templates.get(part)
        name = f"{ctx.language}/guardian_{part}.j2" if guardian else f"{ctx.language}/{part}.j2"
        tpl = _override(source) if source else _env.get_template(name)
        out[part] = tpl.render(values).strip()
    hint = None
    if ctx.notification.needs_ack and not guardian:
        url = values["ack_url"]
        hint = url or f"escalator ack {ctx.incident.id}"
        tail = f"{hint}\n{values['reply_hint']}" if values.get("reply_hint") else None
        if tail and out["body"].endswith(tail):  # the link, then the reply line: keep both whole
            hint = tail
    return Rendered(out["title"].splitlines()[0] if out["title"] else "", out["body"], hint)


def compile_template(source: str) -> None:
    """Raise ``jinja2.TemplateSyntaxError`` if ``source`` is not a valid template."""
    _env.from_string(source)
