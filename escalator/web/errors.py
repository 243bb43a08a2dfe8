"""The API's error answers: :class:`ApiError` (4xx) and the handlers that turn it, a request
validation failure and :class:`~escalator.store.base.StoreUnavailable` into JSON
``{detail, errors: [{field, message}]}``."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from escalator.store.base import Conflict, StoreUnavailable

log = structlog.get_logger(__name__)

STORE_RETRY_AFTER = 30
"""``Retry-After`` (seconds) of the 503 answered when the store cannot write."""


class ApiError(Exception):
    """A 4xx answer: ``status``, ``detail`` (one line) and ``errors`` (``[{field, message}]``)."""

    def __init__(self, status: int, detail: str, errors: list[dict[str, str]] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers
        self.errors = errors if errors is not None else [{"field": "(request)", "message": detail}]


def error_body(detail: str, errors: list[dict[str, str]]) -> dict[str, Any]:
    """The JSON of an error answer: ``{"detail": detail, "errors": errors}``."""
    return {"detail": detail, "errors": errors}


def pydantic_errors(e: ValidationError, prefix: str = "") -> list[dict[str, str]]:
    """``e``'s errors as ``[{field, message}]``, fields written ``a.b[0].c`` after ``prefix``."""
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


async def api_error(request: Request, exc: ApiError) -> JSONResponse:
    """Exception handler: an :class:`ApiError` as its status, body and headers."""
    return JSONResponse(error_body(exc.detail, exc.errors), status_code=exc.status,
                        headers=exc.headers)


async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """Exception handler: a path, query or header FastAPI rejected, as 422 naming each field."""
    errors = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err.get("loc", ()))
        errors.append({"field": field or "(request)", "message": str(err.get("msg", "invalid"))})
    return JSONResponse(error_body("invalid request", errors), status_code=422)


async def store_unavailable(request: Request, exc: StoreUnavailable) -> JSONResponse:
    """Exception handler: the store cannot write (disk or database full, I/O error, read-only,
    locked too long). The transaction rolled back, so nothing of the request was stored; 503
    with ``Retry-After`` naming the cause, and a client retries later (docs/reliability.md)."""
    cause = exc.cause
    log.error("store_unavailable", path=request.url.path, reason=cause)
    msg = f"store unavailable: {cause}; nothing was stored, try again later"
    return JSONResponse(error_body(msg, [{"field": "(store)", "message": cause}]),
                        status_code=503, headers={"Retry-After": str(STORE_RETRY_AFTER)})


async def store_conflict(request: Request, exc: Conflict) -> JSONResponse:
    """Exception handler: a write kept losing a race with another writer (another daemon on
    the same database) after the retries (:mod:`escalator.store.retry`). Rolled back, nothing
    stored: 503 with ``Retry-After``, never a 5xx of its own (docs/reliability.md "Several
    daemons")."""
    log.warning("store_conflict", path=request.url.path, reason=str(exc))
    msg = "busy: another writer got there first; nothing was stored, try again"
    return JSONResponse(error_body(msg, [{"field": "(store)", "message": "conflict"}]),
                        status_code=503, headers={"Retry-After": "1"})
