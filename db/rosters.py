"""SQL for roster overrides and the inputs of coverage."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg

from db import directory
from db.assignment import override_from_row, rotation_from_row
from domain.directory import Agent
from domain.rosters import (
    Interval,
    RosterOverride,
    RosterOverrideFields,
    Rotation,
    ShiftPattern,
    ShiftPatternFields,
    coverage_gaps,
    shift_windows,
)


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


# --- shift patterns -------------------------------------------------------------------------


def _pattern(row: asyncpg.Record) -> ShiftPattern:
    return ShiftPattern(
        id=row["id"],
        name=row["name"],
        region_id=row["region_id"],
        anchor=row["anchor"],
        weeks=row["weeks"],
        agents=row["agents"] or [],
    )


_PATTERNS = """
    SELECT p.*, (SELECT array_agg(a.id ORDER BY a.id) FROM agents a WHERE a.shift_pattern_id = p.id) AS agents
    FROM shift_patterns p
"""


async def list_patterns(conn: asyncpg.Connection, region_id: str | None = None) -> list[ShiftPattern]:
    rows = await conn.fetch(
        _PATTERNS + " WHERE $1::text IS NULL OR p.region_id = $1 ORDER BY p.id", region_id
    )
    return [_pattern(r) for r in rows]


async def get_pattern(conn: asyncpg.Connection, pattern_id: str) -> ShiftPattern | None:
    row = await conn.fetchrow(_PATTERNS + " WHERE p.id = $1", pattern_id)
    return _pattern(row) if row else None


async def insert_pattern(conn: asyncpg.Connection, pattern_id: str, fields: ShiftPatternFields) -> bool:
    row = await conn.fetchrow(
        """INSERT INTO shift_patterns (id, name, region_id, anchor, weeks) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (id) DO NOTHING RETURNING id""",
        pattern_id,
        fields.name,
        fields.region_id,
        fields.anchor,
        _weeks(fields),
    )
    return row is not None


async def update_pattern(conn: asyncpg.Connection, pattern_id: str, fields: ShiftPatternFields) -> bool:
    """Raises ForeignKeyViolationError when agents of another region would be left on it."""
    result = await conn.execute(
        """UPDATE shift_patterns SET name = $2, region_id = $3, anchor = $4, weeks = $5, updated_at = now()
           WHERE id = $1""",
        pattern_id,
        fields.name,
        fields.region_id,
        fields.anchor,
        _weeks(fields),
    )
    return result == "UPDATE 1"


async def delete_pattern(conn: asyncpg.Connection, pattern_id: str) -> bool:
    """Raises ForeignKeyViolationError while agents still work the pattern."""
    return await conn.execute("DELETE FROM shift_patterns WHERE id = $1", pattern_id) == "DELETE 1"


def _weeks(fields: ShiftPatternFields) -> list:
    return [[shift.model_dump(mode="json") for shift in week] for week in fields.weeks]


async def rotations(conn: asyncpg.Connection, agent_ids: list[str] | None = None) -> dict[str, Rotation]:
    """The rotation of each agent on a shift pattern (all agents, or the ones named)."""
    rows = await conn.fetch(
        """SELECT a.id, a.shift_pattern_id, a.rotation_offset, p.anchor AS pattern_anchor,
                  p.weeks AS pattern_weeks
           FROM agents a JOIN shift_patterns p ON p.id = a.shift_pattern_id
           WHERE $1::text[] IS NULL OR a.id = ANY($1::text[])""",
        agent_ids,
    )
    return {r["id"]: rotation for r in rows if (rotation := rotation_from_row(r)) is not None}


async def agents_on_pattern(conn: asyncpg.Connection, pattern_id: str) -> list[str]:
    rows = await conn.fetch("SELECT id FROM agents WHERE shift_pattern_id = $1 ORDER BY id", pattern_id)
    return [r["id"] for r in rows]


# --- who is on shift when ---------------------------------------------------------------------


async def shift_windows_of(
    conn: asyncpg.Connection, agents: list[Agent], start: datetime, end: datetime
) -> dict[str, list[Interval]]:
    """Each agent's time on shift in the span: their pattern or own shift, with overrides."""
    zones = {r["id"]: r["timezone"] for r in await conn.fetch("SELECT id, timezone FROM regions")}
    overrides = await overrides_between(conn, start, end)
    rotation_of = await rotations(conn, [a.id for a in agents])
    return {
        a.id: shift_windows(
            rotation_of.get(a.id) or a.shift, zones[a.region_id], overrides.get(a.id, []), start, end
        )
        for a in agents
    }


async def coverage(
    conn: asyncpg.Connection, start: datetime, end: datetime, language: str | None, skill: str | None
) -> tuple[list[str], list[Interval]]:
    """The active agents with the language and skill, and the gaps in [start, end) none of them covers."""
    qualified = [
        a
        for a in await directory.list_agents(conn)
        if a.active
        and (language is None or any(lang.code == language for lang in a.languages))
        and (skill is None or skill in a.skills)
    ]
    windows = await shift_windows_of(conn, qualified, start, end)
    return [a.id for a in qualified], coverage_gaps(
        list(windows.values()), start.astimezone(UTC), end.astimezone(UTC)
    )
