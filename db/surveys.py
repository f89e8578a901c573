"""SQL for surveys, recoveries, praise and open feedback."""

from __future__ import annotations

import os
import uuid
from datetime import datetime

import asyncpg

SURVEY_SECRET = "survey-signing-key"


async def secret(conn: asyncpg.Connection, name: str = SURVEY_SECRET) -> bytes:
    """A random key made once and shared by every process through the database."""
    await conn.execute(
        "INSERT INTO app_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        name,
        os.urandom(32),
    )
    return await conn.fetchval("SELECT value FROM app_secrets WHERE name = $1", name)


async def save_survey(
    conn: asyncpg.Connection,
    survey_id: uuid.UUID,
    ticket_id: int,
    customer_id: str,
    language: str,
    expires_at: datetime,
) -> None:
    await conn.execute(
        """INSERT INTO surveys (id, ticket_id, customer_id, language, expires_at) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (id) DO NOTHING""",
        survey_id,
        ticket_id,
        customer_id,
        language,
        expires_at,
    )


async def get_survey(conn: asyncpg.Connection, survey_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        """SELECT s.*, t.subject FROM surveys s JOIN tickets t ON t.id = s.ticket_id WHERE s.id = $1""",
        survey_id,
    )


async def use_survey(conn: asyncpg.Connection, survey_id: uuid.UUID) -> bool:
    """Marks the survey used; False if it was used already (the link works once)."""
    row = await conn.fetchrow(
        "UPDATE surveys SET used_at = now() WHERE id = $1 AND used_at IS NULL RETURNING id", survey_id
    )
    return row is not None


async def release_survey(conn: asyncpg.Connection, survey_id: uuid.UUID) -> None:
    """The answer could not be recorded for a reason the customer can retry (the desk was busy)."""
    await conn.execute("UPDATE surveys SET used_at = NULL WHERE id = $1", survey_id)


# --- recovery and praise ----------------------------------------------------------------------


async def open_recovery(
    conn: asyncpg.Connection,
    ticket_id: int,
    region: str | None,
    lead_id: str | None,
    score: int,
    comment: str | None,
    due_at: datetime,
) -> None:
    await conn.execute(
        """INSERT INTO recoveries (ticket_id, region, lead_id, score, comment, due_at)
           VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (ticket_id) DO NOTHING""",
        ticket_id,
        region,
        lead_id,
        score,
        comment,
        due_at,
    )


async def set_recovery_status(conn: asyncpg.Connection, ticket_id: int, status: str) -> None:
    await conn.execute(
        "UPDATE recoveries SET status = $2 WHERE ticket_id = $1 AND status <> 'done'", ticket_id, status
    )


async def finish_recovery(conn: asyncpg.Connection, ticket_id: int, done_by: str, note: str | None) -> bool:
    row = await conn.fetchrow(
        """UPDATE recoveries SET status = 'done', done_at = now(), done_by = $2, note = $3
           WHERE ticket_id = $1 AND status <> 'done' RETURNING ticket_id""",
        ticket_id,
        done_by,
        note,
    )
    return row is not None


async def get_recovery(conn: asyncpg.Connection, ticket_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM recoveries WHERE ticket_id = $1", ticket_id)


async def list_recoveries(conn: asyncpg.Connection, status: str | None) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM recoveries WHERE $1::text IS NULL OR status = $1 ORDER BY due_at", status
    )


async def ticket_engineers(conn: asyncpg.Connection, ticket_id: int) -> list[str]:
    """The agents who answered the customer on this ticket, in order of their first reply."""
    rows = await conn.fetch(
        """SELECT data ->> 'agent_id' AS agent_id, min(seq) AS first FROM ticket_events
           WHERE ticket_id = $1 AND kind = 'agent_reply' AND data ? 'agent_id'
           GROUP BY 1 ORDER BY 2""",
        ticket_id,
    )
    return [r["agent_id"] for r in rows]


async def record_praise(
    conn: asyncpg.Connection, ticket_id: int, agent_id: str, score: int, comment: str
) -> bool:
    row = await conn.fetchrow(
        """INSERT INTO praise (ticket_id, agent_id, score, comment) VALUES ($1, $2, $3, $4)
           ON CONFLICT DO NOTHING RETURNING agent_id""",
        ticket_id,
        agent_id,
        score,
        comment,
    )
    return row is not None


async def praise_of(conn: asyncpg.Connection, agent_id: str, limit: int = 100) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM praise WHERE agent_id = $1 ORDER BY created_at DESC LIMIT $2", agent_id, limit
    )


# --- open feedback ----------------------------------------------------------------------------


async def add_feedback(
    conn: asyncpg.Connection, customer_id: str | None, module: str, language: str | None, body: str
) -> asyncpg.Record:
    return await conn.fetchrow(
        """INSERT INTO feedback (customer_id, module, language, body) VALUES ($1, $2, $3, $4) RETURNING *""",
        customer_id,
        module,
        language,
        body,
    )


async def feedback_counts(conn: asyncpg.Connection, since: datetime, until: datetime) -> dict[str, int]:
    rows = await conn.fetch(
        """SELECT module, count(*) AS n FROM feedback WHERE created_at >= $1 AND created_at < $2
           GROUP BY module ORDER BY module""",
        since,
        until,
    )
    return {r["module"]: r["n"] for r in rows}


async def list_feedback(conn: asyncpg.Connection, module: str | None, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM feedback WHERE $1::text IS NULL OR module = $1 ORDER BY id DESC LIMIT $2",
        module,
        limit,
    )
