"""The HTTP API: event intake, incidents, acknowledge links, PagerDuty/Alertmanager intake,
health and metrics (``docs/api.md``, ``docs/compat.md``).

:func:`create_app` builds the FastAPI app of one :class:`~escalator.service.daemon.Daemon`;
:func:`serve` runs it with uvicorn inside the daemon's own event loop (uvicorn's signal capture
is disabled: the daemon keeps SIGTERM/SIGINT/SIGHUP). Every endpoint is a coroutine that calls
the engine in the loop's thread, so the store is only ever used from one thread.

Credentials: ``Authorization: Bearer <token>``; tokens are configured under ``api.tokens``
(``admin: true`` for administrator tokens) and ``ESCALATOR_API_TOKEN`` (an administrator token
named ``admin``). Source tokens may only submit events, Alertmanager alerts and heartbeats; the
token's name is recorded as the event's source and as the actor of an acknowledgement. The
PagerDuty intake authenticates by its ``routing_key`` (``api.pagerduty``); acknowledge pages by
their link token. ``/healthz``, ``/metrics``, ``/ack/…``, ``/docs`` and ``/openapi.json`` need
no bearer token.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import html
import json
import socket
from collections.abc import Awaitable, Callable, Generator, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

import structlog
import uvicorn
from fastapi import Depends, FastAPI, Path, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError

from escalator import __version__
from escalator.config.load import resolve_secrets
from escalator.config.models import Config
from escalator.delivery.render import CATEGORY, KIND, SEVERITY
from escalator.engine.engine import IngestResult, NotFound
from escalator.events import Event
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
from escalator.intake.parsing import IntakeError, parse_event, parse_events
from escalator.school import clusters
from escalator.service.metrics import Metrics
from escalator.service.settings import Settings
from escalator.store.base import StoreUnavailable

log = structlog.get_logger("escalator.web.api")

STORE_RETRY_AFTER = 30
"""``Retry-After`` (seconds) of the 503 answered when the store cannot write."""
STALE_LOOP_SECONDS = 30.0
"""``/healthz`` answers 503 when the engine loop has not run for this long (clock seconds)."""
ADMIN_TOKEN_NAME = "admin"
"""The name (source/actor) of the ``ESCALATOR_API_TOKEN`` administrator token."""



# ---------------------------------------------------------------- credentials


@dataclass(frozen=True)
class Caller:
    """Who made a request: the token's ``name`` and whether it is an administrator token."""

    name: str
    admin: bool


class Credentials:
    """Resolved secrets: bearer tokens ``(name, secret, admin)`` and PagerDuty routing keys
    ``(name, key)``. Comparisons are constant-time; secrets are never logged or shown."""

    def __init__(self, tokens: list[tuple[str, bytes, bool]],
                 routing_keys: list[tuple[str, bytes]]) -> None:
        self._tokens = tokens
        self._routing_keys = routing_keys

    @classmethod
    def load(cls, config: Config, settings: Settings) -> Credentials:
        """Read every secret of ``config.api`` (``*_env`` / ``*_file``) and
        ``settings.api_token``. Raises ``ValueError`` naming each token whose secret is
        missing or empty (never the secret itself)."""
        problems: list[str] = []
        tokens: list[tuple[str, bytes, bool]] = []
        keys: list[tuple[str, bytes]] = []
        if settings.api_token is not None and settings.api_token.get_secret_value():
            tokens.append((ADMIN_TOKEN_NAME, settings.api_token.get_secret_value().encode(), True))
        for name, spec in config.api.tokens.items():
            secret = _secret(spec.model_dump(exclude_none=True, exclude={"admin"}), "token",
                             config, f"api.tokens.{name}", problems)
            if secret:
                tokens.append((name, secret, spec.admin))
        for name, pd in config.api.pagerduty.items():
            secret = _secret(pd.model_dump(exclude_none=True), "routing_key", config,
                             f"api.pagerduty.{name}", problems)
            if secret:
                keys.append((name, secret))
        if problems:
            raise ValueError("; ".join(problems))
        return cls(tokens, keys)

    def bearer(self, presented: str) -> Caller | None:
        """The caller whose token equals ``presented``, or None."""
        given = presented.encode("utf-8", "surrogateescape")
        found: Caller | None = None
        for name, secret, admin in self._tokens:  # no early exit: time does not tell which
            if hmac.compare_digest(given, secret) and found is None:
                found = Caller(name, admin)
        return found

    def pagerduty(self, routing_key: str) -> str | None:
        """The name of the PagerDuty integration with ``routing_key``, or None."""
        given = routing_key.encode("utf-8", "surrogateescape")
        found: str | None = None
        for name, secret in self._routing_keys:
            if hmac.compare_digest(given, secret) and found is None:
                found = name
        return found


