"""Silences for administrators (docs/silences.md): list, create, expire.

``GET /api/v1/silences`` lists them (the config file's standing windows too), ``POST`` makes
one (the caller's token name is its creator), ``DELETE /api/v1/silences/{id}`` — or
``POST /api/v1/silences/{id}/expire`` for clients without DELETE — ends one now, and the
incidents it held walk from their first step. Administrator tokens only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from escalator.config.quieting import WeeklySchedule
from escalator.engine import silences
from escalator.web.auth import ADMIN_ERRORS, Admin
from escalator.web.deps import CurrentDaemon, in_store, wake
from escalator.web.errors import ApiError
from escalator.web.models import ErrorOut

router = APIRouter(tags=["silences"])

SilenceId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$",
                                description="silence id")]


class SilenceIn(BaseModel):
    """A new silence: ``matchers`` (all must match, e.g. ``'place=~"1号楼.*"'``), why
    (``comment``), and either ``ends_at`` (from ``starts_at``, default now) or a weekly
    ``schedule``; ``exempt_critical`` (default true) lets ``critical`` events through. Naive
    times are school-local."""

    model_config = ConfigDict(extra="forbid")
    matchers: list[Annotated[str, Field(min_length=1, max_length=500)]] = Field(
        min_length=1, max_length=20)
    comment: Annotated[str, Field(min_length=1, max_length=500)]
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    schedule: WeeklySchedule | None = None
    exempt_critical: bool = True


class SilenceOut(BaseModel):
    """A silence as listed: ``state`` ``active`` / ``pending`` / ``expired``; ``origin``
    ``config`` (a standing window of the config file: edit the file to change it) or ``api``."""

    id: str
    state: str
    origin: str
    matchers: list[str]
    comment: str
    created_by: str
    starts_at: datetime | None
    ends_at: datetime | None
    schedule: dict[str, Any] | None
    exempt_critical: bool
    expired_at: datetime | None
    expired_by: str | None
    held: int


class ExpireOut(BaseModel):
    """What expiring did: the silence and how many incidents it held (now walking)."""

    id: str
    released: int


@router.get("/api/v1/silences", response_model=list[SilenceOut], responses=ADMIN_ERRORS)
async def list_silences(
    who: Admin, daemon: CurrentDaemon,
    state: Annotated[Literal["current", "active", "pending", "expired", "all"],
                     Query()] = "current",
) -> Any:
    """Silences, the config file's standing windows first. ``state``: ``current`` (active or
    pending, default), one state, or ``all``."""
    def read() -> list[dict[str, Any]]:
        with daemon.store.transaction() as tx:
            return silences.overview(tx, daemon.config, daemon.clock.now(), state)

    return await in_store(daemon, read)


@router.post("/api/v1/silences", response_model=SilenceOut, status_code=201,
             responses={**ADMIN_ERRORS, 422: {"model": ErrorOut, "description": "bad silence"}})
async def create_silence(body: SilenceIn, who: Admin, daemon: CurrentDaemon) -> Any:
    """Make a silence; its creator is the token's name."""
    config, now = daemon.config, daemon.clock.now()

    def make() -> dict[str, Any]:
        with daemon.store.transaction() as tx:
            s = silences.create(
                tx, config, matchers=body.matchers, created_by=who.name, comment=body.comment,
                now=now, starts_at=body.starts_at, ends_at=body.ends_at,
                schedule=body.schedule.model_dump(mode="json") if body.schedule else None,
                exempt_critical=body.exempt_critical)
        return silences.describe(s, "api", now, config.school.tz, 0)

    try:
        return await in_store(daemon, make)
    except silences.SilenceError as e:
        raise ApiError(422, "silence rejected", [{"field": e.field, "message": str(e)}]) from None


_EXPIRE_ERRORS = {**ADMIN_ERRORS, 404: {"model": ErrorOut, "description": "no such silence in force"},
                  409: {"model": ErrorOut, "description": "a silence of the config file"}}


@router.delete("/api/v1/silences/{silence_id}", response_model=ExpireOut, responses=_EXPIRE_ERRORS)
async def delete_silence(silence_id: SilenceId, who: Admin, daemon: CurrentDaemon) -> Any:
    """Expire the silence now; the incidents it held walk from their first step."""
    return await _expire(daemon, silence_id, who.name)


@router.post("/api/v1/silences/{silence_id}/expire", response_model=ExpireOut,
             responses=_EXPIRE_ERRORS)
async def expire_silence(silence_id: SilenceId, who: Admin, daemon: CurrentDaemon) -> Any:
    """The same as ``DELETE /api/v1/silences/{id}``."""
    return await _expire(daemon, silence_id, who.name)


async def _expire(daemon: Any, silence_id: str, actor: str) -> ExpireOut:
    def run() -> int:
        with daemon.store.transaction() as tx:
            return silences.expire(tx, daemon.config, silence_id, by=actor, now=daemon.clock.now())

    try:
        released = await in_store(daemon, run)
    except silences.SilenceError as e:
        raise ApiError(409, str(e), [{"field": e.field, "message": str(e)}]) from None
    except LookupError as e:
        raise ApiError(404, str(e)) from None
    wake(daemon)
    return ExpireOut(id=silence_id, released=released)
