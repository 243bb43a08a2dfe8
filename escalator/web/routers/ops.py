"""Operations: ``GET /healthz`` and ``GET /metrics`` (no credentials)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from escalator.web.deps import CurrentDaemon, in_store
from escalator.web.models import HealthOut

router = APIRouter(tags=["operations"])

@router.get("/healthz", response_model=HealthOut,
            responses={503: {"model": HealthOut, "description": "a part is stuck or the "
                                                                "database unreachable"}})
async def healthz(daemon: CurrentDaemon) -> Any:
    """200, or 503 naming each failing part: ``store`` (its files were deleted or replaced),
    each lane (``intake``, ``timers``, ``delivery``) that has had work without progress for
    ``stuck_seconds`` (30 s by default) — both from memory (:meth:`~escalator.service.daemon.
    Daemon.health`) — and ``database`` when it cannot be reached. ``database`` says the backend,
    whether it answered, the round trip (ms) and the schema version: a check on a connection of
    its own, at most ~80 ms waited for, its result kept for 1 s
    (:class:`~escalator.service.dbhealth.DatabaseHealth`). ``delivery`` fails too while the
    delivery process is not running or silent; with a delivery process of its own,
    ``delivery_process`` names it (pid, node, restarts)."""
    failing = daemon.health()
    database = await daemon.database_health.current()
    if not database.reachable:
        failing["database"] = database.error or "unreachable"
    body: dict[str, Any] = {"status": "unavailable" if failing else "ok"}
    if failing:
        body["failing"] = failing
    body["database"] = database.as_dict()
    if daemon.delivery_process is not None:
        body["delivery_process"] = daemon.delivery_process.describe()
    return JSONResponse(body, status_code=503 if failing else 200)


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}})
async def metrics_endpoint(daemon: CurrentDaemon) -> Response:
    """Prometheus metrics (text format 0.0.4) of this daemon."""
    body, content_type = await in_store(daemon, daemon.metrics.render)  # reads the store
    return Response(body, media_type=content_type)
