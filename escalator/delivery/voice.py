"""Shared by the voice-call channels (``aliyun_voice``, ``tencent_voice``; docs/replies.md
"Voice calls"): which messages call.

A call wakes someone: only an incident whose severity is in ``severities`` (default
``[critical]``) calls, and, with ``hours`` (``{start: "21:00", end: "07:00"}``, local in
``timezone``), only in those hours. Any other message is refused at once (a permanent failure,
detail ``voice: not …``), so the delivery stage fails over to the recipient's next contact
method — their SMS, which also carries the reply code.

This module registers nothing; it is not a plugin.
"""

from __future__ import annotations

from datetime import datetime, time
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator

from escalator.delivery.channels import Message

SEVERITIES = frozenset({"critical", "high", "medium", "low", "info"})


class Hours(BaseModel):
    """A daily window, local time: ``start`` to ``end`` (crossing midnight when end ≤ start)."""

    model_config = ConfigDict(extra="forbid")
    start: time
    end: time

    def contains(self, t: time) -> bool:
        if self.start < self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end


class VoiceFilter(BaseModel):
    """The options of a voice channel that choose which messages call (see the module)."""

    severities: list[str] = Field(default_factory=lambda: ["critical"], min_length=1)
    hours: Hours | None = None
    timezone: str = "Asia/Shanghai"

    @field_validator("severities")
    @classmethod
    def known_severities(cls, value: list[str]) -> list[str]:
        if unknown := [v for v in value if v not in SEVERITIES]:
            raise ValueError(f"unknown severities {unknown} (known: {', '.join(sorted(SEVERITIES))})")
        return value

    @field_validator("timezone")
    @classmethod
    def known_zone(cls, value: str) -> str:
        ZoneInfo(value)  # raises for an unknown zone
        return value


def refusal(options: VoiceFilter, message: Message, now: datetime) -> str | None:
    """Why ``message`` does not call at ``now`` (aware), or None if it does. The incident's
    severity is the render stage's ``severity_level`` value."""
    severity = (message.values or {}).get("severity_level")
    if severity not in options.severities:
        return f"voice: not for severity {severity or 'unknown'} (only {', '.join(options.severities)})"
    if options.hours is not None:
        local = now.astimezone(ZoneInfo(options.timezone)).time()
        if not options.hours.contains(local):
            return (f"voice: not at {local:%H:%M} (only {options.hours.start:%H:%M}–"
                    f"{options.hours.end:%H:%M})")
    return None
