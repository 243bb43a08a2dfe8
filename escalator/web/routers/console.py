"""The school's web console (docs/console.md): the pages at ``/`` for the people who act.

Sign-in (:mod:`escalator.web.console.signin`): ``GET|POST /login`` asks for a link,
``GET /login/{token}`` shows a button (never signs in: chat apps prefetch links),
``POST /login/{token}`` uses the token and sets the session cookie, ``POST /logout``.
Pages: ``/`` (Today; ``/today.frag`` is its live part, polled every 3 s by
``static/console.js``), ``/incidents/{id}`` with its actions (``POST``), ``POST /resolve``
(several incidents, one reason), ``/ledger`` (+ ``/ledger/download``), ``/drills/{id}``,
``/roster``, ``/settings`` (administrators). ``/lang/{zh|en}`` switches the language.

Every form carries the session's token (``csrf``) and is refused without it (403); a request
whose ``Origin`` is another site is refused too. Actions call the same
:class:`~escalator.engine.engine.Engine` methods as the API (pending sends are cancelled the
same way), with the signed-in person as the actor and ``via="console"``.
"""

from __future__ import annotations

import hmac
import io
import secrets
import tempfile
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import structlog
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from escalator.engine.engine import InvalidAction, NotFound
from escalator.school import drills
from escalator.school.ledger import TABLES, ledger_tables, write_csv, write_xlsx
from escalator.web.console import signin, views
from escalator.web.console.access import Viewer
from escalator.web.console.words import LANGS, OUTCOME, UI
from escalator.web.deps import CurrentDaemon, in_store, wake
from escalator.web.pages import page, render

log = structlog.get_logger(__name__)

router = APIRouter(include_in_schema=False)

SESSION_COOKIE = "escalator_session"
FORM_COOKIE = "escalator_form"
"""The double-submit token of the forms shown before sign-in."""
LANG_COOKIE = "escalator_lang"
LEDGER_MAX_DAYS = 366
ACTIONS = ("ack", "handled", "report", "resolve", "note", "assign")
REASON_MAX = 500


class Redirect(Exception):
    """Answer with a redirect (e.g. to the sign-in page)."""

    def __init__(self, to: str) -> None:
        super().__init__(to)
        self.to = to


class Refused(Exception):
    """Answer with the console's error page: ``status`` and a word of :data:`UI`."""

    def __init__(self, status: int, word: str, detail: str = "") -> None:
        super().__init__(word)
        self.status, self.word, self.detail = status, word, detail


def install(app: FastAPI) -> None:
    """Add the console's routes and error answers to ``app``."""
    app.include_router(router)
    app.state.console_attempts = signin.Attempts(app.state.daemon.clock)

    async def redirect(request: Request, exc: Redirect) -> Response:
        return RedirectResponse(exc.to, status_code=303)

    async def refused(request: Request, exc: Refused) -> Response:
        lang = _lang(request)
        return page("console/message.html", status=exc.status, csp=True, ui=UI[lang], lang=lang,
                    viewer=None, csrf="", text=UI[lang][exc.word], detail=exc.detail, nav="")

    app.add_exception_handler(Redirect, redirect)  # type: ignore[arg-type]
    app.add_exception_handler(Refused, refused)  # type: ignore[arg-type]


# ------------------------------------------------------------------ helpers


def _lang(request: Request) -> str:
    lang = request.cookies.get(LANG_COOKIE, "zh")
    return lang if lang in LANGS else "zh"


def _secure(request: Request, daemon: Any) -> bool:
    """Whether cookies get ``Secure``: the request came by https (directly or through a
    proxy saying so) or the public address is https."""
    base = daemon.config.daemon.public_base_url or ""
    return (request.url.scheme == "https" or base.startswith("https://")
            or request.headers.get("x-forwarded-proto", "") == "https")


