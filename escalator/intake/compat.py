"""Compat intake: PagerDuty Events API v2 and Prometheus Alertmanager webhook (version 4)
bodies → escalator events, so existing tools point at escalator unchanged.

The pydantic models here validate the foreign shapes; :func:`pd_event` and :func:`am_event` map
them to raw escalator events (then validated by :mod:`escalator.intake.parsing`). The mappings
(severity, category, dedup key, labels) are documented in ``docs/compat.md``; the HTTP
endpoints that use them are in :mod:`escalator.web.routers.compat`.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from escalator.classes import normalise_class, normalise_grade
from escalator.events import DETAILS_MAX, SUMMARY_MAX, Category

LABELS_MAX = 50
LABEL_KEY_MAX = 100
LABEL_VALUE_MAX = 500
# PagerDuty severity → ours (docs/compat.md)
PD_SEVERITY = {"critical": "critical", "error": "high", "warning": "medium", "info": "info"}
# Alertmanager ``labels.severity`` → ours; anything else (or none) is ``medium`` (docs/compat.md)
AM_SEVERITY = {"critical": "critical", "warning": "high", "info": "info", "none": "medium",
               "high": "high", "medium": "medium", "low": "low"}
CATEGORIES = {c.value for c in Category}


class PdPayload(BaseModel):
    """PagerDuty Common Event Format payload (Events API v2)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    summary: str = Field(min_length=1, max_length=1024)
    source: str = Field(min_length=1, max_length=1024)
    severity: Literal["critical", "error", "warning", "info"]
    timestamp: datetime | None = None
    component: str | None = Field(default=None, max_length=1024)
    group: str | None = Field(default=None, max_length=1024)
    class_: str | None = Field(default=None, alias="class", max_length=1024)
    custom_details: Any = None


class PdEvent(BaseModel):
    """A PagerDuty Events API v2 alert event (``POST /v2/enqueue``)."""

    model_config = ConfigDict(extra="allow")
    routing_key: str = Field(min_length=1, max_length=255)
    event_action: Literal["trigger", "acknowledge", "resolve"]
    dedup_key: str | None = Field(default=None, max_length=255)
    payload: PdPayload | None = None
    client: str | None = None
    client_url: str | None = None


class PdOut(BaseModel):
    """PagerDuty's success answer: ``success`` / ``Event processed`` / the dedup key."""

    status: str
    message: str
    dedup_key: str | None = None


class PdErrorOut(BaseModel):
    """PagerDuty's error answer: ``invalid event`` / ``Event object is invalid`` / ``errors``."""

    status: str
    message: str
    errors: list[str]


class AmAlert(BaseModel):
    """One alert of an Alertmanager webhook (version 4)."""

    model_config = ConfigDict(extra="allow")
    status: Literal["firing", "resolved"]
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    startsAt: datetime | None = None  # noqa: N815 (Alertmanager's spelling)
    endsAt: datetime | None = None  # noqa: N815
    generatorURL: str | None = None  # noqa: N815
    fingerprint: str | None = Field(default=None, min_length=1, max_length=200)


class AmWebhook(BaseModel):
    """The Alertmanager webhook body (version 4)."""

    model_config = ConfigDict(extra="allow")
    version: str | None = None
    status: str | None = None
    receiver: str | None = None
    alerts: list[AmAlert] = Field(max_length=1000)


class AmResult(BaseModel):
    """The intake answer for one Alertmanager alert (``warnings``: as for ``POST
    /api/v1/events``, docs/classes.md)."""

    fingerprint: str
    event_id: str
    incident_id: int | None
    status: str
    dedup_key: str
    warnings: list[dict[str, str]] = []


class AmOut(BaseModel):
    """One result per alert, in the order of the webhook's ``alerts``."""

    results: list[AmResult]


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except (ValueError, TypeError, RecursionError):
        return "(unrepresentable)"


def _labels(*sources: dict[str, Any]) -> dict[str, str]:
    """Merge label mappings (later ones win) into at most :data:`LABELS_MAX` string labels,
    keys cut to 100 and values to 500 characters."""
    out: dict[str, str] = {}
    for mapping in sources:
        for k, v in mapping.items():
            if v is None:
                continue
            key = str(k)[:LABEL_KEY_MAX]
            if key not in out and len(out) >= LABELS_MAX:
                continue
            out[key] = _text(v)[:LABEL_VALUE_MAX]
    return out


