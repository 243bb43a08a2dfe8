"""The duty roster for administrators (docs/rosters.md): who is on duty, overrides and swaps.
Names and ids only — never a contact."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from escalator.school import roster
from escalator.web.auth import ADMIN_ERRORS, Admin
from escalator.web.deps import CurrentDaemon, in_store
from escalator.web.errors import ApiError
from escalator.web.models import ErrorOut

log = structlog.get_logger("escalator.web.roster")
router = APIRouter(tags=["roster"])

_BAD = {**ADMIN_ERRORS, 422: {"model": ErrorOut, "description": "a field cannot be kept"}}
Day = date
"""``date`` under another name, for a model field called ``date``."""
MAX_SHOW_DAYS = 92
"""Longest span ``GET /api/v1/roster`` shows (days)."""


class PersonOut(BaseModel):
    id: str
    name: str


class ShiftOut(BaseModel):
    """A span with the same people on duty as ``role`` (aware UTC and school-local times)."""

    role: str
    start: datetime
    end: datetime
    start_local: str
    end_local: str
    people: list[PersonOut]
    overrides: list[int]


class OverrideOut(BaseModel):
    """A stored override; ``text``: in the school's words (张老师 替 李老师 …)."""

    id: int
    role: str
    person: str
    replaces: str | None
    starts_at: datetime
    ends_at: datetime
    created_by: str
    created_at: datetime
    comment: str | None
    swap_id: int | None
    cancelled_at: datetime | None
    text: str


class OverrideIn(BaseModel):
    """``person`` on duty as ``role`` on the shift of ``date`` (school-local), or from
    ``start`` to ``end`` (ISO-8601; without an offset: school-local); in place of ``replaces``
    when given."""

    model_config = ConfigDict(extra="forbid")
    role: str = "duty_officer"
    person: str = Field(min_length=1, max_length=64)
    replaces: str | None = Field(default=None, max_length=64)
    date: Day | None = None
    start: datetime | None = None
    end: datetime | None = None
    comment: str | None = Field(default=None, max_length=500)


class SwapIn(BaseModel):
    """``second`` takes ``first``'s shift of ``first_date``; ``first`` takes ``second``'s of
    ``second_date``."""

    model_config = ConfigDict(extra="forbid")
    role: str = "duty_officer"
    first: str = Field(min_length=1, max_length=64)
    first_date: date
    second: str = Field(min_length=1, max_length=64)
    second_date: date
    comment: str | None = Field(default=None, max_length=500)


def _out(config: Any, o: Any) -> dict[str, Any]:
    return {**{k: getattr(o, k) for k in OverrideOut.model_fields if k != "text"},
            "text": roster.override_text(config, o)}


async def _call(daemon: Any, fn: Any, *args: Any) -> Any:
    """``fn(tx, config, now, *args)`` in one store transaction; a roster error is a 422 naming
    its field."""
    def run() -> Any:
        with daemon.store.transaction() as tx:
            return fn(tx, daemon.config, daemon.clock.now(), *args)
    try:
        return await in_store(daemon, run)
    except roster.RosterError as e:
        log.info("roster_request_refused", field=e.field, reason=str(e))
        raise ApiError(422, str(e), [{"field": e.field, "message": str(e)}]) from None


@router.get("/api/v1/roster", response_model=list[ShiftOut], responses=_BAD)
async def show_roster(
    who: Admin, daemon: CurrentDaemon,
    from_: Annotated[date | None, Query(alias="from", description="first school-local date "
                                        "(default: today)")] = None,
    to: Annotated[date | None, Query(description="last school-local date (default: from)")] = None,
    role: Annotated[str | None, Query(max_length=64)] = None,
) -> Any:
    """Who is on duty from ``from`` to ``to`` (both included, at most 92 days): per role, the
    spans with the same people (a span with nobody is a gap), overrides applied."""
    first = from_ or daemon.clock.now().astimezone(daemon.config.school.tz).date()
    last = to or first
    if last < first:
        raise ApiError(422, "to is before from", [{"field": "to", "message": "before from"}])
    if last - first > timedelta(days=MAX_SHOW_DAYS):
        raise ApiError(422, f"at most {MAX_SHOW_DAYS} days at once",
                       [{"field": "to", "message": f"at most {MAX_SHOW_DAYS} days after from"}])
    return await _call(daemon, lambda tx, config, now: [
        roster.shift_row(config, s)
        for s in roster.shifts_between(tx, config, first, last, [role] if role else None)])


@router.get("/api/v1/roster/overrides", response_model=list[OverrideOut], responses=ADMIN_ERRORS)
async def list_overrides(
    who: Admin, daemon: CurrentDaemon,
    role: Annotated[str | None, Query(max_length=64)] = None,
    all_: Annotated[bool, Query(alias="all", description="include cancelled ones")] = False,
) -> Any:
    """Overrides in force now or later (a year ahead), oldest first."""
    return await _call(daemon, lambda tx, config, now: [
        _out(config, o) for o in tx.roster_overrides(now, now + timedelta(days=366), role,
                                                     cancelled=all_)])


@router.post("/api/v1/roster/overrides", response_model=OverrideOut, status_code=201,
             responses=_BAD)
async def add_override(body: OverrideIn, who: Admin, daemon: CurrentDaemon) -> Any:
    """Add an override (张老师 替 李老师 12月8日); the actor is the token's name."""
    def add(tx: Any, config: Any, now: datetime) -> dict[str, Any]:
        start, end = roster.period(config, body.role, day=body.date, start=body.start,
                                   end=body.end)
        oid = roster.add_override(tx, config, role=body.role, person=body.person,
                                  replaces=body.replaces, start=start, end=end,
                                  by=f"api:{who.name}", at=now, comment=body.comment)
        [o] = [o for o in tx.roster_overrides(start, end, body.role) if o.id == oid]
        return _out(config, o)
    out = await _call(daemon, add)
    log.info("roster_override_added", override_id=out["id"], role=out["role"], actor=who.name)
    return out


@router.post("/api/v1/roster/swaps", response_model=list[OverrideOut], status_code=201,
             responses=_BAD)
async def add_swap(body: SwapIn, who: Admin, daemon: CurrentDaemon) -> Any:
    """Swap two shifts (换班): two overrides, withdrawn together."""
    def swap(tx: Any, config: Any, now: datetime) -> list[dict[str, Any]]:
        ids = roster.add_swap(tx, config, role=body.role, first=body.first,
                              first_day=body.first_date, second=body.second,
                              second_day=body.second_date, by=f"api:{who.name}", at=now,
                              comment=body.comment)
        found = {o.id: o for d in (body.first_date, body.second_date)
                 for o in tx.roster_overrides(*roster.period(config, body.role, day=d), body.role)}
        return [_out(config, found[i]) for i in ids]
    out = await _call(daemon, swap)
    log.info("roster_swap_added", override_ids=[o["id"] for o in out], actor=who.name)
    return out


@router.delete("/api/v1/roster/overrides/{override_id}", responses={
    **ADMIN_ERRORS, 404: {"model": ErrorOut, "description": "no such override in force"}})
async def cancel_override(override_id: Annotated[int, Path(ge=1, le=2**62)], who: Admin,
                          daemon: CurrentDaemon) -> dict[str, list[int]]:
    """Withdraw an override (and the other half of its swap)."""
    ids = await _call(daemon, lambda tx, config, now: tx.cancel_roster_override(
        override_id, now, f"api:{who.name}"))
    if not ids:
        raise ApiError(404, f"no override {override_id} in force")
    log.info("roster_override_cancelled", override_ids=ids, actor=who.name)
    return {"cancelled": ids}
