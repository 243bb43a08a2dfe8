"""Daemon settings (pydantic-settings): environment ``ESCALATOR_*`` wins over the config file.

Fields: ``config`` (path of the YAML file), ``state_dir`` (database and state), ``spool_dir``,
``http_listen`` (``host:port``, default ``127.0.0.1:8765``), ``api_token`` (administrator
token; never logged), ``log_format`` (``auto`` | ``json`` | ``console``), ``log_level``
(``debug`` | ``info`` | ``warning`` | ``error``), ``event_loop`` (``auto``: uvloop where installed,
else asyncio's own; ``uvloop``; ``asyncio``), ``stuck_seconds`` (``/healthz`` names a lane
that has had work without progress for this long; seconds, default 30), ``node`` (this
daemon's name among several on one database, default ``<hostname>:<HTTP port>``:
:attr:`Settings.node_name`) and ``node_ttl`` (seconds without a beat after which the other
daemons count it dead and release its sends in flight, default 8; docs/reliability.md
"Several daemons").
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, Literal

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
    def database(self) -> Path:
        """The SQLite file under ``state_dir``."""
        return self.state_dir / "escalator.sqlite3"


def load_settings(file_values: dict[str, Any] | None = None, base_dir: Path | None = None,
                  **overrides: Any) -> Settings:
    """Settings from ``file_values`` (the config file's ``daemon:`` section, relative paths read
    from ``base_dir``), overridden by ``ESCALATOR_*`` environment variables, then by explicit
    ``overrides`` (CLI flags)."""
    values = {k: v for k, v in (file_values or {}).items() if v is not None}
    for key in ("state_dir", "spool_dir"):
        if key in values and base_dir is not None and not Path(values[key]).is_absolute():
            values[key] = base_dir / values[key]
    settings = Settings(**values)
    return settings.model_copy(update={k: v for k, v in overrides.items() if v is not None})
