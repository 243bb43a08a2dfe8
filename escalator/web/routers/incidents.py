"""Incidents for administrators: list, detail, acknowledge, decide, resolve."""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query

from escalator.engine.decisions import DecisionError
from escalator.engine.engine import InvalidAction, NotFound
from escalator.school import clusters
from escalator.web.auth import ADMIN_ERRORS, Admin
from escalator.web.deps import CurrentDaemon, in_store, wake
from escalator.web.errors import ApiError
from escalator.web.models import (
    ActionOut,
    AssignIn,
    DecisionIn,
    ErrorOut,
    IncidentDetail,
    IncidentOut,
    NoteIn,
    NotificationOut,
    incident_out,
)

router = APIRouter(tags=["incidents"])

IncidentId = Annotated[int, Path(ge=1, le=2**62, description="incident number")]

_NOT_FOUND = {**ADMIN_ERRORS, 404: {"model": ErrorOut, "description": "no such incident"}}


@router.get("/api/v1/incidents", response_model=list[IncidentOut], responses=ADMIN_ERRORS)
async def list_incidents(
    who: Admin,
    daemon: CurrentDaemon,
    state_: Annotated[Literal["open", "triggered", "acknowledged", "resolved", "all"],
                      Query(alias="state")] = "open",
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> Any:
    """Incidents, newest first. ``state``: ``open`` (triggered or acknowledged, default),
    one state, or ``all``."""
    states = {"open": ("triggered", "acknowledged"),
              "all": ("triggered", "acknowledged", "resolved")}.get(state_, (state_,))

    def read() -> list[dict[str, Any]]:
        with daemon.store.transaction() as tx:
            return [incident_out(i) for i in tx.list_incidents(states, limit)]

    return await in_store(daemon, read)


@router.get("/api/v1/incidents/{incident_id}", response_model=IncidentDetail, responses=_NOT_FOUND)
async def get_incident(incident_id: IncidentId, who: Admin, daemon: CurrentDaemon) -> Any:
    """One incident with its timeline (every transition) and its notifications."""
    return await in_store(daemon, _detail, daemon, incident_id)


def _detail(daemon: Any, incident_id: int) -> dict[str, Any]:
    with daemon.store.transaction() as tx:
        inc = tx.get_incident(incident_id)
        if inc is None:
            raise ApiError(404, f"no incident {incident_id}")
        out = incident_out(inc)
        out["timeline"] = [{"at": t.at, "type": t.type, "actor": t.actor, "detail": t.detail}
                           for t in tx.timeline(incident_id)]
        out["notifications"] = [
            {k: getattr(n, k) for k in NotificationOut.model_fields}
            for n in tx.notifications_of(incident_id)]
        out["members"] = clusters.member_rows(tx, incident_id)
    return out


@router.post("/api/v1/incidents/{incident_id}/acknowledge", response_model=ActionOut,
             operation_id="acknowledge_incident", summary="Acknowledge incident",
             responses=_NOT_FOUND)
async def acknowledge_incident(incident_id: IncidentId, who: Admin,
                               daemon: CurrentDaemon) -> ActionOut:
    """Acknowledge the incident's current step with its mode's meaning (docs/engine.md); the actor is the token's name."""
    return await _act(daemon, daemon.engine.acknowledge, incident_id, who.name)


@router.post("/api/v1/incidents/{incident_id}/decision", response_model=ActionOut,
             operation_id="decide_incident", summary="Decide at the current level",
             responses={**_NOT_FOUND, 422: {"model": ErrorOut, "description": "bad decision"}})
async def decide_incident(incident_id: IncidentId, body: DecisionIn, who: Admin,
                          daemon: CurrentDaemon) -> ActionOut:
    """The current level's decision (docs/decisions.md): ``report`` (上报上一级: the next level
    is told at once) or ``handled`` (本级已处置，无需上报: needs ``reason``; the incident is
    resolved). The actor is the token's name. 422 names the field at fault."""
    try:
        return await _act(daemon, functools.partial(daemon.engine.decide, decision=body.decision,
                                                    reason=body.reason), incident_id, who.name)
    except DecisionError as e:
        raise ApiError(422, str(e), [{"field": e.field, "message": str(e)}]) from None


@router.post("/api/v1/incidents/{incident_id}/resolve", response_model=ActionOut,
             operation_id="resolve_incident", summary="Resolve incident", responses=_NOT_FOUND)
async def resolve_incident(incident_id: IncidentId, who: Admin, daemon: CurrentDaemon) -> ActionOut:
    """Resolve the incident: stop its walk and cancel every pending send."""
    return await _act(daemon, daemon.engine.resolve, incident_id, who.name)


_REFUSED = {**_NOT_FOUND, 422: {"model": ErrorOut, "description": "invalid body; errors name the field"}}


@router.post("/api/v1/incidents/{incident_id}/notes", response_model=ActionOut,
             operation_id="add_note", summary="Add a note", responses=_REFUSED)
async def add_note(incident_id: IncidentId, body: NoteIn, who: Admin,
                   daemon: CurrentDaemon) -> ActionOut:
    """Write a note to the incident's timeline (and the ledger); changes nothing else."""
    return await _act(daemon, daemon.engine.add_note, incident_id, who.name, text=body.text)


@router.post("/api/v1/incidents/{incident_id}/assign", response_model=ActionOut,
             operation_id="assign_incident", summary="Assign incident", responses=_REFUSED)
async def assign_incident(incident_id: IncidentId, body: AssignIn, who: Admin,
                          daemon: CurrentDaemon) -> ActionOut:
    """Assign the incident to a person of the config (timeline and ledger); tells nobody.
    422 naming ``person_id`` for someone not in the config."""
    return await _act(daemon, daemon.engine.assign, incident_id, who.name,
                      person_id=body.person_id)


async def _act(daemon: Any, action: Any, incident_id: int, actor: str, **kwargs: Any) -> ActionOut:
    try:
        r = await in_store(daemon, action, incident_id, actor=actor, via="api", **kwargs)
    except NotFound:
        raise ApiError(404, f"no incident {incident_id}") from None
    except InvalidAction as e:
        raise ApiError(422, "action refused", [{"field": e.field, "message": e.message}]) from None
    wake(daemon)
    return ActionOut(incident_id=r.incident_id, outcome=r.outcome, state=r.state)
