"""Business calendars for SLA clocks: the open windows a workflow counts time in."""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg
from pydantic import BaseModel
from temporalio import activity

from db import calendars, directory
from domain.enums import Priority
from domain.sla import ClockCalendar, SlaTargets

# Windows are handed to workflows this far ahead; the workflow asks again before they run out.
HORIZON = timedelta(days=45)


class CalendarWindowsRequest(BaseModel):
    calendar_id: str
    start: datetime  # the earliest instant a running clock counts from
    now: datetime | None = None  # windows reach HORIZON beyond this (default: beyond start)


async def clock_calendar(
    conn: asyncpg.Connection, calendar_id: str | None, start: datetime, now: datetime | None = None
) -> ClockCalendar | None:
    """None when every minute counts (no calendar, an unknown one, or one that is always open)."""
    if calendar_id is None:
        return None
    calendar = await calendars.get_calendar(conn, calendar_id)
    if calendar is None or calendar.always_open:
        return None
    end = max(start, now or start) + HORIZON
    return ClockCalendar(calendar_id=calendar.id, start=start, end=end, windows=calendar.windows(start, end))


class SlaRulesRequest(BaseModel):
    customer_id: str
    start: datetime
    now: datetime


class SlaRules(BaseModel):
    policies: dict[Priority, SlaTargets]
    calendar: ClockCalendar | None


class CalendarActivities:
    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    @activity.defn(name="current_sla_rules")
    async def current_sla_rules(self, request: SlaRulesRequest) -> SlaRules | None:
        """The customer's SLA policies and contract calendar as they stand now (None: customer gone)."""
        async with self.pool.acquire() as conn:
            customer = await directory.get_customer(conn, request.customer_id)
            if customer is None:
                return None
            policies = await directory.sla_policies(conn, customer.tier, customer.calendar_id)
            calendar_id = next(iter(policies.values())).calendar_id if policies else None
            calendar = await clock_calendar(conn, calendar_id, request.start, request.now)
        return SlaRules(policies=policies, calendar=calendar)

    @activity.defn(name="sla_calendar")
    async def sla_calendar(self, request: CalendarWindowsRequest) -> ClockCalendar | None:
        async with self.pool.acquire() as conn:
            return await clock_calendar(conn, request.calendar_id, request.start, request.now)
