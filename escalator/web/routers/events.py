"""Event intake: ``POST /api/v1/events`` and heartbeat pings."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, Response

from escalator.events import Event
from escalator.intake.parsing import IntakeError, parse_events
from escalator.web.auth import AUTH_ERRORS, BEARER_SECURITY, Source, caller
from escalator.web.body import read_json
from escalator.web.deps import CurrentDaemon, ingest
from escalator.web.errors import ApiError
from escalator.web.models import ErrorOut, HeartbeatOut, IngestOut, ingest_out
from escalator.web.openapi import json_body, ref

router = APIRouter(tags=["intake"])

MonitorName = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")]

_EVENT_LIST = {"type": "array", "items": ref("Event"), "minItems": 1, "maxItems": 1000}


@router.post("/api/v1/events", status_code=202,
             response_model=IngestOut | list[IngestOut], responses={
                 **AUTH_ERRORS, 400: {"model": ErrorOut, "description": "malformed JSON"},
                 422: {"model": ErrorOut, "description": "invalid event; errors name each field"}},
             openapi_extra={**json_body({"anyOf": [ref("Event"), _EVENT_LIST]},
                                        "one event, or a list of up to 1000 (all or nothing)"),
                            "security": BEARER_SECURITY})
async def post_events(request: Request) -> Response:
    """Submit one event or a list. Committed (fsynced) before the 202; the answer names the
    incident (``status``: created, deduplicated, logged, acknowledged, resolved, ignored).
    The token's name is recorded as the source.

    Every event of a burst takes this route, so it asks FastAPI for nothing per request: the
    caller and the daemon are looked up here (no dependencies to solve) and the answer is
    written as it is (no response model to validate: ``ingest_out`` has its shape)."""
    who = await caller(request)
    doc = await read_json(request)
    try:
        events = parse_events(doc)
    except IntakeError as e:
        raise ApiError(422, "event rejected", e.errors) from None
    prefixes = [f"[{i}]." for i in range(len(events))] if isinstance(doc, list) else [""]
    results = await ingest(request.app.state.daemon, list(zip(prefixes, events, strict=True)),
                           who.name)
    out = [ingest_out(r) for r in results]
    return JSONResponse(out if isinstance(doc, list) else out[0], status_code=202)


async def ping(name: MonitorName, who: Source, daemon: CurrentDaemon) -> HeartbeatOut:
    """Record a heartbeat of monitor ``name`` (a ``kind: heartbeat`` event with label
    ``monitor=<name>``; never an incident). GET is accepted for simple pingers."""
    ev = Event.model_validate({"kind": "heartbeat", "category": "other", "severity": "info",
                               "summary": f"heartbeat {name}", "labels": {"monitor": name}})
    [r] = await ingest(daemon, [("", ev)], who.name)
    return HeartbeatOut(event_id=r.event_id, monitor=name, status=r.status)


for _method in ("get", "post"):
    getattr(router, _method)("/api/v1/heartbeats/{name}/ping", status_code=202,
                             response_model=HeartbeatOut, responses=AUTH_ERRORS,
                             operation_id=f"heartbeat_ping_{_method}", summary="Heartbeat ping")(ping)
