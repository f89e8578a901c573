"""SQL for roster overrides and the inputs of coverage."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from db.assignment import override_from_row
from domain.rosters import RosterOverride, RosterOverrideFields


async def add_override(
    conn: asyncpg.Connection, agent_id: str, fields: RosterOverrideFields
) -> RosterOverride:
    row = await conn.fetchrow(
        """INSERT INTO roster_overrides (id, agent_id, kind, starts_at, ends_at, reason)
           VALUES ($1, $2, $3, $4, $5, $6) RETURNING *""",
        uuid.uuid4(),
        agent_id,
        fields.kind.value,
        fields.starts_at,
        fields.ends_at,
        fields.reason,
    )
    return override_from_row(row)


async def list_overrides(conn: asyncpg.Connection, agent_id: str) -> list[RosterOverride]:
    rows = await conn.fetch(
        "SELECT * FROM roster_overrides WHERE agent_id = $1 AND ends_at > now() ORDER BY starts_at", agent_id
    )
    return [override_from_row(r) for r in rows]


async def delete_override(conn: asyncpg.Connection, agent_id: str, override_id: uuid.UUID) -> bool:
    result = await conn.execute(
        "DELETE FROM roster_overrides WHERE agent_id = $1 AND id = $2", agent_id, override_id
    )
    return result == "DELETE 1"


async def overrides_between(conn: asyncpg.Connection, start: datetime, end: datetime) -> dict[str, list]:
    rows = await conn.fetch(
        "SELECT * FROM roster_overrides WHERE ends_at > $1 AND starts_at < $2 ORDER BY starts_at", start, end
    )
    found: dict[str, list] = {}
    for r in rows:
        found.setdefault(r["agent_id"], []).append(override_from_row(r))
    return found


async def open_tickets_of(conn: asyncpg.Connection, agent_id: str) -> list[int]:
    rows = await conn.fetch(
        "SELECT id FROM tickets WHERE assignee_id = $1 AND status IN ('open', 'pending_customer', 'queued')",
        agent_id,
    )
    return [r["id"] for r in rows]
