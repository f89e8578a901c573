"""Business calendars and the SLA preview that uses them."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated
from zoneinfo import ZoneInfo

import asyncpg
from fastapi import APIRouter, Body, Depends, HTTPException, Path, Request, status
from pydantic import BaseModel

from api.auth import STAFF, Principal, require
from api.signals import signal_tickets
from db import calendars, tickets
from domain.calendars import CALENDAR_ID, BusinessCalendar, SlaPreview, SlaPreviewRequest
from domain.enums import Role
from domain.ical import closed_days_from_ical

router = APIRouter(prefix="/v1", tags=["calendars"])
CalendarId = Annotated[str, Path(pattern=CALENDAR_ID)]
admin_only = require(Role.ADMIN)


def _pool(request: Request) -> asyncpg.Pool:
    return request.app.state.pool


async def _existing(conn: asyncpg.Connection, calendar_id: str) -> BusinessCalendar:
    calendar = await calendars.get_calendar(conn, calendar_id)
    if calendar is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"calendar {calendar_id!r} not found")
    return calendar


@router.get("/calendars", response_model=list[BusinessCalendar])
async def list_calendars(request: Request, _: Principal = Depends(require(*STAFF))) -> list[BusinessCalendar]:
    async with _pool(request).acquire() as conn:
        return await calendars.list_calendars(conn)


@router.get("/calendars/{calendar_id}", response_model=BusinessCalendar)
async def get_calendar(
    calendar_id: CalendarId, request: Request, _: Principal = Depends(require(*STAFF))
) -> BusinessCalendar:
    async with _pool(request).acquire() as conn:
        return await _existing(conn, calendar_id)


@router.post("/calendars", status_code=status.HTTP_201_CREATED, response_model=BusinessCalendar)
async def create_calendar(
    body: BusinessCalendar, request: Request, _: Principal = Depends(admin_only)
) -> BusinessCalendar:
    async with _pool(request).acquire() as conn, conn.transaction():
        if await calendars.get_calendar(conn, body.id) is not None:
            raise HTTPException(status.HTTP_409_CONFLICT, f"calendar {body.id!r} already exists")
        return await calendars.save_calendar(conn, body)


@router.put("/calendars/{calendar_id}", response_model=BusinessCalendar)
async def replace_calendar(
    calendar_id: CalendarId, body: BusinessCalendar, request: Request, _: Principal = Depends(admin_only)
) -> BusinessCalendar:
    if body.id != calendar_id:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "the body's id must match the path")
    async with _pool(request).acquire() as conn:
        await _existing(conn, calendar_id)
        saved = await calendars.save_calendar(conn, body)
    await _recompute_for_calendar(request, calendar_id)
    return saved


async def _recompute_for_calendar(request: Request, calendar_id: str) -> None:
    """Running tickets of customers on this calendar recompute their SLA clocks at once."""
    async with _pool(request).acquire() as conn:
        ticket_ids = await tickets.open_ticket_ids(conn, calendar_id=calendar_id)
    await signal_tickets(request, ticket_ids, "sla_rules_changed")


@router.post("/calendars/{calendar_id}/ical", response_model=BusinessCalendar)
async def import_ical(
    calendar_id: CalendarId,
    request: Request,
    feed: Annotated[str, Body(media_type="text/calendar", max_length=2_000_000)],
    _: Principal = Depends(admin_only),
) -> BusinessCalendar:
    """Close every day an all-day event of the iCalendar feed covers (replacing exceptions on those dates)."""
    try:
        closed = closed_days_from_ical(feed)
    except ValueError as err:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(err)) from None
    async with _pool(request).acquire() as conn, conn.transaction():
        calendar = await _existing(conn, calendar_id)
        imported = {c.date for c in closed}
        calendar.exceptions = sorted(
            [e for e in calendar.exceptions if e.date not in imported] + closed, key=lambda e: e.date
        )
        saved = await calendars.save_calendar(conn, calendar)
    await _recompute_for_calendar(request, calendar_id)
    return saved


@router.delete("/calendars/{calendar_id}", response_model=dict)
async def delete_calendar(
    calendar_id: CalendarId, request: Request, _: Principal = Depends(admin_only)
) -> dict:
    async with _pool(request).acquire() as conn:
        if not await calendars.delete_calendar(conn, calendar_id):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"calendar {calendar_id!r} not found")
    return {"id": calendar_id}


class Recomputed(BaseModel):
    tickets: int


@router.post("/sla/recompute", response_model=Recomputed, tags=["sla"])
async def recompute_all(request: Request, _: Principal = Depends(admin_only)) -> Recomputed:
    """After editing `sla_policies` rows: every running ticket re-reads its policy and calendar."""
    async with _pool(request).acquire() as conn:
        ticket_ids = await tickets.open_ticket_ids(conn)
    return Recomputed(tickets=await signal_tickets(request, ticket_ids, "sla_rules_changed"))


@router.post("/sla/preview", response_model=SlaPreview, tags=["sla"])
async def preview_due(
    body: SlaPreviewRequest, request: Request, _: Principal = Depends(require(*STAFF))
) -> SlaPreview:
    """When N business minutes of a calendar have passed from `start` — the maths SLA clocks use."""
    async with _pool(request).acquire() as conn:
        calendar = await _existing(conn, body.calendar_id)
    try:
        due = calendar.add_business_time(body.start, timedelta(minutes=body.minutes))
    except ValueError as err:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(err)) from None
    return SlaPreview(
        due=due,
        calendar_id=calendar.id,
        timezone=calendar.timezone,
        due_local=due.astimezone(ZoneInfo(calendar.timezone)),
    )
