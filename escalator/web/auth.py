"""Credentials: bearer tokens (administrator and source tokens) and PagerDuty routing keys,
compared in constant time, and the FastAPI dependencies that require them.

Tokens are configured under ``api.tokens`` (``admin: true`` for administrator tokens) and
``ESCALATOR_API_TOKEN`` (an administrator token named ``admin``). Source tokens may only submit
events, Alertmanager alerts and heartbeats; the token's name is recorded as the event's source
and as the actor of an acknowledgement. Secrets are never logged or shown.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated, Any

import structlog
from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from escalator.config.load import resolve_secrets
from escalator.config.models import Config
from escalator.config.settings import Settings
from escalator.web.errors import ApiError
from escalator.web.models import ErrorOut

log = structlog.get_logger(__name__)

ADMIN_TOKEN_NAME = "admin"
"""The name (source/actor) of the ``ESCALATOR_API_TOKEN`` administrator token."""


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


class Keyring:
    """The :class:`Credentials` of a daemon, re-read when the daemon's config object changes
    (SIGHUP). A reload whose secrets cannot be read keeps the previous credentials and logs
    why. Raises ``ValueError`` (from :meth:`Credentials.load`) when created with unreadable
    secrets."""

    def __init__(self, daemon: Any) -> None:
        self.daemon = daemon
        self._config = daemon.config
        self._credentials = Credentials.load(daemon.config, daemon.settings)

    def current(self) -> Credentials:
        """The credentials of the daemon's current config."""
        config = self.daemon.config
        if config is not self._config:
            try:
                self._credentials = Credentials.load(config, self.daemon.settings)
            except ValueError as e:
                log.error("api_credentials_reload_failed", problems=str(e))
            self._config = config
        return self._credentials


async def current_credentials(request: Request) -> Credentials:
    """Dependency: the app's current :class:`Credentials` (``app.state.keyring``)."""
    keyring: Keyring = request.app.state.keyring
    return keyring.current()


_bearer = HTTPBearer(auto_error=False, description="a source or administrator token")


BEARER_SECURITY = [{"HTTPBearer": []}]
"""The OpenAPI ``security`` of a route that calls :func:`caller` itself (no dependency)."""


async def caller(request: Request) -> Caller:
    """The bearer token's :class:`Caller` of ``request`` (what :func:`require_token` gives,
    without FastAPI's dependency solving, for the intake route that every event takes);
    :class:`ApiError` 401 as there."""
    return _known(request, await _bearer(request), request.app.state.keyring.current())


async def require_token(
    request: Request,
    cred: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    credentials: Annotated[Credentials, Depends(current_credentials)],
) -> Caller:
    """Dependency: the bearer token's :class:`Caller`; :class:`ApiError` 401
    (``WWW-Authenticate: Bearer``) without one or with a wrong one. Never logs the presented
    token."""
    return _known(request, cred, credentials)


def _known(request: Request, cred: HTTPAuthorizationCredentials | None,
           credentials: Credentials) -> Caller:
    found = credentials.bearer(cred.credentials) if cred is not None else None
    if found is None:
        log.warning("api_auth_failed", path=request.url.path,
                    reason="missing bearer token" if cred is None else "unknown token",
                    client=request.client.host if request.client else None)
        raise ApiError(401, "missing or wrong bearer token",
                       headers={"WWW-Authenticate": 'Bearer realm="escalator"'})
    return found


async def require_admin(who: Annotated[Caller, Depends(require_token)]) -> Caller:
    """Dependency: an administrator :class:`Caller`; :class:`ApiError` 403 for a source
    token."""
    if not who.admin:
        raise ApiError(403, f"token {who.name!r} may only submit events; this needs an "
                            "administrator token")
    return who


Source = Annotated[Caller, Depends(require_token)]
"""A route parameter: the caller, with a source or administrator token."""
Admin = Annotated[Caller, Depends(require_admin)]
"""A route parameter: the caller, with an administrator token."""

AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "missing or wrong bearer token"},
    413: {"model": ErrorOut, "description": "request body too large"},
}
"""The OpenAPI ``responses`` of a route needing a bearer token."""
ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    **AUTH_ERRORS, 403: {"model": ErrorOut, "description": "not an administrator token"},
}
"""The OpenAPI ``responses`` of a route needing an administrator token."""
