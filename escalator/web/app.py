"""The FastAPI app of one daemon (``docs/api.md``, ``docs/compat.md``): the routers, the
error handlers, the body-size cap, the metrics wiring and the OpenAPI components. The only
module that knows every router.

Credentials (:mod:`escalator.web.auth`): bearer tokens for ``/api/v1/…``; the PagerDuty intake
authenticates by its ``routing_key``, acknowledge pages by their link token, SMS reply
webhooks (``/replies/…``) by a signature or a secret in the path. ``/healthz``, ``/metrics``,
``/ack/…``, ``/replies/…``, ``/docs`` and ``/openapi.json`` need no bearer token. The web console
(``/``, :mod:`escalator.web.routers.console`) signs people in with its own sessions; its
assets are under ``/static``, Swagger UI's under ``/docs/assets`` (nothing from a CDN).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles

from escalator import __version__
from escalator.events import Event
from escalator.intake.compat import AmWebhook, PdEvent
from escalator.store.base import Conflict, StoreUnavailable
from escalator.web import errors
from escalator.web.auth import Keyring
from escalator.web.limits import BodyLimit
from escalator.web.openapi import add_components
from escalator.web.routers import (
    ack,
    compat,
    console,
    docs,
    events,
    incidents,
    ops,
    replies,
    roster,
    silences,
)


def create_app(daemon: Any) -> FastAPI:
    """The FastAPI app of ``daemon`` (an :class:`escalator.service.daemon.Daemon`: ``engine``,
    ``store``, ``config``, ``settings``, ``clock``, ``async ingest(events, source)``).

    ``app.state.daemon`` is the daemon and ``app.state.keyring`` its
    :class:`~escalator.web.auth.Keyring`; ``/metrics`` serves ``daemon.metrics`` (the daemon's
    :class:`~escalator.service.metrics.Metrics`). Raises ``ValueError`` naming a token or
    routing key whose secret cannot be read.
    """
    keyring = Keyring(daemon)
    app = FastAPI(
        title="escalator", version=__version__,
        description="School joint prevention and control (学校联防联控): notification and "
                    "escalation daemon. See docs/api.md.",
        docs_url=None, redoc_url=None, openapi_url="/openapi.json",
    )
    app.state.daemon = daemon
    app.state.keyring = keyring
    app.add_middleware(BodyLimit, limit=lambda: int(daemon.config.api.max_body_bytes))
    app.add_exception_handler(errors.ApiError, errors.api_error)
    app.add_exception_handler(RequestValidationError, errors.invalid_request)
    app.add_exception_handler(StoreUnavailable, errors.store_unavailable)
    app.add_exception_handler(Conflict, errors.store_conflict)
    for module in (events, incidents, ack, compat, ops, silences, roster, replies):
        app.include_router(module.router)
    docs.install(app)
    console.install(app)
    app.mount("/static", StaticFiles(packages=[("escalator.web", "static")]), name="static")
    add_components(app, Event, PdEvent, AmWebhook)
    return app
