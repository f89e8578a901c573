"""Shift patterns, roster overrides and coverage: who is on shift when, and where nobody is."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo

import asyncpg
import structlog
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from pydantic import BaseModel, Field
from temporalio.service import RPCError

from activities.assignment import run_dispatch
from api.auth import STAFF, Principal, require
from api.signals import signal_tickets
from db import directory, rosters
from domain.directory import IDENT, SLUG
from domain.enums import Role
from domain.rosters import (
    PATTERN_ID,
    RosterOverride,
    RosterOverrideFields,
    ShiftPattern,
    ShiftPatternFields,
)
from domain.text import Instant

router = APIRouter(prefix="/v1", tags=["rosters"])
log = structlog.get_logger(__name__)
Ident = Annotated[str, Path(pattern=IDENT)]
PatternId = Annotated[str, Path(pattern=PATTERN_ID)]
MAX_COVERAGE_SPAN = timedelta(days=31)


class Gap(BaseModel):
    start: datetime
    end: datetime
    minutes: float


class ShiftWindow(BaseModel):
    start: datetime
    end: datetime


class AgentShifts(BaseModel):
    agent_id: str
    timezone: str
    shift_pattern_id: str | None
    shifts: list[ShiftWindow]


class ShiftPatternCreate(ShiftPatternFields):
    id: str = Field(pattern=PATTERN_ID)


class Coverage(BaseModel):
    start: datetime
    end: datetime
    language: str | None
    skill: str | None
    agents: list[str]
    gaps: list[Gap]


def _pool(request: Request) -> asyncpg.Pool:
    return request.app.state.pool


async def roster_changed(request: Request, *agent_ids: str) -> None:
    """Tell the agents' open tickets to re-read the roster (a shift may end now), then dispatch."""
    async with _pool(request).acquire() as conn:
        ticket_ids = [t for agent_id in agent_ids for t in await rosters.open_tickets_of(conn, agent_id)]
    await signal_tickets(request, ticket_ids, "roster_changed")
    client = request.app.state.client
    try:
        await run_dispatch(client, _pool(request), datetime.now(UTC), request.app.state.settings.handoff_lead)
    except (RPCError, asyncpg.PostgresError, OSError) as err:
        log.warning("dispatch after roster change failed", error=str(err))


@router.post(
    "/agents/{agent_id}/overrides", status_code=status.HTTP_201_CREATED, response_model=RosterOverride
)
async def add_override(
    agent_id: Ident, body: RosterOverrideFields, request: Request, _: Principal = Depends(require(Role.ADMIN))
) -> RosterOverride:
    """Sick leave, a swap or extra cover. Tickets of an agent who goes off shift move at once."""
    async with _pool(request).acquire() as conn:
        if await directory.get_agent(conn, agent_id) is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"agent {agent_id!r} not found")
        override = await rosters.add_override(conn, agent_id, body)
    await roster_changed(request, agent_id)
    return override


@router.get("/agents/{agent_id}/overrides", response_model=list[RosterOverride])
async def list_overrides(
    agent_id: Ident, request: Request, _: Principal = Depends(require(*STAFF))
) -> list[RosterOverride]:
    async with _pool(request).acquire() as conn:
        if await directory.get_agent(conn, agent_id) is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"agent {agent_id!r} not found")
        return await rosters.list_overrides(conn, agent_id)


@router.delete("/agents/{agent_id}/overrides/{override_id}", response_model=dict)
async def delete_override(
    agent_id: Ident, override_id: uuid.UUID, request: Request, _: Principal = Depends(require(Role.ADMIN))
) -> dict:
    async with _pool(request).acquire() as conn:
        if not await rosters.delete_override(conn, agent_id, override_id):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"override {override_id} not found")
    await roster_changed(request, agent_id)
    return {"id": str(override_id)}


@router.get("/coverage", response_model=Coverage)
async def coverage(
    request: Request,
    start: Annotated[Instant, Query(alias="from", description="ISO 8601 with offset")],
    end: Annotated[Instant, Query(alias="to", description="ISO 8601 with offset")],
    language: Annotated[str | None, Query(pattern=r"^[a-z]{2,3}$")] = None,
    skill: Annotated[str | None, Query(pattern=r"^[a-z][a-z0-9_-]{1,31}$")] = None,
    _: Principal = Depends(require(*STAFF)),
) -> Coverage:
    """The intervals in which nobody with the language and skill is on shift."""
    _check_span(start, end)
    async with _pool(request).acquire() as conn:
        qualified, gaps = await rosters.coverage(conn, start, end, language, skill)
    return Coverage(
        start=start,
        end=end,
        language=language,
        skill=skill,
        agents=qualified,
        gaps=[Gap(start=s, end=e, minutes=round((e - s).total_seconds() / 60, 2)) for s, e in gaps],
    )