def _attempts(request: Request) -> signin.Attempts:
    return request.app.state.console_attempts


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def _viewer(request: Request, daemon: Any) -> Viewer | None:
    cookie = request.cookies.get(SESSION_COOKIE, "")
    if not cookie:
        return None
    found = await in_store(daemon, signin.find_session, daemon.store, cookie, daemon.clock.now())
    if found is None:
        return None
    person = signin.person_for(daemon.config, found.person_id)
    return Viewer(person, found.csrf) if person is not None else None


async def _signed_in(request: Request, daemon: Any) -> Viewer:
    viewer = await _viewer(request, daemon)
    if viewer is None:
        raise Redirect("/login")
    return viewer


def _same_origin(request: Request) -> bool:
    """A form POST naming another site as its ``Origin`` is refused (a second guard beside the
    form token). ``Origin: null`` says nothing (browsers send it for the pages' own forms under
    ``Referrer-Policy: no-referrer``): the form token decides."""
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return True
    return urlsplit(origin).netloc == request.headers.get("host", "")


async def _form(request: Request, expected: str) -> dict[str, list[str]]:
    """The urlencoded form of a POST, after its ``csrf`` field was checked against
    ``expected`` (403 :class:`Refused` otherwise)."""
    body = (await request.body()).decode("utf-8", "replace")
    form = parse_qs(body, keep_blank_values=True, max_num_fields=500)
    given = (form.get("csrf") or [""])[0]
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()) \
            or not _same_origin(request):
        log.warning("console_csrf_refused", path=request.url.path, client=_client(request))
        raise Refused(403, "csrf")
    return form


def _one(form: dict[str, list[str]], key: str) -> str:
    return (form.get(key) or [""])[0].strip()


def _show(request: Request, template: str, viewer: Viewer | None, nav: str,
          **context: Any) -> HTMLResponse:
    lang = _lang(request)
    done = request.query_params.get("done", "")
    return page(f"console/{template}", csp=True, ui=UI[lang], lang=lang, viewer=viewer,
                csrf=viewer.csrf if viewer else "", nav=nav,
                done=OUTCOME[lang].get(done, ""), request_path=request.url.path, **context)


# ------------------------------------------------------------------ sign-in


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request) -> HTMLResponse:
    """The sign-in page: a person id, and a link is sent to that person."""
    token = request.cookies.get(FORM_COOKIE) or secrets.token_urlsafe(18)
    resp = _show(request, "login.html", None, "", form_token=token, sent=False, link=None)
    resp.set_cookie(FORM_COOKIE, token, httponly=True, samesite="strict", path="/login",
                    secure=_secure(request, request.app.state.daemon))
    return resp


@router.post("/login", response_class=HTMLResponse)
async def login_request(request: Request, daemon: CurrentDaemon) -> HTMLResponse:
    """Send a one-time link to the person's own first contact method. The answer is the same
    whether or not the person exists (it tells nobody who has an account)."""
    form = await _form(request, request.cookies.get(FORM_COOKIE, ""))
    person_id = _one(form, "person_id")[:100]
    if not _attempts(request).allow(f"addr:{_client(request)}", f"person:{person_id}"):
        log.warning("console_signin_limited", client=_client(request))
        raise Refused(429, "too_many")
    person = signin.person_for(daemon.config, person_id)
    if person is not None:
        token = await in_store(daemon, signin.new_link, daemon.store, person.id,
                               daemon.clock.now())
        url = signin.base_url(daemon.config, daemon.settings, str(request.base_url)) \
            + signin.LINK_PATH + token
        await signin.send_link(person, url, daemon.delivery.channels, _lang(request))
    else:
        log.info("console_link_unknown_person", client=_client(request))
    return _show(request, "login.html", None, "", form_token="", sent=True, link=None)


@router.get("/login/{token}", response_class=HTMLResponse)
async def login_link(token: str, request: Request) -> HTMLResponse:
    """The page behind a sign-in link: a button that POSTs here (a GET never signs in)."""
    form_token = secrets.token_urlsafe(18)
    resp = _show(request, "login.html", None, "", form_token=form_token, sent=False, link=token)
    resp.set_cookie(FORM_COOKIE, form_token, httponly=True, samesite="strict", path="/login",
                    secure=_secure(request, request.app.state.daemon))
    return resp


