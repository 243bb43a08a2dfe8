"""The API's request and response models (their JSON schemas are the OpenAPI document's) and
the conversions of stored rows into them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from escalator.engine.engine import IngestResult


class ErrorItem(BaseModel):
    """One bad part of a request: ``field`` (e.g. ``severity``, ``[1].summary``) and why."""

    field: str
    message: str


class ErrorOut(BaseModel):
    """A 4xx answer: ``detail`` and, per bad field, ``errors``."""

    detail: str
    errors: list[ErrorItem] = []


class WarningOut(BaseModel):
    """Something accepted but worth a look (:mod:`escalator.engine.screening`): ``code``
    (``occurred_in_future``, ``class_unknown``), the ``field``, a ``message`` in the school's
    language."""

    code: str
    field: str
    message: str


class IngestOut(BaseModel):
    """The intake answer for one event (``status``: see :class:`~escalator.engine.engine.IngestResult`;
    ``warnings``: empty unless something was accepted but is worth a look)."""

    event_id: str
    incident_id: int | None
    status: str
    dedup_key: str
    warnings: list[WarningOut] = []


class ActionOut(BaseModel):
    """What an acknowledge or resolve did (``outcome``: see :class:`~escalator.engine.engine.ActionResult`)."""

    incident_id: int
    outcome: str
    state: str


class DecisionIn(BaseModel):
    """A level's decision (docs/decisions.md): ``report`` (上报上一级) or ``handled``
    (本级已处置，无需上报) with a ``reason`` (required for ``handled``, at most 500 characters)."""

    model_config = ConfigDict(extra="forbid")

    decision: Literal["report", "handled"]
    reason: str | None = Field(default=None, max_length=500)


class NoteIn(BaseModel):
    """A note on an incident: ``text`` (1–2000 characters, school words; shown in the timeline
    and the ledger)."""

    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=2000)


class AssignIn(BaseModel):
    """Assign an incident to ``person_id`` (an id under ``people`` in the config)."""

    model_config = ConfigDict(extra="forbid")
    person_id: str = Field(min_length=1, max_length=100)


class IncidentOut(BaseModel):
    """An incident. ``step``: the 1-based step last fired (0 before the first) of ``steps``."""

    id: int
    state: str
    kind: str
    category: str
    severity: str
    summary: str
    class_id: str | None
    grade: str | None
    place: str | None
    drill: bool
    dedup_key: str
    policy_id: str
    step: int
    steps: int
    round: int
    next_step_at: datetime | None
    event_count: int
    created_at: datetime
    updated_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    deadline_at: datetime | None = None
    """The legal reporting deadline (docs/school-rules.md "Legal deadlines"), or null."""
    deadline_met_at: datetime | None = None
    """When the level the deadline requires was first told (met if ≤ ``deadline_at``)."""
    deadline_rule: str | None = None


class TimelineOut(BaseModel):
    """One timeline entry: when (UTC), what (``type``), who (``actor``), ``detail``."""

    at: datetime
    type: str
    actor: str | None
    detail: dict[str, Any]


class NotificationOut(BaseModel):
    """An outbox row (its acknowledge token is never shown)."""

    id: int
    step_run_id: int | None
    recipient_kind: str
    recipient_id: str
    recipient_name: str
    channel: str
    address: str
    status: str
    attempts: int
    due_at: datetime
    needs_ack: bool
    purpose: str
    last_error: str | None


class ClusterMemberOut(BaseModel):
    """One case of a cluster: its event, that case's own incident, school-local date, time (UTC).
    No pupil id."""

    event_id: str
    incident_id: int | None
    date: str
    occurred_at: datetime


class IncidentDetail(IncidentOut):
    """An incident with its timeline and notifications, oldest first."""

    timeline: list[TimelineOut]
    notifications: list[NotificationOut]
    members: list[ClusterMemberOut] = []
    """A cluster incident's member cases (docs/school-rules.md "Symptom clusters"); else empty."""


class HeartbeatOut(BaseModel):
    """The stored heartbeat event and its intake status (``logged``)."""

    event_id: str
    monitor: str
    status: str


class DeliveryProcessOut(BaseModel):
    """The delivery process (docs/ARCHITECTURE.md "Lanes"): ``pid`` (None while not running),
    its ``node`` name, ``running``, ``restarts`` since the daemon started, ``last_exit`` (the
    last child's exit code; negative: the signal that killed it)."""

    pid: int | None
    node: str
    running: bool
    restarts: int
    last_exit: int | None


class DatabaseHealthOut(BaseModel):
    """The database as ``/healthz`` checked it: ``backend`` (``sqlite`` | ``postgresql``),
    ``reachable``, ``round_trip_ms`` (milliseconds, None when not reached), ``schema_version``
    (migrations applied, None when not reached), ``error`` (why not reached; no password)."""

    backend: str
    reachable: bool
    round_trip_ms: float | None = None
    schema_version: int | None = None
    error: str | None = None


class HealthOut(BaseModel):
    """``status``: ``ok``, or ``unavailable`` with ``failing`` naming each failing part (a stuck
    lane, ``store``, ``database``, ``delivery`` while the delivery process is not running);
    ``database``: its check; ``delivery_process``: the process running the delivery lane,
    when it has one of its own."""

    status: str
    failing: dict[str, str] | None = None
    database: DatabaseHealthOut | None = None
    delivery_process: DeliveryProcessOut | None = None


def incident_out(inc: Any) -> dict[str, Any]:
    """The :class:`IncidentOut` fields of a stored incident (``step`` 1-based)."""
    return {
        "id": inc.id, "state": inc.state, "kind": inc.kind, "category": inc.category,
        "severity": inc.severity, "summary": inc.summary, "class_id": inc.class_id,
        "grade": inc.grade, "place": inc.place, "drill": bool(inc.drill), "dedup_key": inc.dedup_key,
        "policy_id": inc.policy_id, "step": inc.step_index + 1, "steps": len(inc.policy["steps"]),
        "round": inc.round, "next_step_at": inc.next_step_at, "event_count": inc.event_count,
        "created_at": inc.created_at, "updated_at": inc.updated_at,
        "acknowledged_at": inc.acknowledged_at, "acknowledged_by": inc.acknowledged_by,
        "resolved_at": inc.resolved_at, "resolved_by": inc.resolved_by,
        "deadline_at": inc.deadline_at, "deadline_met_at": inc.deadline_met_at,
        "deadline_rule": inc.deadline_rule,
    }


def ingest_out(r: IngestResult) -> dict[str, Any]:
    """The :class:`IngestOut` fields of an intake result."""
    return {"event_id": r.event_id, "incident_id": r.incident_id, "status": r.status,
            "dedup_key": r.dedup_key, "warnings": [dict(w) for w in r.warnings]}