def _secret(options: dict[str, Any], key: str, config: Config, where: str,
            problems: list[str]) -> bytes | None:
    try:
        value = str(resolve_secrets(options, config.base_dir).get(key, ""))
    except ValueError as e:
        problems.append(f"{where}: {e}")
        return None
    if not value:
        problems.append(f"{where}: the {key} is empty")
        return None
    return value.encode()


class _ApiState:
    """Per-app state: the daemon, its metrics, and credentials re-read when the daemon's
    config object changes (SIGHUP). A reload whose secrets cannot be read keeps the previous
    credentials and logs why."""

    def __init__(self, daemon: Any) -> None:
        self.daemon = daemon
        self._config = daemon.config
        self._credentials = Credentials.load(daemon.config, daemon.settings)

    def credentials(self) -> Credentials:
        config = self.daemon.config
        if config is not self._config:
            try:
                self._credentials = Credentials.load(config, self.daemon.settings)
            except ValueError as e:
                log.error("api_credentials_reload_failed", problems=str(e))
            self._config = config
        return self._credentials

    @property
    def max_body(self) -> int:
        return int(self.daemon.config.api.max_body_bytes)


# ---------------------------------------------------------------- errors


class ApiError(Exception):
    """A 4xx answer: ``status``, ``detail`` (one line) and ``errors`` (``[{field, message}]``)."""

    def __init__(self, status: int, detail: str, errors: list[dict[str, str]] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers
        self.errors = errors if errors is not None else [{"field": "(request)", "message": detail}]


class _BodyTooLarge(Exception):
    pass


def _error_body(detail: str, errors: list[dict[str, str]]) -> dict[str, Any]:
    return {"detail": detail, "errors": errors}


def _too_large(limit: int) -> dict[str, Any]:
    msg = f"request body larger than {limit} bytes"
    return _error_body(msg, [{"field": "(body)", "message": msg}])


class BodyLimit:
    """ASGI middleware capping request bodies at ``limit()`` bytes (413).

    A ``Content-Length`` above the limit is refused before the handler runs; a streamed
    (chunked) body is counted as it arrives and refused once it passes the limit. Before
    answering, the rest of a body up to :data:`DRAIN_FACTOR` × the limit is read and discarded,
    so that an ordinary client (which writes the whole body before reading) sees the 413 and
    not a reset connection; a larger one is answered at once and the connection closed.
    """

    def __init__(self, app: Any, limit: Callable[[], int]) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict]],
                       send: Callable[[dict], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit()
        received = 0
        headers = dict(scope.get("headers", ()))
        if b"content-length" in headers:
            try:
                declared = int(headers[b"content-length"])
            except ValueError:
                await _send_json(send, 400, _error_body("invalid Content-Length", []))
                return
            if declared > limit:
                # a client waiting for "100 Continue" has sent nothing yet: answer at once
                if declared <= DRAIN_FACTOR * limit and b"expect" not in headers:
                    await _drain(receive, DRAIN_FACTOR * limit)
                await _send_json(send, 413, _too_large(limit))
                return
        started = False
        complete = False  # the whole body has been received: nothing left to drain

        async def counted() -> dict:
            nonlocal received, complete
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > limit:
                    raise _BodyTooLarge
            return message

        async def watched(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except _BodyTooLarge:
            if started:
                raise
            if not complete:  # (receive() after the last part would wait for a disconnect)
                await _drain(receive, DRAIN_FACTOR * limit - received)
            await _send_json(send, 413, _too_large(limit))


DRAIN_FACTOR = 4
"""An oversized body up to this many times the limit is read (and discarded) before the 413."""


async def _drain(receive: Callable[[], Awaitable[dict]], budget: int) -> None:
    while budget > 0:
        message = await receive()
        if message["type"] != "http.request":
            return
        budget -= len(message.get("body", b""))
        if not message.get("more_body", False):
            return


async def _send_json(send: Callable[[dict], Awaitable[None]], status: int, body: Any) -> None:
    data = json.dumps(body, ensure_ascii=False).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": data})


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


async def _read_json(request: Request) -> Any:
    """The request body as JSON. Raises :class:`ApiError` 400 naming the problem (empty, not
    UTF-8, not JSON, nested too deeply, lone surrogates)."""
    body = await request.body()
    if not body.strip():
        raise ApiError(400, "empty body: expected JSON", [{"field": "(body)", "message": "empty body"}])
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ApiError(400, "body is not UTF-8",
                       [{"field": "(body)", "message": f"not UTF-8: {e.reason} at byte {e.start}"}]) from None
    try:
        doc = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ApiError(400, "malformed JSON",
                       [{"field": "(body)", "message": "JSON nested too deeply"}]) from None
    except ValueError as e:  # JSONDecodeError, too many digits, NaN/Infinity
        raise ApiError(400, "malformed JSON", [{"field": "(body)", "message": f"not valid JSON: {e}"}]) from None
    if "\\ud" in text.lower():
        try:
            json.dumps(doc, ensure_ascii=False).encode("utf-8")
        except (UnicodeEncodeError, RecursionError):
            raise ApiError(400, "malformed JSON",
                           [{"field": "(body)", "message": "lone UTF-16 surrogate in a string"}]) from None
    return doc


def _check_times(events: Iterable[tuple[str, Event]], config: Config, now: datetime) -> None:
    """Reject events whose ``occurred_at`` cannot be placed in UTC or the school's zone (e.g.
    year 1 with a positive offset), naming the field; the engine would fail on them."""
    errors = []
    for prefix, ev in events:
        try:
            ev.normalised(now, config.school.tz).derived_dedup_key(config.school.tz)
        except (OverflowError, ValueError) as e:
            errors.append({"field": f"{prefix}occurred_at" if prefix else "occurred_at",
                           "message": f"time out of range: {e}"})
    if errors:
        raise ApiError(422, "event rejected", errors)


def _wake(daemon: Any) -> None:
    """Wake the engine loop so that what an action made due is sent at once."""
    wake = getattr(daemon, "_wake", None)
    if wake is not None:
        wake.set()


# ---------------------------------------------------------------- response models


class ErrorItem(BaseModel):
    """One bad part of a request: ``field`` (e.g. ``severity``, ``[1].summary``) and why."""

    field: str
    message: str


class ErrorOut(BaseModel):
    """A 4xx answer: ``detail`` and, per bad field, ``errors``."""

    detail: str
    errors: list[ErrorItem] = []


class IngestOut(BaseModel):
    """The intake answer for one event (``status``: see :class:`~escalator.engine.engine.IngestResult`)."""

    event_id: str
    incident_id: int | None
    status: str
    dedup_key: str


class ActionOut(BaseModel):
    """What an acknowledge or resolve did (``outcome``: see :class:`~escalator.engine.engine.ActionResult`)."""

    incident_id: int
    outcome: str
    state: str


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


class HealthOut(BaseModel):
    """``status``: ``ok``, or ``unavailable`` with ``failing`` naming each stuck part."""

    status: str
    failing: dict[str, str] | None = None


def _pydantic_errors(e: ValidationError, prefix: str = "") -> list[dict[str, str]]:
    out = []
    for err in e.errors():
        field = prefix
        for part in err["loc"]:
            field += f"[{part}]" if isinstance(part, int) else (f".{part}" if field else str(part))
        msg = err["msg"]
        if err["type"] == "missing":
            msg = "required field missing"
        out.append({"field": field or "(body)", "message": msg})
    return out


# ---------------------------------------------------------------- ack pages


_PAGE = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex, nofollow">
<title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:32em;margin:2em auto;padding:0 1em;
line-height:1.5}} small{{color:#666}} button{{font-size:1.2em;padding:.6em 1.4em}}
.box{{border:1px solid #ccc;border-radius:6px;padding:1em}}</style></head>
<body>{body}</body></html>
"""

_OUTCOME = {
    "acknowledged": ("已确认，升级已停止。", "Acknowledged; escalation stopped."),
    "step_confirmed": ("本级已确认，已通知上一级。", "This level confirmed; the next level is being told."),
    "step_confirmed_late": ("已记录确认（本级已超时上报）。", "Confirmation recorded (this level was overdue)."),
    "seen": ("已知悉，已记录。", "Noted as seen."),
    "already_acknowledged": ("此事件已被确认。", "This incident was already acknowledged."),
    "already_resolved": ("此事件已处置完毕。", "This incident is already resolved."),
    "resolved": ("此事件已处置完毕。", "This incident is resolved."),
}
_STATE = {"triggered": "待处理", "acknowledged": "已确认", "resolved": "已处置"}


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(title=html.escape(title), body=body), status_code=status,
                        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
                                 "X-Frame-Options": "DENY"})


def _not_found_page() -> HTMLResponse:
    return _page("链接无效 / Invalid link",
                 "<h1>链接无效或已失效</h1><p><small>This acknowledge link is unknown.</small></p>", 404)


def _incident_html(inc: Any) -> str:
    e = html.escape
    category = CATEGORY["zh"].get(inc.category, inc.category)
    kind = KIND["zh"].get(inc.kind, inc.kind)
    severity = SEVERITY["zh"].get(inc.severity, inc.severity)
    drill = "【演练】" if inc.drill else ""
    return (f"<p class=box><b>{e(drill)}事件 #{inc.id}</b> · {e(category)}{e(kind)} · 【{e(severity)}】<br>"
            f"<small>Incident #{inc.id} · {e(CATEGORY['en'].get(inc.category, inc.category))} · "
            f"{e(inc.severity)}</small><br>"
            f"状态：{e(_STATE.get(inc.state, inc.state))} <small>({e(inc.state)})</small></p>")


# ---------------------------------------------------------------- the app


def _incident_out(inc: Any) -> dict[str, Any]:
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


def _ingest_out(r: IngestResult) -> dict[str, Any]:
    return {"event_id": r.event_id, "incident_id": r.incident_id, "status": r.status,
            "dedup_key": r.dedup_key}


def _schema_components(*models: type[BaseModel]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        out.update(schema.pop("$defs", {}))
        out[model.__name__] = schema
    return out


def _body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"requestBody": {"required": True, "description": description,
                            "content": {"application/json": {"schema": schema}}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "missing or wrong bearer token"},
    413: {"model": ErrorOut, "description": "request body too large"},
}
_ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    **_AUTH_ERRORS, 403: {"model": ErrorOut, "description": "not an administrator token"},
}

_bearer = HTTPBearer(auto_error=False, description="a source or administrator token")


async def _caller(request: Request,
                  cred: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]) -> Caller:
    """The bearer token's :class:`Caller`; :class:`ApiError` 401 (``WWW-Authenticate:
    Bearer``) without one or with a wrong one. Never logs the presented token."""
    state: _ApiState = request.app.state.escalator
    found = state.credentials().bearer(cred.credentials) if cred is not None else None
    if found is None:
        log.warning("api_auth_failed", path=request.url.path,
                    reason="missing bearer token" if cred is None else "unknown token",
                    client=request.client.host if request.client else None)
        raise ApiError(401, "missing or wrong bearer token",
                       headers={"WWW-Authenticate": 'Bearer realm="escalator"'})
    return found


async def _admin(who: Annotated[Caller, Depends(_caller)]) -> Caller:
    """An administrator :class:`Caller`; :class:`ApiError` 403 for a source token."""
    if not who.admin:
        raise ApiError(403, f"token {who.name!r} may only submit events; this needs an "
                            "administrator token")
    return who


Source = Annotated[Caller, Depends(_caller)]
Admin = Annotated[Caller, Depends(_admin)]
IncidentId = Annotated[int, Path(ge=1, le=2**62, description="incident number")]
MonitorName = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")]


def create_app(daemon: Any) -> FastAPI:
    """The FastAPI app of ``daemon`` (an :class:`escalator.service.daemon.Daemon`: ``engine``,
    ``store``, ``config``, ``settings``, ``clock``, ``async ingest(events, source)``).

    Attaches a per-daemon :class:`~escalator.service.metrics.Metrics` to the daemon, its engine and
    delivery (``daemon.metrics``). Raises ``ValueError`` naming a token or routing key whose
    secret cannot be read.
    """
    state = _ApiState(daemon)
    metrics = getattr(daemon, "metrics", None) or Metrics(daemon.store)
    daemon.metrics = daemon.engine.metrics = metrics
    if getattr(daemon, "delivery", None) is not None:
        daemon.delivery.metrics = metrics

    app = FastAPI(
        title="escalator", version=__version__,
        description="School joint prevention and control (学校联防联控): notification and "
                    "escalation daemon. See docs/api.md.",
        docs_url="/docs", redoc_url=None, openapi_url="/openapi.json",
    )
    app.state.escalator = state
    app.add_middleware(BodyLimit, limit=lambda: state.max_body)

    # ------------------------------------------------------------ errors

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(_error_body(exc.detail, exc.errors), status_code=exc.status,
                            headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err.get("loc", ()))
            errors.append({"field": field or "(request)", "message": str(err.get("msg", "invalid"))})
        return JSONResponse(_error_body("invalid request", errors), status_code=422)

    @app.exception_handler(StoreUnavailable)
    async def _store_unavailable(request: Request, exc: StoreUnavailable) -> JSONResponse:
        # the store cannot write (disk or database full, I/O error, read-only, locked too
        # long): the transaction rolled back, so nothing of the request was stored; a client
        # retries later (docs/reliability.md)
        cause = exc.cause
        log.error("store_unavailable", path=request.url.path, reason=cause)
        msg = f"store unavailable: {cause}; nothing was stored, try again later"
        return JSONResponse(_error_body(msg, [{"field": "(store)", "message": cause}]),
                            status_code=503, headers={"Retry-After": str(STORE_RETRY_AFTER)})

    async def ingest(raw_events: list[tuple[str, Event]], source: str) -> list[IngestResult]:
        _check_times(raw_events, daemon.config, daemon.clock.now())
        return await daemon.ingest([e for _, e in raw_events], source)

    # ------------------------------------------------------------ events

    event_list = {"type": "array", "items": _ref("Event"), "minItems": 1, "maxItems": 1000}

    @app.post("/api/v1/events", status_code=202, tags=["intake"],
              response_model=IngestOut | list[IngestOut], responses={
                  **_AUTH_ERRORS, 400: {"model": ErrorOut, "description": "malformed JSON"},
                  422: {"model": ErrorOut, "description": "invalid event; errors name each field"}},
              openapi_extra=_body({"anyOf": [_ref("Event"), event_list]},
                                  "one event, or a list of up to 1000 (all or nothing)"))
    async def post_events(request: Request, who: Source) -> Any:
        """Submit one event or a list. Committed (fsynced) before the 202; the answer names the
        incident (``status``: created, deduplicated, logged, acknowledged, resolved, ignored).
        The token's name is recorded as the source."""
        doc = await _read_json(request)
        try:
            events = parse_events(doc)
        except IntakeError as e:
            raise ApiError(422, "event rejected", e.errors) from None
        prefixes = [f"[{i}]." for i in range(len(events))] if isinstance(doc, list) else [""]
        results = await ingest(list(zip(prefixes, events, strict=True)), who.name)
        out = [_ingest_out(r) for r in results]
        return out if isinstance(doc, list) else out[0]

    # ------------------------------------------------------------ heartbeats

    async def ping(name: MonitorName, who: Source) -> HeartbeatOut:
        """Record a heartbeat of monitor ``name`` (a ``kind: heartbeat`` event with label
        ``monitor=<name>``; never an incident). GET is accepted for simple pingers."""
        ev = Event.model_validate({"kind": "heartbeat", "category": "other", "severity": "info",
                                   "summary": f"heartbeat {name}", "labels": {"monitor": name}})
        [r] = await ingest([("", ev)], who.name)
        return HeartbeatOut(event_id=r.event_id, monitor=name, status=r.status)

    for method in ("get", "post"):
        getattr(app, method)("/api/v1/heartbeats/{name}/ping", status_code=202, tags=["intake"],
                             response_model=HeartbeatOut, responses=_AUTH_ERRORS,
                             operation_id=f"heartbeat_ping_{method}", summary="Heartbeat ping")(ping)

    # ------------------------------------------------------------ incidents

    @app.get("/api/v1/incidents", response_model=list[IncidentOut], tags=["incidents"],
             responses=_ADMIN_ERRORS)
    async def list_incidents(
        who: Admin,
        state_: Annotated[Literal["open", "triggered", "acknowledged", "resolved", "all"],
                          Query(alias="state")] = "open",
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    ) -> Any:
        """Incidents, newest first. ``state``: ``open`` (triggered or acknowledged, default),
        one state, or ``all``."""
        states = {"open": ("triggered", "acknowledged"),
                  "all": ("triggered", "acknowledged", "resolved")}.get(state_, (state_,))
        with daemon.store.transaction() as tx:
            return [_incident_out(i) for i in tx.list_incidents(states, limit)]

    @app.get("/api/v1/incidents/{incident_id}", response_model=IncidentDetail, tags=["incidents"],
             responses={**_ADMIN_ERRORS, 404: {"model": ErrorOut, "description": "no such incident"}})
    async def get_incident(incident_id: IncidentId, who: Admin) -> Any:
        """One incident with its timeline (every transition) and its notifications."""
        with daemon.store.transaction() as tx:
            inc = tx.get_incident(incident_id)
            if inc is None:
                raise ApiError(404, f"no incident {incident_id}")
            out = _incident_out(inc)
            out["timeline"] = [{"at": t.at, "type": t.type, "actor": t.actor, "detail": t.detail}
                               for t in tx.timeline(incident_id)]
            out["notifications"] = [
                {k: getattr(n, k) for k in NotificationOut.model_fields}
                for n in tx.notifications_of(incident_id)]
            out["members"] = clusters.member_rows(tx, incident_id)
        return out

    def _action_route(verb: str) -> None:
        async def act(incident_id: IncidentId, who: Admin) -> ActionOut:
            try:
                if verb == "acknowledge":
                    r = daemon.engine.acknowledge(incident_id, actor=who.name, via="api")
                else:
                    r = daemon.engine.resolve(incident_id, actor=who.name, via="api")
            except NotFound:
                raise ApiError(404, f"no incident {incident_id}") from None
            _wake(daemon)
            return ActionOut(incident_id=r.incident_id, outcome=r.outcome, state=r.state)

        act.__doc__ = (
            "Acknowledge the incident's current step with its mode's meaning (docs/engine.md); "
            "the actor is the token's name." if verb == "acknowledge" else
            "Resolve the incident: stop its walk and cancel every pending send.")
        app.post(f"/api/v1/incidents/{{incident_id}}/{verb}", response_model=ActionOut,
                 tags=["incidents"], operation_id=f"{verb}_incident", summary=f"{verb.capitalize()} incident",
                 responses={**_ADMIN_ERRORS, 404: {"model": ErrorOut, "description": "no such incident"}})(act)

    _action_route("acknowledge")
    _action_route("resolve")

    # ------------------------------------------------------------ acknowledge links

    def _by_token(token: str) -> tuple[Any, Any, Any] | None:
        if not token or len(token) > 100:
            return None
        with daemon.store.transaction() as tx:
            n = tx.notification_by_token(token)
            if n is None:
                return None
            inc = tx.get_incident(n.incident_id)
            run = tx.get_step_run(n.step_run_id) if n.step_run_id else None
        return (n, inc, run) if inc is not None else None

    @app.get("/ack/{token}", response_class=HTMLResponse, tags=["acknowledge links"],
             responses={404: {"description": "unknown link"}})
    async def ack_page(token: str) -> HTMLResponse:
        """The page behind a message's acknowledge link: shows the incident and a button that
        POSTs here. Never changes state (chat apps prefetch links)."""
        found = _by_token(token)
        if found is None:
            return _not_found_page()
        n, inc, run = found
        e = html.escape
        to = f"<p>致：{e(n.recipient_name)}" + (f" · 第{run.step_index + 1}级" if run else "") + "</p>"
        if inc.state != "triggered":
            zh, en = _OUTCOME[f"already_{inc.state}"]
            action = f"<p>{e(zh)}<br><small>{e(en)}</small></p>"
        else:
            label = ("确认收到并处理", "Acknowledge") if n.needs_ack else ("已知悉", "Mark as seen")
            action = (f'<form method="post" action="{e(token)}"><button type="submit">'
                      f"{label[0]}<br><small>{label[1]}</small></button></form>")
        return _page(f"事件 #{inc.id} 确认", f"<h1>事件确认 <small>Acknowledge</small></h1>"
                     f"{_incident_html(inc)}{to}{action}")

    @app.post("/ack/{token}", response_class=HTMLResponse, tags=["acknowledge links"],
              responses={404: {"description": "unknown link"}})
    async def ack_submit(token: str) -> HTMLResponse:
        """Acknowledge by link: ``engine.acknowledge(token=…, actor=<recipient id>, via="link")``;
        shows the outcome."""
        found = _by_token(token)
        if found is None:
            return _not_found_page()
        n = found[0]
        try:
            r = daemon.engine.acknowledge(token=token, actor=n.recipient_id, via="link")
        except NotFound:
            return _not_found_page()
        _wake(daemon)
        with daemon.store.transaction() as tx:
            inc = tx.get_incident(r.incident_id)
        zh, en = _OUTCOME.get(r.outcome, (r.outcome, r.outcome))
        return _page(f"事件 #{r.incident_id} 已确认",
                     f"<h1>{html.escape(zh)}</h1><p><small>{html.escape(en)}</small></p>"
                     f"{_incident_html(inc)}")

    # ------------------------------------------------------------ PagerDuty Events API v2

    def _pd_invalid(errors: list[str]) -> JSONResponse:
        return JSONResponse({"status": "invalid event", "message": "Event object is invalid",
                             "errors": errors}, status_code=400)

    @app.post("/v2/enqueue", status_code=202, response_model=PdOut, tags=["compat"],
              responses={400: {"model": PdErrorOut, "description": "invalid event or routing key"},
                         413: {"model": ErrorOut, "description": "request body too large"}},
              openapi_extra=_body(_ref("PdEvent"), "a PagerDuty Events API v2 alert event"))
    async def pagerduty(request: Request) -> Any:
        """PagerDuty Events API v2 (``trigger`` / ``acknowledge`` / ``resolve`` by
        ``dedup_key``), authenticated by ``routing_key``. Answers as PagerDuty does."""
        try:
            doc = await _read_json(request)
        except ApiError as e:
            return _pd_invalid([m["message"] for m in e.errors])
        if not isinstance(doc, dict):
            return _pd_invalid(["Event object must be a JSON object"])
        key = doc.get("routing_key")
        if not isinstance(key, str) or not key:
            return _pd_invalid(["'routing_key' is missing or blank"])
        integration = state.credentials().pagerduty(key)
        if integration is None:
            log.warning("api_auth_failed", path=request.url.path, reason="unknown routing key",
                        client=request.client.host if request.client else None)
            return _pd_invalid(["Invalid routing key"])
        try:
            pd = PdEvent.model_validate(doc)
            raw, answer_key = pd_event(pd, integration)
            ev = parse_event(raw)
        except ValidationError as e:
            return _pd_invalid([f"'{x['field']}' {x['message']}" for x in _pydantic_errors(e)])
        except IntakeError as e:
            return _pd_invalid([f"'{x['field']}' {x['message']}" for x in e.errors])
        except ValueError as e:
            return _pd_invalid([str(e)])
        try:
            await ingest([("", ev)], integration)
        except ApiError as e:
            return _pd_invalid(["'payload.timestamp' " + m["message"] for m in e.errors])
        return PdOut(status="success", message="Event processed", dedup_key=answer_key)

    # ------------------------------------------------------------ Alertmanager

    @app.post("/api/v1/alertmanager", response_model=AmOut, tags=["compat"],
              responses={**_AUTH_ERRORS, 400: {"model": ErrorOut, "description": "malformed JSON"},
                         422: {"model": ErrorOut, "description": "invalid webhook body"}},
              openapi_extra=_body(_ref("AmWebhook"), "an Alertmanager webhook (version 4)"))
    async def alertmanager(request: Request, who: Source) -> Any:
        """Prometheus Alertmanager webhook v4: one event per alert, dedup key
        ``alertmanager/<fingerprint>``; a ``resolved`` alert resolves its incident (``ignored``
        when none is open). All alerts in one transaction."""
        doc = await _read_json(request)
        if not isinstance(doc, dict):
            raise ApiError(422, "webhook rejected",
                           [{"field": "(body)", "message": "expected an Alertmanager webhook object"}])
        try:
            hook = AmWebhook.model_validate(doc)
        except ValidationError as e:
            raise ApiError(422, "webhook rejected", _pydantic_errors(e)) from None
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
        results = await ingest(events, who.name) if events else []
        return AmOut(results=[AmResult(fingerprint=am_fingerprint(a), **_ingest_out(r))
                              for a, r in zip(hook.alerts, results, strict=True)])

    # ------------------------------------------------------------ health and metrics

    @app.get("/healthz", response_model=HealthOut, tags=["operations"],
             responses={503: {"model": HealthOut, "description": "a part is stuck"}})
    async def healthz() -> Any:
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

    @app.get("/metrics", tags=["operations"], response_class=Response,
             responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}})
    async def metrics_endpoint() -> Response:
        """Prometheus metrics (text format 0.0.4) of this daemon."""
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    # ------------------------------------------------------------ OpenAPI components

    extra = _schema_components(Event, PdEvent, AmWebhook)
    plain_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = plain_openapi()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, definition in extra.items():
                components.setdefault(name, definition)
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]
    return app