def _summary(text: str) -> str:
    """Cut to :data:`~escalator.events.SUMMARY_MAX` characters, marking the cut with ``…``."""
    text = text.strip()
    return text if len(text) <= SUMMARY_MAX else text[: SUMMARY_MAX - 1] + "…"


def _pd_dedup_key(integration: str, key: str) -> str:
    full = f"pagerduty/{integration}/{key}"
    if len(full) <= 255:
        return full
    return f"pagerduty/{integration}/sha256:{hashlib.sha256(key.encode()).hexdigest()}"


def pd_event(pd: PdEvent, integration: str) -> tuple[dict[str, Any], str]:
    """A PagerDuty event → ``(raw escalator event, the dedup_key to answer)``. A trigger without
    ``dedup_key`` gets a new one (as PagerDuty does). Raises ``ValueError`` with PagerDuty-style
    messages when a required part is missing."""
    key = pd.dedup_key or (uuid.uuid4().hex if pd.event_action == "trigger" else None)
    if not key:
        raise ValueError("'dedup_key' is missing or blank (required for acknowledge and resolve)")
    raw: dict[str, Any] = {"kind": "incident", "action": pd.event_action,
                           "dedup_key": _pd_dedup_key(integration, key)}
    if pd.event_action != "trigger":
        raw.update(category="other", summary=_summary(f"PagerDuty {pd.event_action}: {key}"))
        return raw, key
    p = pd.payload
    if p is None:
        raise ValueError("'payload' is missing (required for trigger)")
    details = p.custom_details if isinstance(p.custom_details, dict) else {}
    category = details.get("category")
    raw.update(
        category=category if isinstance(category, str) and category in CATEGORIES else "other",
        severity=PD_SEVERITY[p.severity],
        summary=_summary(p.summary),
        labels=_labels(details, {"source": p.source, "component": p.component,
                                 "group": p.group, "class": p.class_}),
    )
    raw.update(_school_place(details))
    if p.custom_details is not None:
        raw["details"] = _text(p.custom_details)[:DETAILS_MAX]
    if p.timestamp is not None:
        raw["occurred_at"] = p.timestamp.isoformat()
    return raw, key


CLASS_KEYS = ("class_id", "班级")
GRADE_KEYS = ("grade", "年级")


def _school_place(values: dict[str, Any]) -> dict[str, str]:
    """``class_id`` / ``grade`` from a label or custom detail named ``class_id`` or ``班级``
    (``grade`` or ``年级``), read by the one class rule (:mod:`escalator.classes`); a value it
    cannot read stays a label only (an alert is never refused over it)."""
    out: dict[str, str] = {}
    for keys, field, read in ((CLASS_KEYS, "class_id", normalise_class),
                              (GRADE_KEYS, "grade", normalise_grade)):
        for k in keys:
            v = values.get(k)
            if isinstance(v, str | int) and not isinstance(v, bool) and str(v).strip():
                try:
                    out[field] = read(str(v))
                    break
                except ValueError:
                    continue
    return out


def am_fingerprint(alert: AmAlert) -> str:
    """The alert's ``fingerprint``, or (missing) the first 16 hex of sha256 of its sorted labels."""
    if alert.fingerprint:
        return alert.fingerprint
    canon = json.dumps(sorted(alert.labels.items()), ensure_ascii=False)
    return hashlib.sha256(canon.encode()).hexdigest()[:16]


def am_event(alert: AmAlert) -> dict[str, Any]:
    """One Alertmanager alert → a raw escalator event (see docs/compat.md for the mapping)."""
    labels = alert.labels
    summary = _summary(alert.annotations.get("summary", "")) or _summary(
        labels.get("alertname", "")) or "Alertmanager alert"
    category = labels.get("category")
    raw: dict[str, Any] = {
        "kind": "incident",
        "category": category if category in CATEGORIES else "other",
        "severity": AM_SEVERITY.get(labels.get("severity", "none"), "medium"),
        "summary": summary,
        "action": "resolve" if alert.status == "resolved" else "trigger",
        "dedup_key": f"alertmanager/{am_fingerprint(alert)}"[:255],
        "labels": _labels(labels),
    }
    raw.update(_school_place(labels))
    if alert.annotations.get("description"):
        raw["details"] = alert.annotations["description"][:DETAILS_MAX]
    if alert.startsAt is not None and alert.startsAt.year > 1970:
        raw["occurred_at"] = alert.startsAt.isoformat()
    return raw
