"""The acknowledge links: ``GET /ack/{token}`` shows the incident of a message (and never
changes state: chat apps prefetch links); ``POST /ack/{token}`` acknowledges it. Pages are in
Chinese with English under each line (``templates/ack*.html``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from escalator.engine.engine import NotFound
from escalator.labels import CATEGORY, KIND, SEVERITY, STATE, level_of
from escalator.web.deps import CurrentDaemon, in_store, wake
from escalator.web.pages import page

router = APIRouter(tags=["acknowledge links"])

_OUTCOME = {
    "acknowledged": ("已确认，升级已停止。", "Acknowledged; escalation stopped."),
    "step_confirmed": ("本级已确认，已通知上一级。", "This level confirmed; the next level is being told."),
    "step_confirmed_late": ("已记录确认（本级已超时上报）。", "Confirmation recorded (this level was overdue)."),
    "seen": ("已知悉，已记录。", "Noted as seen."),
    "already_acknowledged": ("此事件已被确认。", "This incident was already acknowledged."),
    "already_resolved": ("此事件已解除。", "This incident is already resolved."),
    "resolved": ("此事件已解除。", "This incident is resolved."),
}
"""``(Chinese, English)`` of an acknowledgement's outcome."""
_BUTTON = {True: ("确认收到并处理", "Acknowledge"), False: ("已知悉", "Mark as seen")}
"""The button of a message that ``needs_ack`` (or only asks to be marked as seen)."""

_UNKNOWN = {404: {"description": "unknown link"}}


def _by_token(daemon: Any, token: str) -> tuple[Any, Any, Any] | None:
    """``(notification, incident, step run or None)`` of a link token, or None."""
    if not token or len(token) > 100:
        return None
    with daemon.store.transaction() as tx:
        n = tx.notification_by_token(token)
        if n is None:
            return None
        inc = tx.get_incident(n.incident_id)
        run = tx.get_step_run(n.step_run_id) if n.step_run_id else None
    return (n, inc, run) if inc is not None else None


def _get_incident(daemon: Any, incident_id: int) -> Any:
    with daemon.store.transaction() as tx:
        return tx.get_incident(incident_id)


def _incident(inc: Any) -> dict[str, Any]:
    """What the pages show of an incident (never its free-text summary)."""
    return {"id": inc.id, "drill": bool(inc.drill), "state": inc.state,
            "state_zh": STATE["zh"].get(inc.state, inc.state), "severity": inc.severity,
            "severity_zh": SEVERITY["zh"].get(inc.severity, inc.severity),
            "category_zh": CATEGORY["zh"].get(inc.category, inc.category),
            "category_en": CATEGORY["en"].get(inc.category, inc.category),
            "kind_zh": KIND["zh"].get(inc.kind, inc.kind)}


def _not_found() -> HTMLResponse:
    return page("link_not_found.html", status=404)


@router.get("/ack/{token}", response_class=HTMLResponse, responses=_UNKNOWN)
async def ack_page(token: str, daemon: CurrentDaemon) -> HTMLResponse:
    """The page behind a message's acknowledge link: shows the incident and a button that
    POSTs here. Never changes state (chat apps prefetch links)."""
    found = await in_store(daemon, _by_token, daemon, token)
    if found is None:
        return _not_found()
    n, inc, run = found
    outcome = _OUTCOME[f"already_{inc.state}"] if inc.state != "triggered" else None
    return page("ack.html", incident=_incident(inc), recipient=n.recipient_name,
                level=level_of(inc.policy["steps"], run.step_index) if run else None,
                outcome=outcome, token=token,
                button=_BUTTON[bool(n.needs_ack)])


@router.post("/ack/{token}", response_class=HTMLResponse, responses=_UNKNOWN)
async def ack_submit(token: str, daemon: CurrentDaemon) -> HTMLResponse:
    """Acknowledge by link: ``engine.acknowledge(token=…, actor=<recipient id>, via="link")``;
    shows the outcome."""
    found = await in_store(daemon, _by_token, daemon, token)
    if found is None:
        return _not_found()
    n = found[0]
    try:
        r = await in_store(daemon, daemon.engine.acknowledge, token=token, actor=n.recipient_id,
                           via="link")
    except NotFound:
        return _not_found()
    wake(daemon)
    inc = await in_store(daemon, _get_incident, daemon, r.incident_id)
    return page("ack_done.html", incident=_incident(inc),
                outcome=_OUTCOME.get(r.outcome, (r.outcome, r.outcome)))
