"""Intake in other tools' formats (docs/compat.md): PagerDuty Events API v2 (``POST
/v2/enqueue``, authenticated by its ``routing_key``, answered as PagerDuty does) and the
Prometheus Alertmanager webhook (``POST /api/v1/alertmanager``, bearer token)."""

from __future__ import annotations

from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from escalator.intake.compat import (
    AmOut,
    AmResult,
    AmWebhook,
    PdErrorOut,
    PdEvent,
    PdOut,
    am_event,
    am_fingerprint,
    pd_event,
)
from escalator.intake.parsing import IntakeError, parse_event
from escalator.web.auth import AUTH_ERRORS, Credentials, Source, current_credentials
from escalator.web.body import read_json
from escalator.web.deps import CurrentDaemon, ingest
from escalator.web.errors import ApiError, pydantic_errors
from escalator.web.models import ErrorOut, ingest_out
from escalator.web.openapi import json_body, ref

log = structlog.get_logger(__name__)

router = APIRouter(tags=["compat"])


def _pd_invalid(errors: list[str]) -> JSONResponse:
    return JSONResponse({"status": "invalid event", "message": "Event object is invalid",
                         "errors": errors}, status_code=400)


@router.post("/v2/enqueue", status_code=202, response_model=PdOut,
             responses={400: {"model": PdErrorOut, "description": "invalid event or routing key"},
                        413: {"model": ErrorOut, "description": "request body too large"}},
             openapi_extra=json_body(ref("PdEvent"), "a PagerDuty Events API v2 alert event"))
async def pagerduty(request: Request, daemon: CurrentDaemon,
                    credentials: Annotated[Credentials, Depends(current_credentials)]) -> Any:
    """PagerDuty Events API v2 (``trigger`` / ``acknowledge`` / ``resolve`` by
    ``dedup_key``), authenticated by ``routing_key``. Answers as PagerDuty does."""
    try:
        doc = await read_json(request)
    except ApiError as e:
        return _pd_invalid([m["message"] for m in e.errors])
    if not isinstance(doc, dict):
        return _pd_invalid(["Event object must be a JSON object"])
    key = doc.get("routing_key")
    if not isinstance(key, str) or not key:
        return _pd_invalid(["'routing_key' is missing or blank"])
    integration = credentials.pagerduty(key)
    if integration is None:
        log.warning("api_auth_failed", path=request.url.path, reason="unknown routing key",
                    client=request.client.host if request.client else None)
        return _pd_invalid(["Invalid routing key"])
    try:
        pd = PdEvent.model_validate(doc)
        raw, answer_key = pd_event(pd, integration)
        ev = parse_event(raw)
    except ValidationError as e:
        return _pd_invalid([f"'{x['field']}' {x['message']}" for x in pydantic_errors(e)])
    except IntakeError as e:
        return _pd_invalid([f"'{x['field']}' {x['message']}" for x in e.errors])
    except ValueError as e:
        return _pd_invalid([str(e)])
    try:
        await ingest(daemon, [("", ev)], integration)
    except ApiError as e:
        return _pd_invalid(["'payload.timestamp' " + m["message"] for m in e.errors])
    return PdOut(status="success", message="Event processed", dedup_key=answer_key)


@router.post("/api/v1/alertmanager", response_model=AmOut,
             responses={**AUTH_ERRORS, 400: {"model": ErrorOut, "description": "malformed JSON"},
                        422: {"model": ErrorOut, "description": "invalid webhook body"}},
             openapi_extra=json_body(ref("AmWebhook"), "an Alertmanager webhook (version 4)"))
async def alertmanager(request: Request, who: Source, daemon: CurrentDaemon) -> Any:
    """Prometheus Alertmanager webhook v4: one event per alert, dedup key
    ``alertmanager/<fingerprint>``; a ``resolved`` alert resolves its incident (``ignored``
    when none is open). All alerts in one transaction."""
    doc = await read_json(request)
    if not isinstance(doc, dict):
        raise ApiError(422, "webhook rejected",
                       [{"field": "(body)", "message": "expected an Alertmanager webhook object"}])
    try:
        hook = AmWebhook.model_validate(doc)
    except ValidationError as e:
        raise ApiError(422, "webhook rejected", pydantic_errors(e)) from None
    if hook.version not in (None, "4"):
        raise ApiError(422, "webhook rejected",
                       [{"field": "version", "message": f"unsupported version {hook.version!r}; "
                                                        "expected '4'"}])
    events, errors = [], []
    for i, alert in enumerate(hook.alerts):
        try:
            events.append((f"alerts[{i}].", parse_event(am_event(alert), prefix=f"alerts[{i}]")))
        except IntakeError as e:
            errors.extend(e.errors)
    if errors:
        raise ApiError(422, "webhook rejected", errors)
    results = await ingest(daemon, events, who.name) if events else []
    return AmOut(results=[AmResult(fingerprint=am_fingerprint(a), **ingest_out(r))
                          for a, r in zip(hook.alerts, results, strict=True)])
