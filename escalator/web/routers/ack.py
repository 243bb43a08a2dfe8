"""The acknowledge links: ``GET /ack/{token}`` shows the incident of a message (and never
changes state: chat apps prefetch links); ``POST /ack/{token}`` takes the level's answer. Pages
are in Chinese with English under each line (``templates/ack*.html``).

At a ``report`` step the page offers the level's two decisions (docs/decisions.md): 上报上一级
(report up) and 本级已处置，无需上报 (handled here, with a reason). A link works only while its
level is the one the walk waits on (:func:`escalator.engine.decisions.link_live`); opened again
it says truthfully who acted at that level and when (or that its time ran out and which level
was told next), never the free-text summary or a handled reason.

CSRF: the form carries a random value also set as a ``SameSite=Strict``, ``HttpOnly`` cookie
(double submit); a POST without the matching pair, or with an ``Origin`` / ``Sec-Fetch-Site``
naming another site, is refused (403) and changes nothing. The link's own unguessable token
remains the credential.
"""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import parse_qs, urlsplit

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from escalator.engine import decisions
from escalator.engine.decisions import DecisionError, LevelStory
from escalator.engine.engine import NotFound
from escalator.labels import CATEGORY, KIND, SEVERITY, STATE, level_of
from escalator.web.deps import CurrentDaemon, in_store, wake
from escalator.web.pages import page

log = structlog.get_logger(__name__)

router = APIRouter(tags=["acknowledge links"])

_OUTCOME = {
    "acknowledged": ("已确认，升级已停止。", "Acknowledged; escalation stopped."),
    "step_confirmed": ("已上报，已通知第{level}级。", "Reported up; level {level} is being told."),
    "step_confirmed_late": ("已记录确认。", "Confirmation recorded."),
    "handled": ("已记录：本级已处置，无需上报。事件已解除。",
                "Recorded: handled at this level, no report needed. The incident is resolved."),
    "seen": ("已知悉，已记录。", "Noted as seen."),
    "resolved": ("此事件已解除。", "This incident is resolved."),
}
"""``(Chinese, English)`` of an answer's outcome (``{level}``: the 1-based level told next)."""
_STORY = {
    "confirmed": ("本级已由{actor}于{at}确认上报。", "This level was reported up by {actor} at {at}."),
    "handled": ("本级已由{actor}于{at}处置，无需上报。",
                "This level was handled by {actor} at {at}; no report needed."),
    "acknowledged": ("此事件已由{actor}于{at}确认。", "This incident was acknowledged by {actor} at {at}."),
    "resolved": ("此事件已由{actor}于{at}解除。", "This incident was resolved by {actor} at {at}."),
    "overdue_next": ("本级于{at}超时未答复，已通知第{level}级。",
                     "This level did not answer by {at}; level {level} was told."),
    "overdue": ("本级于{at}超时未答复，本链接已失效。", "This level did not answer by {at}; this link has ended."),
    "open": ("本链接已失效。", "This link has ended."),
}
"""``(Chinese, English)`` of what became of a link's level (:class:`LevelStory`)."""
_BUTTON = {True: ("确认收到并处理", "Acknowledge"), False: ("已知悉", "Mark as seen")}
"""The button of a message that ``needs_ack`` (or only asks to be marked as seen)."""

_UNKNOWN = {404: {"description": "unknown link"}}
CSRF_COOKIE = "escalator_csrf"
"""The double-submit cookie of the acknowledge form."""


def _by_token(daemon: Any, token: str) -> dict[str, Any] | None:
    """What a page needs of a link token — notification, incident, step run, live, story,
    the names of the next level — or None for an unknown token."""
    if not token or len(token) > 100:
        return None
    config = daemon.engine.config
    with daemon.store.transaction() as tx:
        n = tx.notification_by_token(token)
        if n is None:
            return None
        inc = tx.get_incident(n.incident_id)
        if inc is None:
            return None
        run = tx.get_step_run(n.step_run_id) if n.step_run_id else None
        live = decisions.link_live(inc, run) if n.needs_ack else inc.state == "triggered"
        story = None if live else decisions.level_story(inc, run, tx.timeline(inc.id))
    steps = inc.policy["steps"]
    nxt = run.step_index + 1 if run else None
    while nxt is not None and nxt < len(steps) and steps[nxt]["mode"] == "inform":
        nxt += 1
    next_names = None
    if run is not None and run.mode == "report" and nxt is not None and nxt < len(steps):
        from escalator.delivery.render import target_label

        next_names = "、".join(target_label(t, config, "zh") for t in steps[nxt]["targets"])
    return {"n": n, "inc": inc, "run": run, "live": live, "story": story,
            "next_names": next_names}


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


def _who(daemon: Any, actor: str | None) -> str:
    """An actor as a person reads it: a person's or unit's name, else the recorded name."""
    if not actor:
        return "系统"
    config = daemon.engine.config
    owner = config.person(actor) or config.unit(actor)
    return owner.name if owner is not None else actor