def _check_span(start: datetime, end: datetime) -> None:
    if end <= start:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "'to' must be after 'from'")
    if end - start > MAX_COVERAGE_SPAN:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"ask for at most {MAX_COVERAGE_SPAN.days} days"
        )


@router.get("/agents/{agent_id}/shifts", response_model=AgentShifts)
async def agent_shifts(
    agent_id: Ident,
    request: Request,
    start: Annotated[Instant, Query(alias="from", description="ISO 8601 with offset")],
    end: Annotated[Instant, Query(alias="to", description="ISO 8601 with offset")],
    _: Principal = Depends(require(*STAFF)),
) -> AgentShifts:
    """When the agent is on shift: their pattern's rotation or own shift, with overrides applied."""
    _check_span(start, end)
    async with _pool(request).acquire() as conn:
        agent = await directory.get_agent(conn, agent_id)
        if agent is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"agent {agent_id!r} not found")
        windows = (await rosters.shift_windows_of(conn, [agent], start, end))[agent.id]
        region = await directory.get_region(conn, agent.region_id)
    tz = ZoneInfo(region.timezone if region else "UTC")
    return AgentShifts(
        agent_id=agent.id,
        timezone=tz.key,
        shift_pattern_id=agent.shift_pattern_id,
        shifts=[ShiftWindow(start=s.astimezone(tz), end=e.astimezone(tz)) for s, e in windows],
    )


# --- shift patterns -------------------------------------------------------------------------


def _pattern_not_found(pattern_id: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"shift pattern {pattern_id!r} not found")


async def _require_region(conn: asyncpg.Connection, region_id: str) -> None:
    if await directory.get_region(conn, region_id) is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"unknown region {region_id!r}")


@router.get("/shift-patterns", response_model=list[ShiftPattern])
async def list_shift_patterns(
    request: Request,
    region: Annotated[str | None, Query(pattern=SLUG)] = None,
    _: Principal = Depends(require(*STAFF)),
) -> list[ShiftPattern]:
    async with _pool(request).acquire() as conn:
        return await rosters.list_patterns(conn, region)


@router.get("/shift-patterns/{pattern_id}", response_model=ShiftPattern)
async def get_shift_pattern(
    pattern_id: PatternId, request: Request, _: Principal = Depends(require(*STAFF))
) -> ShiftPattern:
    async with _pool(request).acquire() as conn:
        pattern = await rosters.get_pattern(conn, pattern_id)
    if pattern is None:
        raise _pattern_not_found(pattern_id)
    return pattern


@router.post("/shift-patterns", status_code=status.HTTP_201_CREATED, response_model=ShiftPattern)
async def create_shift_pattern(
    body: ShiftPatternCreate, request: Request, _: Principal = Depends(require(Role.ADMIN))
) -> ShiftPattern:
    """A region's shared shift pattern; agents join it with `shift_pattern_id` and `rotation_offset`."""
    async with _pool(request).acquire() as conn:
        await _require_region(conn, body.region_id)
        if not await rosters.insert_pattern(conn, body.id, body):
            raise HTTPException(status.HTTP_409_CONFLICT, f"shift pattern {body.id!r} already exists")
        return await rosters.get_pattern(conn, body.id)


@router.put("/shift-patterns/{pattern_id}", response_model=ShiftPattern)
async def update_shift_pattern(
    pattern_id: PatternId,
    body: ShiftPatternFields,
    request: Request,
    _: Principal = Depends(require(Role.ADMIN)),
) -> ShiftPattern:
    """Changing a pattern moves every agent on it: their tickets re-read the roster at once."""
    async with _pool(request).acquire() as conn:
        await _require_region(conn, body.region_id)
        try:
            updated = await rosters.update_pattern(conn, pattern_id, body)
        except asyncpg.ForeignKeyViolationError:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"agents of another region work {pattern_id!r}; move them off it before changing its region",
            ) from None
        if not updated:
            raise _pattern_not_found(pattern_id)
        pattern = await rosters.get_pattern(conn, pattern_id)
    await roster_changed(request, *pattern.agents)
    return pattern


@router.delete("/shift-patterns/{pattern_id}", response_model=dict)
async def delete_shift_pattern(
    pattern_id: PatternId, request: Request, _: Principal = Depends(require(Role.ADMIN))
) -> dict:
    async with _pool(request).acquire() as conn:
        try:
            deleted = await rosters.delete_pattern(conn, pattern_id)
        except asyncpg.ForeignKeyViolationError:
            agents = await rosters.agents_on_pattern(conn, pattern_id)
            raise HTTPException(
                status.HTTP_409_CONFLICT, f"agents still work {pattern_id!r}: {', '.join(agents)}"
            ) from None
    if not deleted:
        raise _pattern_not_found(pattern_id)
    return {"id": pattern_id}
