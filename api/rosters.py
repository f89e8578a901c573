"""Roster overrides and coverage: who is on shift when, and where nobody is."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated

import asyncpg
import structlog
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from pydantic import AwareDatetime, BaseModel
from temporalio.service import RPCError

from activities.assignment import run_dispatch
from api.auth import STAFF, Principal, require
from api.signals import signal_tickets
from db import directory, rosters
from domain.directory import IDENT
from domain.enums import Role
from domain.rosters import RosterOverride, RosterOverrideFields, coverage_gaps, shift_windows

router = APIRouter(prefix="/v1", tags=["rosters"])
log = structlog.get_logger(__name__)
Ident = Annotated[str, Path(pattern=IDENT)]
MAX_COVERAGE_SPAN = timedelta(days=31)


class Gap(BaseModel):
    start: datetime
    end: datetime
    minutes: float


class Coverage(BaseModel):
    start: datetime
    end: datetime
    language: str | None
    skill: str | None
    agents: list[str]
    gaps: list[Gap]


def _pool(request: Request) -> asyncpg.Pool:
    return request.app.state.pool


async def roster_changed(request: Request, agent_id: str) -> None:
    """Tell the agent's open tickets to re-read the roster (a shift may end now), then dispatch."""
    async with _pool(request).acquire() as conn:
        ticket_ids = await rosters.open_tickets_of(conn, agent_id)
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
    start: Annotated[AwareDatetime, Query(alias="from", description="ISO 8601 with offset")],
    end: Annotated[AwareDatetime, Query(alias="to", description="ISO 8601 with offset")],
    language: Annotated[str | None, Query(pattern=r"^[a-z]{2,3}$")] = None,
    skill: Annotated[str | None, Query(pattern=r"^[a-z][a-z0-9_-]{1,31}$")] = None,
    _: Principal = Depends(require(*STAFF)),
) -> Coverage:
    """The intervals in which nobody with the language and skill is on shift."""
    if end <= start:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "'to' must be after 'from'")
    if end - start > MAX_COVERAGE_SPAN:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"ask for at most {MAX_COVERAGE_SPAN.days} days"
        )
    async with _pool(request).acquire() as conn:
        agents = [a for a in await directory.list_agents(conn) if a.active]
        zones = {r.id: r.timezone for r in await directory.list_regions(conn)}
        overrides = await rosters.overrides_between(conn, start, end)
    qualified = [
        a
        for a in agents
        if (language is None or any(lang.code == language for lang in a.languages))
        and (skill is None or skill in a.skills)
    ]
    windows = [
        shift_windows(a.shift, zones[a.region_id], overrides.get(a.id, []), start, end) for a in qualified
    ]
    gaps = coverage_gaps(windows, start.astimezone(UTC), end.astimezone(UTC))
    return Coverage(
        start=start,
        end=end,
        language=language,
        skill=skill,
        agents=[a.id for a in qualified],
        gaps=[Gap(start=s, end=e, minutes=round((e - s).total_seconds() / 60, 2)) for s, e in gaps],
    )