@router.post("/login/{token}")
async def login_use(token: str, request: Request, daemon: CurrentDaemon) -> Response:
    """Use the link's token once and start a session (HttpOnly, SameSite=Lax cookie)."""
    await _form(request, request.cookies.get(FORM_COOKIE, ""))
    if not _attempts(request).allow(f"addr:{_client(request)}"):
        log.warning("console_signin_limited", client=_client(request))
        raise Refused(429, "too_many")
    started = await in_store(daemon, signin.start_session, daemon.store, token[:200],
                             daemon.clock.now(), daemon.config.console.session_hours)
    if started is None or signin.person_for(daemon.config, started[1].person_id) is None:
        log.warning("console_signin_refused", client=_client(request))
        raise Refused(403, "link_invalid")
    cookie, session = started
    log.info("console_signed_in", person_id=session.person_id)
    resp = RedirectResponse("/", status_code=303)
    resp.set_cookie(SESSION_COOKIE, cookie, httponly=True, samesite="lax", path="/",
                    secure=_secure(request, daemon),
                    max_age=int(daemon.config.console.session_hours * 3600))
    resp.delete_cookie(FORM_COOKIE, path="/login")
    return resp


@router.post("/logout")
async def logout(request: Request, daemon: CurrentDaemon) -> Response:
    """Sign out: the session ends in the store and the cookie is cleared."""
    viewer = await _signed_in(request, daemon)
    await _form(request, viewer.csrf)
    await in_store(daemon, signin.end_session, daemon.store, request.cookies[SESSION_COOKIE])
    log.info("console_signed_out", person_id=viewer.person.id)
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(SESSION_COOKIE, path="/")
    return resp


@router.get("/lang/{code}")
async def switch_language(code: str, request: Request) -> Response:
    """Switch the console's language (``zh`` or ``en``) and go back to ``next`` (a path)."""
    nxt = request.query_params.get("next", "/")
    if not nxt.startswith("/") or nxt.startswith("//") or "\\" in nxt:
        nxt = "/"
    resp = RedirectResponse(nxt, status_code=303)
    if code in LANGS:
        resp.set_cookie(LANG_COOKIE, code, samesite="lax", path="/", max_age=365 * 86400)
    return resp


# ------------------------------------------------------------------ Today


@router.get("/", response_class=HTMLResponse)
async def today(request: Request, daemon: CurrentDaemon) -> HTMLResponse:
    """Today (今日)."""
    viewer = await _signed_in(request, daemon)
    data = await in_store(daemon, views.today, daemon, viewer, _lang(request))
    return _show(request, "today.html", viewer, "today", d=data)


@router.get("/today.frag", response_class=HTMLResponse)
async def today_fragment(request: Request, daemon: CurrentDaemon) -> HTMLResponse:
    """The live part of Today, for the page's script (polled every 3 s); 401 when signed
    out (the script then reloads the page, which goes to sign-in)."""
    viewer = await _viewer(request, daemon)
    if viewer is None:
        return HTMLResponse("", status_code=401)
    lang = _lang(request)
    data = await in_store(daemon, views.today, daemon, viewer, lang)
    html = render("console/today_live.html", ui=UI[lang], lang=lang, viewer=viewer, d=data,
                  csrf=viewer.csrf)
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


@router.post("/resolve")
async def resolve_many(request: Request, daemon: CurrentDaemon) -> Response:
    """Resolve several open incidents with one reason (a note on each, then the resolve)."""
    viewer = await _signed_in(request, daemon)
    form = await _form(request, viewer.csrf)
    if not viewer.can_act:
        raise Refused(403, "forbidden")
    reason = _one(form, "reason")[:REASON_MAX]
    ids = [int(x) for x in form.get("id", []) if x.isdigit()][:200]
    if not reason or not ids:
        raise Refused(422, "reason", "reason and at least one incident are needed")
    for incident_id in ids:
        try:
            await in_store(daemon, daemon.engine.add_note, incident_id, text=reason,
                           actor=viewer.person.id, via="console")
            await in_store(daemon, daemon.engine.resolve, incident_id, actor=viewer.person.id,
                           via="console")
        except NotFound:
            continue
    wake(daemon)
    return RedirectResponse("/?done=resolved", status_code=303)


