"""SQL for business calendars."""

from __future__ import annotations

import asyncpg

from domain.calendars import BusinessCalendar


def _calendar(row: asyncpg.Record) -> BusinessCalendar:
    data = dict(row)
    data.pop("created_at"), data.pop("updated_at")
    return BusinessCalendar(**data)


async def list_calendars(conn: asyncpg.Connection) -> list[BusinessCalendar]:
    return [_calendar(r) for r in await conn.fetch("SELECT * FROM calendars ORDER BY id")]


async def get_calendar(conn: asyncpg.Connection, calendar_id: str) -> BusinessCalendar | None:
    row = await conn.fetchrow("SELECT * FROM calendars WHERE id = $1", calendar_id)
    return _calendar(row) if row else None


async def save_calendar(conn: asyncpg.Connection, calendar: BusinessCalendar) -> BusinessCalendar:
    row = await conn.fetchrow(
        """INSERT INTO calendars (id, name, timezone, always_open, hours, holiday_country,
                                  holiday_subdivision, exceptions)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
           ON CONFLICT (id) DO UPDATE SET
               name = EXCLUDED.name, timezone = EXCLUDED.timezone, always_open = EXCLUDED.always_open,
               hours = EXCLUDED.hours, holiday_country = EXCLUDED.holiday_country,
               holiday_subdivision = EXCLUDED.holiday_subdivision, exceptions = EXCLUDED.exceptions,
               updated_at = now()
           RETURNING *""",
        calendar.id,
        calendar.name,
        calendar.timezone,
        calendar.always_open,
        [h.model_dump(mode="json") for h in calendar.hours],
        calendar.holiday_country,
        calendar.holiday_subdivision,
        [e.model_dump(mode="json") for e in calendar.exceptions],
    )
    return _calendar(row)


async def delete_calendar(conn: asyncpg.Connection, calendar_id: str) -> bool:
    return await conn.execute("DELETE FROM calendars WHERE id = $1", calendar_id) == "DELETE 1"
