"""Operations: ``GET /healthz`` and ``GET /metrics`` (no credentials)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from escalator.web.deps import CurrentDaemon
from escalator.web.models import HealthOut

router = APIRouter(tags=["operations"])

STALE_LOOP_SECONDS = 30.0
"""``/healthz`` answers 503 when the engine loop has not run for this long (clock seconds)."""


@router.get("/healthz", response_model=HealthOut,
            responses={503: {"model": HealthOut, "description": "a part is stuck"}})
async def healthz(daemon: CurrentDaemon) -> Any:
    """200 when a store read works and the engine loop ran within the last 30 s; else 503
    naming each failing part (``store``, ``engine_loop``)."""
    failing: dict[str, str] = {}
    try:
        with daemon.store.transaction() as tx:
            tx.count_incidents()
    except Exception as e:
        failing["store"] = f"store read failed: {type(e).__name__}"
    last = getattr(daemon, "last_loop_at", None)
    if last is None:
        failing["engine_loop"] = "the engine loop has not run yet"
    else:
        age = (daemon.clock.now() - last).total_seconds()
        if age > STALE_LOOP_SECONDS:
            failing["engine_loop"] = f"the engine loop last ran {age:.0f} s ago"
    if failing:
        return JSONResponse({"status": "unavailable", "failing": failing}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}})
async def metrics_endpoint(daemon: CurrentDaemon) -> Response:
    """Prometheus metrics (text format 0.0.4) of this daemon."""
    body, content_type = daemon.metrics.render()
    return Response(body, media_type=content_type)