# ------------------------------------------------------------------ Incident


@router.get("/incidents/{incident_id}", response_class=HTMLResponse)
async def incident_page(incident_id: int, request: Request, daemon: CurrentDaemon) -> HTMLResponse:
    """One incident: timeline, cluster members, messages, actions."""
    viewer = await _signed_in(request, daemon)
    data = await in_store(daemon, views.incident, daemon, viewer, incident_id, _lang(request))
    if data is None:
        raise Refused(404, "not_found")
    return _show(request, "incident.html", viewer, "today", d=data)


@router.post("/incidents/{incident_id}")
async def incident_action(incident_id: int, request: Request, daemon: CurrentDaemon) -> Response:
    """An action from the incident page (``action``: ack, handled, report, resolve, note,
    assign), through the engine as the signed-in person."""
    viewer = await _signed_in(request, daemon)
    form = await _form(request, viewer.csrf)
    if not viewer.can_act:
        log.warning("console_action_refused", person_id=viewer.person.id, incident_id=incident_id)
        raise Refused(403, "forbidden")
    action, reason = _one(form, "action"), _one(form, "reason")[:REASON_MAX]
    engine, actor = daemon.engine, viewer.person.id
    calls = {
        "ack": lambda: engine.acknowledge(incident_id, actor=actor, via="console"),
        "handled": lambda: _decide(engine, incident_id, "handled", reason, actor),
        "report": lambda: _decide(engine, incident_id, "report", reason or None, actor),
        "resolve": lambda: _resolve(engine, incident_id, reason, actor),
        "note": lambda: engine.add_note(incident_id, text=_one(form, "text"), actor=actor,
                                        via="console"),
        "assign": lambda: engine.assign(incident_id, person_id=_one(form, "person_id"),
                                        actor=actor, via="console"),
    }
    if action not in calls:
        raise Refused(422, "actions", f"unknown action {action!r}")
    try:
        r = await in_store(daemon, calls[action])
    except NotFound:
        raise Refused(404, "not_found") from None
    except ValueError as e:  # InvalidAction, the engine's DecisionError: both name the field
        raise Refused(422, "actions",
                      f"{getattr(e, 'field', 'input')}: {getattr(e, 'message', e)}") from None
    wake(daemon)
    return RedirectResponse(f"/incidents/{incident_id}?done={r.outcome}", status_code=303)


def _decide(engine: Any, incident_id: int, decision: str, reason: str | None, actor: str) -> Any:
    """``Engine.decide`` (docs/decisions.md): handled here — no report needed (``reason``
    required; the incident is resolved) — or report up now."""
    if not hasattr(engine, "decide"):
        raise InvalidAction("decision", "this escalator has no Engine.decide (docs/decisions.md)")
    return engine.decide(incident_id, decision=decision, reason=reason, actor=actor,
                         via="console")


def _resolve(engine: Any, incident_id: int, reason: str, actor: str) -> Any:
    if reason:
        engine.add_note(incident_id, text=reason, actor=actor, via="console")
    return engine.resolve(incident_id, actor=actor, via="console")


# ------------------------------------------------------------------ Ledger and reports


def _dates(request: Request, daemon: Any) -> tuple[date, date, str]:
    today_ = daemon.clock.now().astimezone(daemon.config.school.tz).date()
    q = request.query_params
    try:
        day_from = date.fromisoformat(q["from"]) if q.get("from") else today_.replace(day=1)
        day_to = date.fromisoformat(q["to"]) if q.get("to") else today_
    except ValueError:
        raise Refused(422, "from", "dates as YYYY-MM-DD") from None
    if day_to < day_from or (day_to - day_from).days >= LEDGER_MAX_DAYS:
        raise Refused(422, "from", f"from ≤ to, at most {LEDGER_MAX_DAYS} days")
    return day_from, day_to, q.get("month") or today_.strftime("%Y-%m")


