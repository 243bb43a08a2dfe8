"""Rendering a notification into a message for one recipient (Simplified Chinese or English).

Privacy (PIPL Arts. 28, 31: all personal information of a child under 14 is sensitive): a
message never carries a pupil's id; a ``group`` audience (chat-group robots) gets no free-text
summary either — only the category, class/place, the count and the incident number — because
a summary written by a teacher may contain a name.
"""

from __future__ import annotations

from dataclasses import dataclass

from escalator.config.models import Config
from escalator.store.base import Incident, Notification

CATEGORY = {
    "zh": {
        "fire": "火警", "traffic": "交通安全", "food_safety": "食品安全", "building": "校舍安全",
        "public_security": "治安安全", "infectious_disease": "传染病", "bullying": "学生欺凌",
        "mental_health": "心理健康", "accident": "意外伤害", "other": "其他",
    },
    "en": {
        "fire": "fire", "traffic": "traffic", "food_safety": "food safety", "building": "building",
        "public_security": "public security", "infectious_disease": "infectious disease",
        "bullying": "bullying", "mental_health": "mental health", "accident": "accident",
        "other": "other",
    },
}
SEVERITY = {
    "zh": {"critical": "特急", "high": "紧急", "medium": "一般", "low": "较低", "info": "通知"},
    "en": {"critical": "CRITICAL", "high": "HIGH", "medium": "MEDIUM", "low": "LOW", "info": "INFO"},
}
KIND = {
    "zh": {"incident": "突发事件", "suspected_case": "疑似病例", "absence": "因病缺勤",
           "heartbeat": "报告"},
    "en": {"incident": "incident", "suspected_case": "suspected case", "absence": "sickness absence",
           "heartbeat": "report"},
}
TEXT = {
    "zh": {
        "drill": "【演练】", "incident": "事件", "where": "地点", "class": "班级", "time": "发生时间",
        "count": "相关事件数", "ask_ack": "请立即核实处置，并确认", "ask_inform": "抄送知悉，无需确认",
        "ack_cli": "确认命令：escalator ack {id}", "ack_link": "确认链接：{url}",
        "unresolved": "注意：升级步骤中有对象未能找到接收人（{targets}），请值班人员代为处置。",
        "level": "第{n}级", "step": "环节",
    },
    "en": {
        "drill": "[DRILL] ", "incident": "Incident", "where": "Place", "class": "Class",
        "time": "Occurred", "count": "Related events", "ask_ack": "Please check and act, then acknowledge",
        "ask_inform": "For your information; no acknowledgement needed",
        "ack_cli": "To acknowledge: escalator ack {id}", "ack_link": "Acknowledge: {url}",
        "unresolved": "Note: a step target could not be resolved ({targets}); duty officer, please act.",
        "level": "level {n}", "step": "Step",
    },
}


@dataclass(frozen=True)
class Rendered:
    """``title`` (one line), ``body`` (several lines), ``ack_hint`` (None when no ack is asked)."""

    title: str
    body: str
    ack_hint: str | None


def render(inc: Incident, n: Notification, config: Config, *, audience: str = "person",
           occurred_local: str | None = None, step: tuple[int, str | None] | None = None) -> Rendered:
    """Render notification ``n`` of incident ``inc`` for a ``person`` or ``group`` audience.

    ``occurred_local``: the event time already formatted in the school's zone; ``step``: the
    0-based step index and its name, shown as the level being told. Language from
    ``config.school.language`` (``zh`` default, ``en``).
    """
    lang = config.school.language
    t = TEXT[lang]
    category = CATEGORY[lang].get(inc.category, inc.category)
    prefix = t["drill"] if inc.drill else ""
    title = f"{prefix}【{SEVERITY[lang][inc.severity]}】{category}{KIND[lang][inc.kind]} #{inc.id}"
    if lang == "en":
        title = f"{prefix}[{SEVERITY[lang][inc.severity]}] {category} {KIND[lang][inc.kind]} #{inc.id}"
    lines = [f"{t['incident']} #{inc.id}: " + (inc.summary if audience == "person" else category)]
    if inc.class_id:
        lines.append(f"{t['class']}: {inc.class_id}")
    if inc.place:
        lines.append(f"{t['where']}: {inc.place}")
    if occurred_local:
        lines.append(f"{t['time']}: {occurred_local}")
    if step is not None:
        label = t["level"].format(n=step[0] + 1) + (f" {step[1]}" if step[1] else "")
        lines.append(f"{t['step']}: {label}")
    if inc.event_count > 1:
        lines.append(f"{t['count']}: {inc.event_count}")
    if n.purpose == "target_unresolved":
        lines.append(t["unresolved"].format(targets=n.note or "?"))
    ack_hint = None
    if n.needs_ack:
        base = config.daemon.public_base_url
        ack_hint = (t["ack_link"].format(url=f"{base.rstrip('/')}/ack/{n.ack_token}") if base
                    else t["ack_cli"].format(id=inc.id))
        lines.append(f"{t['ask_ack']}。" if lang == "zh" else f"{t['ask_ack']}.")
        lines.append(ack_hint)
    else:
        lines.append(t["ask_inform"])
    if lang == "zh":
        lines = [line.replace(": ", "：", 1) for line in lines]
    return Rendered(title, "\n".join(lines), ack_hint)
