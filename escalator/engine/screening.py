"""Screening an event on intake: what is accepted but worth a warning (docs/classes.md).

An event that passed validation is never refused here; :func:`screen` returns it as the engine
must use it, with the warnings the intake answer (HTTP ``warnings``) and the incident's timeline
(``input_warning``) carry:

- ``occurred_in_future``: ``occurred_at`` more than ``intake.future_skew`` seconds (default 600)
  after the time received — a device clock set wrong, a date typed a day ahead. Whatever the
  skew, a time after the time received is replaced by the time received, so timers (legal
  deadlines), the day a case counts for (clusters, dedup keys, the ledger) and the zero report
  never count from the future; the time as written is kept in ``labels.occurred_at_as_sent``.
- ``class_unknown``: a ``class_id`` not in ``school.classes`` (when the school lists its
  classes). The event is taken as written — a case is never lost over a class list — but no
  class teacher can be found for it; the duty officer, told instead, is told why
  (:mod:`escalator.delivery.render`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from escalator.config.models import Config
from escalator.events import Event

AS_SENT_LABEL = "occurred_at_as_sent"
"""The label keeping a future ``occurred_at`` as it was written."""


@dataclass(frozen=True)
class InputWarning:
    """One warning: ``code`` (``occurred_in_future``, ``class_unknown``), the ``field`` it is
    about, and ``message`` in the school's language."""

    code: str
    field: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "field": self.field, "message": self.message}


def screen(ev: Event, config: Config, received_at: datetime) -> tuple[Event, list[InputWarning]]:
    """``ev`` (normalised: ``occurred_at`` aware UTC) as the engine must use it, and its
    warnings. ``received_at``: aware UTC. Never raises for a valid event."""
    zh = config.school.language == "zh"
    warnings: list[InputWarning] = []
    occurred = ev.occurred_at
    if occurred is not None and occurred > received_at:
        ahead = (occurred - received_at).total_seconds()
        labels = dict(ev.labels)
        labels.setdefault(AS_SENT_LABEL, occurred.isoformat())
        ev = ev.model_copy(update={"occurred_at": received_at, "labels": labels})
        if ahead > config.intake.future_skew:
            local = occurred.astimezone(config.school.tz)
            shown = f"{local:%Y-%m-%d %H:%M}"
            ahead_text = _duration(ahead, zh)
            warnings.append(InputWarning(
                "occurred_in_future", "occurred_at",
                f"发生时间 {shown} 晚于接收时间 {ahead_text}（设备时钟或日期有误？），已按接收时间记录"
                if zh else
                f"occurred_at {shown} is {ahead_text} after the time received (a clock or date "
                "set wrong?); the time received is used"))
    classes = config.school.classes
    if ev.class_id is not None and classes and ev.class_id not in classes:
        warnings.append(InputWarning(
            "class_unknown", "class_id",
            f"班级 {ev.class_id} 不在学校班级名单（school.classes）中，找不到班主任，已转告值班人员"
            if zh else
            f"class {ev.class_id} is not in school.classes: no class teacher can be found; the "
            "duty officer is told instead"))
    return ev, warnings


def _duration(seconds: float, zh: bool) -> str:
    d = timedelta(seconds=round(seconds))
    days, rest = d.days, d.seconds
    hours, minutes = rest // 3600, rest % 3600 // 60
    if zh:
        return (f"{days}天" if days else "") + (f"{hours}小时" if hours else "") + (
            f"{minutes}分钟" if minutes or not (days or hours) else "")
    parts = [f"{days} d" if days else "", f"{hours} h" if hours else "",
             f"{minutes} min" if minutes or not (days or hours) else ""]
    return " ".join(p for p in parts if p)
