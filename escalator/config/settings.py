"""Daemon settings (pydantic-settings): environment ``ESCALATOR_*`` wins over the config file.

Fields: ``config`` (path of the YAML file), ``state_dir`` (database and state), ``spool_dir``,
``http_listen`` (``host:port``, default ``127.0.0.1:8765``), ``api_token`` (administrator
token; never logged), ``log_format`` (``auto`` | ``json`` | ``console``), ``log_level``
(``debug`` | ``info`` | ``warning`` | ``error``), ``event_loop`` (``auto``: uvloop where installed,
else asyncio's own; ``uvloop``; ``asyncio``), ``stuck_seconds`` (``/healthz`` names a lane
that has had work without progress for this long; seconds, default 30), ``database_url``
(where the store lives: a ``postgresql://`` / ``postgres://`` URL for PostgreSQL, or a SQLite
file path, relative to the config file's folder when given there; default: ``escalator.sqlite3``
under ``state_dir``; see :attr:`Settings.store_target`), ``node`` (this
daemon's name among several on one database, default ``<hostname>:<HTTP port>``:
:attr:`Settings.node_name`) and ``node_ttl`` (seconds without a beat after which the other
daemons count it dead and release its sends in flight, default 8; docs/reliability.md
"Several daemons").
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict


class Settings(BaseSettings):
    """Resolved daemon settings. Build with :func:`load_settings`."""

    model_config = SettingsConfigDict(env_prefix="ESCALATOR_", extra="ignore")

    config: Path | None = None
    state_dir: Path = Path("/var/lib/escalator")
    spool_dir: Path | None = None
    http_listen: str = "127.0.0.1:8765"
    api_token: SecretStr | None = None
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"
    public_base_url: str | None = None
    stuck_seconds: float = 30.0
    database_url: str | None = None
    node: str | None = None
    node_ttl: float = Field(8.0, gt=0)

    @property
    def node_name(self) -> str:
        """This daemon's node name: ``node`` when set, else ``<hostname>:<HTTP port>`` (unique
        per host; ``<hostname>:off`` without the HTTP API)."""
        if self.node:
            return self.node
        listen = self.http_listen.strip()
        port = listen.rsplit(":", 1)[-1] if listen not in ("", "off") else "off"
        return f"{socket.gethostname()}:{port}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment wins over values from the config file (passed as init kwargs).
        return (env_settings, init_settings)

    @property
    def uses_postgres(self) -> bool:
        """Whether the store is PostgreSQL (``database_url`` is a ``postgresql://`` URL)."""
        return self.database_url is not None and is_postgres_url(self.database_url)

    @property
    def database(self) -> Path:
        """The SQLite file: ``database_url`` when it is a path, else ``escalator.sqlite3`` under
        ``state_dir`` (also with PostgreSQL, where no file is opened: see :attr:`store_target`)."""
        if self.database_url and not self.uses_postgres:
            return Path(self.database_url)
        return self.state_dir / "escalator.sqlite3"

    @property
    def store_target(self) -> str | Path:
        """What the daemon opens (:func:`escalator.store.open_store`): the PostgreSQL URL, or
        the SQLite file (:attr:`database`)."""
        return self.database_url if self.uses_postgres else self.database  # type: ignore[return-value]

    @property
    def store_display(self) -> str:
        """:attr:`store_target` for logs and banners: a URL without its password."""
        return redact_url(str(self.store_target))


POSTGRES_SCHEMES = ("postgresql://", "postgres://")
"""How a ``database_url`` naming a PostgreSQL server begins."""


def is_postgres_url(target: str | os.PathLike[str]) -> bool:
    """Whether ``target`` (a ``database_url``) names a PostgreSQL server rather than a file."""
    return isinstance(target, str) and target.lower().startswith(POSTGRES_SCHEMES)


def redact_url(target: str) -> str:
    """``target`` with the password of a URL replaced by ``***`` (and a ``password=`` query
    parameter likewise); a file path unchanged. For logs: secrets never in logs."""
    if not is_postgres_url(target):
        return target
    parts = urlsplit(target)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}{':***' if colon else ''}@{host}"
    query = "&".join("password=***" if q.lower().startswith("password=") else q
                     for q in parts.query.split("&")) if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def load_settings(file_values: dict[str, Any] | None = None, base_dir: Path | None = None,
                  **overrides: Any) -> Settings:
    """Settings from ``file_values`` (the config file's ``daemon:`` section, relative paths read
    from ``base_dir``), overridden by ``ESCALATOR_*`` environment variables, then by explicit
    ``overrides`` (CLI flags)."""
    values = {k: v for k, v in (file_values or {}).items() if v is not None}
    for key in ("state_dir", "spool_dir", "database_url"):
        if (key in values and base_dir is not None and not is_postgres_url(values[key])
                and not Path(values[key]).is_absolute()):
            values[key] = base_dir / values[key]
    if isinstance(values.get("database_url"), Path):
        values["database_url"] = str(values["database_url"])
    settings = Settings(**values)
    return settings.model_copy(update={k: v for k, v in overrides.items() if v is not None})