def _may_download(viewer: Viewer, daemon: Any) -> bool:
    return viewer.is_admin or viewer.sees_pupils(daemon.config)


@router.get("/ledger", response_class=HTMLResponse)
async def ledger_page(request: Request, daemon: CurrentDaemon) -> HTMLResponse:
    """Ledger & reports: download the ledger for a date range, the monthly report, drills."""
    viewer = await _signed_in(request, daemon)
    day_from, day_to, month = _dates(request, daemon)
    try:
        data = await in_store(daemon, views.ledger_page, daemon, day_from, day_to, month,
                              _lang(request))
    except ValueError as e:
        raise Refused(422, "month", str(e)) from None
    return _show(request, "ledger.html", viewer, "ledger", d=data, day_from=day_from,
                 day_to=day_to, month=month, tables=TABLES,
                 may_download=_may_download(viewer, daemon))


@router.get("/ledger/download")
async def ledger_download(request: Request, daemon: CurrentDaemon) -> Response:
    """The ledger as CSV (one table, UTF-8 with BOM) or xlsx (every table)."""
    viewer = await _signed_in(request, daemon)
    if not _may_download(viewer, daemon):
        raise Refused(403, "not_allowed_ledger")
    day_from, day_to, _ = _dates(request, daemon)
    fmt = request.query_params.get("format", "xlsx")
    table = request.query_params.get("table", "incidents")
    if fmt not in ("csv", "xlsx") or table not in TABLES:
        raise Refused(422, "table", "format csv|xlsx, table " + "|".join(TABLES))
    tables = await in_store(daemon, ledger_tables, daemon.store, daemon.config, day_from,
                            day_to, daemon.clock.now())
    log.info("console_ledger_downloaded", person_id=viewer.person.id, format=fmt)
    name = f"ledger-{day_from}-{day_to}"
    if fmt == "csv":
        out = io.StringIO()
        write_csv(next(t for t in tables if t.key == table), out)
        body = ("\ufeff" + out.getvalue()).encode("utf-8")
        return Response(body, media_type="text/csv; charset=utf-8", headers={
            "Content-Disposition": f'attachment; filename="{name}-{table}.csv"',
            "Cache-Control": "no-store"})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ledger.xlsx"
        write_xlsx(tables, path)
        body = path.read_bytes()
    return Response(body, headers={
        "Content-Type": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "Content-Disposition": f'attachment; filename="{name}.xlsx"', "Cache-Control": "no-store"})


@router.get("/drills/{incident_id}", response_class=HTMLResponse)
async def drill_page(incident_id: int, request: Request, daemon: CurrentDaemon) -> HTMLResponse:
    """A drill's report: time to acknowledge per level, who never answered."""
    viewer = await _signed_in(request, daemon)
    try:
        data = await in_store(daemon, views.drill_page, daemon, incident_id, _lang(request))
    except (NotFound, drills.NotADrill):
        raise Refused(404, "not_found") from None
    return _show(request, "drill.html", viewer, "ledger", d=data)


# ------------------------------------------------------------------ Roster and Settings


@router.get("/roster", response_class=HTMLResponse)
async def roster_page(request: Request, daemon: CurrentDaemon) -> HTMLResponse:
    """Roster: on duty now and next per roster role (overrides included); the people."""
    viewer = await _signed_in(request, daemon)
    data = await in_store(daemon, views.roster, daemon, viewer, _lang(request))
    return _show(request, "roster.html", viewer, "roster", d=data)


@router.get("/settings", response_class=HTMLResponse)
async def settings_page(request: Request, daemon: CurrentDaemon) -> HTMLResponse:
    """Settings (administrators): last reload, config warnings, channels' health."""
    viewer = await _signed_in(request, daemon)
    if not viewer.is_admin:
        raise Refused(403, "forbidden")
    data = await in_store(daemon, views.settings, daemon, _lang(request))
    return _show(request, "settings.html", viewer, "settings", d=data)