def _story(daemon: Any, story: LevelStory) -> tuple[str, str]:
    """``(Chinese, English)`` of what became of a link's level."""
    key = story.what
    if key == "overdue" and story.next_level:
        key = "overdue_next"
    if key == "seen":
        key = "open"
    at = (story.at.astimezone(daemon.engine.config.school.tz).strftime("%m-%d %H:%M")
          if story.at else "")
    zh, en = _STORY[key]
    values = {"actor": _who(daemon, story.actor), "at": at, "level": story.next_level}
    return zh.format(**values), en.format(**values)


def _not_found() -> HTMLResponse:
    return page("link_not_found.html", status=404)


def _show(daemon: Any, token: str, found: dict[str, Any], csrf: str, *, status: int = 200,
          error: str | None = None) -> HTMLResponse:
    n, inc, run = found["n"], found["inc"], found["run"]
    if found["live"]:
        outcome = None
    elif found["story"] is not None:
        outcome = _story(daemon, found["story"])
    else:
        outcome = _story(daemon, LevelStory(inc.state, inc.resolved_by or inc.acknowledged_by,
                                            inc.resolved_at or inc.acknowledged_at))
    form = "seen" if not n.needs_ack else ("decide" if run is not None and run.mode == "report"
                                          else "ack")
    response = page("ack.html", incident=_incident(inc), recipient=n.recipient_name,
                    level=decisions.level_number(inc.policy["steps"], run.step_index)
                    if run else None, outcome=outcome, token=token,
                    button=_BUTTON[bool(n.needs_ack)], form=form, csrf=csrf,
                    next_names=found["next_names"], error=error, status=status)
    response.set_cookie(CSRF_COOKIE, csrf, httponly=True, samesite="strict", path="/ack",
                        secure=urlsplit(str(daemon.engine.config.daemon.public_base_url or ""))
                        .scheme == "https")
    return response


@router.get("/ack/{token}", response_class=HTMLResponse, responses=_UNKNOWN)
async def ack_page(token: str, request: Request, daemon: CurrentDaemon) -> HTMLResponse:
    """The page behind a message's acknowledge link: the incident and, while the link's level
    is the one waited on, the form (two decisions at a ``report`` step); else what became of
    the level. Never changes state (chat apps prefetch links)."""
    found = await in_store(daemon, _by_token, daemon, token)
    if found is None:
        return _not_found()
    csrf = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)
    return _show(daemon, token, found, csrf)


def _same_site(request: Request) -> bool:
    """False when the browser says the POST came from another site (``Sec-Fetch-Site``, or an
    ``Origin`` whose host is not this request's)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin and origin != "null":
        return urlsplit(origin).netloc == request.headers.get("host", "")
    return origin != "null"


@router.post("/ack/{token}", response_class=HTMLResponse,
             responses={**_UNKNOWN, 403: {"description": "form not from this page (CSRF)"},
                        422: {"description": "a decision without its reason"}})
async def ack_submit(token: str, request: Request, daemon: CurrentDaemon) -> HTMLResponse:
    """The level's answer by link, a form (``application/x-www-form-urlencoded``) with
    ``csrf``, ``decision`` (``report`` — the default — or ``handled``) and ``reason``:
    ``engine.decide(token=…, actor=<recipient id>, via="link")``; shows the outcome."""
    found = await in_store(daemon, _by_token, daemon, token)
    if found is None:
        return _not_found()
    form = parse_qs((await request.body()).decode("utf-8", "replace"), max_num_fields=8)
    field = {k: v[0] for k, v in form.items() if v}
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if (not cookie or not secrets.compare_digest(cookie.encode(), field.get("csrf", "").encode())
            or not _same_site(request)):
        log.warning("ack_form_refused", reason="csrf")
        return _show(daemon, token, found, cookie or secrets.token_urlsafe(24), status=403,
                     error="页面已过期或不是从本页提交，请重新打开链接后再提交。")
    n = found["n"]
    try:
        r = await in_store(daemon, daemon.engine.decide, token=token,
                           decision=field.get("decision", "report"), reason=field.get("reason"),
                           actor=n.recipient_id, via="link")
    except NotFound:
        return _not_found()
    except DecisionError as e:
        return _show(daemon, token, found, cookie, status=422,
                     error="请填写无需上报的原因。" if e.field == "reason" else str(e))
    wake(daemon)
    if r.outcome in ("level_closed", "already_acknowledged", "already_resolved", "not_allowed"):
        again = await in_store(daemon, _by_token, daemon, token)
        return _show(daemon, token, again or found, cookie)
    inc = await in_store(daemon, _get_incident, daemon, r.incident_id)
    zh, en = _OUTCOME.get(r.outcome, (r.outcome, r.outcome))
    level = level_of(inc.policy["steps"], inc.step_index)
    return page("ack_done.html", incident=_incident(inc),
                outcome=(zh.format(level=level), en.format(level=level)))