# ---------------------------------------------------------------- serving


def parse_listen(text: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:8765`` for IPv6) → ``(host, port)``; port 0 picks a free one.
    Raises ``ValueError`` for anything else."""
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"http_listen {text!r}: expected host:port, e.g. 127.0.0.1:8765")
    return host, int(port)


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


class _Server(uvicorn.Server):
    """uvicorn's server without its signal handling: the daemon owns SIGTERM/SIGINT/SIGHUP and
    stops the server by cancelling :func:`serve`."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # uvicorn would replace the daemon's handlers with signal.signal() and re-raise

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._on_started()


async def serve(daemon: Any) -> None:
    """Serve :func:`create_app` on ``daemon.settings.http_listen`` inside the running loop until
    cancelled; then shut down gracefully (at most 5 s) and re-raise. Sets ``daemon.http_port``
    (the bound port, useful with port 0) once connections are accepted. Raises ``ValueError``
    for a bad ``http_listen`` or an unreadable token secret, ``OSError`` when the address
    cannot be bound."""
    host, port = parse_listen(daemon.settings.http_listen)
    app = create_app(daemon)
    sock = _bind(host, port)
    bound = sock.getsockname()[1]

    def started() -> None:
        daemon.http_port = bound
        log.info("http_listening", host=host, port=bound)

    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off", ws="none",
                            server_header=False, timeout_graceful_shutdown=5)
    server = _Server(config, started)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await task
        raise
    finally:
        daemon.http_port = None
        sock.close()


class ApiServer:
    """The HTTP server as a supervised task of the daemon: ``await ApiServer(daemon).run()``."""

    def __init__(self, daemon: Any) -> None:
        self.daemon = daemon

    async def run(self) -> None:
        """Run :func:`serve` until cancelled."""
        await serve(self.daemon)

